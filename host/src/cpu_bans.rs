//! Addresses whose WebSocket messages keep making a filter overrun its CPU
//! deadline are refused for a while.
//!
//! Filter calls run inline on the worker's event loop, so a message that
//! makes a filter spin costs every connection of that worker up to
//! `call_timeout` of waiting. The message closes its own connection (1011),
//! but nothing stops its sender from opening the next one: measured with
//! `bench/run.sh`'s spinners scenario, 50 such connections a second raised
//! the p99 of 100 well-behaved connections from 0.6 ms to 28 ms. So once
//! `ban_after_overruns` calls on one address's messages overran within
//! `ban_time`, that address's WebSocket handshakes on filtered locations are
//! refused (503) for `ban_time`. What one address can cost is then bounded
//! by `ban_after_overruns × call_timeout` per `ban_time`.
//!
//! Process-wide, like `limit_conn`: a reload neither forgets a ban nor
//! resets the strikes.

use prometheus_client::metrics::counter::Counter;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Addresses remembered at most; when full, records that no longer matter
/// are dropped first, then new addresses are not counted.
const MAX_ADDRESSES: usize = 100_000;

pub struct CpuBans {
    /// Overruns within `time` that ban an address; 0 never bans.
    after: u32,
    time: Duration,
    addresses: Mutex<HashMap<IpAddr, Record>>,
    /// Bans started (`wasp_cpu_bans_total`).
    started: Counter,
}

#[derive(Debug, Clone, Copy)]
struct Record {
    /// Overruns since `since`.
    strikes: u32,
    since: Instant,
    banned_until: Option<Instant>,
}

impl CpuBans {
    pub fn new(after: u32, time: Duration, started: Counter) -> Self {
        CpuBans {
            after,
            time,
            addresses: Mutex::default(),
            started,
        }
    }

    /// `(ban_after_overruns, ban_time)`, as made at start.
    pub fn settings(&self) -> (u32, Duration) {
        (self.after, self.time)
    }

    /// Whether handshakes from `ip` are refused at `now`.
    pub fn banned(&self, ip: IpAddr, now: Instant) -> bool {
        let addresses = self.addresses.lock().unwrap();
        addresses
            .get(&ip)
            .and_then(|record| record.banned_until)
            .is_some_and(|until| now < until)
    }

    /// A filter call on a message from `ip` overran its deadline at `now`.
    /// Returns whether this starts a ban.
    pub fn overran(&self, ip: IpAddr, now: Instant) -> bool {
        if self.after == 0 {
            return false;
        }
        let mut addresses = self.addresses.lock().unwrap();
        if addresses.len() >= MAX_ADDRESSES && !addresses.contains_key(&ip) {
            addresses.retain(|_, record| record.matters(now, self.time));
            if addresses.len() >= MAX_ADDRESSES {
                return false;
            }
        }
        let record = addresses.entry(ip).or_insert(Record {
            strikes: 0,
            since: now,
            banned_until: None,
        });
        if now.duration_since(record.since) >= self.time {
            *record = Record {
                strikes: 0,
                since: now,
                banned_until: record.banned_until.filter(|&until| now < until),
            };
        }
        record.strikes += 1;
        if record.strikes < self.after || record.banned_until.is_some_and(|until| now < until) {
            return false;
        }
        record.banned_until = Some(now + self.time);
        record.strikes = 0;
        record.since = now;
        self.started.inc();
        tracing::warn!(
            client = %ip,
            overruns = self.after,
            ban = ?self.time,
            "filter calls on this address's messages overran their CPU deadline repeatedly: refusing its filtered WebSockets for a while"
        );
        true
    }
}

impl Record {
    /// Whether forgetting this record would change anything.
    fn matters(&self, now: Instant, time: Duration) -> bool {
        self.banned_until.is_some_and(|until| now < until) || now.duration_since(self.since) < time
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bans(after: u32) -> CpuBans {
        CpuBans::new(after, Duration::from_secs(60), Counter::default())
    }

    #[test]
    fn the_nth_overrun_within_the_time_bans_for_that_time() {
        let bans = bans(3);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        assert!(!bans.overran(ip, t0));
        assert!(!bans.overran(ip, t0 + Duration::from_secs(1)));
        assert!(!bans.banned(ip, t0 + Duration::from_secs(1)));
        assert!(bans.overran(ip, t0 + Duration::from_secs(2)));
        assert!(bans.banned(ip, t0 + Duration::from_secs(2)));
        assert!(!bans.banned(other, t0 + Duration::from_secs(2)));
        assert!(bans.banned(ip, t0 + Duration::from_secs(61)));
        assert!(!bans.banned(ip, t0 + Duration::from_secs(62)));
        assert_eq!(bans.started.get(), 1);
    }

    #[test]
    fn overruns_spread_over_more_than_the_time_do_not_ban() {
        let bans = bans(2);
        let ip: IpAddr = "::1".parse().unwrap();
        let t0 = Instant::now();
        assert!(!bans.overran(ip, t0));
        assert!(!bans.overran(ip, t0 + Duration::from_secs(61)));
        assert!(!bans.banned(ip, t0 + Duration::from_secs(61)));
    }

    #[test]
    fn zero_never_bans() {
        let bans = bans(0);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..10 {
            assert!(!bans.overran(ip, t0));
        }
        assert!(!bans.banned(ip, t0));
    }
}
