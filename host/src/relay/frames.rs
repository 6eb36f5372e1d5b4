//! The frame relay: a WebSocket on a location with `filters = [...]` is
//! relayed message by message, each message through an [`Inspector`] (the
//! location's filter chain), instead of through the raw tunnel.
//!
//! Both legs speak WebSocket through tokio-tungstenite: the client leg as the
//! server, the upstream leg as the client. Fragments are reassembled, so a
//! filter always sees one whole message; text is validated as UTF-8 first.
//! The inspector runs inline on the task (filter calls are synchronous and
//! short). Its verdict decides what the other peer gets: the message
//! unchanged, a replacement, nothing, or a close of the connection, where
//! both peers get the inspector's close frame.
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
//! An inspector's close code that may not be sent on the wire (e.g. 1005)
//! is replaced by 1008; reasons are cut to the 123 bytes a close frame holds.
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
//! Memory per connection is two read buffers (`buffer_size` each, allocated
//! when relaying starts: tungstenite never releases them), two write buffers
//! (at most `WRITE_BUFFER_SIZE` plus one message each) and the inspector's
//! state. The read buffer is also the most read per system call: measured,
//! 16 KiB messages cost 15–45 % more CPU with the 4 KiB default than with
//! 8 KiB, so locations relaying large messages should raise `buffer_size`.
//!
//! The relay knows nothing of plugins: it hands every data message to an
//! [`Inspector`] (the location's filter chain, `crate::filter_chain`) and
//! carries out its [`Verdict`].

use crate::clock;
use crate::direction::Direction;
use crate::metrics::LocationCounters;
use crate::shutdown::Shutdown;
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use std::collections::VecDeque;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Error as WsError, Message as WsMessage};

/// What the relay asks about every data message: the filter chain.
pub trait Inspector: Send {
    /// Called once before relaying starts; `Err` closes both peers with
    /// this frame.
    fn open(&mut self) -> Result<(), CloseFrame>;

    /// A text or binary message travelling `dir`.
    fn inspect(&mut self, dir: Direction, message: &WsMessage) -> Verdict;

    /// Relaying ended.
    fn close(&mut self);
}

/// What happens to a data message.
pub enum Verdict {
    /// The other peer gets it unchanged.
    Forward,
    /// The other peer gets this message instead.
    Replace(WsMessage),
    /// Nobody gets it.
    Drop,
    /// Both peers get this close frame and relaying stops.
    Close(CloseFrame),
}

/// A close frame as an inspector gives it: any code, any reason length.
pub struct CloseFrame {
    pub code: u16,
    pub reason: String,
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
    /// Bytes read from a peer at a time, allocated per leg when relaying
    /// starts (the location's `buffer_size`, as nginx's `proxy_buffer_size`
    /// sizes its buffers for upgraded connections).
    pub read_buffer: usize,
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

/// Batched messages written out once their encoding passes this size.
const WRITE_BUFFER_SIZE: usize = 16 << 10;

/// How long the close handshakes may take once relaying has stopped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Relayed pings remembered per peer while their pong is awaited.
const MAX_PINGS: usize = 8;

/// Longest close reason a close frame can carry (125 bytes minus the code).
const MAX_REASON: usize = 123;

/// Relays WebSocket messages between an upgraded client connection and upstream connection through `inspector`.
/// `client_prefix`/`upstream_prefix`: bytes already read past the HTTP head on each side (hyper's upgrade read_buf).
pub async fn run<C, U, I>(
    client: C,
    client_prefix: Bytes,
    upstream: U,
    upstream_prefix: Bytes,
    inspector: I,
    config: FrameRelayConfig,
    mut shutdown: Shutdown,
) -> RelayStats
where
    C: AsyncRead + AsyncWrite + Unpin + Send,
    U: AsyncRead + AsyncWrite + Unpin + Send,
    I: Inspector,
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
    let state = Mutex::new(State::new(inspector, config.traffic.clone()));
    let opened = state.lock().unwrap().inspector.open();
    let end = match opened {
        Err(frame) => sendable_close(&frame),
        Ok(()) => tokio::select! {
            end = pump(Direction::ClientToUpstream, &mut client_rx, &mut upstream_tx, &state) => end,
            end = pump(Direction::UpstreamToClient, &mut upstream_rx, &mut client_tx, &state) => end,
            () = shutdown.signalled() => End::Close(close_frame(1001, "server shutting down")),
            () = idle(&state, config.idle_timeout) => End::Close(close_frame(1001, "idle timeout")),
        },
    };
    let mut state = state.into_inner().unwrap();
    state.inspector.close();
    tracing::debug!(end = %end, "frame relay finished");
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
        .read_buffer_size(config.read_buffer)
        // The buffer is written out past WRITE_BUFFER_SIZE, and `pump` waits
        // for that before it reads on, so it never holds more than that plus
        // one message: no cap is needed (one would only refuse a filter's
        // large replacement).
        .write_buffer_size(WRITE_BUFFER_SIZE)
        .max_write_buffer_size(usize::MAX)
        .max_message_size(Some(config.max_message_size))
        .max_frame_size(Some(config.max_message_size))
}

/// A peer, named by the direction of the messages it sends.
const CLIENT: Direction = Direction::ClientToUpstream;
const UPSTREAM: Direction = Direction::UpstreamToClient;

/// Why relaying stopped.
#[derive(Debug)]
enum End {
    /// The sender of `by` sent this close frame, already answered by
    /// tungstenite: relay it.
    Closed {
        by: Direction,
        frame: Option<tungstenite::protocol::CloseFrame>,
    },
    /// The sender of this direction vanished without a close frame.
    Gone(Direction),
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
                (leg(CLIENT), leg(UPSTREAM))
            }
            End::Gone(side) => {
                let frame = close_frame(1001, &format!("{} went away", side.sender()));
                let leg = |s| {
                    if s == side {
                        Farewell::Nothing
                    } else {
                        Farewell::Send(Some(frame.clone()))
                    }
                };
                (leg(CLIENT), leg(UPSTREAM))
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
            End::Closed { by, .. } => write!(f, "{} closed with {}", by.sender(), self.code()),
            End::Gone(side) => write!(f, "{} went away", side.sender()),
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
    from: Direction,
    rx: &mut SplitStream<WebSocketStream<R>>,
    tx: &mut SplitSink<WebSocketStream<W>, WsMessage>,
    state: &Mutex<State<impl Inspector>>,
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
                        return End::Gone(from.reverse());
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
                    return End::Gone(from.reverse());
                }
                unflushed = true;
            }
            Step::Skip => {}
            Step::End(end) => return end,
        }
    }
}

/// Maps a read error of `side` to the close the relay sends.
fn failure(side: Direction, error: WsError) -> End {
    tracing::debug!(side = side.sender(), %error, "websocket read failed");
    let (code, reason) = match error {
        WsError::Utf8(_) => (1007, "invalid UTF-8 from"),
        WsError::Capacity(_) => (1009, "message too big from"),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) | WsError::Io(_) => {
            return End::Gone(side);
        }
        WsError::Protocol(_) => (1002, "protocol error from"),
        _ => (1011, "relay error reading"),
    };
    End::Close(close_frame(code, &format!("{reason} {}", side.sender())))
}

/// Returns once no frame was read from either peer for `timeout`.
async fn idle(state: &Mutex<State<impl Inspector>>, timeout: Duration) {
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
struct State<I> {
    inspector: I,
    /// Payloads of the pings relayed to each peer whose pong is awaited.
    pings: [VecDeque<Bytes>; 2],
    /// When a frame was last read, by [`clock::coarse_millis`].
    last_active: u64,
    stats: RelayStats,
    traffic: LocationCounters,
}

impl<I: Inspector> State<I> {
    fn new(inspector: I, traffic: LocationCounters) -> Self {
        State {
            inspector,
            pings: Default::default(),
            last_active: clock::coarse_millis(),
            stats: RelayStats::default(),
            traffic,
        }
    }

    fn inbound(&mut self, from: Direction, message: WsMessage) -> Step {
        self.last_active = clock::coarse_millis();
        match &message {
            WsMessage::Text(_) | WsMessage::Binary(_) => {}
            WsMessage::Ping(payload) => {
                // Tungstenite answered it. Relaying it while MAX_PINGS are
                // awaited would either forget one, whose pong would then
                // reach the pinger as a second one, or grow without bound.
                let relayed = &mut self.pings[from.reverse().index()];
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
        }
        self.stats.messages[from.index()] += 1;
        self.stats.bytes[from.index()] += message.len() as u64;
        self.traffic.message(from, message.len());
        match self.inspector.inspect(from, &message) {
            Verdict::Forward => Step::Send(message),
            Verdict::Replace(replacement) => Step::Send(replacement),
            Verdict::Drop => Step::Skip,
            Verdict::Close(frame) => Step::End(sendable_close(&frame)),
        }
    }
}

/// The close an inspector asked for, as sent: a code that may not be sent
/// on the wire becomes 1008 (policy violation).
fn sendable_close(frame: &CloseFrame) -> End {
    let code = if CloseCode::from(frame.code).is_allowed() {
        frame.code
    } else {
        1008
    };
    End::Close(close_frame(code, &frame.reason))
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
    fn an_inspector_close_code_that_cannot_be_sent_becomes_1008() {
        let code = |code| match sendable_close(&CloseFrame {
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
