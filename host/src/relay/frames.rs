//! The frame relay: a WebSocket on a location with `filters = [...]` is
//! relayed message by message, each message through the location's filter
//! chain, instead of through the raw tunnel.
//!
//! Both legs speak WebSocket through tokio-tungstenite: the client leg as the
//! server, the upstream leg as the client. Fragments are reassembled, so a
//! filter always sees one whole message; text is validated as UTF-8 first.
//! The chain runs in its configured order in both directions, inline on the
//! task (filter calls are synchronous and short). A filter's action decides
//! what the other peer gets: `forward` it, `replace` it (the next filter sees
//! the replacement), `drop` it, or `close` the connection, where both peers
//! get the filter's close frame. `Drop` and `Close` stop the chain.
//!
//! Close codes sent by the relay (the same frame goes to both peers):
//! - a peer's close: relayed to the other peer with its code and reason
//!   (tungstenite answers the closing peer at once);
//! - 1007 invalid UTF-8 in a text message, 1009 a message or frame over
//!   `max_message_size`, 1002 any other protocol error (unmasked client
//!   frame, bad fragmentation, reserved bits...);
//! - 1011 `filter <name> failed` when a fail-closed filter fails;
//! - 1001 `server shutting down` on shutdown, 1001 `idle timeout` when no
//!   frame (pings included, so keepalives work) went either way for
//!   `idle_timeout`: from each peer's point of view the proxy goes away;
//! - 1001 `<peer> went away` to one peer when the other vanished without a
//!   close frame.
//!
//! A filter's close code that may not be sent on the wire (e.g. 1005) is
//! replaced by 1008; reasons are cut to the 123 bytes a close frame holds.
//! `RelayStats::close_code` is the code that ended the connection, with the
//! RFC 6455 reporting codes 1005 (a close without a code) and 1006 (no close).
//!
//! Pings pass through to the other peer; tungstenite also answers each ping
//! at once, as an endpoint must, so the far peer's pong to a relayed ping is
//! swallowed and the pinger sees exactly one pong. Other pongs (heartbeats)
//! pass through. While `MAX_PINGS` relayed pings await their pong, further
//! pings are answered but not relayed (a burst of pings is not a heartbeat).
//!
//! Handshake: the relay starts after the proxy relayed the upgrade, so the
//! subprotocol negotiated by the peers passes through untouched. Extensions
//! cannot: tungstenite implements none (a compressed frame would be a 1002),
//! so the proxy removes `Sec-WebSocket-Extensions` from the upgrade request
//! of a filtered location.
//!
//! Backpressure: each direction reads its next message only once the previous
//! one was handed to the other peer's write buffer, and that buffer is written
//! out whenever it passes `WRITE_BUFFER_SIZE` and flushed as soon as no further
//! message is already waiting, so messages that arrived together leave in one
//! write (one system call for a burst, not one per message) and a slow reader
//! stops the relay reading from the writer, whose TCP window then fills.
//! Memory per connection is two read buffers, two write buffers (at most
//! `WRITE_BUFFER_SIZE` plus one message each) and the filters' instances.
//!
//! Filters and reloads: the connection owns one dedicated instance per filter
//! (a trap affects this connection only), opened with `on-open` before
//! relaying starts. A failed instance is dropped; a fail-closed filter closes
//! the connection with 1011, a fail-open one lets the message through as it
//! got it and is given a new instance (with `on-open`) at the next message;
//! if no instance can be made, a fail-open filter is skipped until it is
//! reloaded. When a filter's pool is swapped (plugin reloaded), the connection
//! moves to the new version at its next message: the old instance gets
//! `on-close`, a new one `on-open`, then the message. Every live instance
//! gets `on-close` when relaying ends.

use crate::clock;
use crate::metrics::{Dir, LocationCounters};
use crate::plugins::{
    Action, CloseFrame, Direction, FilterInstance, FilterPool, Message, RequestHead,
};
use crate::shutdown::Shutdown;
use arc_swap::ArcSwap;
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Error as WsError, Message as WsMessage};

/// One filter of a location's chain: the pool currently serving it (swapped on reload) and its failure policy.
#[derive(Clone)]
pub struct FilterSlot {
    pub name: Arc<str>,
    pub pool: Arc<ArcSwap<FilterPool>>,
    /// On failure, forward the message unchanged instead of closing with 1011.
    pub fail_open: bool,
}

/// A location's settings for its frame relays.
#[derive(Clone)]
pub struct FrameRelayConfig {
    /// Largest message (and frame) accepted from either peer; larger is a 1009.
    pub max_message_size: usize,
    /// Close both peers with 1001 after this long without a frame either way.
    pub idle_timeout: Duration,
    /// Counts messages and bytes per direction as they pass.
    pub traffic: LocationCounters,
}

/// What went through one connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Data messages read from each peer (before filters): index 0 = client→upstream, 1 = upstream→client.
    pub messages: [u64; 2],
    /// Payload bytes of those messages.
    pub bytes: [u64; 2],
    /// The code that ended the connection (1005: a close without a code; 1006: no close frame).
    pub close_code: Option<u16>,
}

/// Read buffer per leg, allocated up front: small enough for many idle
/// connections, large enough to read a typical message in one call.
const READ_BUFFER_SIZE: usize = 8 << 10;

/// Batched messages written out once their encoding passes this size.
const WRITE_BUFFER_SIZE: usize = 16 << 10;

/// How long the close handshakes may take once relaying has stopped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Relayed pings remembered per peer while their pong is awaited.
const MAX_PINGS: usize = 8;

/// Longest close reason a close frame can carry (125 bytes minus the code).
const MAX_REASON: usize = 123;

/// Relays WebSocket messages between an upgraded client connection and upstream connection through the chain.
/// `client_prefix`/`upstream_prefix`: bytes already read past the HTTP head on each side (hyper's upgrade read_buf).
#[allow(clippy::too_many_arguments)] // the connection's parts, as the proxy holds them
pub async fn run<C, U>(
    client: C,
    client_prefix: Bytes,
    upstream: U,
    upstream_prefix: Bytes,
    conn_id: u64,
    head: RequestHead,
    chain: &[FilterSlot],
    config: FrameRelayConfig,
    mut shutdown: Shutdown,
) -> RelayStats
where
    C: AsyncRead + AsyncWrite + Unpin + Send,
    U: AsyncRead + AsyncWrite + Unpin + Send,
{
    let ws_config = websocket_config(&config);
    let client = WebSocketStream::from_partially_read(
        client,
        client_prefix.to_vec(),
        Role::Server,
        Some(ws_config),
    )
    .await;
    let upstream = WebSocketStream::from_partially_read(
        upstream,
        upstream_prefix.to_vec(),
        Role::Client,
        Some(ws_config),
    )
    .await;
    let (mut client_tx, mut client_rx) = client.split();
    let (mut upstream_tx, mut upstream_rx) = upstream.split();

    // Both directions run in this one task, so the lock is never contended;
    // a Mutex rather than a RefCell keeps the future `Send`.
    let state = Mutex::new(State::new(conn_id, head, chain, config.traffic.clone()));
    let opened = state.lock().unwrap().open_filters();
    let end = match opened {
        Err(end) => end,
        Ok(()) => tokio::select! {
            end = pump(Side::Client, &mut client_rx, &mut upstream_tx, &state) => end,
            end = pump(Side::Upstream, &mut upstream_rx, &mut client_tx, &state) => end,
            () = shutdown.signalled() => End::Close(close_frame(1001, "server shutting down")),
            () = idle(&state, config.idle_timeout) => End::Close(close_frame(1001, "idle timeout")),
        },
    };
    let mut state = state.into_inner().unwrap();
    state.close_filters();
    tracing::debug!(conn = conn_id, end = %end, "frame relay finished");
    state.stats.close_code = Some(end.code());

    let (to_client, to_upstream) = end.farewells();
    let _ = tokio::time::timeout(
        CLOSE_TIMEOUT,
        futures_util::future::join(
            farewell(&mut client_tx, &mut client_rx, to_client),
            farewell(&mut upstream_tx, &mut upstream_rx, to_upstream),
        ),
    )
    .await;
    state.stats
}

fn websocket_config(config: &FrameRelayConfig) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_SIZE)
        // The buffer is written out past WRITE_BUFFER_SIZE, and `pump` waits
        // for that before it reads on, so it never holds more than that plus
        // one message: no cap is needed (one would only refuse a filter's
        // large replacement).
        .write_buffer_size(WRITE_BUFFER_SIZE)
        .max_write_buffer_size(usize::MAX)
        .max_message_size(Some(config.max_message_size))
        .max_frame_size(Some(config.max_message_size))
}

/// A peer of the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Upstream,
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::Client => Side::Upstream,
            Side::Upstream => Side::Client,
        }
    }

    /// Index into per-direction arrays: that of the messages this side sends.
    fn index(self) -> usize {
        self as usize
    }

    /// The metrics direction of the messages this side sends.
    fn dir(self) -> Dir {
        match self {
            Side::Client => Dir::ClientToUpstream,
            Side::Upstream => Dir::UpstreamToClient,
        }
    }

    /// The direction of the messages this side sends.
    fn direction(self) -> Direction {
        match self {
            Side::Client => Direction::ClientToUpstream,
            Side::Upstream => Direction::UpstreamToClient,
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Client => "client",
            Side::Upstream => "upstream",
        })
    }
}

/// Why relaying stopped.
#[derive(Debug)]
enum End {
    /// `by` sent this close frame, already answered by tungstenite: relay it.
    Closed {
        by: Side,
        frame: Option<tungstenite::protocol::CloseFrame>,
    },
    /// This peer vanished without a close frame.
    Gone(Side),
    /// The relay closes the connection: both peers get this frame.
    Close(tungstenite::protocol::CloseFrame),
}

impl End {
    fn code(&self) -> u16 {
        match self {
            End::Closed { frame, .. } => frame.as_ref().map_or(1005, |f| f.code.into()),
            End::Gone(_) => 1006,
            End::Close(frame) => frame.code.into(),
        }
    }

    /// What the client leg and the upstream leg still need.
    fn farewells(self) -> (Farewell, Farewell) {
        let (client, upstream) = match self {
            End::Closed { by, frame } => {
                let leg = |side| {
                    if side == by {
                        Farewell::Drain
                    } else {
                        Farewell::Send(frame.clone())
                    }
                };
                (leg(Side::Client), leg(Side::Upstream))
            }
            End::Gone(side) => {
                let frame = close_frame(1001, &format!("{side} went away"));
                let leg = |s| {
                    if s == side {
                        Farewell::Nothing
                    } else {
                        Farewell::Send(Some(frame.clone()))
                    }
                };
                (leg(Side::Client), leg(Side::Upstream))
            }
            End::Close(frame) => (
                Farewell::Send(Some(frame.clone())),
                Farewell::Send(Some(frame)),
            ),
        };
        (client, upstream)
    }
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Closed { by, .. } => write!(f, "{by} closed with {}", self.code()),
            End::Gone(side) => write!(f, "{side} went away"),
            End::Close(frame) => write!(f, "closed with {} {}", frame.code, frame.reason),
        }
    }
}

/// What a leg still needs once relaying has stopped.
enum Farewell {
    /// A close frame to send, then the peer's answer to read.
    Send(Option<tungstenite::protocol::CloseFrame>),
    /// The peer closed: flush tungstenite's answer and read to the end.
    Drain,
    /// The peer is gone.
    Nothing,
}

/// Ends a leg's close handshake.
async fn farewell<S: AsyncRead + AsyncWrite + Unpin>(
    tx: &mut SplitSink<WebSocketStream<S>, WsMessage>,
    rx: &mut SplitStream<WebSocketStream<S>>,
    farewell: Farewell,
) {
    match farewell {
        Farewell::Nothing => return,
        Farewell::Send(frame) => {
            if tx.send(WsMessage::Close(frame)).await.is_err() {
                return;
            }
        }
        Farewell::Drain => {}
    }
    // Reading drives the handshake: it flushes the answer to a peer's close,
    // and ends once the peer answered ours (and, upstream, closed the socket).
    while let Some(Ok(_)) = rx.next().await {}
}

/// Relays the messages `from` sends until the connection ends.
async fn pump<R, W>(
    from: Side,
    rx: &mut SplitStream<WebSocketStream<R>>,
    tx: &mut SplitSink<WebSocketStream<W>, WsMessage>,
    state: &Mutex<State<'_>>,
) -> End
where
    R: AsyncRead + AsyncWrite + Unpin,
    W: AsyncRead + AsyncWrite + Unpin,
{
    let mut unflushed = false;
    loop {
        // A message already read (or readable at once) joins the batch; only
        // when the peer has nothing more to give is the batch flushed.
        let next = match rx.next().now_or_never() {
            Some(next) => next,
            None => {
                if unflushed {
                    if tx.flush().await.is_err() {
                        return End::Gone(from.other());
                    }
                    unflushed = false;
                }
                rx.next().await
            }
        };
        let message = match next {
            Some(Ok(message)) => message,
            Some(Err(error)) => return failure(from, error),
            None => return End::Gone(from),
        };
        let step = state.lock().unwrap().inbound(from, message);
        match step {
            Step::Send(message) => {
                if tx.feed(message).await.is_err() {
                    return End::Gone(from.other());
                }
                unflushed = true;
            }
            Step::Skip => {}
            Step::End(end) => return end,
        }
    }
}

/// Maps a read error of `side` to the close the relay sends.
fn failure(side: Side, error: WsError) -> End {
    tracing::debug!(%side, %error, "websocket read failed");
    let (code, reason) = match error {
        WsError::Utf8(_) => (1007, "invalid UTF-8 from"),
        WsError::Capacity(_) => (1009, "message too big from"),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) | WsError::Io(_) => {
            return End::Gone(side);
        }
        WsError::Protocol(_) => (1002, "protocol error from"),
        _ => (1011, "relay error reading"),
    };
    End::Close(close_frame(code, &format!("{reason} {side}")))
}

/// Returns once no frame was read from either peer for `timeout`.
async fn idle(state: &Mutex<State<'_>>, timeout: Duration) {
    loop {
        let quiet = clock::since(state.lock().unwrap().last_active);
        if quiet >= timeout {
            return;
        }
        let Some(deadline) = Instant::now().checked_add(timeout - quiet) else {
            return std::future::pending().await;
        };
        tokio::time::sleep_until(deadline).await;
    }
}

/// What to do with a frame just read.
enum Step {
    Send(WsMessage),
    Skip,
    End(End),
}

/// The connection's state shared by both directions.
struct State<'a> {
    conn: u64,
    head: RequestHead,
    links: Vec<Link<'a>>,
    /// Payloads of the pings relayed to each peer whose pong is awaited.
    pings: [VecDeque<Bytes>; 2],
    /// When a frame was last read, by [`clock::coarse_millis`].
    last_active: u64,
    stats: RelayStats,
    traffic: LocationCounters,
}

impl<'a> State<'a> {
    fn new(
        conn: u64,
        head: RequestHead,
        chain: &'a [FilterSlot],
        traffic: LocationCounters,
    ) -> Self {
        State {
            conn,
            head,
            links: chain.iter().map(Link::new).collect(),
            pings: Default::default(),
            last_active: clock::coarse_millis(),
            stats: RelayStats::default(),
            traffic,
        }
    }

    /// Gives every filter its instance and `on-open`; a fail-closed filter
    /// that cannot start refuses the connection.
    fn open_filters(&mut self) -> Result<(), End> {
        for link in &mut self.links {
            if !link.open(self.conn, &self.head) && !link.slot.fail_open {
                return Err(filter_close(&filter_failed(self.conn, link.slot)));
            }
        }
        Ok(())
    }

    fn close_filters(&mut self) {
        for link in &mut self.links {
            link.close(self.conn);
        }
    }

    fn inbound(&mut self, from: Side, message: WsMessage) -> Step {
        self.last_active = clock::coarse_millis();
        let input = match &message {
            WsMessage::Text(text) => Message::Text(text.as_str().to_owned()),
            WsMessage::Binary(data) => Message::Binary(data.to_vec()),
            WsMessage::Ping(payload) => {
                // Tungstenite answered it. Relaying it while MAX_PINGS are
                // awaited would either forget one, whose pong would then
                // reach the pinger as a second one, or grow without bound.
                let relayed = &mut self.pings[from.other().index()];
                if relayed.len() == MAX_PINGS {
                    return Step::Skip;
                }
                relayed.push_back(payload.clone());
                return Step::Send(message);
            }
            WsMessage::Pong(payload) => {
                // A pong answering a relayed ping was already given by tungstenite.
                let relayed = &mut self.pings[from.index()];
                return match relayed.iter().position(|p| p == payload) {
                    Some(answered) => {
                        relayed.drain(..=answered);
                        Step::Skip
                    }
                    None => Step::Send(message),
                };
            }
            WsMessage::Close(frame) => {
                return Step::End(End::Closed {
                    by: from,
                    frame: frame.clone(),
                });
            }
            // Reads never yield raw frames.
            WsMessage::Frame(_) => return Step::Skip,
        };
        self.stats.messages[from.index()] += 1;
        self.stats.bytes[from.index()] += message.len() as u64;
        self.traffic.message(from.dir(), message.len());
        match self.filter(from.direction(), input) {
            Action::Forward => Step::Send(message),
            Action::Replace(Message::Text(text)) => Step::Send(WsMessage::text(text)),
            Action::Replace(Message::Binary(data)) => Step::Send(WsMessage::binary(data)),
            Action::Drop => Step::Skip,
            Action::Close(frame) => Step::End(filter_close(&frame)),
        }
    }

    /// Runs the chain on a message; `Replace` carries the final message.
    fn filter(&mut self, dir: Direction, mut message: Message) -> Action {
        let mut replaced = false;
        for link in &mut self.links {
            match link.on_message(self.conn, &self.head, dir, &message) {
                Some(Action::Forward) => {}
                Some(Action::Replace(replacement)) => {
                    message = replacement;
                    replaced = true;
                }
                Some(stop @ (Action::Drop | Action::Close(_))) => return stop,
                None if link.slot.fail_open => {
                    tracing::warn!(
                        conn = self.conn,
                        filter = &*link.slot.name,
                        "filter failed (fail-open): message forwarded unchanged"
                    );
                }
                None => return Action::Close(filter_failed(self.conn, link.slot)),
            }
        }
        if replaced {
            Action::Replace(message)
        } else {
            Action::Forward
        }
    }
}

/// The close of a fail-closed filter that failed.
fn filter_failed(conn: u64, slot: &FilterSlot) -> CloseFrame {
    tracing::warn!(
        conn,
        filter = &*slot.name,
        "filter failed (fail-closed): closing with 1011"
    );
    CloseFrame {
        code: 1011,
        reason: format!("filter {} failed", slot.name),
    }
}

/// The close a filter asked for, as sent: a code that may not be sent on the
/// wire becomes 1008 (policy violation).
fn filter_close(frame: &CloseFrame) -> End {
    let code = if CloseCode::from(frame.code).is_allowed() {
        frame.code
    } else {
        1008
    };
    End::Close(close_frame(code, &frame.reason))
}

/// One filter of the chain, for one connection.
struct Link<'a> {
    slot: &'a FilterSlot,
    /// The pool `instance` comes from; the slot holding another one means a reload.
    pool: Arc<FilterPool>,
    instance: Instance,
}

enum Instance {
    Live(FilterInstance),
    /// A new instance is made (and opened) before the next message.
    ToMake,
    /// None could be made: the filter is skipped until it is reloaded.
    Unavailable,
}

impl<'a> Link<'a> {
    fn new(slot: &'a FilterSlot) -> Self {
        Link {
            slot,
            pool: slot.pool.load_full(),
            instance: Instance::ToMake,
        }
    }

    /// Makes a dedicated instance and opens the connection on it.
    fn open(&mut self, conn: u64, head: &RequestHead) -> bool {
        let made = self.pool.dedicated().ok().and_then(|mut instance| {
            instance.on_open(conn, head).ok()?;
            Some(instance)
        });
        self.instance = made.map_or(Instance::Unavailable, Instance::Live);
        matches!(self.instance, Instance::Live(_))
    }

    fn close(&mut self, conn: u64) {
        if let Instance::Live(mut instance) =
            std::mem::replace(&mut self.instance, Instance::ToMake)
        {
            // The instance is dropped either way: its failure changes nothing.
            let _ = instance.on_close(conn);
        }
    }

    /// The filter's action, or None when it failed or has no instance.
    fn on_message(
        &mut self,
        conn: u64,
        head: &RequestHead,
        dir: Direction,
        message: &Message,
    ) -> Option<Action> {
        let current = self.slot.pool.load();
        if !Arc::ptr_eq(&current, &self.pool) {
            self.close(conn);
            self.pool = arc_swap::Guard::into_inner(current);
        }
        if matches!(self.instance, Instance::ToMake) {
            self.open(conn, head);
        }
        let Instance::Live(instance) = &mut self.instance else {
            return None;
        };
        let action = instance.on_message(conn, dir, message).ok();
        if action.is_none() {
            self.instance = Instance::ToMake;
        }
        action
    }
}

/// A close frame with `code`, the reason cut to fit.
fn close_frame(code: u16, reason: &str) -> tungstenite::protocol::CloseFrame {
    let mut end = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    tungstenite::protocol::CloseFrame {
        code: code.into(),
        reason: reason[..end].to_owned().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_are_cut_on_a_char_boundary() {
        let frame = close_frame(1000, &"é".repeat(100));
        assert_eq!(frame.reason.len(), 122);
        assert_eq!(close_frame(1000, "short").reason.as_str(), "short");
    }

    #[test]
    fn a_filter_close_code_that_cannot_be_sent_becomes_1008() {
        let code = |code| match filter_close(&CloseFrame {
            code,
            reason: String::new(),
        }) {
            End::Close(frame) => u16::from(frame.code),
            other => panic!("unexpected {other}"),
        };
        assert_eq!(code(4000), 4000);
        assert_eq!(code(1009), 1009);
        for unsendable in [0, 999, 1005, 1006, 1015, 5000] {
            assert_eq!(code(unsendable), 1008);
        }
    }
}
