//! WebSocket filters end to end: a real client, the real proxy (a location's
//! `filters = [...]` puts it on the frame relay) and the real test backend,
//! which reports the handshake it got as its first message, then echoes.
//! The default filters are named; the probe test plugin is loaded by path.

use crate::support::backend::{Backend, header};
use crate::support::config::ConfigBuilder;
use crate::support::{start_proxy, temp_path, test_plugins};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::Response;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};
use wasp::proxy::Proxy;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Bound on every wait: generous, only there to fail instead of hanging.
const WAIT: Duration = Duration::from_secs(10);

/// The probe test plugin as a `.wasm` file, as a user would name it.
fn probe_path() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        let path: PathBuf = temp_path("filters-probe.wasm");
        std::fs::write(&path, test_plugins::get("probe")).unwrap();
        path.to_str().unwrap().to_owned()
    })
}

/// A proxy with one location per `(path, filters)` (a TOML array, or empty
/// for an unfiltered location), all to `backend`.
async fn proxy(backend: &Backend, locations: &[(&str, &str)]) -> (Proxy, SocketAddr) {
    let config = locations
        .iter()
        .fold(ConfigBuilder::new(), |config, (path, filters)| {
            config.location(path, |l| {
                let l = l.proxy_pass(backend.addr);
                if filters.is_empty() {
                    l
                } else {
                    l.filters(filters)
                }
            })
        });
    start_proxy(&config.build()).await
}

async fn within<F: Future>(future: F) -> F::Output {
    timeout(WAIT, future).await.expect("timed out")
}

/// Opens a WebSocket through the proxy with extra request headers; returns
/// the socket, the handshake response and the first message (the backend's
/// report, as the filters left it).
async fn connect(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (Ws, Response<Option<Vec<u8>>>, String) {
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let (mut ws, response) = within(connect_async(request))
        .await
        .expect("handshake through wasp");
    assert_eq!(response.status(), 101);
    let first = recv_text(&mut ws).await;
    (ws, response, first)
}

/// The backend's report inside a first message a filter may have prefixed.
fn report(first: &str) -> Value {
    let json = &first[first.find('{').expect("a report")..];
    serde_json::from_str(json).unwrap()
}

async fn recv(ws: &mut Ws) -> Message {
    within(ws.next()).await.expect("stream ended").unwrap()
}

async fn recv_text(ws: &mut Ws) -> String {
    match recv(ws).await {
        Message::Text(text) => text.as_str().to_owned(),
        other => panic!("expected text, got {other:?}"),
    }
}

async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
}

/// Sends `text` and returns the answer.
async fn round_trip(ws: &mut Ws, text: &str) -> String {
    send(ws, text).await;
    recv_text(ws).await
}

/// Reads until a close frame; returns its code and reason.
async fn expect_close(ws: &mut Ws) -> (u16, String) {
    loop {
        match recv(ws).await {
            Message::Close(Some(frame)) => return (frame.code.into(), frame.reason.to_string()),
            Message::Close(None) => panic!("close without a code"),
            _ => continue,
        }
    }
}

#[tokio::test]
async fn probe_actions_apply_in_each_direction() {
    let backend = Backend::start("b").await;
    // Behind the probe, a client-direction redact strips a `>down:` prefix,
    // so the backend echoes a bare word and the probe acts on it on the way
    // down: the only way the backend sends an action word.
    let chain = format!(
        r#"[{{ plugin = "{}" }}, {{ plugin = "redact", config = {{ patterns = ["^>down:"], replacement = "", direction = "client" }} }}]"#,
        probe_path()
    );
    let (_proxy, addr) = proxy(&backend, &[("/ws", &chain)]).await;
    let (mut ws, _, first) = connect(addr, "/ws", &[]).await;
    assert!(
        first.starts_with("<{"),
        "report replaced on the way down: {first}"
    );

    // replace, both ways: `>` on the way up, `<` on the way down.
    assert_eq!(round_trip(&mut ws, "hi").await, "<>hi");
    // forward, both ways: the probe forwards binary messages.
    ws.send(Message::binary(vec![0u8, 1, 255])).await.unwrap();
    assert_eq!(recv(&mut ws).await, Message::binary(vec![0u8, 1, 255]));
    // drop on the way up: the backend never echoes it.
    send(&mut ws, "drop").await;
    assert_eq!(round_trip(&mut ws, "after").await, "<>after");
    // drop on the way down: the backend echoes `drop`, the client gets nothing.
    send(&mut ws, "down:drop").await;
    assert_eq!(round_trip(&mut ws, "down:again").await, "<again");
    // replace on the way down, with per-connection state (messages seen).
    let count = round_trip(&mut ws, "down:count").await;
    assert!(count.starts_with('#'), "{count}");
    // close on the way down.
    send(&mut ws, "down:close").await;
    assert_eq!(
        expect_close(&mut ws).await,
        (4000, "closed by probe".into())
    );

    // close on the way up.
    let (mut ws, _, _) = connect(addr, "/ws", &[]).await;
    send(&mut ws, "close").await;
    assert_eq!(
        expect_close(&mut ws).await,
        (4000, "closed by probe".into())
    );
}

#[tokio::test]
async fn chained_filters_apply_in_order() {
    let backend = Backend::start("b").await;
    let probe = probe_path();
    let chain = format!(
        r#"[{{ plugin = "{probe}", config = {{ tag = "a" }} }}, {{ plugin = "{probe}", config = {{ tag = "b" }} }}]"#
    );
    let (_proxy, addr) = proxy(&backend, &[("/ws", &chain)]).await;
    let (mut ws, _, first) = connect(addr, "/ws", &[]).await;
    assert!(first.starts_with("b<a<{"), "{first}");
    // Up: a then b; the backend echoes `b>a>x`; down: a then b again.
    assert_eq!(round_trip(&mut ws, "x").await, "b<a<b>a>x");
}

#[tokio::test]
async fn redact_replaces_words_in_both_directions() {
    let backend = Backend::start("b").await;
    let (_proxy, addr) = proxy(
        &backend,
        &[
            (
                "/both",
                r#"[{ plugin = "redact", config = { words = ["darn"] } }]"#,
            ),
            (
                "/up",
                r#"[{ plugin = "redact", config = { words = ["darn"], direction = "client" } }]"#,
            ),
        ],
    )
    .await;
    // Down: the backend's report quotes a header the client sent.
    let (mut ws, _, first) = connect(addr, "/both", &[("x-note", "oh darn")]).await;
    assert_eq!(header(&report(&first), "x-note"), ["oh ***"]);
    assert_eq!(
        round_trip(&mut ws, "Darn it, darned").await,
        "*** it, darned"
    );
    // Up: only the client's message is redacted, and the echo shows it.
    let (mut ws, _, first) = connect(addr, "/up", &[("x-note", "oh darn")]).await;
    assert_eq!(header(&report(&first), "x-note"), ["oh darn"]);
    assert_eq!(round_trip(&mut ws, "darn").await, "***");
}

#[tokio::test]
async fn json_closes_with_1007_on_invalid_json_and_missing_fields() {
    let backend = Backend::start("b").await;
    let json = r#"[{ plugin = "json", config = { required = ["type"], direction = "client" } }]"#;
    let (_proxy, addr) = proxy(&backend, &[("/ws", json)]).await;
    let (mut ws, _, _) = connect(addr, "/ws", &[]).await;
    let valid = r#"{"type":"hello","n":1}"#;
    assert_eq!(round_trip(&mut ws, valid).await, valid);
    send(&mut ws, "not json").await;
    assert_eq!(expect_close(&mut ws).await.0, 1007);

    let (mut ws, _, _) = connect(addr, "/ws", &[]).await;
    send(&mut ws, r#"{"kind":"hello"}"#).await;
    let (code, reason) = expect_close(&mut ws).await;
    assert_eq!(code, 1007);
    assert!(reason.contains("type"), "{reason}");
}

#[tokio::test]
async fn max_size_closes_with_1009() {
    let backend = Backend::start("b").await;
    let max = r#"[{ plugin = "max-size", config = { max = "4k" } }]"#;
    let (_proxy, addr) = proxy(&backend, &[("/ws", max)]).await;
    let (mut ws, _, _) = connect(addr, "/ws", &[]).await;
    let fits = "x".repeat(4096);
    assert_eq!(round_trip(&mut ws, &fits).await, fits);
    send(&mut ws, &"x".repeat(4097)).await;
    assert_eq!(expect_close(&mut ws).await.0, 1009);
}

#[tokio::test]
async fn rate_closes_with_1008_after_the_burst() {
    let backend = Backend::start("b").await;
    let rate =
        r#"[{ plugin = "rate", config = { per_second = 0.01, burst = 3, action = "close" } }]"#;
    let (_proxy, addr) = proxy(&backend, &[("/ws", rate)]).await;
    let (mut ws, _, _) = connect(addr, "/ws", &[]).await;
    for i in 0..3 {
        let message = format!("m{i}");
        assert_eq!(round_trip(&mut ws, &message).await, message);
    }
    send(&mut ws, "one too many").await;
    assert_eq!(expect_close(&mut ws).await.0, 1008);
}

#[tokio::test]
async fn a_trap_closes_only_its_connection_with_1011() {
    let backend = Backend::start("b").await;
    let chain = format!(r#"[{{ plugin = "{}" }}]"#, probe_path());
    let (_proxy, addr) = proxy(&backend, &[("/ws", &chain)]).await;
    let (mut bystander, _, _) = connect(addr, "/ws", &[]).await;
    let (mut victim, _, _) = connect(addr, "/ws", &[]).await;
    assert_eq!(round_trip(&mut victim, "hi").await, "<>hi");
    send(&mut victim, "trap").await;
    let (code, reason) = expect_close(&mut victim).await;
    assert_eq!(code, 1011);
    assert!(reason.contains("failed"), "{reason}");
    assert_eq!(
        round_trip(&mut bystander, "still here").await,
        "<>still here"
    );
    // The location keeps serving new connections too.
    let (mut next, _, _) = connect(addr, "/ws", &[]).await;
    assert_eq!(round_trip(&mut next, "hi").await, "<>hi");
}

#[tokio::test]
async fn fail_open_forwards_unchanged_after_a_trap() {
    let backend = Backend::start("b").await;
    let chain = format!(r#"[{{ plugin = "{}", fail = "open" }}]"#, probe_path());
    let (_proxy, addr) = proxy(&backend, &[("/ws", &chain)]).await;
    let (mut ws, _, _) = connect(addr, "/ws", &[]).await;
    // The probe traps on `trap` both ways: it reaches the backend and comes
    // back unchanged.
    assert_eq!(round_trip(&mut ws, "trap").await, "trap");
    // A fresh instance filters the next message.
    assert_eq!(round_trip(&mut ws, "hi").await, "<>hi");
}

#[tokio::test]
async fn filtered_locations_offer_their_own_extensions_and_tunnels_the_clients() {
    let backend = Backend::start("b").await;
    let chain = r#"[{ plugin = "max-size" }]"#;
    let (_proxy, addr) = proxy(&backend, &[("/filtered", chain), ("/raw", "")]).await;
    let offer = [(
        "sec-websocket-extensions",
        "permessage-deflate; client_max_window_bits",
    )];
    // wasp negotiates permessage-deflate with each leg (tests/e2e/deflate.rs).
    let (_ws, _, first) = connect(addr, "/filtered", &offer).await;
    assert_eq!(
        header(&report(&first), "sec-websocket-extensions"),
        ["permessage-deflate; server_no_context_takeover; client_no_context_takeover"]
    );
    let (_ws, _, first) = connect(addr, "/raw", &offer).await;
    assert_eq!(
        header(&report(&first), "sec-websocket-extensions"),
        ["permessage-deflate; client_max_window_bits"]
    );
}

#[tokio::test]
async fn subprotocol_negotiation_passes_through() {
    let backend = Backend::start("b").await;
    let chain = r#"[{ plugin = "max-size" }]"#;
    let (_proxy, addr) = proxy(&backend, &[("/filtered", chain), ("/raw", "")]).await;
    for path in ["/filtered", "/raw"] {
        let offer = [("sec-websocket-protocol", "chat, superchat")];
        let (mut ws, response, first) = connect(addr, path, &offer).await;
        assert_eq!(
            header(&report(&first), "sec-websocket-protocol"),
            ["chat, superchat"],
            "{path}"
        );
        assert_eq!(
            response.headers()["sec-websocket-protocol"],
            "chat",
            "{path}"
        );
        assert_eq!(round_trip(&mut ws, "hi").await, "hi", "{path}");
    }
}
