//! Each role's failure policy, through the proxy: a router that traps
//! answers 500, an origin check that traps refuses the handshake (403), a
//! balancer that traps falls back to round-robin; every failure is a log
//! line and a `wasp_plugin_calls_total` outcome, and the next request is
//! served by a fresh instance.

use crate::support::backend::Backend;
use crate::support::config::ConfigBuilder;
use crate::support::{free_addr, request, sample, start_proxy, temp_dir, test_plugins};
use std::path::{Path, PathBuf};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The probe test plugin written to a file of its own (it traps on a
/// request whose path is `/trap`).
fn probe(dir: &str) -> PathBuf {
    let path = temp_dir(dir).join("probe.wasm");
    std::fs::write(&path, test_plugins::get("probe")).unwrap();
    path
}

/// The count of `role` calls of plugin `path` that ended with `outcome`.
async fn calls(admin: std::net::SocketAddr, path: &Path, role: &str, outcome: &str) -> f64 {
    let text = request(admin, "GET", "/metrics").await.1;
    let series = format!(
        r#"wasp_plugin_calls_total{{plugin="{}",role="{role}",outcome="{outcome}"}}"#,
        path.display()
    );
    sample(&text, &series).unwrap_or(0.0)
}

#[tokio::test]
async fn a_router_that_traps_answers_500() {
    let probe = probe("fail-router");
    let admin = free_addr();
    let config = ConfigBuilder::new()
        .set("admin", admin.to_string())
        .plugin("router", &probe)
        .location("/", |l| l.returns(200, "unused"))
        .build();
    let (_proxy, addr) = start_proxy(&config).await;
    assert_eq!(request(addr, "GET", "/trap").await.0, 500);
    // The probe router answers directly: a fresh instance serves the next one.
    assert_eq!(
        request(addr, "GET", "/after").await,
        (200, "GET /after ".into())
    );
    assert_eq!(calls(admin, &probe, "router", "trap").await, 1.0);
}

#[tokio::test]
async fn an_origin_check_that_traps_refuses_the_handshake() {
    let probe = probe("fail-origin");
    let backend = Backend::start("b").await;
    let admin = free_addr();
    let config = ConfigBuilder::new()
        .set("admin", admin.to_string())
        .plugin("origin", &probe)
        .location("/", |l| l.proxy_pass(backend.addr))
        .build();
    let (_proxy, addr) = start_proxy(&config).await;
    let handshake = |path: &str| {
        let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
        let origin = "https://ok.example".parse().unwrap();
        request.headers_mut().insert("origin", origin);
        connect_async(request)
    };
    match handshake("/trap").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        other => panic!("expected 403, got {:?}", other.map(|(_, r)| r.status())),
    }
    let (_ws, response) = handshake("/ws").await.expect("an allowed origin passes");
    assert_eq!(response.status(), 101);
    assert_eq!(calls(admin, &probe, "origin", "trap").await, 1.0);
}

#[tokio::test]
async fn a_balancer_that_traps_falls_back_to_round_robin() {
    let probe = probe("fail-balancer");
    let backends = [Backend::start("b1").await, Backend::start("b2").await];
    let admin = free_addr();
    let config = ConfigBuilder::new()
        .set("admin", admin.to_string())
        .plugin("balancer", &probe)
        .upstream("app", |u| u.servers(backends.iter().map(|b| b.addr)))
        .location("/", |l| l.proxy_pass("app"))
        .build();
    let (_proxy, addr) = start_proxy(&config).await;
    let mut served = Vec::new();
    for _ in 0..4 {
        let (status, body) = request(addr, "GET", "/trap").await;
        assert_eq!(status, 200, "{body}");
        let report: serde_json::Value = serde_json::from_str(&body).unwrap();
        served.push(report["backend"].as_str().unwrap().to_owned());
    }
    // Round-robin over the usable peers, by the host's pick counter.
    assert_eq!(served[0], served[2]);
    assert_eq!(served[1], served[3]);
    assert_ne!(served[0], served[1]);
    assert_eq!(calls(admin, &probe, "balancer", "trap").await, 4.0);
}
