//! The four roles a plugin can fill, one trait each, and what filters share
//! in their configuration.

use crate::{Action, CloseFrame, Decision, Direction, Message, Peer, RequestHead};

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
///
/// One instance of a filter serves many WebSockets at once: every
/// connection of a wasp worker thread on the locations that use this filter
/// with this configuration. The filter value (`&mut self`) holds what they
/// share: the configuration, compiled patterns, scratch space. What belongs
/// to one connection is its [`Connection`](Filter::Connection):
/// [`on_open`](Filter::on_open) creates it, every
/// [`on_message`](Filter::on_message) of that connection borrows it and
/// [`on_close`](Filter::on_close) gets it back. [`export!`](crate::export!)
/// keeps them by connection id, so a filter never sees the id again after
/// `on_open` (keep it in the state if it matters).
///
/// In-plugin state lasts as long as its instance. An instance that fails
/// (a trap, a panic, an overrun deadline, memory exhausted) is replaced, and
/// a reload replaces every instance with the new version's; either way each
/// connection gets `on_open` on its new instance before its next message, so
/// its state starts again from scratch. Only the connection whose message
/// broke the instance is closed (with `fail = "open"`, that message passes
/// unchanged instead). Keep what must survive in [`host`](crate::host)'s
/// key/value store or counters.
///
/// A filter keeping a count of each connection's messages:
///
/// ```
/// use wasp_sdk::{Action, Direction, Filter, Message, RequestHead};
///
/// struct Numbered;
///
/// impl Filter for Numbered {
///     /// Messages seen on the connection.
///     type Connection = u64;
///
///     fn configure(_config: &str) -> Result<Self, String> {
///         Ok(Numbered)
///     }
///     fn on_open(&mut self, _conn: u64, _head: &RequestHead) -> u64 {
///         0
///     }
///     fn on_message(&mut self, seen: &mut u64, _dir: Direction, msg: Message) -> Action {
///         *seen += 1;
///         match msg {
///             Message::Text(text) => Action::Replace(Message::Text(format!("{seen}: {text}"))),
///             Message::Binary(_) => Action::Forward,
///         }
///     }
/// }
/// ```
///
/// # Speaking
///
/// A filter may also send messages of its own, to either peer of the
/// connection a call is for ([`host::send`](crate::host::send)), from
/// `on_open`, `on_message` and `on_timer`, and ask for
/// [`on_timer`](Filter::on_timer) later ([`host::set_timer`](crate::host::set_timer)):
/// one timer per connection and filter. Since the instance is shared,
/// these always act on the connection whose call is running.
///
/// A filter that keeps nothing per connection says so in two lines:
/// `type Connection = ();` and `fn on_open(&mut self, _: u64, _: &RequestHead) {}`.
pub trait Filter: Sized + 'static {
    /// What the filter keeps for one connection, `()` for nothing.
    type Connection;

    /// Builds the filter from its configuration: the location's `config`
    /// table for this filter as JSON (`{}` when absent).
    fn configure(config: &str) -> Result<Self, String>;

    /// The WebSocket `conn` opened on a location using this filter, or
    /// moved to this instance (after a failure or a reload): returns the
    /// connection's state. `head` is its handshake request. Connection ids
    /// are unique for the life of the wasp process.
    fn on_open(&mut self, conn: u64, head: &RequestHead) -> Self::Connection;

    /// A complete message travels in direction `dir` on the connection
    /// whose state is `connection`: forward it, replace it, drop it or
    /// close the connection.
    ///
    /// Messages that arrived together reach the instance in one call
    /// (`on-messages` in the contract); [`export!`](crate::export!) runs
    /// this for each in turn, stops after one that closes, and tells wasp
    /// which [`send`](crate::host::send)s each made, so that they leave
    /// right after their message. Nothing changes for the filter.
    ///
    /// wasp opens a connection on an instance before its first message
    /// there. Should a message come for a connection this instance never
    /// opened, the filter is not called: [`export!`](crate::export!) logs a
    /// warning and closes that connection with 1011, as a failed filter
    /// would be, rather than let the message through unfiltered.
    fn on_message(
        &mut self,
        connection: &mut Self::Connection,
        dir: Direction,
        msg: Message,
    ) -> Action;

    /// The connection closed: its state is handed back for a last word (a
    /// counter, a log line) and then dropped. Not called when the instance
    /// itself goes away first.
    fn on_close(&mut self, connection: Self::Connection) {
        let _ = connection;
    }

    /// The timer this filter set for the connection whose state is
    /// `connection` ([`host::set_timer`](crate::host::set_timer)) is due.
    /// The filter may [`send`](crate::host::send) and set the timer again
    /// (a timer fires once); `Some` closes the connection with that frame
    /// (both peers get it). A filter that never sets a timer is never
    /// called here.
    ///
    /// A heartbeat, testable natively with the clock under the test's
    /// control ([`testing::TestFilter::advance`](crate::testing)), is
    /// `examples/heartbeat` in wasp's repository.
    fn on_timer(&mut self, connection: &mut Self::Connection) -> Option<CloseFrame> {
        let _ = connection;
        None
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
