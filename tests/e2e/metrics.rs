//! The admin listener's `/metrics` and `/status` against what a test did
//! through the real proxy: WebSockets through a filtered location and plain
//! requests.

use crate::support::backend::Backend;
use crate::support::config::ConfigBuilder;
use crate::support::{eventually, free_addr, request, sample, start_proxy, temp_dir, test_plugins};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::time::Duration;
use tokio::time::timeout;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn metrics_and_status_match_the_traffic() {
    const SOCKETS: usize = 5;
    const MESSAGES: usize = 3;
    const PLAIN: usize = 2;
    let backend = Backend::start("echo").await;
    let dir = temp_dir("metrics");
    let filter = dir.join("tag.wasm");
    let bytes = test_plugins::get("tag-a");
    std::fs::write(&filter, bytes).unwrap();
    let admin = free_addr();
    let config = ConfigBuilder::new()
        .set("admin", admin.to_string())
        .upstream("app", |u| u.server(backend.addr))
        .location("/ws/", |l| l.proxy_pass("app").filter_file(&filter))
        .location("= /plain", |l| l.returns(200, "plain"))
        .build();
    let (proxy, addr) = start_proxy(&config).await;
    let metrics = async || request(admin, "GET", "/metrics").await.1;

    for _ in 0..PLAIN {
        assert_eq!(request(addr, "GET", "/plain").await, (200, "plain".into()));
    }
    let mut sockets = Vec::new();
    for _ in 0..SOCKETS {
        let (mut ws, response) = timeout(WAIT, connect_async(format!("ws://{addr}/ws/")))
            .await
            .expect("handshake in time")
            .expect("handshake");
        assert_eq!(response.status(), 101);
        let report = timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
        assert!(report.to_text().unwrap().starts_with("A<{"), "{report}");
        for i in 0..MESSAGES {
            ws.send(Message::text(format!("m{i}"))).await.unwrap();
            let echoed = timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
            assert_eq!(echoed, Message::text(format!("A<A>m{i}")));
        }
        sockets.push(ws);
    }

    let text = metrics().await;
    let value =
        |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    let n = SOCKETS as f64;
    let m = MESSAGES as f64;
    assert_eq!(
        value(r#"wasp_ws_handshakes_total{location="/ws/",result="101"}"#),
        n
    );
    assert_eq!(
        value(r#"wasp_ws_messages_total{location="/ws/",direction="client_to_upstream"}"#),
        n * m
    );
    // The backend's report comes first on each connection.
    assert_eq!(
        value(r#"wasp_ws_messages_total{location="/ws/",direction="upstream_to_client"}"#),
        n * (m + 1.0)
    );
    assert_eq!(value(r#"wasp_websockets{location="/ws/"}"#), n);
    assert_eq!(
        value(r#"wasp_http_requests_total{class="2xx"}"#),
        PLAIN as f64
    );

    let status: Value = serde_json::from_str(&request(admin, "GET", "/status").await.1).unwrap();
    let name = filter.display().to_string();
    let plugin = status["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{name} missing from {status}"));
    assert_eq!(plugin["sha256"], format!("{:x}", Sha256::digest(bytes)));
    assert_eq!(plugin["roles"], serde_json::json!(["filter"]));
    let peers = &status["upstreams"]["app"]["peers"];
    assert_eq!(peers[0]["address"], backend.addr.to_string(), "{status}");
    assert_eq!(peers[0]["active"], SOCKETS, "{status}");

    for mut ws in sockets {
        ws.close(None).await.unwrap();
        while let Some(Ok(_)) = timeout(WAIT, ws.next()).await.unwrap() {}
    }
    let text = eventually("the WebSockets gauge back to 0", WAIT, async || {
        let text = metrics().await;
        (sample(&text, r#"wasp_websockets{location="/ws/"}"#) == Some(0.0)).then_some(text)
    })
    .await;
    let value =
        |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    // A WebSocket is counted as a 101 request when it ends.
    assert_eq!(value(r#"wasp_http_requests_total{class="1xx"}"#), n);
    // Per connection: on-open, every message both ways, on-close.
    let calls = format!(r#"wasp_plugin_calls_total{{plugin="{name}",role="filter",outcome="ok"}}"#);
    assert_eq!(value(&calls), n * (2.0 * m + 3.0));
    for outcome in ["trap", "timeout", "oom", "unavailable"] {
        let failed = format!(
            r#"wasp_plugin_calls_total{{plugin="{name}",role="filter",outcome="{outcome}"}}"#
        );
        assert_eq!(value(&failed), 0.0, "{outcome}");
    }
    let status: Value = serde_json::from_str(&request(admin, "GET", "/status").await.1).unwrap();
    assert_eq!(
        status["upstreams"]["app"]["peers"][0]["active"], 0,
        "{status}"
    );

    proxy.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}
