//! `keepalive N` in an upstream: plain requests reuse idle connections to
//! the backend, counted by the connections the backend accepted; a backend
//! closing its idle connections costs no request; `keepalive_requests`
//! retires a connection. One worker, so that one cache serves every request.

use crate::support::backend::{Backend, header};
use crate::support::config::ConfigBuilder;
use crate::support::{request, start_proxy};
use serde_json::Value;

#[tokio::test]
async fn keepalive_reuses_upstream_connections_and_survives_their_closing() {
    let kept = Backend::start("kept").await;
    let retired = Backend::start("retired").await;
    let fresh = Backend::start("fresh").await;
    let config = ConfigBuilder::new()
        .set("workers", 1)
        .upstream("kept", |u| u.server(kept.addr).set("keepalive", 4))
        .upstream("retired", |u| {
            u.server(retired.addr)
                .set("keepalive", 4)
                .set("keepalive_requests", 2)
        })
        .upstream("fresh", |u| u.server(fresh.addr))
        .location("/kept/", |l| l.proxy_pass("kept"))
        .location("/retired/", |l| l.proxy_pass("retired"))
        .location("/fresh/", |l| l.proxy_pass("fresh"))
        .build();
    let (proxy, addr) = start_proxy(&config).await;

    for i in 0..5 {
        let (status, body) = request(addr, "GET", &format!("/kept/{i}")).await;
        assert_eq!(status, 200, "{body}");
        let report: Value = serde_json::from_str(&body).unwrap();
        // No `Connection: close` to the backend, which would end the reuse.
        assert!(header(&report, "connection").is_empty(), "{report}");
    }
    assert_eq!(kept.connections(), 1);

    // Without keepalive every request has its own connection.
    for i in 0..3 {
        let (status, body) = request(addr, "GET", &format!("/fresh/{i}")).await;
        assert_eq!(status, 200);
        let report: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(header(&report, "connection"), ["close"]);
    }
    assert_eq!(fresh.connections(), 3);

    // keepalive_requests = 2: a connection serves two requests.
    for i in 0..4 {
        assert_eq!(request(addr, "GET", &format!("/retired/{i}")).await.0, 200);
    }
    assert_eq!(retired.connections(), 2);

    // The backend closes its idle connections: the next requests open a
    // new one and none fails.
    kept.close_http_connections();
    for i in 0..3 {
        assert_eq!(
            request(addr, "GET", &format!("/kept/again/{i}")).await.0,
            200
        );
    }
    assert_eq!(kept.connections(), 2);
    proxy.shutdown().await;
}
