//! nginx's `limit_conn` and `limit_req`: connections open at once and
//! request rate, per key (the client address by default) and per location.
//!
//! The counters live in the process, not in a loaded configuration, so a
//! reload neither forgets open WebSockets nor resets rates.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Rate-limit entries kept at most; idle ones are dropped first (nginx's
/// zone likewise evicts when full).
const MAX_RATE_KEYS: usize = 100_000;

/// Open connections per (location, key).
#[derive(Default)]
pub struct ConnectionLimits {
    open: Mutex<HashMap<String, u32>>,
}

impl ConnectionLimits {
    /// Takes a slot for `key` if fewer than `limit` are taken; the slot is
    /// given back when the returned guard drops (a WebSocket holds it until
    /// it closes).
    pub fn acquire(self: &Arc<Self>, key: String, limit: u32) -> Option<ConnectionSlot> {
        let mut open = self.open.lock().unwrap();
        let count = open.entry(key.clone()).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(ConnectionSlot {
            limits: self.clone(),
            key,
            held: None,
        })
    }
}

/// One open connection counted against its key.
pub struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    key: String,
    /// Given back with the slot (the cluster's count of the connection).
    held: Option<Box<dyn Send + Sync>>,
}

impl ConnectionSlot {
    /// Keeps `guard` until the slot is given back.
    pub fn hold(&mut self, guard: impl Send + Sync + 'static) {
        self.held = Some(Box::new(guard));
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap();
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Leaky buckets per (location, key), nginx's `limit_req ... nodelay`:
/// up to `burst` requests above the rate are served at once, the next ones
/// refused until the bucket drains at `rate` per second.
#[derive(Default)]
pub struct RateLimits {
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    /// Requests above the rate still "in the bucket".
    excess: f64,
    last: Instant,
}

impl RateLimits {
    /// Whether a request for `key` may pass now.
    pub fn allow(&self, key: &str, rate_per_sec: f64, burst: u32, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap();
        if buckets.len() >= MAX_RATE_KEYS && !buckets.contains_key(key) {
            // Drop buckets that have drained: they hold no information.
            buckets.retain(|_, b| {
                b.excess - now.duration_since(b.last).as_secs_f64() * rate_per_sec > 0.0
            });
        }
        let bucket = buckets.entry(key.to_string()).or_insert(Bucket {
            excess: -1.0,
            last: now,
        });
        let drained = (bucket.excess
            - now.duration_since(bucket.last).as_secs_f64() * rate_per_sec)
            .max(-1.0);
        // Each request adds one; the first one of a drained bucket brings it to 0.
        let excess = drained + 1.0;
        if excess > f64::from(burst) {
            return false;
        }
        *bucket = Bucket { excess, last: now };
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn connection_slots_are_counted_per_key_and_given_back() {
        let limits = Arc::new(ConnectionLimits::default());
        let a1 = limits.acquire("a".into(), 2).unwrap();
        let _a2 = limits.acquire("a".into(), 2).unwrap();
        assert!(limits.acquire("a".into(), 2).is_none());
        assert!(limits.acquire("b".into(), 2).is_some());
        drop(a1);
        assert!(limits.acquire("a".into(), 2).is_some());
    }

    #[test]
    fn rate_allows_the_burst_then_the_rate() {
        let rates = RateLimits::default();
        let t0 = Instant::now();
        // rate 10/s, burst 2: three at once (one at the rate plus two of burst), not a fourth.
        assert!(rates.allow("k", 10.0, 2, t0));
        assert!(rates.allow("k", 10.0, 2, t0));
        assert!(rates.allow("k", 10.0, 2, t0));
        assert!(!rates.allow("k", 10.0, 2, t0));
        // 100 ms later one more drained out.
        assert!(rates.allow("k", 10.0, 2, t0 + Duration::from_millis(100)));
        assert!(!rates.allow("k", 10.0, 2, t0 + Duration::from_millis(100)));
        // Other keys are independent.
        assert!(rates.allow("other", 10.0, 0, t0));
        assert!(!rates.allow("other", 10.0, 0, t0));
    }
}
