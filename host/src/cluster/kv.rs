//! The plugins' kv and counters across the processes of a cluster.
//!
//! A plugin call never waits on the network: it reads and writes this
//! process's store as before, and a write is queued for the connection
//! task (bounded; a full queue drops the write from replication, said once
//! in the log). That task writes it to Redis and publishes it on
//! `wasp:kv` in one atomic step; every process, the writer included,
//! applies the channel's messages in Redis's order, so all of them end
//! with the value Redis holds (last writer wins). Counters are added in
//! Redis (INCRBY) and the total is published. Writes made while Redis is
//! away wait in the queue and are sent when it is back; the catch-up then
//! loads every key Redis holds.
//!
//! Redis keys: `wasp:kv:NS\0KEY` (a string with the value's TTL) and
//! `wasp:counter:NS\0KEY`, NS being the plugin's name or empty for the
//! shared namespace.

use super::PREFIX;
use super::limits::scan;
use crate::plugins::{KvReplica, KvWrite, SharedState};
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc;

/// The channel every process publishes its writes on.
pub(super) const CHANNEL: &str = "wasp:kv";
/// Writes waiting for Redis at most (beyond, they are not replicated).
const QUEUE: usize = 65_536;

/// Adds ARGV[1] to counter KEYS[1] and publishes the total: the message is
/// ARGV[3] .. total .. '}' on channel ARGV[2].
const COUNTER_ADD: &str = r"
local total = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3] .. total .. '}')
return total
";

/// A write as published on the channel.
#[derive(Serialize, Deserialize)]
struct Message {
    ns: Option<String>,
    key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ttl: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    counter: Option<i64>,
}

/// Hands plugins' writes to the connection task; applies others'.
#[derive(Clone)]
pub(super) struct Replica {
    queue: mpsc::Sender<KvWrite>,
    store: Arc<SharedState>,
    overflowed: Arc<AtomicBool>,
}

/// The queue's receiving end, held by the connection task.
pub(super) struct Writes(mpsc::Receiver<KvWrite>);

impl Writes {
    pub(super) async fn next(&mut self) -> KvWrite {
        match self.0.recv().await {
            Some(write) => write,
            // The replica (and so the sender) lives as long as the cluster.
            None => std::future::pending().await,
        }
    }
}

impl KvReplica for Replica {
    fn written(&self, write: KvWrite) {
        if self.queue.try_send(write).is_err() && !self.overflowed.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "cluster: {QUEUE} plugin kv writes waiting for Redis; later ones stay in this process"
            );
        }
    }
}

fn namespace(ns: &Option<Arc<str>>) -> &str {
    ns.as_deref().unwrap_or("")
}

fn redis_key(kind: &str, ns: &Option<Arc<str>>, key: &str) -> String {
    format!("{PREFIX}{kind}:{}\0{key}", namespace(ns))
}

impl Replica {
    pub(super) fn new(store: Arc<SharedState>) -> (Replica, Writes) {
        let (queue, writes) = mpsc::channel(QUEUE);
        let replica = Replica {
            queue,
            store,
            overflowed: Arc::new(AtomicBool::new(false)),
        };
        (replica, Writes(writes))
    }

    /// Sends one write to Redis and the channel.
    pub(super) async fn send(
        &self,
        connection: &MultiplexedConnection,
        write: KvWrite,
    ) -> redis::RedisResult<()> {
        let mut connection = connection.clone();
        let result = match &write {
            KvWrite::Set {
                namespace: ns,
                key,
                value,
                ttl_ms,
            } => {
                let mut set = redis::cmd("SET");
                set.arg(redis_key("kv", ns, key)).arg(value);
                if let Some(ttl) = ttl_ms {
                    set.arg("PX").arg((*ttl).max(1));
                }
                let message = Message {
                    ns: ns.as_deref().map(str::to_owned),
                    key: key.clone(),
                    value: Some(value.clone()),
                    ttl: *ttl_ms,
                    counter: None,
                };
                redis::pipe()
                    .atomic()
                    .add_command(set)
                    .ignore()
                    .publish(
                        CHANNEL,
                        serde_json::to_string(&message).expect("plain data"),
                    )
                    .ignore()
                    .query_async::<()>(&mut connection)
                    .await
            }
            KvWrite::Delete { namespace: ns, key } => {
                let message = Message {
                    ns: ns.as_deref().map(str::to_owned),
                    key: key.clone(),
                    value: None,
                    ttl: None,
                    counter: None,
                };
                redis::pipe()
                    .atomic()
                    .del(redis_key("kv", ns, key))
                    .ignore()
                    .publish(
                        CHANNEL,
                        serde_json::to_string(&message).expect("plain data"),
                    )
                    .ignore()
                    .query_async::<()>(&mut connection)
                    .await
            }
            KvWrite::CounterAdd {
                namespace: ns,
                key,
                delta,
            } => {
                // `{"ns":…,"key":…,"counter":` and the script appends the total.
                let head = serde_json::json!({ "ns": ns.as_deref(), "key": key }).to_string();
                let head = format!("{},\"counter\":", head.trim_end_matches('}'));
                redis::cmd("EVAL")
                    .arg(COUNTER_ADD)
                    .arg(1)
                    .arg(redis_key("counter", ns, key))
                    .arg(*delta)
                    .arg(CHANNEL)
                    .arg(head)
                    .query_async::<()>(&mut connection)
                    .await
            }
            // Only ever applied from the channel.
            KvWrite::Counter { .. } => Ok(()),
        };
        if result.is_err() {
            // Sent again after the reconnection (at the front is not
            // possible with a channel; the order of one key's writes is
            // kept unless this one raced a newer write of the same key).
            let _ = self.queue.try_send(write);
        }
        result
    }

    /// A message from the channel, applied to this process's store.
    pub(super) fn received(&self, payload: &[u8]) {
        let Ok(message) = serde_json::from_slice::<Message>(payload) else {
            tracing::debug!("cluster: an unreadable kv message ignored");
            return;
        };
        let namespace = message.ns.map(Arc::from);
        let write = match (message.counter, message.value) {
            (Some(value), _) => KvWrite::Counter {
                namespace,
                key: message.key,
                value,
            },
            (None, Some(value)) => KvWrite::Set {
                namespace,
                key: message.key,
                value,
                ttl_ms: message.ttl,
            },
            (None, None) => KvWrite::Delete {
                namespace,
                key: message.key,
            },
        };
        self.store.apply(&write);
    }

    /// After (re)connecting: sends the writes that waited, then loads what
    /// Redis holds (what other processes wrote while we were away).
    pub(super) async fn catch_up(
        &self,
        connection: &MultiplexedConnection,
        writes: &mut Writes,
    ) -> redis::RedisResult<()> {
        while let Ok(write) = writes.0.try_recv() {
            self.send(connection, write).await?;
        }
        self.overflowed.store(false, Ordering::Relaxed);
        let mut connection = connection.clone();
        for key in scan(&mut connection, &format!("{PREFIX}kv:*")).await? {
            let (value, ttl): (Option<String>, i64) = redis::pipe()
                .get(&key)
                .pttl(&key)
                .query_async(&mut connection)
                .await?;
            let (Some(value), Some((ns, name))) = (value, split(&key, "kv")) else {
                continue;
            };
            self.store.apply(&KvWrite::Set {
                namespace: ns,
                key: name,
                value,
                ttl_ms: u64::try_from(ttl).ok().filter(|&ttl| ttl > 0),
            });
        }
        for key in scan(&mut connection, &format!("{PREFIX}counter:*")).await? {
            let value: Option<i64> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut connection)
                .await?;
            let (Some(value), Some((ns, name))) = (value, split(&key, "counter")) else {
                continue;
            };
            self.store.apply(&KvWrite::Counter {
                namespace: ns,
                key: name,
                value,
            });
        }
        Ok(())
    }
}

/// `wasp:KIND:NS\0KEY` back into its namespace and key.
fn split(redis_key: &str, kind: &str) -> Option<(Option<Arc<str>>, String)> {
    let rest = redis_key
        .strip_prefix(PREFIX)?
        .strip_prefix(kind)?
        .strip_prefix(':')?;
    let (ns, key) = rest.split_once('\0')?;
    let ns = (!ns.is_empty()).then(|| Arc::from(ns));
    Some((ns, key.to_owned()))
}
