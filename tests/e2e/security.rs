//! The edge: TLS (SNI, certificate reload under an open `wss://`),
//! `redirect_http`, Origin checks, connection and request-rate limits and
//! what a proxy must survive — slow clients, oversize heads and bodies, and
//! request-smuggling shapes.

use crate::support::backend::Backend;
use crate::support::config::{ConfigBuilder, toml_value};
use crate::support::pki::{Pki, replace};
use crate::support::{eventually, request_from, sample, start_proxy};
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

async fn tls_connect(
    pki: &Pki,
    addr: SocketAddr,
    host: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    pki.connector()
        .connect(ServerName::try_from(host.to_string()).unwrap(), tcp)
        .await
        .expect("TLS handshake")
}

fn peer_cert(tls: &tokio_rustls::client::TlsStream<TcpStream>) -> CertificateDer<'static> {
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// Sends a raw request on `stream` and reads the whole answer.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    request: &[u8],
) -> (u16, String) {
    stream.write_all(request).await.unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_end_to_end_with_sni_and_a_certificate_replaced_under_an_open_connection() {
    let backend = Backend::start("b1").await;
    let pki = Pki::new("sni");
    let first_a = pki.issue("a.test");
    pki.issue("b.test");
    let config = ConfigBuilder::new()
        .server(|s| {
            s.set("server_name", "a.test")
                .set("tls", pki.tls("a.test"))
                .location("/", |l| l.proxy_pass(backend.addr))
        })
        .server(|s| {
            s.set("server_name", "b.test")
                .set("tls", pki.tls("b.test"))
                .location("/", |l| l.returns(200, "site b"))
        })
        .build();
    let (_proxy, addr) = start_proxy(&config).await;

    // wss:// to a.test, through a client that trusts only the test CA.
    let tls = tls_connect(&pki, addr, "a.test").await;
    assert_eq!(peer_cert(&tls), first_a);
    let (mut ws, _) =
        tokio_tungstenite::client_async("wss://a.test/chat".into_client_request().unwrap(), tls)
            .await
            .expect("wss handshake");
    let report = ws.next().await.unwrap().unwrap();
    assert!(
        report.to_text().unwrap().contains("\"uri\":\"/chat\""),
        "{report}"
    );
    ws.send(Message::text("over tls")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("over tls"));

    // SNI b.test gets b's certificate and b's site.
    let mut tls_b = tls_connect(&pki, addr, "b.test").await;
    assert_ne!(peer_cert(&tls_b), first_a);
    let (status, text) = exchange(
        &mut tls_b,
        b"GET / HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert!(text.ends_with("site b"), "{text}");

    // A new certificate for a.test lands on disk: new handshakes get it...
    let second_a = pki.issue("a.test");
    let deadline = Instant::now() + Duration::from_secs(10);
    while peer_cert(&tls_connect(&pki, addr, "a.test").await) != second_a {
        assert!(
            Instant::now() < deadline,
            "the new certificate was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // ...and the wss connection opened before is still there.
    ws.send(Message::text("still here")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("still here")
    );

    // A broken certificate is refused and the current one kept.
    replace(&pki.dir.join("a.test.crt"), b"not a certificate");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        peer_cert(&tls_connect(&pki, addr, "a.test").await),
        second_a
    );
}

async fn handshake_status(addr: SocketAddr, path: &str, origin: Option<&str>) -> u16 {
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(error) => panic!("handshake failed: {error}"),
    }
}

#[tokio::test]
async fn origins_allowed_disallowed_wildcard_and_missing() {
    let backend = Backend::start("b1").await;
    let config = ConfigBuilder::new()
        .location("/ws/", |l| {
            l.proxy_pass(backend.addr).set(
                "origins",
                vec!["https://chat.example.com", "https://*.example.com"],
            )
        })
        .location("/strict/", |l| {
            l.proxy_pass(backend.addr)
                .set("origins", vec!["https://chat.example.com"])
                .set("allow_missing_origin", false)
        })
        .build();
    let (_proxy, addr) = start_proxy(&config).await;
    assert_eq!(
        handshake_status(addr, "/ws/", Some("https://chat.example.com")).await,
        101
    );
    assert_eq!(
        handshake_status(addr, "/ws/", Some("https://eu.example.com")).await,
        101
    );
    assert_eq!(
        handshake_status(addr, "/ws/", Some("https://evil.example.net")).await,
        403
    );
    assert_eq!(
        handshake_status(addr, "/ws/", Some("http://chat.example.com")).await,
        403,
        "scheme matters"
    );
    assert_eq!(
        handshake_status(addr, "/ws/", Some("https://example.com")).await,
        403,
        "the wildcard needs a subdomain"
    );
    assert_eq!(
        handshake_status(addr, "/ws/", None).await,
        101,
        "non-browser clients send no Origin"
    );
    assert_eq!(handshake_status(addr, "/strict/", None).await, 403);
    assert_eq!(
        handshake_status(addr, "/strict/", Some("https://chat.example.com")).await,
        101
    );
}

async fn ws_from(
    source: &str,
    addr: SocketAddr,
) -> Result<tokio_tungstenite::WebSocketStream<TcpStream>, u16> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let request = format!("ws://{addr}/ws/").into_client_request().unwrap();
    match tokio_tungstenite::client_async(request, stream).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(error) => panic!("handshake failed: {error}"),
    }
}

#[tokio::test]
async fn limit_conn_refuses_the_eleventh_websocket_of_one_address_only() {
    let backend = Backend::start("b1").await;
    let config = ConfigBuilder::new()
        .location("/ws/", |l| l.proxy_pass(backend.addr).set("limit_conn", 10))
        .build();
    let (_proxy, addr) = start_proxy(&config).await;
    let mut open = Vec::new();
    for _ in 0..10 {
        open.push(ws_from("127.0.0.1", addr).await.expect("within the limit"));
    }
    assert_eq!(ws_from("127.0.0.1", addr).await.err(), Some(503));
    let other = ws_from("127.0.0.2", addr)
        .await
        .expect("another address has its own slots");
    // Closing one frees a slot (the close travels through the relay first).
    let mut closing = open.pop().unwrap();
    closing.close(None).await.unwrap();
    while closing.next().await.is_some() {}
    drop(closing);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match ws_from("127.0.0.1", addr).await {
            Ok(ws) => {
                open.push(ws);
                break;
            }
            Err(503) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(status) => panic!("the freed slot was not reused: {status}"),
        }
    }
    drop((open, other));
}

#[tokio::test]
async fn limit_req_refuses_a_burst_per_address_until_its_bucket_drains() {
    let backend = Backend::start("b1").await;
    // A slow rate, so that nothing drains while the burst is sent.
    let config = ConfigBuilder::new()
        .location("/", |l| {
            l.proxy_pass(backend.addr)
                .set("limit_req", toml_value(r#"{ rate = "1r/s", burst = 2 }"#))
        })
        .build();
    let (_proxy, addr) = start_proxy(&config).await;
    let (one, other) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
    // nginx's `limit_req burst=2 nodelay`: the rate's request plus the burst
    // are served at once, the next one gets 503 (limit_req_status).
    for n in 1..=3 {
        let (status, _) = request_from(one, addr, "GET", "/").await;
        assert_eq!(status, 200, "request {n} of the burst");
    }
    assert_eq!(request_from(one, addr, "GET", "/").await.0, 503);
    assert_eq!(request_from(one, addr, "GET", "/").await.0, 503);
    // The key is the client address: another one has a bucket of its own.
    assert_eq!(request_from(other, addr, "GET", "/").await.0, 200);
    // Refused requests do not fill the bucket, so once it has drained by
    // one request the first address is served again.
    eventually("the bucket to drain", Duration::from_secs(10), async || {
        (request_from(one, addr, "GET", "/").await.0 == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn redirect_http_answers_301_to_the_same_url_over_https() {
    let backend = Backend::start("b1").await;
    // The guide's TLS companion: nginx's `return 301 https://$host$request_uri`.
    let config = ConfigBuilder::new()
        .server(|s| {
            s.set("redirect_http", true)
                .location("/", |l| l.proxy_pass(backend.addr))
        })
        .build();
    let (_proxy, addr) = start_proxy(&config).await;
    let request = "GET /chat/room?id=7&x=%20y HTTP/1.1\r\nHost: example.com:8000\r\nConnection: close\r\n\r\n";
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let head = answer
        .split("\r\n\r\n")
        .next()
        .unwrap()
        .to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 301 "), "{answer}");
    // $host drops the port; $request_uri keeps the query as sent.
    assert!(
        head.lines()
            .any(|line| line == "location: https://example.com/chat/room?id=7&x=%20y"),
        "{answer}"
    );
    // Nothing is proxied, WebSocket handshakes included.
    let request = format!("ws://{addr}/ws").into_client_request().unwrap();
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 301);
            assert_eq!(response.headers()["location"], "https://127.0.0.1/ws");
        }
        other => panic!("expected 301, got {:?}", other.map(|(_, r)| r.status())),
    }
}

async fn hardened_proxy() -> (wasp::proxy::Proxy, SocketAddr) {
    let backend = Backend::start("b1").await;
    let config = ConfigBuilder::new()
        .server(|s| {
            s.set("client_header_timeout", "500ms")
                .set("max_header_size", "8k")
                .set("client_max_body_size", "1k")
                .location("/", |l| l.proxy_pass(backend.addr))
        })
        .server(|s| {
            s.set("server_name", "strict.test")
                .set("strict_websocket", true)
                .location("/", |l| l.proxy_pass(backend.addr))
        })
        .build();
    start_proxy(&config).await
}

async fn raw(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    exchange(&mut stream, request).await
}

#[tokio::test]
async fn a_slowloris_client_is_cut_while_others_are_served() {
    let (_proxy, addr) = hardened_proxy().await;
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let (status, _) = raw(
        addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    // The head never completes: the connection is closed (hyper may send 408 first).
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the slow client is still connected");
    let text = String::from_utf8_lossy(&rest);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
}

#[tokio::test]
async fn oversize_heads_and_bodies_are_refused() {
    let (_proxy, addr) = hardened_proxy().await;
    let big = "x".repeat(20_000);
    let (status, _) = raw(
        addr,
        format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status, 431);
    let (status, _) = raw(
        addr,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2048\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 413);
    // A chunked body gives no size up front: it is cut at the limit.
    let chunk = "y".repeat(1500);
    let request = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    let (status, _) = raw(addr, request.as_bytes()).await;
    assert_eq!(status, 413);
    // Within the limit it passes.
    let (status, _) = raw(
        addr,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn request_smuggling_shapes_are_refused_or_neutralised() {
    let (_proxy, addr) = hardened_proxy().await;
    // Two different lengths: no way to tell where the body ends.
    let twice = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\nConnection: close\r\n\r\nabcd";
    assert_eq!(raw(addr, twice).await.0, 400);
    // Both Content-Length and Transfer-Encoding (RFC 9112 §6.3): the length
    // is dropped, the body read as chunked, and the connection closed after
    // the answer, so a request hidden in the "body" is never served.
    let smuggle =
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n\
                    0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let (status, text) = raw(addr, smuggle).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        text.matches("HTTP/1.1 ").count(),
        1,
        "a second request was served: {text}"
    );
    assert!(!text.contains("/smuggled"), "{text}");
    assert!(text.contains("\"body_len\":0"), "{text}");
    // The same length twice is one length: forwarded once.
    let same_twice = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 4\r\nConnection: close\r\n\r\nabcd";
    let (status, text) = raw(addr, same_twice).await;
    assert_eq!(status, 200);
    assert_eq!(text.matches("\"content-length\"").count(), 1, "{text}");
    assert!(text.contains("\"body_len\":4"), "{text}");
    // A chunked body that is not chunked: the client's error (400), not
    // the upstream's (502), as nginx answers.
    let bad_chunks = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nabc\r\n0\r\n\r\n";
    let (status, text) = raw(addr, bad_chunks).await;
    assert_eq!(status, 400, "{text}");
    // Two Host headers: which host is meant? RFC 9112 §3.2 and nginx: 400,
    // and nothing reaches the upstream.
    let two_hosts =
        b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n";
    let (status, text) = raw(addr, two_hosts).await;
    assert_eq!(status, 400, "{text}");
    assert!(!text.contains("\"backend\""), "{text}");
}

#[tokio::test]
async fn an_upgrade_without_a_valid_key_passes_by_default_and_is_refused_when_strict() {
    let (_proxy, addr) = hardened_proxy().await;
    let request = |host: &str| {
        format!(
            "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
    };
    // As nginx does, the request reaches the upstream unchanged (the test
    // backend answers a keyless upgrade as a plain request).
    let (status, text) = raw(addr, request("x").as_bytes()).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"upgrade\",\"websocket\""), "{text}");
    let (status, _) = raw(addr, request("strict.test").as_bytes()).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn max_connections_closes_the_extra_client_and_a_freed_slot_serves_again() {
    let backend = Backend::start("b1").await;
    let config = ConfigBuilder::new()
        .set("max_connections", 2)
        .location("/", |l| l.proxy_pass(backend.addr))
        .build();
    let (proxy, addr) = start_proxy(&config).await;
    let open = || {
        let text = proxy.shared().metrics.encode();
        sample(&text, "wasp_client_connections{listener=\"127.0.0.1:0\"}").unwrap_or(0.0)
    };
    // Two clients hold both slots, each with a request head in progress
    // (wasp accepts a connection once its first bytes arrived).
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        held.push(stream);
    }
    eventually(
        "both held clients accepted",
        Duration::from_secs(5),
        async || (open() == 2.0).then_some(()),
    )
    .await;

    let (status, answer) = raw(
        addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        (status, answer.as_str()),
        (0, ""),
        "the third client is closed unanswered"
    );

    drop(held.pop());
    let status = eventually(
        "a freed slot serves again",
        Duration::from_secs(5),
        async || {
            let (status, _) = raw(
                addr,
                b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .await;
            (status != 0).then_some(status)
        },
    )
    .await;
    assert_eq!(status, 200);
    drop(held);
}
