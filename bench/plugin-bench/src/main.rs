//! `wasp-plugin-bench`: what a plugin call costs on a live pooled instance —
//! `route` of the embedded router with a 12-header request head, a
//! pass-through filter's `on-message` with 100 B and 64 KiB messages — and
//! what a new configured instance costs, measured through the plugin runtime
//! exactly as the proxy calls it (pool, deadline, panic guard included).
//!
//! Usage: `wasp-plugin-bench [FILTER.wasm]` (default: the pass-through filter
//! built by `cargo build --release --target wasm32-wasip2 -p wasp-test-passthrough`
//! under `$CARGO_TARGET_DIR`, else `target/`).
//!
//! Each figure is the median over 15 batches of the per-call mean in a
//! batch, after a warm-up batch; min and max of the batch means follow.

use anyhow::{Context, anyhow};
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use wasp::config::Config;
use wasp::plugins::embedded;
use wasp_plugin_runtime::{
    Direction, FilterPool, Limits, Message, Opened, Packed, RequestHead, RouterPool, Runtime,
    Speech,
};

const BATCHES: usize = 15;

/// The proxy's benchmark configuration (bench/run.sh), for the router.
const CONFIG: &str = r#"
[[server]]
listen = "127.0.0.1:9103"
[[server.location]]
path = "/"
proxy_pass = "http://127.0.0.1:9001"
"#;

fn main() -> anyhow::Result<()> {
    let filter_path = std::env::args_os()
        .nth(1)
        .map_or_else(default_filter, PathBuf::from);
    let runtime = Runtime::new(Limits::default(), None, None).map_err(|e| anyhow!("{e:#}"))?;
    let config = Config::parse(CONFIG, "plugin-bench").map_err(|e| anyhow!("{e}"))?;

    let router = runtime
        .load(
            "router",
            embedded::get("router").context("embedded router")?,
        )
        .map_err(|e| anyhow!("{e}"))?;
    let router = RouterPool::new(router, config.router_json()).map_err(|e| anyhow!("{e}"))?;
    let filter = runtime
        .load_file(&filter_path)
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("pass-through filter {}", filter_path.display()))?;
    let filter = FilterPool::new(filter, String::new()).map_err(|e| anyhow!("{e}"))?;

    let head = request_head();
    report("route, 12 headers", 20_000, || {
        black_box(router.route(&head).expect("route"));
    });

    // Connection 1, opened on this thread's instance as the relay does.
    let mut opened = Opened::default();
    filter
        .open(&mut opened, 1, &head)
        .map_err(|e| anyhow!("{e}"))?;
    for (label, message, calls) in [
        (
            "on-message, 100 B text",
            Message::Text("x".repeat(100)),
            50_000,
        ),
        (
            "on-message, 100 B binary",
            Message::Binary(vec![7; 100]),
            50_000,
        ),
        (
            "on-message, 64 KiB text",
            Message::Text("x".repeat(64 << 10)),
            2_000,
        ),
        (
            "on-message, 64 KiB binary",
            Message::Binary(vec![7; 64 << 10]),
            2_000,
        ),
    ] {
        report(label, calls, || {
            black_box(
                filter
                    .on_message(&mut opened, 1, &head, Direction::ClientToUpstream, &message)
                    .expect("on-message"),
            );
        });
    }
    // Messages that arrived together: one call, per message.
    for batch in [1, 2, 8, 16] {
        let mut messages = Packed::default();
        for _ in 0..batch {
            messages.push(true, &[b'x'; 100]);
        }
        let label = format!("on-messages, {batch} × 100 B, per message");
        report_each(&label, 50_000 / batch, batch, || {
            black_box(
                filter
                    .on_messages_speaking(
                        &mut opened,
                        1,
                        &head,
                        Direction::ClientToUpstream,
                        &messages,
                        &mut Speech::default(),
                    )
                    .expect("on-messages"),
            );
        });
    }

    report("instantiate + configure, router", 200, || {
        drop(black_box(router.dedicated().expect("instance")));
    });
    report("instantiate + configure, filter", 200, || {
        let pool = FilterPool::new(filter.plugin().clone(), String::new());
        drop(black_box(pool.expect("instance")));
    });
    Ok(())
}

fn default_filter() -> PathBuf {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    target.join("wasm32-wasip2/release/wasp_test_passthrough.wasm")
}

/// A browser's WebSocket handshake: 12 headers.
fn request_head() -> RequestHead {
    let headers = [
        ("host", "chat.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        ),
        ("accept", "*/*"),
        ("accept-language", "en-US,en;q=0.5"),
        ("accept-encoding", "gzip, deflate, br"),
        ("sec-websocket-version", "13"),
        ("origin", "https://chat.example.com"),
        ("sec-websocket-extensions", "permessage-deflate"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("connection", "keep-alive, Upgrade"),
        ("cookie", "session=0123456789abcdef0123456789abcdef"),
        ("upgrade", "websocket"),
    ];
    RequestHead {
        method: "GET".into(),
        path: "/ws/room/42".into(),
        query: "token=abc".into(),
        headers: headers.iter().map(|(n, v)| format!("{n}: {v}\n")).collect(),
        client_ip: "127.0.0.1".into(),
        client_port: 50_000,
        listener: "127.0.0.1:9103".into(),
        tls: false,
        sni: None,
    }
}

/// Times `calls` calls of `f` per batch and prints the median batch mean.
fn report(label: &str, calls: u32, f: impl FnMut()) {
    report_each(label, calls, 1, f);
}

/// [`report`] per item of a call that handles `items`.
fn report_each(label: &str, calls: u32, items: u32, mut f: impl FnMut()) {
    let mut batch = || {
        let started = Instant::now();
        for _ in 0..calls {
            f();
        }
        started.elapsed() / calls / items
    };
    batch();
    let mut means: Vec<Duration> = (0..BATCHES).map(|_| batch()).collect();
    means.sort();
    println!(
        "{label:<34} {:>9.2} µs   (min {:.2}, max {:.2}; {BATCHES} × {calls} calls)",
        micros(means[BATCHES / 2]),
        micros(means[0]),
        micros(means[BATCHES - 1]),
    );
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
