//! The tutorial's router plugin (`examples/custom-router`) in a real wasp:
//! loaded from a `.wasm` file named in `[plugins] router`, it keeps each
//! room on one of three real backends and routes everything else by the
//! configuration's locations.

use crate::support::backend::Backend;
use crate::support::config::ConfigBuilder;
use crate::support::start_proxy;
use futures_util::StreamExt;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

/// The example plugins compiled by `tests/build.rs`.
mod example_plugins {
    include!(concat!(env!("OUT_DIR"), "/example_plugins.rs"));
}

/// Writes the room router's component to a fresh file, as a user's build would.
fn room_router_wasm() -> std::path::PathBuf {
    let (_, bytes) = example_plugins::PLUGINS
        .iter()
        .find(|(name, _)| *name == "custom-router")
        .expect("tests/build.rs builds the custom router");
    let path = crate::support::temp_dir("custom-router").join("room_router.wasm");
    std::fs::write(&path, bytes).unwrap();
    path
}

/// The backend's report of a WebSocket handshake through wasp at `path`.
async fn ws_report(addr: SocketAddr, path: &str) -> Value {
    let (mut ws, response) = connect_async(format!("ws://{addr}{path}"))
        .await
        .unwrap_or_else(|e| panic!("WebSocket {path} through wasp: {e}"));
    assert_eq!(response.status(), 101);
    match ws.next().await {
        Some(Ok(Message::Text(text))) => serde_json::from_str(&text).unwrap(),
        other => panic!("expected the backend's report on {path}, got {other:?}"),
    }
}

/// A plain GET through wasp: the status and the body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok());
    (status.unwrap_or(0), body.to_owned())
}

#[tokio::test]
async fn rooms_stay_on_one_backend_and_other_paths_follow_the_locations() {
    let backends = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ];
    let wasm = room_router_wasm();
    let config = ConfigBuilder::new()
        .plugin("router", &wasm)
        .upstream("room_a", |u| u.server(backends[0].addr))
        .upstream("room_b", |u| u.server(backends[1].addr))
        .upstream("room_c", |u| u.server(backends[2].addr))
        .location("/ws/a/", |l| l.proxy_pass("room_a"))
        .location("/ws/b/", |l| l.proxy_pass("room_b"))
        .location("/ws/c/", |l| l.proxy_pass("room_c"))
        .location("= /health", |l| l.returns(200, "ok"))
        .build();
    let (_proxy, addr) = start_proxy(&config).await;

    let mut homes = HashMap::new();
    for n in 0..30 {
        let path = format!("/ws/?room=room-{n}");
        let first = ws_report(addr, &path).await;
        let second = ws_report(addr, &path).await;
        let (_, body) = get(addr, &path).await;
        let plain: Value = serde_json::from_str(&body).unwrap();
        let backend = first["backend"].as_str().unwrap().to_owned();
        assert_eq!(second["backend"], backend, "{path}: second WebSocket");
        assert_eq!(plain["backend"], backend, "{path}: plain GET");
        // The request target reaches the backend unchanged.
        assert_eq!(first["uri"], path);
        homes.insert(n, backend);
    }
    let used: HashSet<&String> = homes.values().collect();
    assert_eq!(used.len(), 3, "rooms spread over every backend: {homes:?}");

    // Without a room, requests follow the locations: a shard's own prefix
    // reaches its backend, an exact location answers, anything else is 404.
    assert_eq!(ws_report(addr, "/ws/b/direct").await["backend"], "b");
    let (_, body) = get(addr, "/ws/c/x?y=1").await;
    let report: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (&report["backend"], &report["uri"]),
        (&"c".into(), &"/ws/c/x?y=1".into())
    );
    assert_eq!(get(addr, "/health").await, (200, "ok".to_owned()));
    assert_eq!(get(addr, "/elsewhere").await.0, 404);
    assert_eq!(get(addr, "/ws/").await.0, 404);

    std::fs::remove_dir_all(wasm.parent().unwrap()).unwrap();
}

/// The tutorial (examples/custom-router/README.md) shows the plugin and its
/// configuration whole: its listings are the crate's files, so following it
/// builds the plugin these tests run.
#[test]
fn the_tutorial_lists_the_whole_plugin_and_configuration() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/custom-router");
    let read = |file: &str| std::fs::read_to_string(dir.join(file)).unwrap();
    let readme = read("README.md");
    for (file, fence) in [("src/lib.rs", "```rust\n"), ("wasp.toml", "```toml\n")] {
        let listing = format!("{fence}{}```", read(file));
        assert!(
            readme.contains(&listing),
            "README.md does not list {file} whole"
        );
    }
    // The configuration it lists is one wasp accepts.
    wasp::config::Config::parse(&read("wasp.toml"), "wasp.toml").unwrap();
}
