//! The raw WebSocket tunnel: bytes copied both ways between two TCP sockets,
//! no frame parsing — what nginx does once the upstream answered 101.
//!
//! Written on socket readiness rather than `copy_bidirectional` so that an
//! idle tunnel holds no buffer at all: data is read into a per-thread
//! scratch buffer and written straight through; only when the other side
//! cannot take it all does the rest move to a per-direction heap buffer,
//! which also stops reading that side (backpressure) until it drains. At
//! ten thousand idle WebSockets, 2 × 8 KiB per tunnel would be 160 MiB.

use crate::clock::{self, coarse_millis};
use crate::direction::Direction;
use crate::metrics::LocationCounters;
use crate::shutdown::Shutdown;
use bytes::Bytes;
use socket2::SockRef;
use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::TcpStream;
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
    /// A shutdown close frame went to the sink: relay nothing more this way.
    close_sent: bool,
    /// While `pending` is not empty: when the sink last took some of it (or
    /// it began to wait), by `coarse_millis`.
    stalled: Option<u64>,
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

    /// Sends `frame` (a close frame) to the sink, keeping what it refuses.
    fn send_close(&mut self, frame: &[u8], to: &TcpStream) {
        let written = to.try_write(frame).unwrap_or(0);
        self.pending.extend_from_slice(&frame[written..]);
        self.close_sent = true;
    }

    fn may_read(&self) -> bool {
        self.pending.is_empty() && !self.source_done && !self.close_sent
    }

    fn done(&self) -> bool {
        self.source_done && self.pending.is_empty()
    }

    /// Reads what `from` has and passes it to `to`; keeps what `to` refused.
    fn pump(
        &mut self,
        from: &TcpStream,
        to: &TcpStream,
        traffic: &LocationCounters,
        dir: Direction,
        chunk: usize,
    ) -> io::Result<bool> {
        SCRATCH_BUF.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let n = match read_all_there(from, &mut scratch[..chunk]) {
                Ok(0) => {
                    self.source_done = true;
                    return Ok(true);
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            };
            self.bytes += n as u64;
            self.cursor.advance(&scratch[..n]);
            traffic.bytes(dir, n as u64);
            let written = match to.try_write(&scratch[..n]) {
                Ok(written) => written,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(e),
            };
            self.pending.extend_from_slice(&scratch[written..n]);
            if !self.pending.is_empty() {
                self.stalled = Some(coarse_millis());
            }
            Ok(true)
        })
    }

    /// Moves what is ready in this direction: reads `from` into `to` when
    /// nothing is pending, else writes the pending bytes. `Ready(Ok(true))`
    /// when bytes moved (or the source ended).
    fn poll_move(
        &mut self,
        cx: &mut Context<'_>,
        from: &TcpStream,
        to: &TcpStream,
        traffic: &LocationCounters,
        dir: Direction,
        chunk: usize,
    ) -> Poll<io::Result<bool>> {
        if self.may_read() {
            from.poll_read_ready(cx)
                .map(|ready| ready.and_then(|()| self.pump(from, to, traffic, dir, chunk)))
        } else if !self.pending.is_empty() {
            to.poll_write_ready(cx)
                .map(|ready| ready.and_then(|()| self.drain(to)))
        } else {
            Poll::Pending
        }
    }

    /// Writes pending bytes; frees the buffer once empty.
    fn drain(&mut self, to: &TcpStream) -> io::Result<bool> {
        match to.try_write(&self.pending) {
            Ok(n) => {
                self.pending.drain(..n);
                if self.pending.is_empty() {
                    self.pending = Vec::new();
                }
                self.stalled = (!self.pending.is_empty()).then(coarse_millis);
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
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

/// Reads what `from` holds. A read shorter than `buf` emptied the socket's
/// receive queue, so its readiness is cleared at once: the next wait goes
/// straight to the reactor instead of first paying a read that would return
/// `EAGAIN` (nginx does the same). tokio clears readiness only if no newer
/// event arrived since it was observed, and never clears read-closed, so no
/// data or end of stream can be missed.
fn read_all_there(from: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let mut read = 0;
    let result = from.try_io(Interest::READABLE, || {
        read = from.try_read(buf)?;
        if read > 0 && read < buf.len() {
            // Reported as WouldBlock only to make `try_io` clear readiness.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(read)
    });
    match result {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && read > 0 => Ok(read),
        other => other,
    }
}

/// Relays until both sides are closed, an error, `idle` without traffic, or
/// shutdown. `*_prefix` are bytes already read past the HTTP heads. On
/// shutdown each side gets a 1001 close frame, sent between two frames.
///
/// One hand-written poll serves both directions, the idle timer and the
/// shutdown signal: each wake-up moves whatever is ready both ways, and the
/// timer and signal futures are made once per tunnel, not per event (a
/// `select!` in the loop re-armed a timer-wheel entry on every message).
/// The timer and the signal are checked first on every event, so traffic
/// that never pauses cannot starve them.
pub async fn run(
    client: TcpStream,
    client_prefix: Bytes,
    upstream: TcpStream,
    upstream_prefix: Bytes,
    config: TunnelConfig,
    traffic: &LocationCounters,
    shutdown: Shutdown,
) -> TunnelStats {
    let (idle, chunk) = (config.idle, config.buffer.clamp(1, SCRATCH));
    // Bytes the client sent after its request head go upstream, and so on.
    let mut up = Flow::with_prefix(client_prefix);
    let mut down = Flow::with_prefix(upstream_prefix);
    let mut last_activity = coarse_millis();
    let mut closing: Option<Instant> = None;
    let mut timer = pin!(sleep_until(Instant::now() + idle));
    // `shutdown` is checked on every event, so that a tunnel whose sockets
    // are always ready still sees it; the future (on a clone it borrows)
    // wakes an idle one.
    let mut signal = shutdown.clone();
    let mut signalled = pin!(signal.signalled());
    let end = 'relay: loop {
        // As nginx does: once either side has closed and what it sent is
        // delivered, the tunnel ends (a client that keeps its socket after
        // the close handshake must not hold a slot until the idle timeout).
        if up.done() || down.done() {
            for socket in [&upstream, &client] {
                let _ = SockRef::from(socket).shutdown(std::net::Shutdown::Write);
            }
            break TunnelEnd::Closed;
        }
        if let Some(give_up) = closing {
            // Each side gets its close frame once its stream is between frames.
            if !down.close_sent && down.sink_at_boundary() {
                down.send_close(&shutdown_close_frame(false), &client);
            }
            if !up.close_sent && up.sink_at_boundary() {
                up.send_close(&shutdown_close_frame(true), &upstream);
            }
            let flushed = up.pending.is_empty() && down.pending.is_empty();
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
                    &client,
                    &upstream,
                    traffic,
                    Direction::ClientToUpstream,
                    chunk,
                ),
                down.poll_move(
                    cx,
                    &upstream,
                    &client,
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
                last_activity = coarse_millis();
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

    fn advance(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let skip = self.payload_left.min(bytes.len() as u64);
                self.payload_left -= skip;
                bytes = &bytes[skip as usize..];
                continue;
            }
            self.header[self.header_len] = bytes[0];
            self.header_len += 1;
            bytes = &bytes[1..];
            if let Some(payload) = self.complete_header() {
                self.payload_left = payload;
                self.header_len = 0;
            }
        }
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

/// The tunnel for streams without socket readiness (TLS): tokio's
/// `copy_bidirectional` with the same idle timeout and shutdown. Its two
/// buffers live as long as the tunnel; TLS already keeps buffers per
/// connection, so the zero-idle-memory path above is for plain TCP.
pub async fn run_streams<C, U>(
    mut client: C,
    client_prefix: Bytes,
    mut upstream: U,
    upstream_prefix: Bytes,
    config: TunnelConfig,
    traffic: &LocationCounters,
    mut shutdown: Shutdown,
) -> TunnelStats
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let idle = config.idle;
    let failed = |end| TunnelStats {
        upstream_bytes: 0,
        client_bytes: 0,
        end,
    };
    if upstream.write_all(&client_prefix).await.is_err()
        || client.write_all(&upstream_prefix).await.is_err()
    {
        return failed(TunnelEnd::Error);
    }
    let activity = Activity::default();
    let mut client = Stamped {
        inner: client,
        activity: &activity,
        traffic,
        dir: Direction::ClientToUpstream,
    };
    let mut upstream = Stamped {
        inner: upstream,
        activity: &activity,
        traffic,
        dir: Direction::UpstreamToClient,
    };
    let copy = tokio::io::copy_bidirectional_with_sizes(
        &mut client,
        &mut upstream,
        config.buffer,
        config.buffer,
    );
    tokio::pin!(copy);
    let mut deadline = Instant::now() + idle;
    loop {
        tokio::select! {
            result = &mut copy => {
                return match result {
                    Ok((up, down)) => TunnelStats { upstream_bytes: up, client_bytes: down, end: TunnelEnd::Closed },
                    Err(_) => failed(TunnelEnd::Error),
                };
            }
            () = sleep_until(deadline) => {
                let now = Instant::now();
                let last = activity.last();
                if last + idle <= now {
                    return failed(TunnelEnd::Idle);
                }
                let blocked = activity.blocked_since();
                if blocked.is_some_and(|since| since + config.send_timeout <= now) {
                    return failed(TunnelEnd::SendTimeout);
                }
                // A write that begins to wait does not wake this loop, so it
                // looks at least every `send_timeout`: a side that takes
                // nothing is cut after one to two of them.
                deadline = (last + idle)
                    .min(blocked.map_or(now + config.send_timeout, |since| since + config.send_timeout));
            }
            () = shutdown.signalled() => return failed(TunnelEnd::Shutdown),
        }
    }
}

/// When bytes last moved, stamped by [`Stamped`] reads; since when a write
/// to each side has been waiting, by [`Stamped`] writes.
struct Activity {
    last: std::sync::Mutex<Instant>,
    blocked: std::sync::Mutex<[Option<Instant>; 2]>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            last: std::sync::Mutex::new(Instant::now()),
            blocked: std::sync::Mutex::new([None; 2]),
        }
    }
}

impl Activity {
    fn touch(&self) {
        *self.last.lock().unwrap() = Instant::now();
    }

    fn last(&self) -> Instant {
        *self.last.lock().unwrap()
    }

    /// A write to the side reading `dir`'s bytes went through (`false`) or
    /// must wait (`true`).
    fn write_waits(&self, dir: Direction, waits: bool) {
        let mut blocked = self.blocked.lock().unwrap();
        let since = &mut blocked[dir.index()];
        match (waits, *since) {
            (true, None) => *since = Some(Instant::now()),
            (false, Some(_)) => *since = None,
            _ => {}
        }
    }

    /// Since when the longest-waiting write has waited.
    fn blocked_since(&self) -> Option<Instant> {
        self.blocked.lock().unwrap().iter().flatten().min().copied()
    }
}

/// A stream that stamps [`Activity`] and counts bytes whenever a read
/// returns data (`dir`: where what it reads goes).
struct Stamped<'a, S> {
    inner: S,
    activity: &'a Activity,
    traffic: &'a LocationCounters,
    dir: Direction,
}

impl<S: AsyncRead + Unpin> AsyncRead for Stamped<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.activity.touch();
            self.traffic.bytes(self.dir, read as u64);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Stamped<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        // What is written here travels the other way from what is read.
        self.activity
            .write_waits(self.dir.reverse(), polled.is_pending());
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
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
