//! State that outlives a configuration: upstream peers (open connections,
//! failures), balancer cursors, and the swappable pool behind each filter.
//! A reload builds a new `Site` from these, so sticky balancing and open
//! WebSockets carry on across config and plugin reloads.

use crate::config::UpstreamServer;
use crate::plugins::FilterPool;
use crate::upstream::PeerState;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

type FilterKey = (String, String);
/// `(upstream, address)` → the settings a peer was made with, and the peer.
type Peers = HashMap<(String, String), (UpstreamServer, Arc<PeerState>)>;

#[derive(Default)]
pub struct Registry {
    peers: Mutex<Peers>,
    cursors: Mutex<HashMap<String, Arc<AtomicU64>>>,
    filters: Mutex<HashMap<FilterKey, Arc<ArcSwap<FilterPool>>>>,
}

impl Registry {
    /// The peer `server` of `upstream`: the same one as before while its
    /// settings are unchanged, so its connection count and failures persist.
    pub fn peer(
        &self,
        upstream: &str,
        server: &UpstreamServer,
        addrs: Vec<SocketAddr>,
    ) -> Arc<PeerState> {
        let mut peers = self.peers.lock().unwrap();
        let key = (upstream.to_string(), server.address.clone());
        match peers.get(&key) {
            Some((known, peer)) if known == server && peer.addrs == addrs => peer.clone(),
            _ => {
                let peer = Arc::new(PeerState::new(server, addrs));
                peers.insert(key, (server.clone(), peer.clone()));
                peer
            }
        }
    }

    /// The balancer's pick counter of `upstream`.
    pub fn cursor(&self, upstream: &str) -> Arc<AtomicU64> {
        self.cursors
            .lock()
            .unwrap()
            .entry(upstream.to_string())
            .or_default()
            .clone()
    }

    /// The slot of filter `plugin` with `config`: open connections read the
    /// pool from it at each message. A new slot starts with `pool`; an
    /// existing one keeps serving its current pool until [`Swap::apply`].
    pub fn filter_slot(
        &self,
        plugin: &str,
        config: &str,
        pool: Arc<FilterPool>,
    ) -> (Arc<ArcSwap<FilterPool>>, Option<Swap>) {
        let mut filters = self.filters.lock().unwrap();
        match filters.get(&(plugin.to_string(), config.to_string())) {
            Some(slot) => (
                slot.clone(),
                Some(Swap {
                    slot: slot.clone(),
                    pool,
                }),
            ),
            None => {
                let slot = Arc::new(ArcSwap::new(pool));
                filters.insert((plugin.to_string(), config.to_string()), slot.clone());
                (slot, None)
            }
        }
    }

    /// Forgets what the site in service no longer uses.
    pub fn retain(&self, upstreams: &[(String, String)], filters: &[FilterKey]) {
        self.peers
            .lock()
            .unwrap()
            .retain(|key, _| upstreams.contains(key));
        self.cursors
            .lock()
            .unwrap()
            .retain(|name, _| upstreams.iter().any(|(u, _)| u == name));
        self.filters
            .lock()
            .unwrap()
            .retain(|key, _| filters.contains(key));
    }
}

/// A filter pool waiting to replace the one in its slot once the whole new
/// site loaded: a reload that fails half-way must change nothing.
pub struct Swap {
    slot: Arc<ArcSwap<FilterPool>>,
    pool: Arc<FilterPool>,
}

impl Swap {
    pub fn apply(self) {
        self.slot.store(self.pool);
    }
}
