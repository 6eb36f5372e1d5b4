//! The frame relay: a WebSocket on a location with `filters = [...]` is
//! relayed message by message, each message through an [`Inspector`] (the
//! location's filter chain), instead of through the raw tunnel.
//!
//! It reads frames as they arrive and sends on the very bytes it read: a
//! message every filter forwarded leaves with its original frames (mask,
//! fragmentation and all), so the common case costs a frame parse, an
//! unmasked copy for the filters and the filter calls, and no re-framing.
//! Fragments are reassembled, so a filter always sees one whole message;
//! text is validated as UTF-8 first. Pings and pongs pass straight through,
//! as through nginx: each ping is answered by the far peer, once.
//!
//! Written by hand on `poll_read`/`poll_write` rather than on
//! tokio-tungstenite because of memory and copies: a tungstenite stream owns
//! a read buffer and a write buffer for its whole life (25 KiB per filtered
//! connection was measured with them, against the tunnel's 4), re-frames
//! every message and zero-fills its buffer before each read. Here data is
//! read into one scratch buffer per worker thread and written straight from
//! another; a connection holds bytes only while a frame straddles two reads
//! or a peer does not take what it is sent (backpressure: that direction
//! then reads no more until the peer drained it). Frames that arrived
//! together leave in one write. Frame headers are tungstenite's
//! (`super::wire`).
//!
//! Close codes sent by the relay (the same frame goes to both peers):
//! - a peer's close: answered with the same code, and relayed to the other
//!   peer with its code and reason;
//! - 1007 invalid UTF-8 in a text message or close reason, 1009 a message or
//!   frame over `max_message_size`, 1002 any other protocol error (unmasked
//!   client frame, masked server frame, bad fragmentation, reserved bits or
//!   opcodes, bad close code...);
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
//! Every close goes after the whole frames already queued for that peer.
//!
//! Handshake: the relay starts after the proxy relayed the upgrade, so the
//! subprotocol negotiated by the peers passes through untouched. Extensions
//! cannot: the proxy negotiates permessage-deflate with each peer on its own
//! (`super::deflate`), or removes `Sec-WebSocket-Extensions`. A compressed
//! message is inflated before the inspector (1009 when it inflates past
//! `max_message_size`) and leaves as it came or deflated again for the other
//! peer (`deflate::Negotiated::forward`).
//!
//! The relay knows nothing of plugins: it hands every data message to an
//! [`Inspector`] (the location's filter chain, `crate::filter_chain`) and
//! carries out its [`Verdict`]. The whole messages of one read go to the
//! inspector together (a [`Batch`], up to [`MAX_BATCH`]), so that a filter
//! is called once for them rather than once each: in the echo benchmark a
//! read carries six to eight, and a call's fixed cost is most of a small
//! message's. An inspector may also send messages of its
//! own and ask to be woken up (`outbox`).

use super::deflate::Negotiated;
use super::wire::{self, Violation};
use crate::buffered::Held;
use crate::clock;
use crate::direction::Direction;
use crate::metrics::LocationCounters;
use crate::shutdown::Shutdown;
use bytes::Bytes;
pub use outbox::{Room, Sent};
use std::cell::RefCell;
use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};

/// What the relay asks about every data message: the filter chain.
pub trait Inspector: Send {
    /// Called once before relaying starts; `Err` closes both peers with
    /// this frame.
    fn open(&mut self) -> Result<(), CloseFrame>;

    /// The text and binary messages that arrived together travelling
    /// `dir`, in order: pushes a verdict for each onto `verdicts` (empty
    /// when called), stopping after a `Close`.
    fn inspect(&mut self, dir: Direction, messages: &[Payload<'_>], verdicts: &mut Vec<Verdict>);

    /// Relaying ended.
    fn close(&mut self);

    /// How much the inspector may send on its own in the calls that follow
    /// (asked before each `inspect` and `wake`); see `outbox`.
    fn allow_sends(&mut self, room: Room) {
        let _ = room;
    }

    /// What the inspector sent on its own since last asked, in order of
    /// [`Sent::after`].
    fn take_sent(&mut self) -> Vec<Sent> {
        Vec::new()
    }

    /// When the inspector wants [`wake`](Self::wake) called; none: never.
    fn wake_at(&self) -> Option<Instant> {
        None
    }

    /// `wake_at` passed; `Err` closes both peers with this frame.
    fn wake(&mut self) -> Result<(), CloseFrame> {
        Ok(())
    }
}

mod outbox;

/// A whole data message as a filter sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
}

/// What happens to a data message.
pub enum Verdict {
    /// The other peer gets it unchanged.
    Forward,
    /// The other peer gets this message instead.
    Replace(Replacement),
    /// Nobody gets it.
    Drop,
    /// Both peers get this close frame and relaying stops.
    Close(CloseFrame),
}

/// A message an inspector sends instead of the one it was given.
pub enum Replacement {
    Text(String),
    Binary(Vec<u8>),
}

/// A close frame as an inspector gives it: any code, any reason length.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// Close both peers with 1001 when one has not taken any of what it is
    /// owed for this long (nginx's `proxy_send_timeout` / `send_timeout` on
    /// upgraded connections: the time between two successful writes).
    pub send_timeout: Duration,
    /// Counts messages and bytes per direction as they pass.
    pub traffic: LocationCounters,
    /// The most read from a peer at a time (the location's `buffer_size`,
    /// as nginx's `proxy_buffer_size` sizes its reads for upgraded
    /// connections). Read into the thread's scratch buffer, not held.
    pub read_buffer: usize,
    /// permessage-deflate as each leg negotiated it.
    pub deflate: Negotiated,
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

/// How long the close handshakes may take once relaying has stopped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest close reason a close frame can carry (125 bytes minus the code).
const MAX_REASON: usize = 123;

/// The scratch buffers' read size cap (`read_buffer` is clamped to it).
const MAX_READ: usize = 64 << 10;

/// A scratch buffer that grew past this (a large message) is given back
/// after use rather than kept for the thread's life.
const KEEP_CAPACITY: usize = 256 << 10;

/// The most of an unfinished frame kept while waiting for a peer's close.
const MAX_DRAIN: usize = 1 << 20;

/// A peer, named by the direction of the messages it sends.
const CLIENT: Direction = Direction::ClientToUpstream;
const UPSTREAM: Direction = Direction::UpstreamToClient;

/// The most messages handed to the inspector at once: bounds what one
/// call may cost (its CPU budget grows with the messages it is handed).
const MAX_BATCH: usize = 16;

/// One worker thread's buffers, used by every relay on it in turn (no
/// relay holds them across an await).
struct Scratch {
    /// What was just read from a peer.
    read: Box<[u8]>,
    /// What goes to the other peer from this read.
    out: Vec<u8>,
    /// The whole messages of this read not yet inspected.
    batch: Batch,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        read: vec![0; MAX_READ].into_boxed_slice(),
        out: Vec::new(),
        batch: Batch::default(),
    });
}

/// Whole unfragmented data messages parsed from one buffer and not yet
/// inspected: they go to the inspector together (one filter call per
/// filter, not one per message), before anything else that buffer holds
/// is relayed, so their order with the frames around them is kept.
#[derive(Default)]
struct Batch {
    /// Their unmasked (and inflated) payloads, back to back.
    payloads: Vec<u8>,
    messages: Vec<Pending>,
}

/// A message of a [`Batch`].
struct Pending {
    text: bool,
    compressed: bool,
    /// Its payload in [`Batch::payloads`].
    payload: std::ops::Range<usize>,
    /// Its frame in the buffer being parsed.
    frame: std::ops::Range<usize>,
}

/// A whole data message ready for the inspector: its payload and the
/// frames it came in.
struct Arrived<'a> {
    text: bool,
    compressed: bool,
    payload: &'a [u8],
    frames: &'a [u8],
}

/// Relays WebSocket messages between an upgraded client connection and upstream connection through `inspector`.
/// `client_prefix`/`upstream_prefix`: bytes already read past the HTTP head on each side (hyper's upgrade read_buf).
pub async fn run<C, U, I>(
    mut client: C,
    client_prefix: Bytes,
    mut upstream: U,
    upstream_prefix: Bytes,
    inspector: I,
    config: FrameRelayConfig,
    shutdown: Shutdown,
) -> RelayStats
where
    C: AsyncRead + AsyncWrite + Unpin + Send,
    U: AsyncRead + AsyncWrite + Unpin + Send,
    I: Inspector,
{
    let mut relay = Relay {
        inspector,
        flows: Default::default(),
        max_message: config.max_message_size,
        chunk: config.read_buffer.clamp(1, MAX_READ),
        last_active: clock::coarse_millis(),
        send_timeout: config.send_timeout,
        stall_began: false,
        stats: RelayStats::default(),
        held: config.traffic.held(),
        traffic: config.traffic,
        deflate: config.deflate,
    };
    relay.inspector.allow_sends(relay.room(CLIENT, 0));
    let end = match relay.inspector.open() {
        Err(frame) => sendable_close(&frame),
        Ok(()) => {
            relay
                .relay(
                    &mut client,
                    client_prefix,
                    &mut upstream,
                    upstream_prefix,
                    config.idle_timeout,
                    shutdown,
                )
                .await
        }
    };
    relay.inspector.close();
    tracing::debug!(end = %end, "frame relay finished");
    relay.stats.close_code = Some(end.code());

    // What each peer was still owed, then its close.
    let [to_upstream, to_client] = relay.flows.map(|flow| flow.out);
    let (client_close, upstream_close) = end.farewells();
    let _ = tokio::time::timeout(
        CLOSE_TIMEOUT,
        futures_util::future::join(
            farewell(&mut client, CLIENT, to_client, client_close),
            farewell(&mut upstream, UPSTREAM, to_upstream, upstream_close),
        ),
    )
    .await;
    relay.stats
}

/// One direction of the relay: frames read from its sender, for the other peer.
#[derive(Default)]
struct Flow {
    /// Bytes read that do not make a whole frame yet.
    carry: Vec<u8>,
    /// The data message being reassembled from its fragments.
    fragments: Option<Fragments>,
    /// Bytes the other peer has not taken yet; nothing more is read from
    /// the sender until it took them.
    out: Vec<u8>,
    /// Written, but the sink (TLS) may still hold it: flush before reading on.
    unflushed: bool,
    /// While `out` is not empty: when the other peer last took some of it
    /// (or it began to wait), by [`clock::coarse_millis`].
    stalled: Option<u64>,
}

impl Flow {
    /// The bytes this direction holds: a slow peer's cost.
    fn buffered(&self) -> usize {
        let fragments = self
            .fragments
            .as_ref()
            .map_or(0, |f| f.payload.len() + f.frames.len());
        self.carry.len() + fragments + self.out.len()
    }

    /// `out` shrank or grew: restarts or ends the wait for the other peer.
    fn note_progress(&mut self) {
        self.stalled = (!self.out.is_empty()).then(clock::coarse_millis);
    }
}

/// A fragmented data message so far.
struct Fragments {
    text: bool,
    /// The first frame had RSV1: the payload is deflated.
    compressed: bool,
    /// Unmasked payload.
    payload: Vec<u8>,
    /// The frames as they came, sent on if every filter forwards the message.
    frames: Vec<u8>,
}

/// The connection's state, shared by both directions (one task drives both).
struct Relay<I> {
    inspector: I,
    /// Indexed by [`Direction::index`].
    flows: [Flow; 2],
    max_message: usize,
    /// The most read at a time.
    chunk: usize,
    /// When a frame was last read, by [`clock::coarse_millis`].
    last_active: u64,
    send_timeout: Duration,
    /// A peer began to hold bytes back: the timer may need to fire sooner.
    stall_began: bool,
    stats: RelayStats,
    traffic: LocationCounters,
    deflate: Negotiated,
    /// What `flows` hold, for wasp's accounting (`crate::buffered`).
    held: Held,
}

/// What one wake-up of the relay found.
enum Event {
    Moved,
    Timer,
    End(End),
}

impl<I: Inspector> Relay<I> {
    /// Relays until a close, an error, the idle timeout or shutdown. One
    /// hand-written poll serves both directions, the timer and the signal,
    /// as in the tunnel (`super::tunnel::run`): the timer and signal are
    /// made once and checked first on every event.
    async fn relay<C, U>(
        &mut self,
        client: &mut C,
        client_prefix: Bytes,
        upstream: &mut U,
        upstream_prefix: Bytes,
        idle: Duration,
        shutdown: Shutdown,
    ) -> End
    where
        C: AsyncRead + AsyncWrite + Unpin,
        U: AsyncRead + AsyncWrite + Unpin,
    {
        // Frames the peers sent with their handshakes.
        for (dir, prefix) in [(CLIENT, client_prefix), (UPSTREAM, upstream_prefix)] {
            let mut out = Vec::new();
            let result = self.consume(dir, &prefix, &mut out, &mut Batch::default());
            let flow = &mut self.flows[dir.index()];
            flow.out.append(&mut out);
            flow.note_progress();
            self.stall_began |= flow.stalled.is_some();
            self.held.set(self.flows.iter().map(Flow::buffered).sum());
            if let Err(end) = result {
                return end;
            }
        }
        // What the inspector sent from `open`.
        self.queue_sent(None);
        let mut timer = pin!(sleep_until(self.wake_before(Instant::now() + idle)));
        let mut signal = shutdown.clone();
        let mut signalled = pin!(signal.signalled());
        loop {
            let event = poll_fn(|cx| {
                if shutdown.is_signalled() {
                    return Poll::Ready(Event::End(shutting_down()));
                }
                if timer.is_elapsed() {
                    return Poll::Ready(Event::Timer);
                }
                let up = self.poll_flow(cx, CLIENT, client, upstream);
                let down = self.poll_flow(cx, UPSTREAM, upstream, client);
                if std::mem::take(&mut self.stall_began) {
                    let give_up = Instant::now() + self.send_timeout;
                    if timer.deadline() > give_up {
                        timer.as_mut().reset(give_up);
                    }
                }
                if let Some(wake) = self.inspector.wake_at()
                    && timer.deadline() > wake
                {
                    timer.as_mut().reset(wake);
                }
                match (up, down) {
                    (Poll::Ready(Err(end)), _) | (_, Poll::Ready(Err(end))) => {
                        return Poll::Ready(Event::End(end));
                    }
                    (Poll::Ready(Ok(())), _) | (_, Poll::Ready(Ok(()))) => {
                        return Poll::Ready(Event::Moved);
                    }
                    _ => {}
                }
                if signalled.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::End(shutting_down()));
                }
                timer.as_mut().poll(cx).map(|()| Event::Timer)
            })
            .await;
            match event {
                Event::Moved => self.held.set(self.flows.iter().map(Flow::buffered).sum()),
                Event::End(end) => return end,
                Event::Timer => {
                    if let Err(end) = self.wake_if_due() {
                        return end;
                    }
                    // Activity only stamps times; the timer is re-armed here.
                    let quiet = clock::since(self.last_active);
                    if quiet >= idle {
                        return End::Close(close_frame(1001, "idle timeout"));
                    }
                    let mut next = idle - quiet;
                    for dir in Direction::ALL {
                        let Some(since) = self.flows[dir.index()].stalled else {
                            continue;
                        };
                        let waited = clock::since(since);
                        if waited >= self.send_timeout {
                            let reason = format!("{} not reading", dir.reverse().sender());
                            return End::Close(close_frame(1001, &reason));
                        }
                        next = next.min(self.send_timeout - waited);
                    }
                    timer
                        .as_mut()
                        .reset(self.wake_before(Instant::now() + next));
                }
            }
        }
    }

    /// Moves what is ready in direction `dir` (from `source` to `sink`):
    /// first what `sink` has not taken yet, then one read. `Ready(Ok)` when
    /// something moved.
    fn poll_flow<S, K>(
        &mut self,
        cx: &mut Context<'_>,
        dir: Direction,
        source: &mut S,
        sink: &mut K,
    ) -> Poll<Result<(), End>>
    where
        S: AsyncRead + Unpin,
        K: AsyncWrite + Unpin,
    {
        let flow = &mut self.flows[dir.index()];
        if !flow.out.is_empty() {
            return match Pin::new(&mut *sink).poll_write(cx, &flow.out) {
                Poll::Ready(Ok(n)) if n > 0 => {
                    flow.out.drain(..n);
                    if flow.out.is_empty() {
                        // Held only while the peer is slow.
                        flow.out = Vec::new();
                    }
                    flow.note_progress();
                    flow.unflushed = true;
                    Poll::Ready(Ok(()))
                }
                Poll::Ready(_) => Poll::Ready(Err(End::Gone(dir.reverse()))),
                Poll::Pending => Poll::Pending,
            };
        }
        if flow.unflushed {
            match Pin::new(&mut *sink).poll_flush(cx) {
                Poll::Ready(Ok(())) => flow.unflushed = false,
                Poll::Ready(Err(_)) => return Poll::Ready(Err(End::Gone(dir.reverse()))),
                Poll::Pending => return Poll::Pending,
            }
        }
        SCRATCH.with(|scratch| {
            let scratch = &mut *scratch.borrow_mut();
            let mut buf = ReadBuf::new(&mut scratch.read[..self.chunk]);
            match Pin::new(source).poll_read(cx, &mut buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(error)) => {
                    tracing::debug!(side = dir.sender(), %error, "websocket read failed");
                    return Poll::Ready(Err(End::Gone(dir)));
                }
                Poll::Ready(Ok(())) => {}
            }
            let read = buf.filled().len();
            if read == 0 {
                return Poll::Ready(Err(End::Gone(dir)));
            }
            scratch.out.clear();
            let result = self.consume(
                dir,
                &scratch.read[..read],
                &mut scratch.out,
                &mut scratch.batch,
            );
            // Whole frames only, so whatever ends the relay goes after them.
            self.send(cx, dir, sink, &scratch.out);
            trim(&mut scratch.out);
            trim(&mut scratch.batch.payloads);
            Poll::Ready(result)
        })
    }

    /// Writes `out` to `sink` as far as it takes it; keeps the rest.
    fn send<K: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        dir: Direction,
        sink: &mut K,
        out: &[u8],
    ) {
        if out.is_empty() {
            return;
        }
        let flow = &mut self.flows[dir.index()];
        // A write error surfaces at the next write or read of that peer.
        let written = match Pin::new(&mut *sink).poll_write(cx, out) {
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(_)) | Poll::Pending => 0,
        };
        if written < out.len() {
            flow.out.extend_from_slice(&out[written..]);
            if flow.stalled.is_none() {
                flow.note_progress();
                self.stall_began = true;
            }
        }
        flow.unflushed = true;
    }

    /// Relays the frames of `read` (bytes from `dir`'s sender, after what
    /// was carried over), appending what the other peer gets to `out`.
    fn consume(
        &mut self,
        dir: Direction,
        read: &[u8],
        out: &mut Vec<u8>,
        batch: &mut Batch,
    ) -> Result<(), End> {
        let mut carry = std::mem::take(&mut self.flows[dir.index()].carry);
        let result = if carry.is_empty() {
            let (used, result) = self.frames(dir, read, out, batch);
            carry.extend_from_slice(&read[used..]);
            result
        } else {
            carry.extend_from_slice(read);
            let (used, result) = self.frames(dir, &carry, out, batch);
            carry.drain(..used);
            if carry.is_empty() {
                carry = Vec::new();
            }
            result
        };
        self.flows[dir.index()].carry = carry;
        result
    }

    /// Relays the whole frames at the start of `bytes`; how many bytes they
    /// took. The messages among them are inspected in batches.
    fn frames(
        &mut self,
        dir: Direction,
        bytes: &[u8],
        out: &mut Vec<u8>,
        batch: &mut Batch,
    ) -> (usize, Result<(), End>) {
        let mut used = 0;
        let parsed = loop {
            let rest = &bytes[used..];
            let rsv1 = self.deflate.compressed_from(dir);
            let frame = match wire::parse_rsv1(rest, dir == CLIENT, self.max_message, rsv1) {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    // Whole frames are activity, bytes are not: a frame
                    // trickled slower than `idle_timeout` is cut.
                    if used > 0 {
                        self.last_active = clock::coarse_millis();
                    }
                    break Ok(());
                }
                Err(violation) => break Err(violated(dir, violation)),
            };
            let at = used..used + frame.len;
            used = at.end;
            if let Err(end) = self.frame(dir, &frame, bytes, at, out, batch) {
                break Err(end);
            }
        };
        // What the batch's messages bring (a filter's close) came first.
        let inspected = self.inspect_batch(dir, bytes, batch, out);
        (used, inspected.and(parsed))
    }

    /// Relays one frame (`bytes[at]`: all of it, as read).
    fn frame(
        &mut self,
        dir: Direction,
        frame: &wire::Frame,
        bytes: &[u8],
        at: std::ops::Range<usize>,
        out: &mut Vec<u8>,
        batch: &mut Batch,
    ) -> Result<(), End> {
        let whole = &bytes[at.clone()];
        let text = match frame.header.opcode {
            OpCode::Control(Control::Close) => {
                let mut payload = Vec::new();
                frame.unmask_into(whole, &mut payload);
                let close = wire::parse_close(&payload).map_err(|v| violated(dir, v))?;
                return Err(End::Closed {
                    by: dir,
                    frame: close.map(|(code, reason)| (code, reason.to_owned())),
                });
            }
            OpCode::Control(_) => {
                // Pings and pongs pass through, after the messages before
                // them; the far peer answers.
                self.inspect_batch(dir, bytes, batch, out)?;
                out.extend_from_slice(whole);
                return Ok(());
            }
            OpCode::Data(Data::Continue) => {
                let fragments = &mut self.flows[dir.index()].fragments;
                let Some(message) = fragments else {
                    return Err(violated(
                        dir,
                        Violation::Protocol("continuation of nothing"),
                    ));
                };
                if message.payload.len() + frame.payload(whole).len() > self.max_message {
                    return Err(violated(dir, Violation::TooBig));
                }
                frame.unmask_into(whole, &mut message.payload);
                message.frames.extend_from_slice(whole);
                if !frame.header.is_final {
                    return Ok(());
                }
                let message = fragments.take().expect("matched above");
                self.inspect_batch(dir, bytes, batch, out)?;
                let inflated;
                let payload = if message.compressed {
                    inflated = self.inflate(dir, &message.payload)?;
                    &inflated[..]
                } else {
                    &message.payload
                };
                self.count(dir, payload.len());
                let arrived = Arrived {
                    text: message.text,
                    compressed: message.compressed,
                    payload,
                    frames: &message.frames,
                };
                return self.inspect(dir, &[arrived], out);
            }
            OpCode::Data(Data::Text) => true,
            OpCode::Data(_) => false,
        };
        let fragments = &mut self.flows[dir.index()].fragments;
        if fragments.is_some() {
            return Err(violated(
                dir,
                Violation::Protocol("new message inside a fragmented one"),
            ));
        }
        if !frame.header.is_final {
            let mut message = Fragments {
                text,
                compressed: frame.header.rsv1,
                payload: Vec::new(),
                frames: whole.to_vec(),
            };
            frame.unmask_into(whole, &mut message.payload);
            *fragments = Some(message);
            return Ok(());
        }
        let start = batch.payloads.len();
        if frame.header.rsv1 {
            let mut masked = Vec::new();
            frame.unmask_into(whole, &mut masked);
            let inflated = self.inflate(dir, &masked)?;
            batch.payloads.extend_from_slice(&inflated);
        } else {
            frame.unmask_into(whole, &mut batch.payloads);
        }
        self.count(dir, batch.payloads.len() - start);
        batch.messages.push(Pending {
            text,
            compressed: frame.header.rsv1,
            payload: start..batch.payloads.len(),
            frame: at,
        });
        if batch.messages.len() == MAX_BATCH {
            self.inspect_batch(dir, bytes, batch, out)?;
        }
        Ok(())
    }

    /// A compressed message's payload, inflated (1009 past `max_message_size`).
    fn inflate(&mut self, dir: Direction, payload: &[u8]) -> Result<Vec<u8>, End> {
        self.deflate
            .inflate(payload, self.max_message)
            .map_err(|v| violated(dir, v))
    }

    /// Counts a data message read from `dir`'s sender (before filters).
    fn count(&mut self, dir: Direction, len: usize) {
        self.stats.messages[dir.index()] += 1;
        self.stats.bytes[dir.index()] += len as u64;
        self.traffic.message(dir, len);
    }

    /// Inspects the messages of `batch` (their frames in `bytes`) and
    /// empties it.
    fn inspect_batch(
        &mut self,
        dir: Direction,
        bytes: &[u8],
        batch: &mut Batch,
        out: &mut Vec<u8>,
    ) -> Result<(), End> {
        if batch.messages.is_empty() {
            return Ok(());
        }
        let arrived: Vec<Arrived<'_>> = batch
            .messages
            .iter()
            .map(|m| Arrived {
                text: m.text,
                compressed: m.compressed,
                payload: &batch.payloads[m.payload.clone()],
                frames: &bytes[m.frame.clone()],
            })
            .collect();
        let result = self.inspect(dir, &arrived, out);
        batch.messages.clear();
        batch.payloads.clear();
        result
    }

    /// Hands whole data messages to the inspector and carries out its
    /// verdicts in order, each followed by what the inspector sent while
    /// handling it. A text message that is not UTF-8 ends the relay with
    /// 1007 after the messages before it.
    fn inspect(
        &mut self,
        dir: Direction,
        arrived: &[Arrived<'_>],
        out: &mut Vec<u8>,
    ) -> Result<(), End> {
        let mut messages = Vec::with_capacity(arrived.len());
        let mut invalid = Ok(());
        for message in arrived {
            if !message.text {
                messages.push(Payload::Binary(message.payload));
                continue;
            }
            match std::str::from_utf8(message.payload) {
                Ok(text) => messages.push(Payload::Text(text)),
                Err(_) => {
                    invalid = Err(violated(dir, Violation::Utf8));
                    break;
                }
            }
        }
        if messages.is_empty() {
            return invalid;
        }
        self.inspector.allow_sends(self.room(dir, out.len()));
        let mut verdicts = Vec::with_capacity(messages.len());
        self.inspector.inspect(dir, &messages, &mut verdicts);
        let mut sent = self.inspector.take_sent().into_iter().peekable();
        for (index, (verdict, message)) in verdicts.into_iter().zip(arrived).enumerate() {
            let carried = self.carry_out(dir, verdict, message, out);
            let said = std::iter::from_fn(|| sent.next_if(|s| s.after <= index));
            self.queue(said, Some((dir, out)));
            carried?;
        }
        // Sends after the last verdict's message (a filter further down
        // the chain closed before them) never leave.
        invalid
    }

    /// Carries out `verdict` on `message`, appending to `out` what the
    /// other peer gets; `Err` when it closes the connection.
    fn carry_out(
        &mut self,
        dir: Direction,
        verdict: Verdict,
        message: &Arrived<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), End> {
        let opcode = OpCode::Data(if message.text {
            Data::Text
        } else {
            Data::Binary
        });
        match verdict {
            Verdict::Forward if message.compressed => {
                self.deflate
                    .forward(dir, opcode, message.payload, message.frames, out);
            }
            Verdict::Forward => out.extend_from_slice(message.frames),
            Verdict::Replace(Replacement::Text(text)) => {
                self.deflate
                    .encode(dir, OpCode::Data(Data::Text), text.as_bytes(), out);
            }
            Verdict::Replace(Replacement::Binary(data)) => {
                self.deflate
                    .encode(dir, OpCode::Data(Data::Binary), &data, out);
            }
            Verdict::Drop => {}
            Verdict::Close(frame) => return Err(sendable_close(&frame)),
        }
        Ok(())
    }
}

/// Gives back a scratch buffer's memory once a large message grew it.
fn trim(buffer: &mut Vec<u8>) {
    if buffer.capacity() > KEEP_CAPACITY {
        *buffer = Vec::new();
    }
}

/// Why relaying stopped.
#[derive(Debug)]
enum End {
    /// The sender of `by` sent a close frame with this code and reason.
    Closed {
        by: Direction,
        frame: Option<(u16, String)>,
    },
    /// The sender of this direction vanished without a close frame.
    Gone(Direction),
    /// The sender of `by` broke the protocol (or a limit): both peers get
    /// this frame, and `by`'s connection is closed without waiting for its
    /// answer (RFC 6455 §7.1.7, failing the connection).
    Failed { by: Direction, frame: CloseFrame },
    /// The relay closes the connection: both peers get this frame.
    Close(CloseFrame),
}

impl End {
    fn code(&self) -> u16 {
        match self {
            End::Closed { frame, .. } => frame.as_ref().map_or(1005, |(code, _)| *code),
            End::Gone(_) => 1006,
            End::Failed { frame, .. } | End::Close(frame) => frame.code,
        }
    }

    /// What the client leg and the upstream leg still need.
    fn farewells(self) -> (Farewell, Farewell) {
        let leg = |side: Direction| match &self {
            End::Closed { by, frame } if *by == side => Farewell::Answer(frame.clone()),
            End::Closed { frame, .. } => Farewell::Send(frame.clone()),
            End::Gone(gone) if *gone == side => Farewell::Nothing,
            End::Gone(gone) => {
                let frame = close_frame(1001, &format!("{} went away", gone.sender()));
                Farewell::Send(Some((frame.code, frame.reason)))
            }
            End::Failed { by, frame } if *by == side => {
                Farewell::Answer(Some((frame.code, frame.reason.clone())))
            }
            End::Failed { frame, .. } | End::Close(frame) => {
                Farewell::Send(Some((frame.code, frame.reason.clone())))
            }
        };
        (leg(CLIENT), leg(UPSTREAM))
    }
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Closed { by, .. } => write!(f, "{} closed with {}", by.sender(), self.code()),
            End::Gone(side) => write!(f, "{} went away", side.sender()),
            End::Failed { frame, .. } | End::Close(frame) => {
                write!(f, "closed with {} {}", frame.code, frame.reason)
            }
        }
    }
}

/// What a leg still needs once relaying has stopped.
enum Farewell {
    /// Our close frame, then the peer's answer.
    Send(Option<(u16, String)>),
    /// The peer closed (or broke the protocol): this close back, then the
    /// end of its stream, without waiting for another close from it.
    Answer(Option<(u16, String)>),
    /// The peer is gone.
    Nothing,
}

/// Ends a leg: what it was still owed, its close handshake, its socket.
/// `side`: the peer, named by the direction of what it sends.
async fn farewell<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    side: Direction,
    owed: Vec<u8>,
    farewell: Farewell,
) {
    let (close, answering) = match farewell {
        Farewell::Nothing => return,
        Farewell::Send(close) => (close, false),
        Farewell::Answer(close) => (close, true),
    };
    let mut bytes = owed;
    let payload = wire::close_payload(
        close
            .as_ref()
            .map(|(code, reason)| (*code, reason.as_str())),
    );
    // Frames to a server are masked (§5.3).
    wire::encode(
        &mut bytes,
        OpCode::Control(Control::Close),
        &payload,
        side == UPSTREAM,
    );
    if stream.write_all(&bytes).await.is_err() || stream.flush().await.is_err() {
        return;
    }
    if answering {
        // Both closes went: the server side closes the connection first
        // (§7.1.1); reading on until the end leaves no unread byte that
        // would turn our close into a reset.
        let _ = stream.shutdown().await;
        drain(stream, side, false).await;
    } else {
        drain(stream, side, true).await;
        let _ = stream.shutdown().await;
    }
}

/// Reads and discards what the peer sends until its close frame (when
/// `until_close`) or the end of its stream.
async fn drain<S: AsyncRead + Unpin>(stream: &mut S, side: Direction, until_close: bool) {
    let mut pending = Vec::new();
    // On the heap: an array here would sit in every relay's future, idle
    // or not, for the whole connection.
    let mut buf = vec![0u8; 4096];
    loop {
        let read = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        if !until_close {
            continue;
        }
        pending.extend_from_slice(&buf[..read]);
        if pending.len() > MAX_DRAIN {
            return;
        }
        // Frames are parsed only to see the close; bytes that are no frame
        // mean the peer has nothing more to say.
        loop {
            match wire::parse(&pending, side == CLIENT, usize::MAX) {
                Ok(Some(frame)) if !frame.is_close() => drop(pending.drain(..frame.len)),
                Ok(None) => break,
                Ok(Some(_)) | Err(_) => return,
            }
        }
    }
}

/// The close for bytes from `side` that break the rules.
fn violated(side: Direction, violation: Violation) -> End {
    tracing::debug!(
        side = side.sender(),
        ?violation,
        "websocket protocol violation"
    );
    let (code, reason) = match violation {
        Violation::Utf8 => (1007, "invalid UTF-8 from"),
        Violation::TooBig => (1009, "message too big from"),
        Violation::Protocol(_) => (1002, "protocol error from"),
    };
    End::Failed {
        by: side,
        frame: close_frame(code, &format!("{reason} {}", side.sender())),
    }
}

fn shutting_down() -> End {
    End::Close(close_frame(1001, "server shutting down"))
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
fn close_frame(code: u16, reason: &str) -> CloseFrame {
    let mut end = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    CloseFrame {
        code,
        reason: reason[..end].to_owned(),
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
            End::Close(frame) => frame.code,
            other => panic!("unexpected {other}"),
        };
        assert_eq!(code(4000), 4000);
        assert_eq!(code(1009), 1009);
        for unsendable in [0, 999, 1005, 1006, 1015, 5000] {
            assert_eq!(code(unsendable), 1008);
        }
    }
}
