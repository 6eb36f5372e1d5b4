//! `proxy_pass https://`: TLS towards a real TLS backend on loopback whose
//! certificate a CA made for the test signs. Verification is on by default
//! (the name and the chain), for plain requests and for WebSockets through
//! the tunnel and the frame relay.

use crate::support::backend::{Backend, header};
use crate::support::config::{ConfigBuilder, Location};
use crate::support::pki::Pki;
use crate::support::{request, start_proxy};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::time::Duration;
use tokio::time::timeout;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn https_upstreams_are_verified_by_name_and_ca() {
    let pki = Pki::new("upstream-tls");
    pki.issue("backend.test");
    let backend = Backend::start_tls("secure", pki.acceptor("backend.test")).await;
    let ca = pki.ca_file().display().to_string();
    let https = |l: Location, name: &str| {
        l.set("proxy_pass", format!("https://{}", backend.addr))
            .set("proxy_ssl_trusted_certificate", ca.clone())
            .set("proxy_ssl_name", name)
    };
    let config = ConfigBuilder::new()
        .location("/good/", |l| https(l, "backend.test"))
        .location("/wrong-name/", |l| https(l, "other.test"))
        .location("/unverified/", |l| {
            https(l, "other.test").set("proxy_ssl_verify", false)
        })
        // The system's store does not know the test's CA.
        .location("/system-roots/", |l| {
            l.set("proxy_pass", format!("https://{}", backend.addr))
                .set("proxy_ssl_name", "backend.test")
        })
        .build();
    let (proxy, addr) = start_proxy(&config).await;

    let (status, body) = request(addr, "GET", "/good/x?y=1").await;
    assert_eq!(status, 200, "{body}");
    let report: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["uri"], "/good/x?y=1");
    assert_eq!(header(&report, "host"), [backend.addr.to_string()]);
    assert_eq!(request(addr, "GET", "/wrong-name/").await.0, 502);
    assert_eq!(request(addr, "GET", "/unverified/").await.0, 200);
    assert_eq!(request(addr, "GET", "/system-roots/").await.0, 502);
    proxy.shutdown().await;
}

#[tokio::test]
async fn websockets_reach_an_https_upstream_through_tunnel_and_filters() {
    let pki = Pki::new("upstream-tls-ws");
    pki.issue("backend.test");
    let backend = Backend::start_tls("secure", pki.acceptor("backend.test")).await;
    let ca = pki.ca_file().display().to_string();
    let https = |l: Location| {
        l.set("proxy_pass", format!("https://{}", backend.addr))
            .set("proxy_ssl_trusted_certificate", ca.clone())
            .set("proxy_ssl_name", "backend.test")
    };
    let config = ConfigBuilder::new()
        .location("/ws/", https)
        .location("/filtered/", |l| {
            https(l).filters(r#"[{ plugin = "redact", config = { words = ["darn"] } }]"#)
        })
        .build();
    let (proxy, addr) = start_proxy(&config).await;
    for (path, expected) in [("/ws/", "darn it"), ("/filtered/", "*** it")] {
        let (mut ws, response) = timeout(WAIT, connect_async(format!("ws://{addr}{path}")))
            .await
            .expect("handshake in time")
            .expect("handshake");
        assert_eq!(response.status(), 101);
        let report = timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
        let report: Value = serde_json::from_str(report.to_text().unwrap()).unwrap();
        assert_eq!(header(&report, "upgrade"), ["websocket"]);
        ws.send(Message::text("darn it")).await.unwrap();
        let echoed = timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(echoed, Message::text(expected), "{path}");
        ws.close(None).await.unwrap();
    }
    proxy.shutdown().await;
}

/// As over plain TCP: on shutdown, a tunnel over TLS sends each side a 1001
/// close frame, between two frames, and a large message in flight arrives
/// whole first.
#[tokio::test]
async fn shutdown_closes_a_tls_tunnel_with_1001_on_both_sides() {
    let pki = Pki::new("upstream-tls-shutdown");
    pki.issue("backend.test");
    let (upstream_addr, upstream_saw) =
        tls_echo_upstream_reporting_close(pki.acceptor("backend.test")).await;
    let config = ConfigBuilder::new()
        .set("shutdown_grace", "300ms")
        .location("/ws/", |l| {
            l.set("proxy_pass", format!("https://{upstream_addr}"))
                .set(
                    "proxy_ssl_trusted_certificate",
                    pki.ca_file().display().to_string(),
                )
                .set("proxy_ssl_name", "backend.test")
        })
        .build();
    let (proxy, addr) = start_proxy(&config).await;
    let (mut ws, _) = timeout(WAIT, connect_async(format!("ws://{addr}/ws/")))
        .await
        .unwrap()
        .unwrap();
    let big = Message::binary(vec![5u8; 300_000]);
    ws.send(big.clone()).await.unwrap();
    let stopping = tokio::spawn(proxy.shutdown());
    assert_eq!(
        timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap(),
        big
    );
    match timeout(WAIT, ws.next()).await.unwrap() {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(
                (u16::from(frame.code), &*frame.reason),
                (1001, "server shutting down")
            );
        }
        other => panic!("expected a 1001 close, got {other:?}"),
    }
    let seen = timeout(WAIT, upstream_saw).await.unwrap().unwrap();
    assert_eq!(seen, Some(1001), "the upstream's view of the end");
    timeout(WAIT, stopping).await.unwrap().unwrap();
}

/// A WebSocket upstream over TLS that echoes every data message and reports
/// the close code it received (`None`: the connection ended without one).
async fn tls_echo_upstream_reporting_close(
    acceptor: tokio_rustls::TlsAcceptor,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Receiver<Option<u16>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (report, reported) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let tls = acceptor.accept(tcp).await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tls).await.unwrap();
        let mut code = None;
        while let Some(Ok(message)) = ws.next().await {
            match message {
                Message::Close(frame) => {
                    code = frame.map(|f| u16::from(f.code));
                    break;
                }
                Message::Text(_) | Message::Binary(_) => ws.send(message).await.unwrap(),
                _ => {}
            }
        }
        let _ = report.send(code);
    });
    (addr, reported)
}
