//! The proxy core end to end: every configuration of the nginx guide, real
//! WebSocket clients and a real backend on loopback, headers as nginx sends
//! them, timeouts, location matching, URI rewriting and static files.

use crate::support::backend::{Backend, answer_upgrade, header};
use crate::support::config::ConfigBuilder;
use crate::support::upstreams::{Fault, blackhole, faulty};
use crate::support::{guide_config, start_proxy};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket through the proxy with extra request headers; returns
/// the socket and the backend's report of the handshake it received.
async fn ws_connect(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (Ws, Value) {
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let (mut ws, response) = connect_async(request)
        .await
        .expect("handshake through wasp");
    assert_eq!(response.status(), 101);
    let report = match ws.next().await {
        Some(Ok(Message::Text(text))) => serde_json::from_str(&text).unwrap(),
        other => panic!("expected the backend's report, got {other:?}"),
    };
    (ws, report)
}

/// Plain HTTP/1.1 request over a raw socket; returns status, headers, body.
async fn http_get(addr: SocketAddr, path: &str, host: &str) -> (u16, String, String) {
    raw_request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
    .await
}

async fn raw_request(addr: SocketAddr, request: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

async fn exchange_messages(ws: &mut Ws) {
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![0u8, 1, 2, 255])
    );
    let big: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(big));
}

async fn expect_close(ws: &mut Ws, code: u16) {
    loop {
        match ws.next().await {
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(u16::from(frame.code), code);
                return;
            }
            Some(Ok(_)) => continue,
            other => panic!("expected close {code}, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn every_guide_configuration_relays_websockets() {
    let backend = Backend::start("b1").await;
    for (name, path, host) in [
        ("basic", "/socket/", "example.com"),
        ("timeouts", "/socket/", "example.com"),
        ("complete", "/socket/", "example.com"),
        ("chat", "/ws/chat", "chat.example.com"),
    ] {
        let (proxy, addr) = start_proxy(&guide_config(name, &[backend.addr])).await;
        let (mut ws, report) = ws_connect(
            addr,
            path,
            &[("host", host), ("x-forwarded-for", "203.0.113.7")],
        )
        .await;
        assert_eq!(report["version"], "HTTP/1.1", "{name}");
        assert_eq!(report["uri"], path, "{name}");
        assert_eq!(header(&report, "upgrade"), ["websocket"], "{name}");
        assert_eq!(header(&report, "connection"), ["upgrade"], "{name}");
        if name == "complete" || name == "chat" {
            assert_eq!(header(&report, "x-real-ip"), ["127.0.0.1"], "{name}");
            assert_eq!(
                header(&report, "x-forwarded-for"),
                ["203.0.113.7, 127.0.0.1"],
                "{name}"
            );
            assert_eq!(header(&report, "host"), [host], "{name}");
        } else {
            // nginx's default Host is $proxy_host: the upstream's name.
            assert_eq!(header(&report, "host"), ["backend_server"], "{name}");
        }
        exchange_messages(&mut ws).await;
        // Close codes travel both ways: the backend's, relayed to the client...
        ws.send(Message::text("close:4001")).await.unwrap();
        expect_close(&mut ws, 4001).await;
        // ...and the client's, which the backend echoes as its own close.
        let (mut second, _) = ws_connect(addr, path, &[("host", host)]).await;
        second
            .close(Some(CloseFrame {
                code: CloseCode::from(4002),
                reason: "bye".into(),
            }))
            .await
            .unwrap();
        expect_close(&mut second, 4002).await;
        drop((ws, second));
        proxy.shutdown().await;
    }
}

#[tokio::test]
async fn a_plain_get_through_the_map_config_sends_connection_close() {
    let backend = Backend::start("b1").await;
    let (_proxy, addr) = start_proxy(&guide_config("complete", &[backend.addr])).await;
    let (status, _, body) = http_get(addr, "/socket/info?x=1", "example.com").await;
    assert_eq!(status, 200);
    let report: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(header(&report, "connection"), ["close"]);
    assert!(header(&report, "upgrade").is_empty());
    assert_eq!(report["uri"], "/socket/info?x=1");
}

#[tokio::test]
async fn the_guides_curl_command_reaches_the_backend() {
    let backend = Backend::start("b1").await;
    let (_proxy, addr) = start_proxy(&guide_config("complete", &[backend.addr])).await;
    // curl -v -N -H "Connection: Upgrade" -H "Upgrade: websocket" \
    //   -H "Sec-WebSocket-Key: SGVsbG8sIHdvcmxkIQ==" -H "Sec-WebSocket-Version: 13" http://example.com/ws/
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = "GET /socket/ HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\
                   Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: SGVsbG8sIHdvcmxkIQ==\r\n\
                   Sec-WebSocket-Version: 13\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed before the 101");
        got.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&got).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // The accept key the backend computed for curl's key, passed through.
    let accept =
        tokio_tungstenite::tungstenite::handshake::derive_accept_key(b"SGVsbG8sIHdvcmxkIQ==");
    assert!(
        head.contains(&format!("sec-websocket-accept: {accept}")),
        "{head}"
    );
}

#[tokio::test]
async fn an_upstream_that_refuses_gets_502() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let (_proxy, addr) = start_proxy(&guide_config("complete", &[dead])).await;
    let (status, _, _) = http_get(addr, "/socket/", "example.com").await;
    assert_eq!(status, 502);
}

#[tokio::test]
async fn a_connect_timeout_gets_504() {
    let (_hole, _fillers, addr_hole) = blackhole();
    let config = ConfigBuilder::new()
        .location("/", |l| {
            l.proxy_pass(addr_hole).set("connect_timeout", "300ms")
        })
        .build();
    let (_proxy, addr) = start_proxy(&config).await;
    let (status, _, _) = http_get(addr, "/", "x").await;
    assert_eq!(status, 504);
}

#[tokio::test]
async fn an_upstream_that_never_answers_gets_504_after_read_timeout() {
    // nginx answers both with 504 Gateway Time-out after proxy_read_timeout.
    let (silent, holding) = faulty(Fault::Silent).await;
    let config = ConfigBuilder::new()
        .location("/", |l| l.proxy_pass(silent).set("read_timeout", "500ms"))
        .build();
    let (_proxy, addr) = start_proxy(&config).await;
    let (status, _, _) = http_get(addr, "/plain", "x").await;
    assert_eq!(status, 504, "a plain request");
    let handshake = connect_async(format!("ws://{addr}/ws"));
    let answered = tokio::time::timeout(Duration::from_secs(10), handshake).await;
    match answered.expect("the handshake is answered, not held") {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 504, "a WebSocket handshake")
        }
        other => panic!(
            "expected 504 for the handshake, got {:?}",
            other.map(|(_, response)| response.status())
        ),
    }
    holding.abort();
}

#[tokio::test]
async fn an_idle_tunnel_is_closed_after_read_timeout_and_an_active_one_is_not() {
    let backend = Backend::start("b1").await;
    let config = ConfigBuilder::new()
        .location("/", |l| {
            l.proxy_pass(backend.addr).set("read_timeout", "600ms")
        })
        .build();
    let (_proxy, addr) = start_proxy(&config).await;
    let (mut idle, _) = ws_connect(addr, "/idle", &[]).await;
    let (mut active, _) = ws_connect(addr, "/active", &[]).await;
    let idle_closed = tokio::spawn(async move { idle.next().await });
    for i in 0..12 {
        active
            .send(Message::text(format!("ping {i}")))
            .await
            .unwrap();
        assert_eq!(
            active.next().await.unwrap().unwrap(),
            Message::text(format!("ping {i}"))
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // 1.8 s of traffic every 150 ms kept the active tunnel open; the idle one
    // was cut (the relay closes the TCP connection: no close frame).
    assert!(idle_closed.is_finished(), "the idle tunnel is still open");
    match idle_closed.await.unwrap() {
        None | Some(Err(_)) => {}
        Some(Ok(message)) => panic!("unexpected message on the idle tunnel: {message:?}"),
    }
}

#[tokio::test]
async fn location_matching_follows_nginx() {
    // nginx's documented example: configurations A to E.
    let config = ConfigBuilder::new()
        .location("= /", |l| l.returns(200, "A"))
        .location("/", |l| l.returns(200, "B"))
        .location("/documents/", |l| l.returns(200, "C"))
        .location("^~ /images/", |l| l.returns(200, "D"))
        .location(r"~* \.(gif|jpg|jpeg)$", |l| l.returns(200, "E"))
        .build();
    let (_proxy, addr) = start_proxy(&config).await;
    for (path, expected) in [
        ("/", "A"),
        ("/index.html", "B"),
        ("/documents/document.html", "C"),
        ("/images/1.gif", "D"),
        ("/documents/1.jpg", "E"),
        ("/DOCUMENTS/1.JPG", "E"),
    ] {
        let (status, _, body) = http_get(addr, path, "x").await;
        assert_eq!((status, body.as_str()), (200, expected), "{path}");
    }
}

#[tokio::test]
async fn proxy_pass_with_a_uri_replaces_the_matched_prefix() {
    let backend = Backend::start("b1").await;
    let config = ConfigBuilder::new()
        .location("/ws/", |l| l.proxy_pass(format!("{}/chat/", backend.addr)))
        .location("/plain/", |l| l.proxy_pass(backend.addr))
        .build();
    let (_proxy, addr) = start_proxy(&config).await;
    let (_, _, body) = http_get(addr, "/ws/room?a=1", "x").await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["uri"],
        "/chat/room?a=1"
    );
    let (_, _, body) = http_get(addr, "/plain/room?a=1", "x").await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["uri"],
        "/plain/room?a=1"
    );
    let (mut ws, report) = ws_connect(addr, "/ws/lobby", &[]).await;
    assert_eq!(report["uri"], "/chat/lobby");
    exchange_messages(&mut ws).await;
}

#[tokio::test]
async fn static_files_with_the_spa_fallback_and_no_traversal() {
    let root = crate::support::temp_dir("static");
    std::fs::create_dir_all(root.join("css")).unwrap();
    std::fs::write(root.join("index.html"), "<h1>chat</h1>").unwrap();
    std::fs::write(root.join("css/app.css"), "body{}").unwrap();
    std::fs::write(root.parent().unwrap().join("wasp-secret.txt"), "secret").unwrap();
    let config = ConfigBuilder::new()
        .location("/", |l| {
            l.set("root", root.display().to_string())
                .set("index", vec!["index.html"])
                .set("try_files", vec!["$uri", "$uri/", "/index.html"])
        })
        .build();
    let (_proxy, addr) = start_proxy(&config).await;
    let (status, head, body) = http_get(addr, "/css/app.css", "x").await;
    assert_eq!((status, body.as_str()), (200, "body{}"));
    assert!(
        head.to_ascii_lowercase().contains("content-type: text/css"),
        "{head}"
    );
    let (status, _, body) = http_get(addr, "/", "x").await;
    assert_eq!((status, body.as_str()), (200, "<h1>chat</h1>"));
    // The SPA fallback: an unknown path serves index.html.
    let (status, _, body) = http_get(addr, "/rooms/blue", "x").await;
    assert_eq!((status, body.as_str()), (200, "<h1>chat</h1>"));
    // Ranges and HEAD come from tower-http's ServeFile.
    let (status, _, body) = raw_request(
        addr,
        "GET /css/app.css HTTP/1.1\r\nHost: x\r\nRange: bytes=0-3\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!((status, body.as_str()), (206, "body"));
    // Climbing out of the root is refused, encoded or not.
    for attack in [
        "/../wasp-secret.txt",
        "/%2e%2e/wasp-secret.txt",
        "/css/..%2f..%2fwasp-secret.txt",
    ] {
        let (status, _, body) = http_get(addr, attack, "x").await;
        assert!(
            status == 400 || status == 404 || body == "<h1>chat</h1>",
            "{attack}: {status} {body}"
        );
        assert!(!body.contains("secret"), "{attack} leaked the file");
    }
}

#[tokio::test]
async fn shutdown_closes_open_websockets_with_1001_after_the_grace_period() {
    let backend = Backend::start("b1").await;
    let config = ConfigBuilder::new()
        .set("shutdown_grace", "300ms")
        .location("/", |l| l.proxy_pass(backend.addr))
        .build();
    let (proxy, addr) = start_proxy(&config).await;
    let (mut ws, _) = ws_connect(addr, "/tunnel", &[]).await;
    // Mid-conversation: a large message is in flight in both directions.
    ws.send(Message::binary(vec![3u8; 200_000])).await.unwrap();
    let stopping = tokio::spawn(proxy.shutdown());
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![3u8; 200_000])
    );
    expect_close(&mut ws, 1001).await;
    stopping.await.unwrap();
    // No longer accepting.
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn ipv6_and_ipv4_wildcards_share_a_port() {
    // nginx's `listen [::]:80` is IPv6-only, so `listen 80` beside it binds too.
    let backend = Backend::start("b").await;
    // The port is picked free, then bound by the proxy: another test may
    // take it in between, so a few ports are tried.
    let mut attempts = 0;
    let (_proxy, port) = loop {
        let port = crate::support::free_addr().port();
        let config = format!(
            "[[server]]\nlisten = [\"[::]:{port}\", \"0.0.0.0:{port}\"]\n\
             [[server.location]]\npath = \"/\"\nproxy_pass = \"http://{}\"\n\
             set_headers = {{ X-Real-IP = \"$remote_addr\" }}\n",
            backend.addr
        );
        let config = wasp::config::Config::parse(&config, "test.toml").unwrap();
        match wasp::proxy::Proxy::start(config).await {
            Ok(proxy) => break (proxy, port),
            Err(error) if attempts < 5 => {
                attempts += 1;
                eprintln!("port {port}: {error}; another");
            }
            Err(error) => panic!("proxy starts: {error}"),
        }
    };
    for (client, expected_ip) in [
        (format!("[::1]:{port}"), "::1"),
        (format!("127.0.0.1:{port}"), "127.0.0.1"),
    ] {
        let addr: SocketAddr = client.parse().unwrap();
        let (status, _, body) = http_get(addr, "/", "x").await;
        assert_eq!(status, 200, "{client}");
        let report: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(header(&report, "x-real-ip"), [expected_ip], "{client}");
    }
}

/// An upstream that answers the WebSocket upgrade, then never reads again.
async fn deaf_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        answer_upgrade(&mut tcp).await;
        std::future::pending::<()>().await;
    });
    addr
}

#[tokio::test]
async fn a_tunnel_whose_upstream_takes_nothing_for_send_timeout_is_closed() {
    let upstream = deaf_upstream().await;
    let config = ConfigBuilder::new()
        .location("/", |l| l.proxy_pass(upstream).set("send_timeout", "1s"))
        .build();
    let (_proxy, addr) = start_proxy(&config).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    let request = "GET /ws HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                   Sec-WebSocket-Key: SGVsbG8sIHdvcmxkIQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    client.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = client.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 101"));
    // Bytes until every buffer on the way is full and a write waits.
    let chunk = vec![0u8; 64 << 10];
    while tokio::time::timeout(Duration::from_secs(2), client.write_all(&chunk))
        .await
        .is_ok_and(|written| written.is_ok())
    {}
    // The tunnel gave up on the upstream and closed the client's connection.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the tunnel still holds the client");
}
