//! permessage-deflate (RFC 7692) on filtered WebSockets: wasp negotiates it
//! with the client and with the upstream on its own, inflates what a peer
//! compressed before the filters and deflates what it re-encodes after them.
//! tokio-tungstenite has no permessage-deflate, so both the client and the
//! upstream here speak WebSocket by hand over real sockets, deflating with
//! flate2 as RFC 7692 §7.2 says (raw deflate, sync flush, tail removed).

use crate::support::config::ConfigBuilder;
use crate::support::start_proxy;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use wasp::proxy::Proxy;

const WAIT: Duration = Duration::from_secs(10);
const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];
const TEXT: u8 = 1;
const CLOSE: u8 = 8;
/// What wasp offers every upstream.
const WASP_OFFER: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

fn deflate(payload: &[u8]) -> Vec<u8> {
    let mut compress = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(payload.len() + 64);
    compress
        .compress_vec(payload, &mut out, FlushCompress::Sync)
        .unwrap();
    assert!(out.ends_with(&TAIL));
    out.truncate(out.len() - TAIL.len());
    out
}

fn inflate(payload: &[u8]) -> Vec<u8> {
    let mut input = payload.to_vec();
    input.extend_from_slice(&TAIL);
    let mut out = Vec::with_capacity(1 << 20);
    Decompress::new(false)
        .decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .unwrap();
    out
}

/// One message as read off the wire.
#[derive(Debug)]
struct Received {
    opcode: u8,
    /// RSV1: it came compressed.
    compressed: bool,
    /// Inflated when it came compressed.
    payload: Vec<u8>,
}

impl Received {
    fn text(&self) -> &str {
        assert_eq!(self.opcode, TEXT, "{self:?}");
        std::str::from_utf8(&self.payload).unwrap()
    }

    fn close_code(&self) -> u16 {
        assert_eq!(self.opcode, CLOSE, "{self:?}");
        u16::from_be_bytes([self.payload[0], self.payload[1]])
    }
}

/// A WebSocket endpoint driven by hand: a client masks what it sends.
struct Peer {
    stream: TcpStream,
    read: Vec<u8>,
    client: bool,
}

impl Peer {
    async fn send(&mut self, opcode: u8, payload: &[u8], compressed: bool) {
        let payload = if compressed {
            deflate(payload)
        } else {
            payload.to_vec()
        };
        let mut frame = vec![0x80 | opcode | if compressed { 0x40 } else { 0 }];
        let mask = if self.client { 0x80 } else { 0 };
        match payload.len() {
            len @ 0..=125 => frame.push(mask | len as u8),
            len @ 126..=0xffff => {
                frame.push(mask | 126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                frame.push(mask | 127);
                frame.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        let key = [0x11, 0x22, 0x33, 0x44];
        if self.client {
            frame.extend_from_slice(&key);
        }
        let start = frame.len();
        frame.extend_from_slice(&payload);
        if self.client {
            for (i, byte) in frame[start..].iter_mut().enumerate() {
                *byte ^= key[i % 4];
            }
        }
        self.stream.write_all(&frame).await.unwrap();
    }

    async fn send_text(&mut self, text: &str, compressed: bool) {
        self.send(TEXT, text.as_bytes(), compressed).await;
    }

    /// The next whole (unfragmented) frame; `None` at the end of the stream.
    async fn recv(&mut self) -> Option<Received> {
        loop {
            if let Some(frame) = self.parse() {
                return Some(frame);
            }
            let mut buf = [0u8; 16 << 10];
            let read = timeout(WAIT, self.stream.read(&mut buf))
                .await
                .expect("a frame in time")
                .ok()?;
            if read == 0 {
                return None;
            }
            self.read.extend_from_slice(&buf[..read]);
        }
    }

    fn parse(&mut self) -> Option<Received> {
        let bytes = &self.read;
        if bytes.len() < 2 {
            return None;
        }
        assert!(bytes[0] & 0x80 != 0, "only whole messages are expected");
        let masked = bytes[1] & 0x80 != 0;
        let (len, mut at) = match bytes[1] & 0x7f {
            126 if bytes.len() >= 4 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
            127 if bytes.len() >= 10 => (
                u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize,
                10,
            ),
            126 | 127 => return None,
            len => (len as usize, 2),
        };
        let key = masked.then(|| {
            at += 4;
            [bytes[at - 4], bytes[at - 3], bytes[at - 2], bytes[at - 1]]
        });
        if bytes.len() < at + len {
            return None;
        }
        let mut payload = bytes[at..at + len].to_vec();
        if let Some(key) = key {
            for (i, byte) in payload.iter_mut().enumerate() {
                *byte ^= key[i % 4];
            }
        }
        let compressed = bytes[0] & 0x40 != 0;
        let opcode = bytes[0] & 0x0f;
        self.read.drain(..at + len);
        let payload = if compressed {
            inflate(&payload)
        } else {
            payload
        };
        Some(Received {
            opcode,
            compressed,
            payload,
        })
    }
}

/// Reads an HTTP head; returns it with the bytes read past it.
async fn read_head(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut bytes = Vec::new();
    loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = bytes.split_off(end + 4);
            return (String::from_utf8(bytes).unwrap(), rest);
        }
        let mut buf = [0u8; 4096];
        let read = timeout(WAIT, stream.read(&mut buf)).await.unwrap().unwrap();
        assert!(
            read > 0,
            "head cut short: {}",
            String::from_utf8_lossy(&bytes)
        );
        bytes.extend_from_slice(&buf[..read]);
    }
}

/// A header's value in an HTTP head (names compared without case).
fn header_in(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().to_owned())
    })
}

/// An upstream that accepts permessage-deflate (when `deflate`, answering
/// the offer wasp makes) and sends, compressed when negotiated, first
/// `offer=<the Sec-WebSocket-Extensions it got>`, then for each message
/// `deflated <text>` or `plain <text>`, saying how the message reached it.
async fn upstream(deflate: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (head, rest) = read_head(&mut stream).await;
                let key = header_in(&head, "sec-websocket-key").unwrap();
                let offer = header_in(&head, "sec-websocket-extensions");
                let accepted = deflate && offer.is_some();
                let mut answer = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
                    derive_accept_key(key.as_bytes())
                );
                if accepted {
                    answer.push_str(&format!("Sec-WebSocket-Extensions: {WASP_OFFER}\r\n"));
                }
                answer.push_str("\r\n");
                stream.write_all(answer.as_bytes()).await.unwrap();
                let mut peer = Peer {
                    stream,
                    read: rest,
                    client: false,
                };
                let report = format!("offer={}", offer.as_deref().unwrap_or("none"));
                peer.send_text(&report, accepted).await;
                while let Some(message) = peer.recv().await {
                    if message.opcode == CLOSE {
                        peer.send(CLOSE, &message.payload, false).await;
                        return;
                    }
                    let how = if message.compressed {
                        "deflated"
                    } else {
                        "plain"
                    };
                    let echo = format!("{how} {}", message.text());
                    peer.send_text(&echo, accepted).await;
                }
            });
        }
    });
    addr
}

/// Opens a WebSocket to `addr` + `path` offering `extensions`; returns the
/// client and the `Sec-WebSocket-Extensions` of wasp's 101.
async fn client(addr: SocketAddr, path: &str, extensions: Option<&str>) -> (Peer, Option<String>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: a.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    if let Some(extensions) = extensions {
        request.push_str(&format!("Sec-WebSocket-Extensions: {extensions}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let (head, rest) = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let answer = header_in(&head, "sec-websocket-extensions");
    let peer = Peer {
        stream,
        read: rest,
        client: true,
    };
    (peer, answer)
}

/// A browser's offer.
const BROWSER_OFFER: &str = "permessage-deflate; client_max_window_bits";
/// wasp's answer to it: no context takeover from the client.
const WASP_ANSWER: &str = "permessage-deflate; client_no_context_takeover";

async fn proxy_to(
    upstream: SocketAddr,
    filters: &str,
    settings: &[(&str, &str)],
) -> (Proxy, SocketAddr) {
    let config = ConfigBuilder::new()
        .location("/ws", |l| {
            settings.iter().fold(
                l.proxy_pass(upstream).filters(filters),
                |l, (key, value)| l.set(key, crate::support::config::toml_value(value)),
            )
        })
        .build();
    start_proxy(&config).await
}

const FORWARD_ALL: &str = r#"[{ plugin = "max-size" }]"#;

async fn recv(peer: &mut Peer) -> Received {
    peer.recv().await.expect("a frame")
}

#[tokio::test]
async fn both_legs_negotiate_and_compressed_messages_pass_compressed() {
    let (_proxy, addr) = proxy_to(upstream(true).await, FORWARD_ALL, &[]).await;
    let (mut ws, answer) = client(addr, "/ws", Some(BROWSER_OFFER)).await;
    assert_eq!(answer.as_deref(), Some(WASP_ANSWER));
    // The upstream got wasp's offer, not the client's, and compresses.
    let report = recv(&mut ws).await;
    assert_eq!(report.text(), format!("offer={WASP_OFFER}"));
    assert!(report.compressed);
    for text in ["hello", &"long enough to compress well ".repeat(50)] {
        ws.send_text(text, true).await;
        let echo = recv(&mut ws).await;
        assert_eq!(echo.text(), format!("deflated {text}"));
        assert!(echo.compressed);
    }
    // An uncompressed message stays so: compression is per message.
    ws.send_text("as is", false).await;
    assert_eq!(recv(&mut ws).await.text(), "plain as is");
}

#[tokio::test]
async fn the_filter_sees_plain_text_and_its_replacement_is_compressed() {
    let redact = r#"[{ plugin = "redact", config = { words = ["darn"] } }]"#;
    let (_proxy, addr) = proxy_to(upstream(true).await, redact, &[]).await;
    let (mut ws, answer) = client(addr, "/ws", Some(BROWSER_OFFER)).await;
    assert_eq!(answer.as_deref(), Some(WASP_ANSWER));
    recv(&mut ws).await;
    // Compressed, "darn" appears nowhere on the wire; the filter matched
    // it inflated, and its replacement reached the upstream deflated.
    ws.send_text("oh darn, darn it", true).await;
    let echo = recv(&mut ws).await;
    assert_eq!(echo.text(), "deflated oh ***, *** it");
    assert!(echo.compressed);
}

#[tokio::test]
async fn a_message_inflating_past_max_message_size_closes_with_1009() {
    let (_proxy, addr) = proxy_to(
        upstream(true).await,
        FORWARD_ALL,
        &[("max_message_size", r#""64k""#)],
    )
    .await;
    let (mut ws, _) = client(addr, "/ws", Some(BROWSER_OFFER)).await;
    recv(&mut ws).await;
    // 1 MiB of zeros deflates to about 1 KiB: far under the limit on the wire.
    let bomb = vec![0u8; 1 << 20];
    assert!(deflate(&bomb).len() < 64 << 10);
    ws.send(2, &bomb, true).await;
    let close = recv(&mut ws).await;
    assert_eq!(close.close_code(), 1009);
}

#[tokio::test]
async fn a_client_without_deflate_talks_plain_to_an_upstream_with_it() {
    let (_proxy, addr) = proxy_to(upstream(true).await, FORWARD_ALL, &[]).await;
    let (mut ws, answer) = client(addr, "/ws", None).await;
    assert_eq!(answer, None);
    // wasp still offered the upstream deflate, and inflates what it sends.
    let report = recv(&mut ws).await;
    assert_eq!(report.text(), format!("offer={WASP_OFFER}"));
    assert!(!report.compressed);
    ws.send_text("hi", false).await;
    let echo = recv(&mut ws).await;
    assert_eq!(echo.text(), "plain hi");
    assert!(!echo.compressed);
}

#[tokio::test]
async fn a_client_with_deflate_talks_to_an_upstream_without_it() {
    let (_proxy, addr) = proxy_to(upstream(false).await, FORWARD_ALL, &[]).await;
    let (mut ws, answer) = client(addr, "/ws", Some(BROWSER_OFFER)).await;
    assert_eq!(answer.as_deref(), Some(WASP_ANSWER));
    assert_eq!(recv(&mut ws).await.text(), format!("offer={WASP_OFFER}"));
    // Inflated for the upstream, which accepted no compression.
    ws.send_text("hi", true).await;
    let echo = recv(&mut ws).await;
    assert_eq!(echo.text(), "plain hi");
    // A replaced message towards the client is compressed.
    let redact = r#"[{ plugin = "redact", config = { words = ["plain"] } }]"#;
    let (_proxy, addr) = proxy_to(upstream(false).await, redact, &[]).await;
    let (mut ws, _) = client(addr, "/ws", Some(BROWSER_OFFER)).await;
    recv(&mut ws).await;
    ws.send_text("hi", true).await;
    let echo = recv(&mut ws).await;
    assert_eq!(echo.text(), "*** hi");
    assert!(echo.compressed);
}

#[tokio::test]
async fn websocket_deflate_false_negotiates_nothing_on_either_leg() {
    let (_proxy, addr) = proxy_to(
        upstream(true).await,
        FORWARD_ALL,
        &[("websocket_deflate", "false")],
    )
    .await;
    let (mut ws, answer) = client(addr, "/ws", Some(BROWSER_OFFER)).await;
    assert_eq!(answer, None);
    let report = recv(&mut ws).await;
    assert_eq!(report.text(), "offer=none");
    // A compressed frame is now a protocol error.
    ws.send_text("hi", true).await;
    assert_eq!(recv(&mut ws).await.close_code(), 1002);
}
