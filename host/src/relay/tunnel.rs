//! The raw WebSocket tunnel: bytes copied both ways between two sockets
//! (plain TCP, TLS or an HTTP/2 stream), no frame parsing beyond finding
//! frame boundaries — what nginx does once the upstream answered 101.
//!
//! Written by hand rather than on `copy_bidirectional` so that an idle
//! tunnel holds no buffer at all, and so that shutdown can insert a close
//! frame between two frames: data is read into a per-thread scratch buffer
//! and written straight through; only when the other side cannot take it
//! all does the rest move to a per-direction heap buffer, which also stops
//! reading that side (backpressure) until it drains. At ten thousand idle
//! WebSockets, 2 × 8 KiB per tunnel would be 160 MiB.

use crate::clock::{self, coarse_millis};
use crate::direction::Direction;
use crate::metrics::LocationCounters;
use crate::relay::endpoint::Endpoint;
#[cfg(doc)]
use crate::relay::endpoint::Stream;
use crate::shutdown::Shutdown;
use bytes::Bytes;
use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::time::{Instant, sleep_until};

const SCRATCH: usize = 32 * 1024;
/// On shutdown, how long a frame in flight may take to finish before the
/// close frames are sent (or the connection simply closed).
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Close reason sent to both sides on shutdown.
const SHUTDOWN_REASON: &[u8] = b"server shutting down";

thread_local! {
    static SCRATCH_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH].into_boxed_slice());
}

/// Why a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelEnd {
    /// One side closed and what it sent was delivered.
    Closed,
    /// A socket error (reset, broken pipe...).
    Error,
    /// Nothing moved for the idle timeout.
    Idle,
    /// A side took none of what it was owed for the send timeout.
    SendTimeout,
    /// The proxy is shutting down.
    Shutdown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelStats {
    /// Bytes client → upstream.
    pub upstream_bytes: u64,
    /// Bytes upstream → client.
    pub client_bytes: u64,
    pub end: TunnelEnd,
}

/// One direction: what is waiting to be written and whether the source ended.
#[derive(Default)]
struct Flow {
    pending: Vec<u8>,
    source_done: bool,
    bytes: u64,
    /// Where the bytes read so far stand in WebSocket framing.
    cursor: FrameCursor,
    /// A shutdown close frame was queued for the sink: relay nothing more
    /// this way.
    close_sent: bool,
    /// While the sink holds back (bytes pending, or a push that waits): when
    /// it began to, by `coarse_millis`.
    stalled: Option<u64>,
    /// The sink accepted bytes it may still hold (a TLS record): push them
    /// before reading more.
    unpushed: bool,
    /// A frame ended in what was read since the tunnel last looked: only
    /// whole frames count as activity for the idle timeout.
    frame_ended: bool,
}

impl Flow {
    fn with_prefix(prefix: Bytes) -> Flow {
        let mut cursor = FrameCursor::default();
        cursor.advance(&prefix);
        Flow {
            pending: prefix.to_vec(),
            cursor,
            ..Flow::default()
        }
    }

    /// Whether the next byte the sink gets would start a frame.
    fn sink_at_boundary(&self) -> bool {
        self.pending.is_empty() && self.cursor.at_boundary()
    }

    /// Queues `frame` (a close frame) for the sink.
    fn send_close(&mut self, frame: &[u8]) {
        self.pending.extend_from_slice(frame);
        self.close_sent = true;
    }

    fn may_read(&self) -> bool {
        self.pending.is_empty() && !self.source_done && !self.close_sent
    }

    fn done(&self) -> bool {
        self.source_done && self.pending.is_empty()
    }

    fn flushed(&self) -> bool {
        self.pending.is_empty() && !self.unpushed
    }

    /// Moves what is ready in this direction: the pending bytes first, then
    /// what the sink still holds, then a read from `from` written straight
    /// to `to`. `Ready(Ok(true))` when bytes moved, the source ended or the
    /// sink began to hold back.
    fn poll_move(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut impl Endpoint,
        to: &mut impl Endpoint,
        traffic: &LocationCounters,
        dir: Direction,
        chunk: usize,
    ) -> Poll<io::Result<bool>> {
        if !self.pending.is_empty() {
            let n = ready!(to.poll_give(cx, &self.pending))?;
            self.pending.drain(..n);
            if self.pending.is_empty() {
                self.pending = Vec::new();
            }
            self.stalled = (!self.pending.is_empty()).then(coarse_millis);
            self.unpushed = true;
            return Poll::Ready(Ok(true));
        }
        if self.unpushed {
            match to.poll_push(cx) {
                Poll::Ready(result) => {
                    result?;
                    self.unpushed = false;
                    self.stalled = None;
                }
                Poll::Pending if self.stalled.is_none() => {
                    self.stalled = Some(coarse_millis());
                    return Poll::Ready(Ok(true));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        if !self.may_read() {
            return Poll::Pending;
        }
        SCRATCH_BUF.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let n = match ready!(from.poll_take(cx, &mut scratch[..chunk]))? {
                0 => {
                    self.source_done = true;
                    return Poll::Ready(Ok(true));
                }
                n => n,
            };
            self.bytes += n as u64;
            self.frame_ended |= self.cursor.advance(&scratch[..n]);
            traffic.bytes(dir, n as u64);
            let written = match to.poll_give(cx, &scratch[..n]) {
                Poll::Ready(written) => written?,
                Poll::Pending => 0,
            };
            self.pending.extend_from_slice(&scratch[written..n]);
            if self.pending.is_empty() {
                self.unpushed = true;
            } else {
                self.stalled = Some(coarse_millis());
            }
            Poll::Ready(Ok(true))
        })
    }
}

/// How a tunnel is relayed: its idle timeout and the most it reads at once
/// per direction (`buffer_size`, so also the most it holds per direction
/// when the other side is slow).
#[derive(Debug, Clone, Copy)]
pub struct TunnelConfig {
    pub idle: Duration,
    pub buffer: usize,
    /// The longest a side may take none of the bytes it is owed (nginx's
    /// `proxy_send_timeout` / `send_timeout` on upgraded connections).
    pub send_timeout: Duration,
}

/// Relays between two sockets until one side closed and what it sent was
/// delivered, an error, `idle` without traffic, a side that takes nothing
/// for the send timeout, or shutdown. `*_prefix` are bytes already read past
/// the HTTP heads. On shutdown each side gets a 1001 close frame, sent
/// between two frames. A plain `TcpStream` is read on readiness; any other
/// byte stream (TLS, an HTTP/2 stream) goes in a [`Stream`].
///
/// One hand-written poll serves both directions, the idle timer and the
/// shutdown signal: each wake-up moves whatever is ready both ways, and the
/// timer and signal futures are made once per tunnel, not per event (a
/// `select!` in the loop re-armed a timer-wheel entry on every message).
/// The timer and the signal are checked first on every event, so traffic
/// that never pauses cannot starve them.
pub(crate) async fn run(
    mut client: impl Endpoint,
    client_prefix: Bytes,
    mut upstream: impl Endpoint,
    upstream_prefix: Bytes,
    config: TunnelConfig,
    traffic: &LocationCounters,
    shutdown: Shutdown,
) -> TunnelStats {
    let (idle, chunk) = (config.idle, config.buffer.clamp(1, SCRATCH));
    // Bytes the client sent after its request head go upstream, and so on.
    let mut up = Flow::with_prefix(client_prefix);
    let mut down = Flow::with_prefix(upstream_prefix);
    // What the flows hold, for wasp's accounting (`crate::buffered`).
    let mut held = traffic.held();
    let mut last_activity = coarse_millis();
    let mut closing: Option<Instant> = None;
    let mut timer = pin!(sleep_until(Instant::now() + idle));
    // `shutdown` is checked on every event, so that a tunnel whose sockets
    // are always ready still sees it; the future (on a clone it borrows)
    // wakes an idle one.
    let mut signal = shutdown.clone();
    let mut signalled = pin!(signal.signalled());
    let end = 'relay: loop {
        held.set(up.pending.len() + down.pending.len());
        // As nginx does: once either side has closed and what it sent is
        // delivered, the tunnel ends (a client that keeps its socket after
        // the close handshake must not hold a slot until the idle timeout).
        if up.done() || down.done() {
            break TunnelEnd::Closed;
        }
        if let Some(give_up) = closing {
            // Each side gets its close frame once its stream is between frames.
            if !down.close_sent && down.sink_at_boundary() {
                down.send_close(&shutdown_close_frame(false));
            }
            if !up.close_sent && up.sink_at_boundary() {
                up.send_close(&shutdown_close_frame(true));
            }
            let flushed = up.flushed() && down.flushed();
            if (up.close_sent && down.close_sent && flushed) || Instant::now() >= give_up {
                break TunnelEnd::Shutdown;
            }
        }
        let event = poll_fn(|cx| {
            if closing.is_none() && shutdown.is_signalled() {
                return Poll::Ready(Event::Shutdown);
            }
            if timer.is_elapsed() {
                return Poll::Ready(Event::Timer);
            }
            let moved = [
                up.poll_move(
                    cx,
                    &mut client,
                    &mut upstream,
                    traffic,
                    Direction::ClientToUpstream,
                    chunk,
                ),
                down.poll_move(
                    cx,
                    &mut upstream,
                    &mut client,
                    traffic,
                    Direction::UpstreamToClient,
                    chunk,
                ),
            ];
            match moved {
                [Poll::Ready(Err(_)), _] | [_, Poll::Ready(Err(_))] => {
                    return Poll::Ready(Event::Failed);
                }
                [Poll::Ready(Ok(true)), _] | [_, Poll::Ready(Ok(true))] => {
                    return Poll::Ready(Event::Moved);
                }
                [Poll::Ready(Ok(false)), _] | [_, Poll::Ready(Ok(false))] => {
                    return Poll::Ready(Event::Nothing);
                }
                _ => {}
            }
            if closing.is_none() && signalled.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Shutdown);
            }
            match timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Event::Timer),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        match event {
            Event::Moved => {
                // Whole frames are activity, bytes are not: a frame trickled
                // slower than the idle timeout is cut.
                if std::mem::take(&mut up.frame_ended) | std::mem::take(&mut down.frame_ended) {
                    last_activity = coarse_millis();
                }
                // A side began to hold bytes back: the timer may need to fire sooner.
                if closing.is_none() && (up.stalled.is_some() || down.stalled.is_some()) {
                    let give_up = Instant::now() + config.send_timeout;
                    if timer.deadline() > give_up {
                        timer.as_mut().reset(give_up);
                    }
                }
            }
            Event::Nothing => {}
            Event::Failed => break TunnelEnd::Error,
            Event::Shutdown => {
                let give_up = Instant::now() + CLOSE_GRACE;
                closing = Some(give_up);
                timer.as_mut().reset(give_up);
            }
            Event::Timer => {
                // Activity only stamps times; the timer is re-armed here.
                if closing.is_none() {
                    let quiet = clock::since(last_activity);
                    if quiet >= idle {
                        break TunnelEnd::Idle;
                    }
                    let mut next = idle - quiet;
                    for flow in [&up, &down] {
                        if let Some(since) = flow.stalled {
                            let waited = clock::since(since);
                            if waited >= config.send_timeout {
                                break 'relay TunnelEnd::SendTimeout;
                            }
                            next = next.min(config.send_timeout - waited);
                        }
                    }
                    timer.as_mut().reset(Instant::now() + next);
                }
            }
        }
    };
    if matches!(end, TunnelEnd::Closed | TunnelEnd::Shutdown) {
        // Half-close both ways (TLS: close_notify), bounded: a peer that
        // reads nothing must not hold the tunnel.
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            upstream.finish().await;
            client.finish().await;
        })
        .await;
    }
    TunnelStats {
        upstream_bytes: up.bytes,
        client_bytes: down.bytes,
        end,
    }
}

/// What one wake-up of the tunnel found.
enum Event {
    /// Bytes moved (either way).
    Moved,
    /// A socket was ready but nothing moved (a spurious wake-up, `EAGAIN`).
    Nothing,
    /// A socket error (reset, broken pipe...).
    Failed,
    Shutdown,
    Timer,
}

/// A close frame with code 1001 (RFC 6455 §5.5.1). Frames towards the
/// upstream come from the client side, so they must be masked (§5.3); any
/// key does, the proxy is not a browser.
fn shutdown_close_frame(masked: bool) -> Vec<u8> {
    let mut payload = 1001u16.to_be_bytes().to_vec();
    payload.extend_from_slice(SHUTDOWN_REASON);
    let mut frame = vec![0x88, payload.len() as u8 | if masked { 0x80 } else { 0 }];
    if masked {
        let key = [0x5a, 0x17, 0xc3, 0x9e];
        frame.extend_from_slice(&key);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        frame.extend_from_slice(&payload);
    }
    frame
}

/// Where a byte stream stands in WebSocket framing (RFC 6455 §5.2): enough
/// to know when it is between two frames, the only place a close frame may
/// be inserted. Reads frame headers only; payloads are skipped.
#[derive(Debug, Default)]
struct FrameCursor {
    payload_left: u64,
    header: [u8; 14],
    header_len: usize,
}

impl FrameCursor {
    fn at_boundary(&self) -> bool {
        self.payload_left == 0 && self.header_len == 0
    }

    /// Moves past `bytes`; whether a frame ended in them.
    fn advance(&mut self, mut bytes: &[u8]) -> bool {
        let mut ended = false;
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let skip = self.payload_left.min(bytes.len() as u64);
                self.payload_left -= skip;
                bytes = &bytes[skip as usize..];
                ended |= self.payload_left == 0;
                continue;
            }
            self.header[self.header_len] = bytes[0];
            self.header_len += 1;
            bytes = &bytes[1..];
            if let Some(payload) = self.complete_header() {
                self.payload_left = payload;
                self.header_len = 0;
                ended |= payload == 0;
            }
        }
        ended
    }

    /// The payload length once the header gathered so far is complete.
    fn complete_header(&self) -> Option<u64> {
        let h = &self.header[..self.header_len];
        if h.len() < 2 {
            return None;
        }
        let (extended, short) = match h[1] & 0x7f {
            126 => (2, None),
            127 => (8, None),
            n => (0, Some(u64::from(n))),
        };
        let mask = if h[1] & 0x80 != 0 { 4 } else { 0 };
        if h.len() < 2 + extended + mask {
            return None;
        }
        Some(short.unwrap_or_else(|| {
            h[2..2 + extended]
                .iter()
                .fold(0, |n, b| n << 8 | u64::from(*b))
        }))
    }
}

/// For the `tunnel_cursor` fuzz target (`fuzz/`, which compiles this file
/// from source): feeds `chunks` in turn to a fresh cursor and tells after
/// each whether the stream is between two frames.
#[doc(hidden)]
pub fn boundaries_after<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Vec<bool> {
    let mut cursor = FrameCursor::default();
    chunks
        .into_iter()
        .map(|chunk| {
            cursor.advance(chunk);
            cursor.at_boundary()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_finds_frame_boundaries_across_chunks() {
        // A masked 5-byte text frame, a 300-byte binary frame (16-bit length), then a ping.
        let mut stream = vec![0x81, 0x85, 1, 2, 3, 4];
        stream.extend_from_slice(b"hello");
        stream.extend_from_slice(&[0x82, 126, 0x01, 0x2c]);
        stream.extend(std::iter::repeat_n(7u8, 300));
        stream.extend_from_slice(&[0x89, 0x00]);
        let boundaries = [0, 11, 315, 317];
        for chunk in [1, 2, 3, 7, 64, 1000] {
            let mut cursor = FrameCursor::default();
            let mut seen = vec![0];
            for (i, piece) in stream.chunks(chunk).enumerate() {
                cursor.advance(piece);
                if cursor.at_boundary() {
                    seen.push((i * chunk + piece.len()).min(stream.len()));
                }
            }
            assert!(
                seen.iter().all(|at| boundaries.contains(at)),
                "chunk {chunk}: {seen:?}"
            );
            assert!(cursor.at_boundary());
        }
        let mut cursor = FrameCursor::default();
        cursor.advance(&stream[..13]);
        assert!(!cursor.at_boundary(), "inside the binary frame's payload");
    }

    #[test]
    fn the_cursor_tells_when_a_frame_ended() {
        // A masked 2-byte text frame, then an empty ping.
        let mut cursor = FrameCursor::default();
        assert!(!cursor.advance(&[0x81, 0x82, 1, 2]));
        assert!(!cursor.advance(&[3, 4, b'h']));
        assert!(cursor.advance(&[b'i', 0x89]));
        assert!(cursor.advance(&[0x00]));
    }

    #[test]
    fn shutdown_close_frames_are_well_formed() {
        let plain = shutdown_close_frame(false);
        assert_eq!(&plain[..4], &[0x88, 22, 0x03, 0xe9]);
        assert_eq!(&plain[4..], SHUTDOWN_REASON);
        let masked = shutdown_close_frame(true);
        assert_eq!(masked[1], 0x80 | 22);
        let key = &masked[2..6];
        let unmasked: Vec<u8> = masked[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i % 4])
            .collect();
        assert_eq!(unmasked, plain[2..]);
    }
}
