//! The three-backend variant (the guide's load-balancing section) through a
//! real wasp: `wasp-cluster.toml` with `ip_hash`, three backends sharing rooms
//! through Redis, and two users pinned to different backends chatting.

use crate::common::{Backend, Client};
use crate::redis::Redis;
use serde_json::json;
use std::collections::HashMap;
use wasp::config::Config;
use wasp::proxy::Proxy;

/// `wasp-cluster.toml` with the test's ports and an absolute static root.
fn cluster_config(backends: &[Backend]) -> Config {
    let dir = env!("CARGO_MANIFEST_DIR");
    let mut text = std::fs::read_to_string(format!("{dir}/wasp-cluster.toml")).unwrap();
    text = text.replace("127.0.0.1:8000", "127.0.0.1:0");
    text = text.replace("examples/chat-app/public", &format!("{dir}/public"));
    for (i, backend) in backends.iter().enumerate() {
        text = text.replace(&format!("127.0.0.1:{}", 8081 + i), &backend.addr);
    }
    Config::parse(&text, "wasp-cluster.toml").expect("the cluster configuration is valid")
}

#[tokio::test]
async fn users_pinned_to_different_backends_chat_in_one_room_through_wasp() {
    let redis = Redis::start();
    let url = redis.url();
    let backends: Vec<Backend> = (1..=3)
        .map(|i| Backend::start(&["--redis", &url, "--name", &format!("backend-{i}")]))
        .collect();
    let proxy = Proxy::start(cluster_config(&backends))
        .await
        .expect("wasp starts");
    let addr = proxy.local_addr("127.0.0.1:0").await.unwrap();
    let chat = format!("ws://{addr}/ws/chat");

    // ip_hash keys on the first three octets: find two client networks that
    // land on different backends, and check each network sticks.
    let mut by_backend: HashMap<String, String> = HashMap::new();
    for net in 1..=30 {
        let source = format!("127.0.{net}.1");
        let mut probe = Client::connect_from(&source, &chat).await;
        let backend = probe.join(&format!("probe-{net}"), "probe").await["backend"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut again = Client::connect_from(&format!("127.0.{net}.2"), &chat).await;
        let same_net = again.join(&format!("probe-{net}-b"), "probe").await;
        assert_eq!(
            same_net["backend"],
            backend.as_str(),
            "one /24 network, one backend"
        );
        probe.close().await;
        again.close().await;
        by_backend.entry(backend).or_insert(source);
        if by_backend.len() >= 2 {
            break;
        }
    }
    assert!(
        by_backend.len() >= 2,
        "30 networks all hashed to one backend: {by_backend:?}"
    );
    let mut sources = by_backend.into_iter();
    let (ann_backend, ann_source) = sources.next().unwrap();
    let (bob_backend, bob_source) = sources.next().unwrap();

    let mut ann = Client::connect_from(&ann_source, &chat).await;
    let mut bob = Client::connect_from(&bob_source, &chat).await;
    assert_eq!(
        ann.join("lobby", "ann").await["backend"],
        ann_backend.as_str()
    );
    let joined = bob.join("lobby", "bob").await;
    assert_eq!(joined["backend"], bob_backend.as_str());
    assert_eq!(
        joined["members"],
        json!(["ann", "bob"]),
        "members span backends"
    );

    ann.send(json!({"type": "say", "text": "hello from the other side"}))
        .await;
    let heard = bob.recv_type("message").await;
    assert_eq!(
        (&heard["nick"], &heard["text"]),
        (&json!("ann"), &json!("hello from the other side"))
    );
    // The redact filter of the cluster configuration rewrites in flight.
    bob.send(json!({"type": "say", "text": "darn it"})).await;
    loop {
        // Ann also sees bob's arrival and her own message first.
        let message = ann.recv().await;
        if message["type"] == "message" && message["nick"] == "bob" {
            assert_eq!(message["text"], "*** it");
            break;
        }
    }
    ann.close().await;
    bob.close().await;
    proxy.shutdown().await;
}

/// `wasp-cluster.toml` as one of two wasps sharing `shared` (`reuse_port`)
/// and Redis (`[cluster]`), also listening on a port of its own.
fn member_config(backends: &[Backend], redis: &str, name: &str, shared: &str, own: &str) -> Config {
    let dir = env!("CARGO_MANIFEST_DIR");
    let mut text = std::fs::read_to_string(format!("{dir}/wasp-cluster.toml")).unwrap();
    text = text.replace(
        "listen = \"127.0.0.1:8000\"",
        &format!("listen = [\"{shared}\", \"{own}\"]\nreuse_port = true"),
    );
    text = text.replace("examples/chat-app/public", &format!("{dir}/public"));
    for (i, backend) in backends.iter().enumerate() {
        text = text.replace(&format!("127.0.0.1:{}", 8081 + i), &backend.addr);
    }
    let text = format!("[cluster]\nredis = \"{redis}\"\ninstance = \"{name}\"\n\n{text}");
    Config::parse(&text, "wasp-cluster.toml").expect("the member configuration is valid")
}

fn free_port_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

#[tokio::test]
async fn two_wasps_on_one_port_pin_a_network_to_one_backend_and_share_the_rooms() {
    let redis = Redis::start();
    let url = redis.url();
    let backends: Vec<Backend> = (1..=3)
        .map(|i| Backend::start(&["--redis", &url, "--name", &format!("backend-{i}")]))
        .collect();
    let shared = free_port_addr();
    let (own_a, own_b) = (free_port_addr(), free_port_addr());
    let a = Proxy::start(member_config(&backends, &url, "a", &shared, &own_a))
        .await
        .expect("wasp a starts");
    let b = Proxy::start(member_config(&backends, &url, "b", &shared, &own_b))
        .await
        .expect("wasp b starts");
    let through = |own: &str| format!("ws://{own}/ws/chat");

    // ip_hash: a client network reaches the same backend through either wasp.
    for net in 1..=6 {
        let mut via_a = Client::connect_from(&format!("127.0.{net}.1"), &through(&own_a)).await;
        let mut via_b = Client::connect_from(&format!("127.0.{net}.2"), &through(&own_b)).await;
        let on_a = via_a.join(&format!("a-{net}"), "probe").await["backend"].clone();
        let on_b = via_b.join(&format!("b-{net}"), "probe").await["backend"].clone();
        assert_eq!(
            on_a, on_b,
            "network 127.0.{net}.0/24 through a and through b"
        );
        via_a.close().await;
        via_b.close().await;
    }

    // Ann through a, Bob through b, one room.
    let mut ann = Client::connect_from("127.0.1.1", &through(&own_a)).await;
    let mut bob = Client::connect_from("127.0.2.1", &through(&own_b)).await;
    ann.join("lobby", "ann").await;
    let joined = bob.join("lobby", "bob").await;
    assert_eq!(joined["members"], json!(["ann", "bob"]));
    bob.send(json!({"type": "say", "text": "heck, hello"}))
        .await;
    loop {
        let message = ann.recv().await;
        if message["type"] == "message" && message["nick"] == "bob" {
            assert_eq!(message["text"], "***, hello");
            break;
        }
    }
    ann.close().await;
    bob.close().await;
    a.shutdown().await;
    b.shutdown().await;
}
