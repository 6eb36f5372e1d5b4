//! `limit_conn` and `limit_req` across the processes of a cluster, in Redis.
//!
//! Connections: each instance keeps its own count per key in a Redis hash
//! (`wasp:conn:KEY`, field = instance, value = `COUNT:SEQ`), written as an
//! absolute count with a sequence number so that updates arriving out of
//! order cannot undo a later one. Admitting one more is a Lua script (one
//! atomic step): the live instances' counts plus ours must stay within the
//! limit. An instance whose liveness key expired (a crashed process) is
//! no longer counted, and its field is dropped. Releasing is sent in the
//! background: a request never waits for it.
//!
//! Rates: the same leaky bucket as `crate::limits`, kept in a Redis hash
//! and updated by a script on Redis's clock.

use super::{Cluster, PREFIX};
use redis::aio::MultiplexedConnection;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Admits one more connection for KEYS[1] if the live instances' counts
/// allow it. ARGV: instance, limit, our new count, its sequence, the
/// liveness key prefix.
const ACQUIRE: &str = r"
local fields = redis.call('HGETALL', KEYS[1])
local others = 0
for i = 1, #fields, 2 do
  local who = fields[i]
  if who ~= ARGV[1] then
    if redis.call('EXISTS', ARGV[5] .. who) == 1 then
      others = others + tonumber(string.match(fields[i + 1], '^(%d+)'))
    else
      redis.call('HDEL', KEYS[1], who)
    end
  end
end
if others + tonumber(ARGV[3]) > tonumber(ARGV[2]) then
  return 0
end
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current and tonumber(string.match(current, ':(%d+)$')) > tonumber(ARGV[4]) then
  return 1
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3] .. ':' .. ARGV[4])
return 1
";

/// Sets our count for KEYS[1] unless a later update came first. ARGV:
/// instance, count, sequence.
const SET_COUNT: &str = r"
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current and tonumber(string.match(current, ':(%d+)$')) > tonumber(ARGV[3]) then
  return 0
end
if tonumber(ARGV[2]) == 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. ARGV[3])
end
return 1
";

/// nginx's leaky bucket (`crate::limits::RateLimits`) for KEYS[1] on
/// Redis's clock. ARGV: rate per second, burst. 1: allowed.
const ALLOW_RATE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate = tonumber(ARGV[1])
local bucket = redis.call('HMGET', KEYS[1], 'excess', 'last')
local excess = tonumber(bucket[1]) or -1
local last = tonumber(bucket[2]) or now
local drained = math.max(excess - (now - last) / 1000 * rate, -1)
local next = drained + 1
if next > tonumber(ARGV[2]) then
  return 0
end
redis.call('HSET', KEYS[1], 'excess', tostring(next), 'last', now)
redis.call('PEXPIRE', KEYS[1], math.ceil((next + 1) / rate * 1000) + 1000)
return 1
";

/// This instance's open connections per limited key, with the sequence of
/// the last change.
#[derive(Default)]
pub(super) struct State {
    open: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    by_key: HashMap<String, u32>,
    seq: u64,
}

impl State {
    /// Changes `key`'s count by `delta`; its new value and sequence.
    fn change(&self, key: &str, delta: i32) -> (u32, u64) {
        let mut open = self.open.lock().unwrap();
        open.seq += 1;
        let seq = open.seq;
        let count = open.by_key.entry(key.to_owned()).or_insert(0);
        *count = count.saturating_add_signed(delta);
        let count = *count;
        if count == 0 {
            open.by_key.remove(key);
        }
        (count, seq)
    }

    fn current(&self, key: &str) -> (u32, u64) {
        let mut open = self.open.lock().unwrap();
        open.seq += 1;
        (open.by_key.get(key).copied().unwrap_or(0), open.seq)
    }

    /// After (re)connecting: our fields everywhere replaced by our counts now.
    pub(super) async fn catch_up(
        &self,
        instance: &str,
        connection: &MultiplexedConnection,
    ) -> redis::RedisResult<()> {
        let mut connection = connection.clone();
        let keys: Vec<String> = scan(&mut connection, &format!("{PREFIX}conn:*")).await?;
        if !keys.is_empty() {
            let mut clear = redis::pipe();
            for key in &keys {
                clear.hdel(key, instance).ignore();
            }
            clear.query_async::<()>(&mut connection).await?;
        }
        let counts: Vec<(String, u32, u64)> = {
            let mut open = self.open.lock().unwrap();
            open.seq += 1;
            let seq = open.seq;
            open.by_key
                .iter()
                .map(|(key, count)| (key.clone(), *count, seq))
                .collect()
        };
        for (key, count, seq) in counts {
            set_count(&mut connection, instance, &key, count, seq).await?;
        }
        Ok(())
    }
}

/// Every key matching `pattern`.
pub(super) async fn scan(
    connection: &mut MultiplexedConnection,
    pattern: &str,
) -> redis::RedisResult<Vec<String>> {
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(connection)
            .await?;
        keys.extend(batch);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}

async fn set_count(
    connection: &mut MultiplexedConnection,
    instance: &str,
    key: &str,
    count: u32,
    seq: u64,
) -> redis::RedisResult<()> {
    redis::cmd("EVAL")
        .arg(SET_COUNT)
        .arg(1)
        .arg(format!("{PREFIX}conn:{key}"))
        .arg(instance)
        .arg(count)
        .arg(seq)
        .query_async::<()>(connection)
        .await
}

/// A connection counted against its key in the cluster; given back when
/// dropped.
pub struct ConnSlot {
    cluster: Arc<Cluster>,
    key: String,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.cluster.limits.change(&self.key, -1);
        self.cluster.send_count(self.key.clone());
    }
}

impl Cluster {
    /// One more connection for `key` within `limit` across the cluster:
    /// `None` when the cluster is full. Waits for Redis at most `timeout`;
    /// without an answer (or without Redis) the local limit, checked
    /// before, decides alone, and our count reaches Redis later.
    pub async fn acquire_conn(self: &Arc<Self>, key: String, limit: u32) -> Option<ConnSlot> {
        let (count, seq) = self.limits.change(&key, 1);
        let slot = ConnSlot {
            cluster: self.clone(),
            key,
        };
        let Some(mut connection) = self.connection() else {
            return Some(slot);
        };
        let script = redis::cmd("EVAL")
            .arg(ACQUIRE)
            .arg(1)
            .arg(format!("{PREFIX}conn:{}", slot.key))
            .arg(&self.instance)
            .arg(limit)
            .arg(count)
            .arg(seq)
            .arg(format!("{PREFIX}alive:"))
            .to_owned();
        match tokio::time::timeout(self.timeout, script.query_async::<i64>(&mut connection)).await {
            // Dropping the slot gives the reservation back.
            Ok(Ok(0)) => None,
            Ok(Ok(_)) => Some(slot),
            Ok(Err(error)) => {
                tracing::debug!(%error, "cluster: limit_conn not checked in Redis");
                Some(slot)
            }
            Err(_) => {
                tracing::debug!("cluster: limit_conn: no answer from Redis in time");
                Some(slot)
            }
        }
    }

    /// Whether the cluster's bucket for `key` lets one more request pass:
    /// `None` without an answer within `timeout` (the local bucket decides).
    pub async fn allow_rate(&self, key: &str, rate_per_sec: f64, burst: u32) -> Option<bool> {
        let mut connection = self.connection()?;
        let script = redis::cmd("EVAL")
            .arg(ALLOW_RATE)
            .arg(1)
            .arg(format!("{PREFIX}req:{key}"))
            .arg(rate_per_sec)
            .arg(burst)
            .to_owned();
        match tokio::time::timeout(self.timeout, script.query_async::<i64>(&mut connection)).await {
            Ok(Ok(allowed)) => Some(allowed == 1),
            _ => None,
        }
    }

    /// Sends our count for `key` in the background (after a release, or a
    /// refusal that gave the reservation back).
    fn send_count(self: &Arc<Self>, key: String) {
        let Some(mut connection) = self.connection() else {
            // Redis is away: the catch-up writes every count when it is back.
            return;
        };
        let (count, seq) = self.limits.current(&key);
        let instance = self.instance.clone();
        let send = async move {
            if let Err(error) = set_count(&mut connection, &instance, &key, count, seq).await {
                tracing::debug!(%error, "cluster: a released connection not counted down in Redis");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(send);
            }
            Err(_) => tracing::debug!("cluster: a connection released outside a runtime"),
        }
    }
}
