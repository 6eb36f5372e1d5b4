//! HTTP/2 towards clients: negotiated by ALPN on TLS, h2c by prior knowledge
//! on a plain listener with `http2 = true`, proxied to HTTP/1.1 backends;
//! and WebSockets over HTTP/2 (RFC 8441 extended CONNECT) through the raw
//! tunnel and the frame relay, several on one connection. The client is
//! hyper's HTTP/2 client, over rustls with a CA made for the test.

use crate::support::backend::{Backend, header};
use crate::support::config::ConfigBuilder;
use crate::support::pki::Pki;
use crate::support::{free_addr, request, sample, start_proxy, temp_dir};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper::ext::Protocol;
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

const WAIT: Duration = Duration::from_secs(10);

type Sender = SendRequest<Full<Bytes>>;
type Ws = WebSocketStream<TokioIo<Upgraded>>;

/// An HTTP/2 client connection over `io` (hyper drives it in a task).
async fn handshake<S>(io: S) -> Sender
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    sender
}

/// HTTP/2 over TLS to `a.test` at `addr`, offering h2 and HTTP/1.1 as a
/// browser does: wasp must pick h2.
async fn tls_h2(pki: &Pki, addr: SocketAddr) -> Sender {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = pki
        .connector_offering(&[b"h2", b"http/1.1"])
        .connect(ServerName::try_from("a.test").unwrap(), tcp)
        .await
        .expect("TLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    handshake(tls).await
}

/// A GET over HTTP/2: the status and the body.
async fn get(sender: &mut Sender, uri: &str) -> (StatusCode, String) {
    let request = Request::get(uri).body(Full::default()).unwrap();
    let response = timeout(WAIT, sender.send_request(request))
        .await
        .expect("answer in time")
        .expect("answer");
    assert_eq!(response.version(), Version::HTTP_2);
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Opens a WebSocket with an extended CONNECT (RFC 8441) on the connection
/// of `sender`; the status when it is refused.
async fn open_websocket(
    sender: &mut Sender,
    uri: &str,
    origin: Option<&str>,
) -> Result<Ws, StatusCode> {
    let mut request = Request::builder()
        .method(Method::CONNECT)
        .uri(uri)
        .header("sec-websocket-version", "13");
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    let mut request = request.body(Full::default()).unwrap();
    request
        .extensions_mut()
        .insert(Protocol::from_static("websocket"));
    let mut response = timeout(WAIT, sender.send_request(request))
        .await
        .expect("answer in time")
        .expect("answer");
    if response.status() != StatusCode::OK {
        return Err(response.status());
    }
    let stream = hyper::upgrade::on(&mut response).await.expect("a stream");
    Ok(WebSocketStream::from_raw_socket(TokioIo::new(stream), Role::Client, None).await)
}

/// The next text message.
async fn next_text(ws: &mut Ws) -> String {
    let message = timeout(WAIT, ws.next())
        .await
        .expect("a message in time")
        .expect("the WebSocket open")
        .expect("a message");
    message.into_text().expect("text").to_string()
}

async fn round_trip(ws: &mut Ws, text: &str) -> String {
    ws.send(Message::text(text)).await.unwrap();
    next_text(ws).await
}

/// The parameters of the server's first SETTINGS frame on a fresh h2c
/// connection to `addr` (RFC 9113 §6.5): hyper's client does not expose
/// them, so the frame is read off the wire.
async fn server_settings(addr: SocketAddr) -> Vec<(u16, u32)> {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    // The preface, then an empty SETTINGS frame of our own.
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let mut header = [0u8; 9];
    timeout(WAIT, tcp.read_exact(&mut header))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(header[3], 0x4, "the server's first frame is SETTINGS");
    let length = usize::from(header[1]) << 8 | usize::from(header[2]);
    let mut payload = vec![0u8; length];
    tcp.read_exact(&mut payload).await.unwrap();
    payload
        .chunks(6)
        .map(|p| {
            (
                u16::from_be_bytes([p[0], p[1]]),
                u32::from_be_bytes([p[2], p[3], p[4], p[5]]),
            )
        })
        .collect()
}

#[tokio::test]
async fn tls_negotiates_h2_and_proxies_to_http1_upstreams_with_the_same_headers() {
    let backend = Backend::start("app").await;
    let pki = Pki::new("h2-requests");
    pki.issue("a.test");
    let root = temp_dir("h2-files");
    std::fs::write(root.join("index.html"), "<h1>over h2</h1>").unwrap();
    let config = ConfigBuilder::new()
        .server(|s| {
            s.set("tls", pki.tls("a.test"))
                .set("server_name", "a.test")
                .location("/api/", |l| {
                    l.proxy_pass(backend.addr).set(
                        "set_headers",
                        crate::support::config::toml_value(
                            r#"{ X-Host = "$host", X-Scheme = "$scheme", X-Forwarded-For = "$proxy_add_x_forwarded_for" }"#,
                        ),
                    )
                })
                .location("/", |l| l.set("root", root.display().to_string()))
        })
        .build();
    let (proxy, addr) = start_proxy(&config).await;

    let mut sender = tls_h2(&pki, addr).await;
    let (status, body) = get(&mut sender, "https://a.test/").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "<h1>over h2</h1>")
    );
    // Several requests on the one connection, each proxied over HTTP/1.1.
    for i in 0..3 {
        let (status, body) = get(&mut sender, &format!("https://a.test/api/{i}?q=1")).await;
        assert_eq!(status, StatusCode::OK);
        let report: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(report["version"], "HTTP/1.1");
        assert_eq!(report["method"], "GET");
        assert_eq!(report["uri"], format!("/api/{i}?q=1"));
        // `:authority` is the Host, for the upstream and for `$host`.
        assert_eq!(header(&report, "host"), [backend.addr.to_string()]);
        assert_eq!(header(&report, "x-host"), ["a.test"]);
        assert_eq!(header(&report, "x-scheme"), ["https"]);
        assert_eq!(header(&report, "x-forwarded-for"), ["127.0.0.1"]);
    }
    // A limit still applies: a body over client_max_body_size is a 413.
    let big = Request::post("https://a.test/api/upload")
        .body(Full::new(Bytes::from(vec![b'x'; 2 << 20])))
        .unwrap();
    let response = sender.send_request(big).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // A client offering HTTP/1.1 only still gets it.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = pki
        .connector()
        .connect(ServerName::try_from("a.test").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));

    proxy.shutdown().await;
    std::fs::remove_dir_all(root).unwrap();
}

#[tokio::test]
async fn h2c_with_prior_knowledge_only_where_http2_is_on() {
    let backend = Backend::start("app").await;
    let location = |l: crate::support::config::Location| l.proxy_pass(backend.addr);
    let on = ConfigBuilder::new()
        .server(|s| s.set("http2", true).location("/", location))
        .build();
    let (proxy, addr) = start_proxy(&on).await;
    let mut sender = handshake(TcpStream::connect(addr).await.unwrap()).await;
    let (status, body) = get(&mut sender, &format!("http://{addr}/x")).await;
    assert_eq!(status, StatusCode::OK);
    let report: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["version"], "HTTP/1.1");
    assert_eq!(header(&report, "host"), [backend.addr.to_string()]);
    // HTTP/1.1 clients are served on the same listener.
    assert_eq!(request(addr, "GET", "/y").await.0, 200);
    proxy.shutdown().await;

    // Off (the default without TLS): the preface is no HTTP/1.1 request.
    let off = ConfigBuilder::new().location("/", location).build();
    let (proxy, addr) = start_proxy(&off).await;
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        TokioIo::new(TcpStream::connect(addr).await.unwrap()),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let refused = sender
        .send_request(
            Request::get(format!("http://{addr}/"))
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(request(addr, "GET", "/y").await.0, 200);
    proxy.shutdown().await;
}

#[tokio::test]
async fn websockets_over_h2_share_one_connection_through_tunnel_and_filters() {
    let backend = Backend::start("chat").await;
    let pki = Pki::new("h2-ws");
    pki.issue("a.test");
    let admin = free_addr();
    let config = ConfigBuilder::new()
        .set("admin", admin.to_string())
        .server(|s| {
            s.set("tls", pki.tls("a.test"))
                .location("/ws/", |l| l.proxy_pass(backend.addr))
                .location("/filtered/", |l| {
                    l.proxy_pass(backend.addr)
                        .filters(r#"[{ plugin = "redact", config = { words = ["darn"] } }]"#)
                        .set("origins", vec!["https://a.test"])
                })
                .location("= /probe", |l| l.returns(200, "ok"))
        })
        .build();
    let (proxy, addr) = start_proxy(&config).await;
    let mut sender = tls_h2(&pki, addr).await;
    assert_eq!(
        get(&mut sender, "https://a.test/probe").await.0,
        StatusCode::OK
    );

    // Two WebSockets at once on the one HTTP/2 connection.
    let mut plain = open_websocket(&mut sender, "https://a.test/ws/chat", None)
        .await
        .expect("the plain location accepts");
    let mut filtered = open_websocket(
        &mut sender,
        "https://a.test/filtered/chat",
        Some("https://a.test"),
    )
    .await
    .expect("the filtered location accepts");
    // The backend got an HTTP/1.1 upgrade, with a key wasp made.
    for ws in [&mut plain, &mut filtered] {
        let report: Value = serde_json::from_str(&next_text(ws).await).unwrap();
        assert_eq!(report["method"], "GET");
        assert_eq!(report["version"], "HTTP/1.1");
        assert_eq!(header(&report, "upgrade"), ["websocket"]);
        assert_eq!(header(&report, "sec-websocket-key")[0].len(), 24);
    }
    for i in 0..3 {
        assert_eq!(
            round_trip(&mut plain, &format!("darn {i}")).await,
            format!("darn {i}")
        );
        assert_eq!(
            round_trip(&mut filtered, &format!("darn {i}")).await,
            format!("*** {i}")
        );
    }
    // A refused Origin is a 403 on the stream; the connection goes on.
    let refused = open_websocket(
        &mut sender,
        "https://a.test/filtered/chat",
        Some("https://evil.test"),
    )
    .await;
    assert_eq!(refused.err(), Some(StatusCode::FORBIDDEN));
    assert_eq!(round_trip(&mut plain, "still here").await, "still here");

    let metrics = request(admin, "GET", "/metrics").await.1;
    let value = |series: &str| {
        sample(&metrics, series).unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
    };
    let listener = "127.0.0.1:0";
    // One client connection, spoken in h2, carries both WebSockets.
    assert_eq!(
        value(&format!(
            r#"wasp_client_connections_by_protocol_total{{listener="{listener}",protocol="h2"}}"#
        )),
        1.0
    );
    assert_eq!(
        value(&format!(
            r#"wasp_client_connections{{listener="{listener}"}}"#
        )),
        1.0
    );
    assert_eq!(value(r#"wasp_websockets{location="/ws/"}"#), 1.0);
    assert_eq!(value(r#"wasp_websockets{location="/filtered/"}"#), 1.0);
    assert_eq!(
        value(r#"wasp_ws_handshakes_total{location="/filtered/",result="403"}"#),
        1.0
    );

    // Closing one WebSocket leaves the other open.
    plain.close(None).await.unwrap();
    while let Some(Ok(_)) = timeout(WAIT, plain.next()).await.unwrap() {}
    assert_eq!(round_trip(&mut filtered, "darn").await, "***");
    filtered.close(None).await.unwrap();
    while let Some(Ok(_)) = timeout(WAIT, filtered.next()).await.unwrap() {}
    drop((plain, filtered, sender));
    proxy.shutdown().await;
}

#[tokio::test]
async fn websocket_over_h2c_and_connect_without_websocket_is_refused() {
    let backend = Backend::start("chat").await;
    let log = temp_dir("h2c-websocket").join("access.log");
    let config = ConfigBuilder::new()
        .set("access_log", log.display().to_string())
        .server(|s| {
            s.set("http2", true)
                .location("/ws/", |l| l.proxy_pass(backend.addr))
                .location("= /probe", |l| l.returns(200, "ok"))
        })
        .build();
    let (proxy, addr) = start_proxy(&config).await;
    // RFC 8441 §3: SETTINGS_ENABLE_CONNECT_PROTOCOL (0x8) = 1.
    assert!(server_settings(addr).await.contains(&(0x8, 1)));
    let mut sender = handshake(TcpStream::connect(addr).await.unwrap()).await;
    let mut ws = open_websocket(&mut sender, &format!("http://{addr}/ws/"), None)
        .await
        .expect("accepted");
    let report: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(header(&report, "connection"), ["upgrade"]);
    assert_eq!(round_trip(&mut ws, "over h2c").await, "over h2c");

    // A CONNECT for another protocol, and a classic CONNECT: no tunnel.
    let mut other = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("http://{addr}/ws/"))
        .body(Full::default())
        .unwrap();
    other
        .extensions_mut()
        .insert(Protocol::from_static("webtransport"));
    let response = sender.send_request(other).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_IMPLEMENTED);
    let classic = Request::builder()
        .method(Method::CONNECT)
        .uri(backend.addr.to_string())
        .body(Full::default())
        .unwrap();
    let response = sender.send_request(classic).await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(round_trip(&mut ws, "after").await, "after");
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = timeout(WAIT, ws.next()).await.unwrap() {}
    drop((ws, sender));
    proxy.shutdown().await;
    // The client got 200 for its extended CONNECT, and the log says so.
    let lines = std::fs::read_to_string(&log).unwrap();
    // ... "CONNECT /ws/ HTTP/2.0" 200 ...
    let statuses: Vec<&str> = lines
        .lines()
        .filter(|line| line.contains(" /ws/ "))
        .filter_map(|line| line.split('"').nth(2)?.split_whitespace().next())
        .collect();
    assert!(statuses.contains(&"200"), "{lines}");
    assert!(!statuses.contains(&"101"), "{lines}");
}
