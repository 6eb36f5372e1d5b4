//! The two kinds of socket the raw tunnel relays between, behind one trait
//! so that one loop serves both: a plain TCP socket, read on readiness so
//! that an emptied receive queue costs no extra `EAGAIN` read, and any other
//! byte stream (TLS, an HTTP/2 stream), read and written through its own
//! `poll_read` / `poll_write`.

use socket2::SockRef;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::TcpStream;

/// One side of a tunnel.
pub trait Endpoint {
    /// Reads what is there into `buf`; `Ready(Ok(0))` is the end of stream.
    fn poll_take(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>>;

    /// Writes some of `buf`; `Pending` when it can take nothing now (the
    /// task is woken when it can).
    fn poll_give(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>>;

    /// Pushes out what an earlier `poll_give` accepted but kept (a TLS
    /// record under construction). Plain sockets keep nothing.
    fn poll_push(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Ends the writing half (TCP FIN, TLS close_notify), best effort.
    async fn finish(&mut self);
}

impl Endpoint for TcpStream {
    fn poll_take(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.poll_read_ready(cx))?;
            match read_all_there(self, buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }

    fn poll_give(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        // Try first: the send buffer almost always has room, and asking for
        // readiness before every write would cost a reactor round trip.
        match self.try_write(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            other => return Poll::Ready(other),
        }
        loop {
            ready!(self.poll_write_ready(cx))?;
            match self.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }

    fn poll_push(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    async fn finish(&mut self) {
        let _ = SockRef::from(&*self).shutdown(std::net::Shutdown::Write);
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

/// A byte stream without socket readiness (TLS, an HTTP/2 stream).
pub struct Stream<S>(pub S);

impl<S: AsyncRead + AsyncWrite + Unpin> Endpoint for Stream<S> {
    fn poll_take(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut buf = ReadBuf::new(buf);
        ready!(Pin::new(&mut self.0).poll_read(cx, &mut buf))?;
        Poll::Ready(Ok(buf.filled().len()))
    }

    fn poll_give(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_push(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    async fn finish(&mut self) {
        let _ = self.0.shutdown().await;
    }
}
