//! The raw WebSocket tunnel: bytes copied both ways between two TCP sockets,
//! no frame parsing — what nginx does once the upstream answered 101.
//!
//! Written on socket readiness rather than `copy_bidirectional` so that an
//! idle tunnel holds no buffer at all: data is read into a per-thread
//! scratch buffer and written straight through; only when the other side
//! cannot take it all does the rest move to a per-direction heap buffer,
//! which also stops reading that side (backpressure) until it drains. At
//! ten thousand idle WebSockets, 2 × 8 KiB per tunnel would be 160 MiB.

use crate::metrics::{Dir, LocationCounters};
use bytes::Bytes;
use socket2::SockRef;
use std::cell::RefCell;
use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

const SCRATCH: usize = 32 * 1024;

thread_local! {
    static SCRATCH_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH].into_boxed_slice());
}

/// Why a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelEnd {
    /// Both sides closed their half.
    Closed,
    /// A socket error (reset, broken pipe...).
    Error,
    /// Nothing moved for the idle timeout.
    Idle,
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
    sink_shut: bool,
    bytes: u64,
}

impl Flow {
    fn with_prefix(prefix: Bytes) -> Flow {
        Flow {
            pending: prefix.to_vec(),
            ..Flow::default()
        }
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
        dir: Dir,
    ) -> io::Result<bool> {
        SCRATCH_BUF.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let n = match read_all_there(from, &mut scratch) {
                Ok(0) => {
                    self.source_done = true;
                    return Ok(true);
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            };
            self.bytes += n as u64;
            traffic.bytes(dir, n as u64);
            let written = match to.try_write(&scratch[..n]) {
                Ok(written) => written,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(e),
            };
            self.pending.extend_from_slice(&scratch[written..n]);
            Ok(true)
        })
    }

    /// Writes pending bytes; frees the buffer once empty.
    fn drain(&mut self, to: &TcpStream) -> io::Result<bool> {
        match to.try_write(&self.pending) {
            Ok(n) => {
                self.pending.drain(..n);
                if self.pending.is_empty() {
                    self.pending = Vec::new();
                }
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Passes the end of the stream on once everything was written.
    fn finish(&mut self, to: &TcpStream) {
        if self.done() && !self.sink_shut {
            self.sink_shut = true;
            let _ = SockRef::from(to).shutdown(Shutdown::Write);
        }
    }
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
/// shutdown. `*_prefix` are bytes already read past the HTTP heads.
pub async fn run(
    client: TcpStream,
    client_prefix: Bytes,
    upstream: TcpStream,
    upstream_prefix: Bytes,
    idle: Duration,
    traffic: &LocationCounters,
    mut shutdown: watch::Receiver<bool>,
) -> TunnelStats {
    // Bytes the client sent after its request head go upstream, and so on.
    let mut up = Flow::with_prefix(client_prefix);
    let mut down = Flow::with_prefix(upstream_prefix);
    let mut last_activity = Instant::now();
    let mut deadline = last_activity + idle;
    let end = loop {
        up.finish(&upstream);
        down.finish(&client);
        if up.done() && down.done() {
            break TunnelEnd::Closed;
        }
        let moved = tokio::select! {
            r = client.readable(), if up.pending.is_empty() && !up.source_done => r.and_then(|()| up.pump(&client, &upstream, traffic, Dir::ClientToUpstream)),
            r = upstream.writable(), if !up.pending.is_empty() => r.and_then(|()| up.drain(&upstream)),
            r = upstream.readable(), if down.pending.is_empty() && !down.source_done => r.and_then(|()| down.pump(&upstream, &client, traffic, Dir::UpstreamToClient)),
            r = client.writable(), if !down.pending.is_empty() => r.and_then(|()| down.drain(&client)),
            () = sleep_until(deadline) => {
                // Activity only stamps a time; the timer is re-armed here.
                if last_activity + idle <= Instant::now() {
                    break TunnelEnd::Idle;
                }
                deadline = last_activity + idle;
                Ok(false)
            }
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break TunnelEnd::Shutdown;
                }
                Ok(false)
            }
        };
        match moved {
            Ok(true) => last_activity = Instant::now(),
            Ok(false) => {}
            Err(_) => break TunnelEnd::Error,
        }
    };
    TunnelStats {
        upstream_bytes: up.bytes,
        client_bytes: down.bytes,
        end,
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
    idle: Duration,
    traffic: &LocationCounters,
    mut shutdown: watch::Receiver<bool>,
) -> TunnelStats
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
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
        dir: Dir::ClientToUpstream,
    };
    let mut upstream = Stamped {
        inner: upstream,
        activity: &activity,
        traffic,
        dir: Dir::UpstreamToClient,
    };
    let copy = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, 8192, 8192);
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
                let last = activity.last();
                if last + idle <= Instant::now() {
                    return failed(TunnelEnd::Idle);
                }
                deadline = last + idle;
            }
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return failed(TunnelEnd::Shutdown);
                }
            }
        }
    }
}

/// When bytes last moved, stamped by [`Stamped`] reads.
struct Activity(std::sync::Mutex<Instant>);

impl Default for Activity {
    fn default() -> Self {
        Activity(std::sync::Mutex::new(Instant::now()))
    }
}

impl Activity {
    fn touch(&self) {
        *self.0.lock().unwrap() = Instant::now();
    }

    fn last(&self) -> Instant {
        *self.0.lock().unwrap()
    }
}

/// A stream that stamps [`Activity`] and counts bytes whenever a read
/// returns data (`dir`: where what it reads goes).
struct Stamped<'a, S> {
    inner: S,
    activity: &'a Activity,
    traffic: &'a LocationCounters,
    dir: Dir,
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
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
