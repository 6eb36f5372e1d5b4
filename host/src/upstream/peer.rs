//! One upstream server and the state the host keeps for it: open
//! connections (WebSockets included), passive-health failures and the
//! active health checks' verdict. Peers are
//! shared across configuration and plugin reloads, so this state survives.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// nginx's `max_fails`/`fail_timeout`: failures counted in a window; at
/// `max_fails` the peer is out for `fail_timeout`.
#[derive(Debug, Default)]
struct Failures {
    count: u32,
    window_start: Option<Instant>,
    out_until: Option<Instant>,
}

#[derive(Debug)]
pub struct PeerState {
    pub address: String,
    /// Resolved once at load, as nginx resolves upstream names at start.
    pub addrs: Vec<SocketAddr>,
    pub weight: u32,
    pub backup: bool,
    pub down: bool,
    pub max_fails: u32,
    pub fail_timeout: Duration,
    active: AtomicU32,
    failures: Mutex<Failures>,
    /// The active health checks' verdict; true until they say otherwise, so
    /// a peer without checks (or before the first `fall`) takes traffic.
    healthy: AtomicBool,
}

impl PeerState {
    pub fn new(server: &crate::config::UpstreamServer, addrs: Vec<SocketAddr>) -> Self {
        PeerState {
            address: server.address.clone(),
            addrs,
            weight: server.weight,
            backup: server.backup,
            down: server.down,
            max_fails: server.max_fails,
            fail_timeout: server.fail_timeout,
            active: AtomicU32::new(0),
            failures: Mutex::default(),
            healthy: AtomicBool::new(true),
        }
    }

    /// Connections open to this peer now.
    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    /// Not marked down, not failing active health checks and not taken out
    /// by recent failures.
    pub fn available(&self, now: Instant) -> bool {
        if self.down || !self.healthy() {
            return false;
        }
        let failures = self.failures.lock().unwrap();
        failures.out_until.is_none_or(|until| now >= until)
    }

    /// The active health checks' verdict (true when there are none).
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Set by the active health checks when a peer rises or falls.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    /// Records a failed attempt; returns true when this takes the peer out.
    pub fn record_failure(&self, now: Instant) -> bool {
        if self.max_fails == 0 {
            return false;
        }
        let mut failures = self.failures.lock().unwrap();
        let window_over = failures
            .window_start
            .is_none_or(|start| now.duration_since(start) >= self.fail_timeout);
        if window_over {
            failures.count = 0;
            failures.window_start = Some(now);
        }
        failures.count += 1;
        if failures.count >= self.max_fails {
            failures.out_until = Some(now + self.fail_timeout);
            failures.count = 0;
            failures.window_start = None;
            return true;
        }
        false
    }

    /// A successful connection clears the failure count, as in nginx.
    pub fn record_success(&self) {
        let mut failures = self.failures.lock().unwrap();
        failures.count = 0;
        failures.window_start = None;
    }
}

/// Counts one open connection to a peer for as long as it lives.
#[derive(Debug)]
pub struct PeerGuard {
    peer: Arc<PeerState>,
}

impl PeerGuard {
    pub fn new(peer: Arc<PeerState>) -> Self {
        peer.active.fetch_add(1, Ordering::Relaxed);
        PeerGuard { peer }
    }

    pub fn peer(&self) -> &Arc<PeerState> {
        &self.peer
    }
}

impl Drop for PeerGuard {
    fn drop(&mut self) {
        self.peer.active.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(max_fails: u32) -> PeerState {
        let server = crate::config::UpstreamServer {
            address: "127.0.0.1:1".into(),
            weight: 1,
            max_fails,
            fail_timeout: Duration::from_secs(10),
            backup: false,
            down: false,
        };
        PeerState::new(&server, vec![])
    }

    #[test]
    fn max_fails_takes_a_peer_out_for_fail_timeout() {
        let p = peer(2);
        let t0 = Instant::now();
        assert!(!p.record_failure(t0));
        assert!(p.available(t0));
        assert!(p.record_failure(t0 + Duration::from_secs(1)));
        assert!(!p.available(t0 + Duration::from_secs(2)));
        assert!(p.available(t0 + Duration::from_secs(12)));
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let p = peer(2);
        let t0 = Instant::now();
        p.record_failure(t0);
        assert!(!p.record_failure(t0 + Duration::from_secs(11)));
        assert!(p.available(t0 + Duration::from_secs(11)));
    }

    #[test]
    fn an_unhealthy_peer_is_unavailable() {
        let p = peer(1);
        let now = Instant::now();
        assert!(p.healthy() && p.available(now));
        p.set_healthy(false);
        assert!(!p.available(now));
        p.set_healthy(true);
        assert!(p.available(now));
    }

    #[test]
    fn guards_count_active_connections() {
        let p = Arc::new(peer(1));
        let a = PeerGuard::new(p.clone());
        let b = PeerGuard::new(p.clone());
        assert_eq!(p.active(), 2);
        drop(a);
        drop(b);
        assert_eq!(p.active(), 0);
    }
}
