//! nginx's `keepalive N` in an upstream: idle HTTP/1.1 connections to its
//! peers, cached per worker thread (nginx caches per worker process) for the
//! next plain request to the same peer. A connection is reused only while
//! hyper says it is ready for another request (its previous answer was read
//! to the end and the peer did not close it), at most `keepalive_timeout`
//! after it went idle and for `keepalive_requests` requests; the cache keeps
//! at most `keepalive` connections per peer and drops the oldest first.
//!
//! hyper-util's pooled client would do this, but it owns the connecting:
//! wasp connects itself (the balancer plugin, passive health, TLS per
//! location), so the pool here only keeps hyper's `SendRequest` handles.
//! Each connection's task runs on the worker that made it, which is also
//! the only one to take it again: nothing crosses threads.

use crate::config::Keepalive;
use hyper::client::conn::http1::SendRequest;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::time::Instant;

/// What requests are sent with upstream: the client's body, size-limited,
/// or an empty one sent again to the next peer (`http::context`'s
/// `UpstreamBody`, spelled out: `upstream` may not import from `http`).
pub type RequestBody = http_body_util::combinators::UnsyncBoxBody<
    bytes::Bytes,
    Box<dyn std::error::Error + Send + Sync>,
>;
pub type Sender = SendRequest<RequestBody>;

/// Which connections may serve a request: one peer of one upstream, over
/// one TLS configuration (or none).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub upstream: String,
    pub peer: String,
    /// The address of the location's TLS connector, 0 for plain TCP:
    /// connections verified for one name are not lent to another.
    pub tls: usize,
}

/// A connection taken from (or going back to) the cache.
pub struct Pooled {
    pub sender: Sender,
    /// Requests it served before this one.
    pub served: u32,
}

struct Idle {
    sender: Sender,
    served: u32,
    since: Instant,
}

thread_local! {
    static IDLE: RefCell<HashMap<PoolKey, VecDeque<Idle>>> = RefCell::new(HashMap::new());
}

/// The most recently idle connection of `key` ready for a request, if
/// any. Closed and stale ones are dropped on the way; one whose answer is
/// still being read stays.
pub fn take(key: &PoolKey, settings: &Keepalive) -> Option<Pooled> {
    IDLE.with_borrow_mut(|idle| {
        let queue = idle.get_mut(key)?;
        let now = Instant::now();
        let mut busy = VecDeque::new();
        let mut found = None;
        while let Some(candidate) = queue.pop_back() {
            let stale = now.duration_since(candidate.since) >= settings.timeout;
            if stale || candidate.sender.is_closed() {
                // Dropping the handle closes the connection.
                continue;
            }
            if candidate.sender.is_ready() {
                found = Some(Pooled {
                    sender: candidate.sender,
                    served: candidate.served,
                });
                break;
            }
            busy.push_front(candidate);
        }
        queue.extend(busy);
        if queue.is_empty() {
            idle.remove(key);
        }
        found
    })
}

/// Keeps `connection` for reuse unless it served `keepalive_requests`
/// already; beyond `keepalive` idle connections the oldest is closed.
fn put(key: PoolKey, connection: Pooled, settings: &Keepalive) {
    if connection.served >= settings.requests {
        return;
    }
    IDLE.with_borrow_mut(|idle| {
        let queue = idle.entry(key).or_default();
        queue.push_back(Idle {
            sender: connection.sender,
            served: connection.served,
            since: Instant::now(),
        });
        while queue.len() > settings.connections as usize {
            queue.pop_front();
        }
    });
}

/// A connection lent to one request: back in the cache when dropped, which
/// the response body does once the answer was relayed (or abandoned: then
/// hyper closes the connection and [`take`] drops it).
pub struct Lease {
    key: PoolKey,
    connection: Option<Pooled>,
    settings: Keepalive,
}

impl Lease {
    pub fn new(key: PoolKey, connection: Pooled, settings: Keepalive) -> Lease {
        Lease {
            key,
            connection: Some(connection),
            settings,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            put(self.key.clone(), connection, &self.settings);
        }
    }
}
