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
