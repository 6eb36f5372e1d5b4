//! Upstream groups: choosing a peer through the balancer plugin, connecting
//! with a timeout, passive and active health, and retrying the next peer on
//! connect errors. [`Attempts`] carries the peers tried over to the caller,
//! which may try the next one after a failed exchange (nginx's
//! `proxy_next_upstream error timeout`).

mod health;
mod peer;

pub use health::{HealthObserver, spawn_health_checks};
pub use peer::{PeerGuard, PeerState};

use crate::metrics::Metrics;
use crate::plugins::{BalancerPool, Peer, RequestHead};
use crate::vars::{RequestVars, Template};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Why no upstream connection could be made; maps to 502 or 504.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("upstream connect timed out ({0})")]
    Timeout(String),
    #[error("upstream connect to {0} failed: {1}")]
    Failed(String, std::io::Error),
    #[error("the balancer chose no peer")]
    NoPeer,
}

impl ConnectError {
    /// nginx answers 504 when the last attempt timed out, 502 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            ConnectError::Timeout(_) => 504,
            _ => 502,
        }
    }
}

/// The peers one request has tried, and how many connect attempts it made
/// (at most the upstream's `next_upstream_tries`).
pub struct Attempts {
    tried: Vec<bool>,
    made: usize,
}

/// An `[upstreams.NAME]` with its peers' live state.
pub struct UpstreamGroup {
    pub name: String,
    /// nginx's `$proxy_host`: the name, without a default `:80`.
    pub proxy_host: String,
    pub peers: Vec<Arc<PeerState>>,
    /// Attempts over distinct peers (`next_upstream_tries`).
    tries: usize,
    hash_key: Option<Template>,
    /// Picks made so far: the balancer's round-robin position.
    cursor: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
}

impl UpstreamGroup {
    pub fn new(
        name: &str,
        config: &crate::config::Upstream,
        peers: Vec<Arc<PeerState>>,
        cursor: Arc<AtomicU64>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let tries = match config.next_upstream_tries as usize {
            0 => peers.len(),
            n => n.min(peers.len()),
        };
        UpstreamGroup {
            metrics,
            name: name.to_string(),
            proxy_host: name.strip_suffix(":80").unwrap_or(name).to_string(),
            peers,
            tries: tries.max(1),
            hash_key: config.hash_key.as_deref().map(Template::from_config),
            cursor,
        }
    }

    /// A request's first attempt: no peer tried yet.
    pub fn attempts(&self) -> Attempts {
        Attempts {
            tried: vec![false; self.peers.len()],
            made: 0,
        }
    }

    /// Whether another peer may still be tried after `attempts`.
    pub fn may_retry(&self, attempts: &Attempts) -> bool {
        attempts.made < self.tries && attempts.tried.iter().any(|tried| !tried)
    }

    /// Picks a peer not tried yet and connects, moving on to another peer
    /// when a connect fails or times out.
    pub async fn connect(
        &self,
        head: &RequestHead,
        vars: &RequestVars<'_>,
        balancer: &BalancerPool,
        timeout: Duration,
        attempts: &mut Attempts,
    ) -> Result<(TcpStream, PeerGuard), ConnectError> {
        let mut last_error = ConnectError::NoPeer;
        while attempts.made < self.tries {
            let Some(index) = self.pick(head, vars, balancer, &attempts.tried) else {
                break;
            };
            if attempts.tried[index] {
                break;
            }
            attempts.tried[index] = true;
            let peer = &self.peers[index];
            // A balancer falling back to every peer when none is usable may
            // name one marked `down`, which nginx never uses: pick again.
            if peer.down {
                continue;
            }
            attempts.made += 1;
            match connect_peer(peer, timeout).await {
                Ok(stream) => {
                    peer.record_success();
                    return Ok((stream, PeerGuard::new(peer.clone())));
                }
                Err(error) => {
                    self.failed(peer);
                    tracing::warn!(upstream = %self.name, peer = %peer.address, %error, "upstream connect failed");
                    last_error = error;
                }
            }
        }
        Err(last_error)
    }

    /// Counts a failure of `peer` (passive health: `max_fails` within
    /// `fail_timeout` take it out for `fail_timeout`).
    pub fn failed(&self, peer: &PeerState) {
        self.metrics.upstream_failure(&self.name, &peer.address);
        if peer.record_failure(Instant::now()) {
            tracing::warn!(upstream = %self.name, peer = %peer.address, "peer marked unavailable for {:?} after failures", peer.fail_timeout);
        }
    }

    /// The balancer's choice among the peers; a single peer needs no choice.
    fn pick(
        &self,
        head: &RequestHead,
        vars: &RequestVars<'_>,
        balancer: &BalancerPool,
        tried: &[bool],
    ) -> Option<usize> {
        let cursor = self.cursor.fetch_add(1, Ordering::Relaxed);
        if self.peers.len() == 1 {
            return Some(0);
        }
        let now = Instant::now();
        let peers: Vec<Peer> = self
            .peers
            .iter()
            .zip(tried)
            .map(|(peer, &tried)| Peer {
                address: peer.address.clone(),
                weight: peer.weight,
                active: peer.active(),
                usable: !tried && peer.available(now),
                backup: peer.backup,
            })
            .collect();
        let hash_key = self
            .hash_key
            .as_ref()
            .map(|t| t.expand(vars))
            .unwrap_or_default();
        match balancer.pick(head, &self.name, &peers, cursor, &hash_key) {
            Ok(choice) => choice.map(|i| i as usize).filter(|&i| i < peers.len()),
            // Fail open: a broken balancer must not take the upstream down.
            Err(error) => {
                tracing::warn!(upstream = %self.name, %error, "balancer plugin failed; picking round-robin");
                let usable: Vec<usize> = (0..peers.len()).filter(|&i| peers[i].usable).collect();
                (!usable.is_empty()).then(|| usable[cursor as usize % usable.len()])
            }
        }
    }
}

async fn connect_peer(peer: &PeerState, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let mut last = None;
    for addr in &peer.addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(error)) => last = Some(ConnectError::Failed(peer.address.clone(), error)),
            Err(_) => last = Some(ConnectError::Timeout(peer.address.clone())),
        }
    }
    Err(last.unwrap_or_else(|| {
        ConnectError::Failed(
            peer.address.clone(),
            std::io::Error::other("address did not resolve"),
        )
    }))
}

/// Resolves `host:port` once (blocking: call at load time).
pub fn resolve(address: &str) -> std::io::Result<Vec<SocketAddr>> {
    use std::net::ToSocketAddrs;
    Ok(address.to_socket_addrs()?.collect())
}
