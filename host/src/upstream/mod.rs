//! Upstream groups: choosing a peer through the balancer plugin, connecting
//! (over TLS for `proxy_pass https://`) with a timeout, passive and active
//! health, and retrying the next peer on connect errors. [`Attempts`]
//! carries the peers tried over to the caller, which may try the next one
//! after a failed exchange (nginx's `proxy_next_upstream error timeout`).

mod health;
pub mod keepalive;
mod peer;

pub use health::{HealthObserver, spawn_health_checks};
pub use peer::{PeerGuard, PeerState};

use crate::metrics::Metrics;
use crate::plugins::{BalancerPool, Peer, RequestHead};
use crate::tls::UpstreamConnector;
use crate::vars::{RequestVars, Template};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

/// A connection to a peer: plain TCP, or TLS for `proxy_pass https://`.
/// One concrete type, so a WebSocket session can take it back from hyper
/// after the upgrade.
pub type UpstreamStream = Either<TcpStream, Box<TlsStream<TcpStream>>>;

/// A connection to the peer a request goes to.
pub enum Connection {
    /// Just made: the request opens an HTTP/1.1 connection on it.
    Fresh(UpstreamStream),
    /// An idle one from the keepalive cache.
    Idle(keepalive::Pooled),
}

/// Why no upstream connection could be made; maps to 502 or 504.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("upstream connect timed out ({0})")]
    Timeout(String),
    #[error("upstream connect to {0} failed: {1}")]
    Failed(String, std::io::Error),
    #[error("TLS handshake with upstream {0} failed: {1}")]
    Tls(String, std::io::Error),
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
    /// The same over https: without a default `:443`.
    pub tls_proxy_host: String,
    pub peers: Vec<Arc<PeerState>>,
    /// Attempts over distinct peers (`next_upstream_tries`).
    tries: usize,
    hash_key: Option<Template>,
    /// Picks made so far: the balancer's round-robin position.
    cursor: Arc<AtomicU64>,
    /// `keepalive`: idle connections cached for plain requests.
    pub keepalive: Option<crate::config::Keepalive>,
    metrics: Arc<Metrics>,
}

/// How [`UpstreamGroup::connect`] reaches a peer: within `timeout` (nginx's
/// `proxy_connect_timeout`, the TLS handshake with `tls` included), and with
/// `reuse` (a plain request, no WebSocket) from an idle connection of the
/// keepalive cache first.
#[derive(Clone, Copy)]
pub struct Dial<'a> {
    pub timeout: Duration,
    pub tls: Option<&'a UpstreamConnector>,
    pub reuse: bool,
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
            tls_proxy_host: name.strip_suffix(":443").unwrap_or(name).to_string(),
            peers,
            tries: tries.max(1),
            hash_key: config.hash_key.as_deref().map(Template::from_config),
            cursor,
            keepalive: config.keepalive.clone(),
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

    /// Picks a peer not tried yet and connects as `how` says, moving on to
    /// another peer when that fails or times out.
    pub async fn connect(
        &self,
        head: &RequestHead,
        vars: &RequestVars<'_>,
        balancer: &BalancerPool,
        how: Dial<'_>,
        attempts: &mut Attempts,
    ) -> Result<(Connection, PeerGuard), ConnectError> {
        let Dial {
            timeout,
            tls,
            reuse,
        } = how;
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
            if let Some(settings) = self.keepalive.as_ref().filter(|_| reuse)
                && let Some(idle) = keepalive::take(&self.pool_key(peer, tls), settings)
            {
                return Ok((Connection::Idle(idle), PeerGuard::new(peer.clone())));
            }
            match connect_peer(peer, timeout, tls).await {
                Ok(stream) => {
                    peer.record_success();
                    return Ok((Connection::Fresh(stream), PeerGuard::new(peer.clone())));
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

    /// Connects to `peer` again (an idle connection turned out closed
    /// before the request could be sent on it); no other peer is tried
    /// here. A failure is counted by the caller (`exchange`), which may
    /// then go on to the next peer.
    pub async fn reconnect(
        &self,
        peer: &PeerState,
        timeout: Duration,
        tls: Option<&UpstreamConnector>,
    ) -> Result<UpstreamStream, ConnectError> {
        connect_peer(peer, timeout, tls).await
    }

    /// Where idle connections to `peer` over `tls` are cached.
    pub fn pool_key(
        &self,
        peer: &PeerState,
        tls: Option<&UpstreamConnector>,
    ) -> keepalive::PoolKey {
        keepalive::PoolKey {
            upstream: self.name.clone(),
            peer: peer.address.clone(),
            tls: tls.map_or(0, |tls| std::ptr::from_ref(tls) as usize),
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

/// Connects to `peer` and, with `tls`, completes the handshake, both
/// within `timeout`.
async fn connect_peer(
    peer: &PeerState,
    timeout: Duration,
    tls: Option<&UpstreamConnector>,
) -> Result<UpstreamStream, ConnectError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let stream = connect_tcp(peer, deadline).await?;
    let Some(tls) = tls else {
        return Ok(Either::Left(stream));
    };
    match tokio::time::timeout_at(deadline, tls.handshake(stream)).await {
        Ok(Ok(stream)) => Ok(Either::Right(Box::new(stream))),
        Ok(Err(error)) => Err(ConnectError::Tls(peer.address.clone(), error)),
        Err(_) => Err(ConnectError::Timeout(peer.address.clone())),
    }
}

/// A TCP connection to the first of `peer`'s addresses that answers.
async fn connect_tcp(
    peer: &PeerState,
    deadline: tokio::time::Instant,
) -> Result<TcpStream, ConnectError> {
    let mut last = None;
    for addr in &peer.addrs {
        match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
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
