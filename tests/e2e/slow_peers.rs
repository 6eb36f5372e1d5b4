//! Peers that go slow on purpose, each cut by the timeout the README names:
//! a request body that stops (`client_body_timeout`), WebSocket frames
//! trickled a byte a second through the frame relay and the tunnel
//! (`read_timeout`, which counts whole frames), and TLS handshakes left
//! half-open (`client_header_timeout`).

use crate::support::backend::Backend;
use crate::support::config::ConfigBuilder;
use crate::support::pki::Pki;
use crate::support::{start_proxy, temp_dir, test_plugins};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout};
use tokio_rustls::rustls::pki_types::ServerName;

/// Bound on every wait: generous, only there to fail instead of hanging.
const WAIT: Duration = Duration::from_secs(20);

/// Reads until the proxy closes the connection; what it sent.
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let read = timeout(WAIT, async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the proxy still holds the slow peer");
    got
}

async fn body_proxy() -> (wasp::proxy::Proxy, SocketAddr, Backend) {
    let backend = Backend::start("b1").await;
    let config = ConfigBuilder::new()
        .server(|s| {
            s.set("client_body_timeout", "2s")
                .location("/", |l| l.proxy_pass(backend.addr))
        })
        .build();
    let (proxy, addr) = start_proxy(&config).await;
    (proxy, addr, backend)
}

const POST_HEAD: &str =
    "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 64\r\nConnection: close\r\n\r\n";

#[tokio::test]
async fn a_request_body_that_stops_is_answered_408_after_client_body_timeout() {
    let (_proxy, addr, _backend) = body_proxy().await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(POST_HEAD.as_bytes()).await.unwrap();
    client.write_all(&[b'x'; 10]).await.unwrap();
    // 54 bytes never come.
    let answer = String::from_utf8(until_closed(&mut client).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

#[tokio::test]
async fn a_body_trickled_faster_than_client_body_timeout_goes_through() {
    // The timeout is between two reads, not for the whole body (nginx's):
    // 64 bytes, 8 at a time every 400 ms, take longer than the 2 s timeout.
    let (_proxy, addr, _backend) = body_proxy().await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(POST_HEAD.as_bytes()).await.unwrap();
    for _ in 0..8 {
        sleep(Duration::from_millis(400)).await;
        client.write_all(&[b'x'; 8]).await.unwrap();
    }
    let answer = String::from_utf8(until_closed(&mut client).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""body_len":64"#), "{answer}");
}

/// Opens a WebSocket through `addr` by hand and trickles one masked text
/// frame (a 40-byte payload) a byte a second; returns the bytes the proxy
/// sent back after the 101 until it closed the connection, and how many
/// bytes of the frame had been sent by then.
async fn trickle_a_frame(addr: SocketAddr) -> (Vec<u8>, usize) {
    let mut client = TcpStream::connect(addr).await.unwrap();
    let upgrade = "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                   Sec-WebSocket-Key: SGVsbG8sIHdvcmxkIQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    client.write_all(upgrade.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            client.read(&mut byte).await.unwrap(),
            1,
            "closed in the 101"
        );
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    let mut frame = vec![0x81, 0x80 | 40, 0, 0, 0, 0];
    frame.extend_from_slice(&[b'a'; 40]);
    let (mut read, mut write) = client.into_split();
    let trickle = tokio::spawn(async move {
        let mut sent = 0;
        for byte in frame {
            if write.write_all(&[byte]).await.is_err() {
                break;
            }
            sent += 1;
            sleep(Duration::from_secs(1)).await;
        }
        sent
    });
    let mut got = Vec::new();
    let closed = timeout(WAIT, read.read_to_end(&mut got)).await;
    assert!(closed.is_ok(), "the trickling client is still connected");
    let sent = trickle.await.unwrap();
    (got, sent)
}

fn websocket_proxy(backend: SocketAddr, filtered: bool) -> String {
    let filter = temp_dir("slow-peers").join("passthrough.wasm");
    std::fs::write(&filter, test_plugins::get("passthrough")).unwrap();
    ConfigBuilder::new()
        .location("/", |l| {
            let l = l.proxy_pass(backend).set("read_timeout", "3s");
            if filtered { l.filter_file(&filter) } else { l }
        })
        .build()
}

#[tokio::test]
async fn a_frame_trickled_a_byte_a_second_is_cut_by_read_timeout_through_filters() {
    let backend = Backend::start("b1").await;
    let (_proxy, addr) = start_proxy(&websocket_proxy(backend.addr, true)).await;
    let (got, sent) = trickle_a_frame(addr).await;
    assert!(sent < 46, "the whole frame went before the cut");
    // The backend's report (a text frame), then the relay's close.
    let close = [&[0x88, 14, 0x03, 0xe9][..], b"idle timeout"].concat();
    assert!(got.ends_with(&close), "{:?}", String::from_utf8_lossy(&got));
}

#[tokio::test]
async fn a_frame_trickled_a_byte_a_second_is_cut_by_read_timeout_through_the_tunnel() {
    let backend = Backend::start("b1").await;
    let (_proxy, addr) = start_proxy(&websocket_proxy(backend.addr, false)).await;
    let (got, sent) = trickle_a_frame(addr).await;
    assert!(sent < 46, "the whole frame went before the cut");
    // Only the backend's report came: one unmasked text frame.
    assert_eq!(got.first(), Some(&0x81), "{got:?}");
}

#[tokio::test]
async fn half_open_tls_handshakes_are_cut_by_client_header_timeout() {
    const HALF_OPEN: usize = 50;
    let pki = Pki::new("half-open");
    pki.issue("a.test");
    let config = ConfigBuilder::new()
        .set("max_connections", HALF_OPEN as i64)
        .server(|s| {
            s.set("tls", pki.tls("a.test"))
                .set("client_header_timeout", "1s")
                .location("/", |l| l.returns(200, "served"))
        })
        .build();
    let (_proxy, addr) = start_proxy(&config).await;
    // Every slot taken by a handshake that stops inside its ClientHello: a
    // record header announcing 512 bytes, then 4. (A client that sends
    // nothing at all is not even accepted: TCP_DEFER_ACCEPT keeps it in the
    // kernel.)
    let mut half_open = Vec::new();
    for _ in 0..HALF_OPEN {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc])
            .await
            .unwrap();
        half_open.push(tcp);
    }
    for tcp in &mut half_open {
        assert!(until_closed(tcp).await.is_empty());
    }
    // Their slots are free again.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = timeout(
        WAIT,
        pki.connector()
            .connect(ServerName::try_from("a.test").unwrap(), tcp),
    )
    .await
    .expect("handshake in time")
    .expect("TLS handshake");
    tls.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    let _ = tls.read_to_string(&mut answer).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("served"), "{answer}");
}
