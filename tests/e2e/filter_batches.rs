//! Messages that arrive together go down a filter chain together: one
//! `on-messages` call per filter for the whole read, with the same result
//! as filtering them one by one (order, drops, replacements, what the
//! filters send, a close), and a failed call replayed one message at a
//! time so that only the message that broke the filter fails.
//!
//! The client writes its messages in one write (frames fed, then one
//! flush), so they reach wasp in one read.

use crate::support::backend::Backend;
use crate::support::config::ConfigBuilder;
use crate::support::ws::{WAIT, Ws, next, next_text};
use crate::support::{free_addr, request, sample, start_proxy, temp_dir, test_plugins};
use futures_util::SinkExt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tokio::time::timeout;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

/// The probe filter in a file of its own for `test`.
fn probe(test: &str) -> PathBuf {
    let path = temp_dir(&format!("batches-{test}")).join("probe.wasm");
    std::fs::write(&path, test_plugins::get("probe")).unwrap();
    path
}

/// A WebSocket through wasp at `/ws`, past the backend's report.
async fn connect(addr: SocketAddr) -> Ws {
    let (mut ws, response) = timeout(WAIT, connect_async(format!("ws://{addr}/ws")))
        .await
        .expect("handshake in time")
        .expect("handshake through wasp");
    assert_eq!(response.status(), 101);
    next(&mut ws).await;
    ws
}

/// Sends `texts` in one write.
async fn send_together(ws: &mut Ws, texts: &[&str]) {
    for text in texts {
        ws.feed(Message::text(*text)).await.unwrap();
    }
    ws.flush().await.unwrap();
}

/// The successful filter calls of the plugin in `wasm` so far, from the
/// admin listener.
async fn filter_calls(admin: SocketAddr, wasm: &Path) -> f64 {
    let text = request(admin, "GET", "/metrics").await.1;
    let series = format!(
        r#"wasp_plugin_calls_total{{plugin="{}",role="filter",outcome="ok"}}"#,
        wasm.display()
    );
    sample(&text, &series).unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[tokio::test]
async fn messages_written_together_are_filtered_in_one_call_as_one_by_one() {
    let backend = Backend::start("echo").await;
    let probe = probe("chain");
    let admin = free_addr();
    let chain = format!(
        r#"[{{ plugin = "{0}", config = {{ tag = "A" }} }}, {{ plugin = "{0}", config = {{ tag = "B" }} }}]"#,
        probe.display()
    );
    let config = ConfigBuilder::new()
        .set("admin", admin.to_string())
        .location("/ws", |l| l.proxy_pass(backend.addr).filters(&chain))
        .build();
    let (proxy, addr) = start_proxy(&config).await;
    let mut ws = connect(addr).await;
    let before = filter_calls(admin, &probe).await;

    // A tags "m1" and B tags that; A drops "drop" (B never sees it);
    // "say:x" passes both, and each sends "x" upstream right after it and
    // "<tag> heard" to the client; "count" is A's sixth message (the
    // backend's report came first). So the upstream gets, in this order:
    send_together(&mut ws, &["m1", "drop", "say:x", "m2", "count"]).await;
    let upstream = ["B>A>m1", "say:x", "x", "x", "B>A>m2", "B>A#6"];
    // The sends to the client left at once; the echoes come back through
    // A and B, tagged on the way down.
    assert_eq!(next_text(&mut ws).await, "A heard");
    assert_eq!(next_text(&mut ws).await, "B heard");
    for sent in upstream {
        assert_eq!(next_text(&mut ws).await, format!("B<A<{sent}"));
    }

    // One call per filter for the five messages on the way up; on the way
    // down the six echoes come as the backend writes them, at most a call
    // per filter each. One by one, the way up alone would take 9 calls.
    let calls = filter_calls(admin, &probe).await - before;
    assert!(
        (4.0..=2.0 + 2.0 * 6.0).contains(&calls),
        "{calls} calls: 2 expected for the way up, 2 to 12 for the way down"
    );

    // A close among them: what the messages before it sent leaves, then
    // the filter's close; what comes after it is not looked at.
    send_together(&mut ws, &["say:y", "close", "say:z"]).await;
    assert_eq!(next_text(&mut ws).await, "A heard");
    assert_eq!(next_text(&mut ws).await, "B heard");
    match next(&mut ws).await {
        Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 4000);
            assert_eq!(frame.reason.as_str(), "closed by probe");
        }
        other => panic!("the probe's close expected, got {other:?}"),
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_batch_that_breaks_a_fail_closed_filter_passes_what_came_before_the_poison() {
    let backend = Backend::start("echo").await;
    let probe = probe("closed");
    let chain = format!(
        r#"[{{ plugin = "{}", config = {{ tag = "P" }} }}]"#,
        probe.display()
    );
    let config = ConfigBuilder::new()
        .location("/ws", |l| l.proxy_pass(backend.addr).filters(&chain))
        .build();
    let (proxy, addr) = start_proxy(&config).await;
    let mut ws = connect(addr).await;
    let mut other = connect(addr).await;

    send_together(&mut ws, &["say:a", "say:b", "trap", "say:c"]).await;
    // Replayed one by one on a fresh instance: "say:a" and "say:b" pass
    // (each sends "P heard" to the client, once: the failed call's sends
    // are forgotten), "trap" fails alone and closes this connection, and
    // "say:c" is not looked at.
    assert_eq!(next_text(&mut ws).await, "P heard");
    assert_eq!(next_text(&mut ws).await, "P heard");
    match next(&mut ws).await {
        Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 1011);
            let reason = format!("filter {} failed", probe.display());
            assert_eq!(frame.reason.as_str(), reason);
        }
        other => panic!("a 1011 close expected, got {other:?}"),
    }

    // The other connection goes on.
    send_together(&mut other, &["d", "e"]).await;
    assert_eq!(next_text(&mut other).await, "P<P>d");
    assert_eq!(next_text(&mut other).await, "P<P>e");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_batch_that_breaks_a_fail_open_filter_forwards_only_the_poison_unfiltered() {
    let backend = Backend::start("echo").await;
    let chain = format!(
        r#"[{{ plugin = "{}", fail = "open" }}]"#,
        probe("open").display()
    );
    let config = ConfigBuilder::new()
        .location("/ws", |l| l.proxy_pass(backend.addr).filters(&chain))
        .build();
    let (proxy, addr) = start_proxy(&config).await;
    let mut ws = connect(addr).await;

    send_together(&mut ws, &["a", "trap", "b", "count"]).await;
    // Replayed one by one: "a" on a fresh instance, "trap" breaks that one
    // too and passes as it came, "b" and "count" on the next instance
    // ("count" is the connection's second message there). The echo of
    // "trap" breaks the filter again on the way down and passes too.
    for expected in ["<>a", "trap", "<>b", "<#2"] {
        assert_eq!(next_text(&mut ws).await, expected);
    }
    proxy.shutdown().await;
}
