//! Which HTTP version a client connection speaks: on TLS what ALPN agreed
//! on, on plain TCP (with `http2` on) whether the client opened with the
//! HTTP/2 connection preface (h2c with prior knowledge, RFC 9113 §3.3).

use super::client_stream::ClientStream;
use std::time::Duration;
use tokio::net::TcpStream;

/// RFC 9113 §3.4: the first bytes of every HTTP/2 connection. No HTTP/1.1
/// request starts with them (`PRI` is reserved for this, RFC 9113 §11.1).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The protocol a connection is served with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

impl Protocol {
    /// The ALPN name, as metrics label it.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Http1 => "http/1.1",
            Protocol::Http2 => "h2",
        }
    }
}

/// The protocol of `stream`. `http2`: whether the listener speaks HTTP/2
/// (on TLS it only offered `h2` by ALPN if so). `None`: the client closed
/// or sent nothing within `timeout` before the protocol could be told.
pub async fn negotiate(stream: &ClientStream, http2: bool, timeout: Duration) -> Option<Protocol> {
    match stream {
        ClientStream::Tls(tls) => Some(match tls.get_ref().1.alpn_protocol() {
            Some(b"h2") => Protocol::Http2,
            _ => Protocol::Http1,
        }),
        ClientStream::Plain(_) if !http2 => Some(Protocol::Http1),
        ClientStream::Plain(tcp) => tokio::time::timeout(timeout, sniff_preface(tcp))
            .await
            .ok()
            .flatten(),
    }
}

/// Peeks (the bytes stay for hyper to read) until the first bytes either
/// differ from the preface or hold all of it. Peeking instead of reading
/// keeps the socket the `TcpStream` hyper is given, which the WebSocket
/// relay takes back after an upgrade; hyper-util's `auto` server wraps it
/// in a private type instead.
async fn sniff_preface(tcp: &TcpStream) -> Option<Protocol> {
    let mut buf = [0u8; PREFACE.len()];
    loop {
        let n = tcp.peek(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        if buf[..n] != PREFACE[..n] {
            return Some(Protocol::Http1);
        }
        if n == PREFACE.len() {
            return Some(Protocol::Http2);
        }
        // A preface cut across segments: peek returns at once while bytes
        // wait unread, so wait a little for the rest rather than spin.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    async fn sniffed(chunks: &[&[u8]]) -> Option<Protocol> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        for chunk in chunks {
            client.write_all(chunk).await.unwrap();
            client.flush().await.unwrap();
        }
        if chunks.is_empty() {
            drop(client);
        }
        let stream = ClientStream::Plain(server);
        negotiate(&stream, true, Duration::from_secs(5)).await
    }

    #[tokio::test]
    async fn the_preface_means_http2_anything_else_http1() {
        assert_eq!(sniffed(&[PREFACE]).await, Some(Protocol::Http2));
        assert_eq!(
            sniffed(&[b"PRI * HTTP/2.0\r\n", b"\r\nSM\r\n\r\n"]).await,
            Some(Protocol::Http2)
        );
        assert_eq!(
            sniffed(&[b"GET / HTTP/1.1\r\n\r\n"]).await,
            Some(Protocol::Http1)
        );
        // "PRI" then something else: not HTTP/2.
        assert_eq!(sniffed(&[b"PRIX"]).await, Some(Protocol::Http1));
        assert_eq!(sniffed(&[]).await, None);
    }
}
