//! Filter instances are shared by the connections of a worker thread: many
//! more filtered WebSockets than `instances`, all served and filtered, and a
//! message that breaks an instance costs only its own connection.

use crate::support::backend::Backend;
use crate::support::config::ConfigBuilder;
use crate::support::ws::{WAIT, Ws, next, next_text};
use crate::support::{raise_fd_limit, start_proxy, temp_path, test_plugins};
use futures_util::{SinkExt, StreamExt, stream};
use std::net::SocketAddr;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, connect_async};

/// Handshakes in flight at once while connections are opened.
const OPENING: usize = 64;

/// The chat default's filter (examples/chat-app/wasp.toml).
const REDACT: &str = r#"[{ plugin = "redact", config = { words = ["darn", "heck"] } }]"#;

/// Opens `count` WebSockets to `url`, `OPENING` at a time, each past the
/// backend's first message (its handshake report).
async fn open_many(url: &str, count: usize) -> Vec<Ws> {
    stream::iter(0..count)
        .map(|_| async {
            let (mut ws, response) = timeout(WAIT, connect_async(url))
                .await
                .expect("handshake in time")
                .expect("handshake through wasp");
            assert_eq!(response.status(), 101);
            next_text(&mut ws).await;
            ws
        })
        .buffer_unordered(OPENING)
        .collect()
        .await
}

/// Every connection sends `text` at once; the answers, in order.
async fn exchange(conns: &mut [Ws], text: &str) -> Vec<String> {
    for ws in conns.iter_mut() {
        ws.send(Message::text(text)).await.expect("send");
    }
    let mut answers = Vec::new();
    for ws in conns.iter_mut() {
        answers.push(next_text(ws).await);
    }
    answers
}

async fn filtered_proxy(
    backend: &Backend,
    filters: &str,
    instances: u32,
) -> (wasp::proxy::Proxy, SocketAddr) {
    let config = ConfigBuilder::new()
        .plugin_limit("instances", i64::from(instances))
        .location("/ws", |l| l.proxy_pass(backend.addr).filters(filters))
        .build();
    start_proxy(&config).await
}

#[tokio::test]
async fn filtered_connections_are_not_capped_by_instances() {
    // Room for 16 instances: the router, balancer and origin, and the
    // filter's one per worker thread. One instance per connection would
    // refuse the 17th connection or so; 400 must all be served and filtered.
    let backend = Backend::start("b").await;
    let (_proxy, addr) = filtered_proxy(&backend, REDACT, 16).await;
    let mut conns = open_many(&format!("ws://{addr}/ws"), 400).await;
    assert_eq!(conns.len(), 400);
    let answers = exchange(&mut conns, "darn it").await;
    assert!(answers.iter().all(|a| a == "*** it"), "{answers:?}");
    // All still open together, each still filtered.
    let answers = exchange(&mut conns, "oh heck").await;
    assert!(answers.iter().all(|a| a == "oh ***"), "{answers:?}");
}

#[tokio::test]
async fn three_thousand_websockets_through_the_chat_default_filter() {
    // Before instances were shared, the chat default (1000 instances) served
    // 994 of 3,000 such clients. The proxy runs in this process: 3,000 client,
    // 6,000 proxy and 3,000 backend sockets.
    raise_fd_limit(13_000);
    let backend = Backend::start("b").await;
    let (_proxy, addr) = filtered_proxy(&backend, REDACT, 1000).await;
    let mut conns = open_many(&format!("ws://{addr}/ws"), 3000).await;
    let answers = exchange(&mut conns, "darn").await;
    assert_eq!(answers.len(), 3000);
    assert!(answers.iter().all(|a| a == "***"));
}

#[tokio::test]
async fn one_poisoned_message_closes_one_connection_of_a_thousand() {
    raise_fd_limit(5_000);
    let probe = temp_path("shared-probe.wasm");
    std::fs::write(&probe, test_plugins::get("probe")).unwrap();
    let filters = format!(r#"[{{ plugin = "{}" }}]"#, probe.display());
    let backend = Backend::start("b").await;
    let (_proxy, addr) = filtered_proxy(&backend, &filters, 1000).await;
    let mut conns = open_many(&format!("ws://{addr}/ws"), 1000).await;
    // The probe marks each direction: `>` on the way up, `<` on the way down.
    assert!(exchange(&mut conns, "hi").await.iter().all(|a| a == "<>hi"));

    let mut victim = conns.pop().unwrap();
    victim.send(Message::text("trap")).await.unwrap();
    loop {
        match next(&mut victim).await {
            Message::Close(Some(frame)) => {
                assert_eq!(u16::from(frame.code), 1011);
                break;
            }
            Message::Close(None) => panic!("close without a code"),
            _ => {}
        }
    }
    // The other 999 go on, including those whose instance was the one that
    // trapped (they are opened on a fresh one first).
    let answers = exchange(&mut conns, "still here").await;
    assert_eq!(answers.len(), 999);
    assert!(answers.iter().all(|a| a == "<>still here"), "{answers:?}");
    // `count` tells how many messages the answering instance saw on the
    // connection since its `on-open`: 6 (report, hi ×2, still here ×2, this
    // one) on the instance that never failed, 3 on the fresh one — which
    // proves those connections were opened there, not merely forwarded.
    let answers = exchange(&mut conns, "count").await;
    assert!(
        answers.iter().all(|a| a == "<#6" || a == "<#3"),
        "{answers:?}"
    );
    assert!(answers.iter().any(|a| a == "<#3"), "{answers:?}");
    let _ = std::fs::remove_file(probe);
}

#[tokio::test]
async fn an_address_whose_messages_keep_spinning_a_filter_is_refused_for_a_while() {
    let probe = temp_path("ban-probe.wasm");
    std::fs::write(&probe, test_plugins::get("probe")).unwrap();
    let backend = Backend::start("b").await;
    let config = ConfigBuilder::new()
        .plugin_limit("ban_after_overruns", 2)
        .plugin_limit("ban_time", "60s")
        .location("/ws", |l| {
            l.proxy_pass(backend.addr)
                .filters(&format!(r#"[{{ plugin = "{}" }}]"#, probe.display()))
        })
        .build();
    let (_proxy, addr) = start_proxy(&config).await;
    let url = format!("ws://{addr}/ws");
    let from = |source: &'static str| {
        let url = url.clone();
        async move {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
            let stream = socket.connect(addr).await.unwrap();
            tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream)).await
        }
    };

    // Two messages that make the filter spin until its deadline: each
    // closes its own connection, the second bans the address.
    for _ in 0..2 {
        let (mut ws, _) = from("127.0.0.1").await.expect("not banned yet");
        next_text(&mut ws).await;
        ws.send(Message::text("loop")).await.unwrap();
        loop {
            match next(&mut ws).await {
                Message::Close(frame) => {
                    assert_eq!(frame.map(|f| u16::from(f.code)), Some(1011));
                    break;
                }
                _ => continue,
            }
        }
    }
    match from("127.0.0.1").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503)
        }
        other => panic!("expected 503, got {:?}", other.map(|(_, r)| r.status())),
    }
    // Another address is served as before.
    let (mut ws, _) = from("127.0.0.2")
        .await
        .expect("another address is not banned");
    next_text(&mut ws).await;
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "<>hi");
    let _ = std::fs::remove_file(probe);
}
