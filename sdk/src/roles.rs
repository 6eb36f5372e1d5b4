//! The four roles a plugin can fill, one trait each, and what filters share
//! in their configuration.

use crate::{Action, Decision, Direction, Message, Peer, RequestHead};

/// Routing: decides which location handles each request.
pub trait Router: Sized + 'static {
    /// Builds the router from the routing table wasp sends: a
    /// [`RouterConfig`](crate::config::RouterConfig) as JSON (servers, their
    /// listen addresses and names, and their numbered locations). An error
    /// refuses the plugin with this message.
    fn configure(config: &str) -> Result<Self, String>;

    /// Decides what to do with a request. Called for every request and every
    /// WebSocket handshake, before anything is sent upstream.
    fn route(&mut self, head: &RequestHead) -> Decision;
}

/// Load balancing: picks the upstream peer for each proxied request.
pub trait Balancer: Sized + 'static {
    /// Builds the balancer from the upstreams wasp sends: a
    /// [`BalancerConfig`](crate::config::BalancerConfig) as JSON (each
    /// upstream's policy and servers).
    fn configure(config: &str) -> Result<Self, String>;

    /// Returns the index in `peers` of the peer that gets this request, or
    /// `None` to answer 502. `cursor` counts the picks made for this upstream
    /// so far; wasp keeps it across plugin reloads. `hash_key` is the
    /// upstream's key template expanded for this request.
    fn pick(
        &mut self,
        head: &RequestHead,
        upstream: &str,
        peers: &[Peer],
        cursor: u64,
        hash_key: &str,
    ) -> Option<u32>;
}

/// Origin validation: accepts or refuses WebSocket handshakes.
pub trait Origin: Sized + 'static {
    /// Builds the checker from each location's origin policy: an
    /// [`OriginConfig`](crate::config::OriginConfig) as JSON.
    fn configure(config: &str) -> Result<Self, String>;

    /// Accepts the handshake for `location`, or refuses it with a short
    /// reason: the client gets 403 and the reason is logged.
    fn check(&mut self, head: &RequestHead, location: u32) -> Result<(), String>;
}

/// Per-message WebSocket filtering, in both directions.
pub trait Filter: Sized + 'static {
    /// Builds the filter from its configuration: the location's `config`
    /// table for this filter as JSON (`{}` when absent).
    fn configure(config: &str) -> Result<Self, String>;

    /// A WebSocket `conn` opened on a location using this filter. Connection
    /// ids are unique for the life of the wasp process.
    fn on_open(&mut self, conn: u64, head: &RequestHead) {
        let _ = (conn, head);
    }

    /// A complete message travels in direction `dir` on `conn`: forward it,
    /// replace it, drop it or close the connection.
    fn on_message(&mut self, conn: u64, dir: Direction, msg: Message) -> Action;

    /// `conn` closed: forget what was kept for it.
    fn on_close(&mut self, conn: u64) {
        let _ = conn;
    }
}

/// Which messages a filter looks at, for a filter's configuration:
/// `"both"` (the default), `"client"` (client → upstream only) or
/// `"upstream"` (upstream → client only).
#[derive(serde::Deserialize, Clone, Copy, Default, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum Directions {
    /// Both ways.
    #[default]
    Both,
    /// Client → upstream only.
    Client,
    /// Upstream → client only.
    Upstream,
}

impl Directions {
    /// Whether a message travelling in `dir` is looked at.
    pub fn includes(self, dir: Direction) -> bool {
        match self {
            Directions::Both => true,
            Directions::Client => dir == Direction::ClientToUpstream,
            Directions::Upstream => dir == Direction::UpstreamToClient,
        }
    }
}
