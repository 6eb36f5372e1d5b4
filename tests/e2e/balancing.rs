//! Load balancing end to end: three (or four) real backends on loopback,
//! real clients (bound to chosen 127.x.y.z source addresses for ip_hash),
//! and every policy of the default balancer, passive and active health,
//! `backup` and `down` servers, `next_upstream_tries`, and a custom balancer
//! plugin loaded from a `.wasm` file.

use crate::support::backend::{Backend, connect_from, ws_over};
use crate::support::config::{ConfigBuilder, Upstream, toml_value};
use crate::support::{free_addr, request, sample, start_proxy};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use wasp::proxy::Proxy;

type Ws = WebSocketStream<TcpStream>;

/// The example balancer compiled by `tests/build.rs`.
mod example_balancers {
    include!(concat!(env!("OUT_DIR"), "/example_balancers.rs"));
}

/// How long a test waits for the proxy to notice a change.
const PATIENCE: Duration = Duration::from_secs(10);

async fn start_backends(names: &[&str]) -> Vec<Backend> {
    let mut backends = Vec::new();
    for name in names {
        backends.push(Backend::start(name).await);
    }
    backends
}

/// The backends' addresses, for plain `servers` entries.
fn addrs(backends: &[Backend]) -> impl Iterator<Item = SocketAddr> {
    backends.iter().map(|b| b.addr)
}

/// One upstream `app`, filled in by `upstream`, proxied at `/`.
fn config(upstream: impl FnOnce(Upstream) -> Upstream) -> ConfigBuilder {
    ConfigBuilder::new()
        .upstream("app", upstream)
        .location("/", |l| l.proxy_pass("app"))
}

/// `GET path` over `stream` with extra header lines; the name of the
/// backend that answered. Anything but a 200 fails the test.
async fn get_over(mut stream: TcpStream, path: &str, headers: &str) -> String {
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: wasp\r\n{headers}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    assert!(head.starts_with("HTTP/1.1 200 "), "GET {path}: {raw}");
    let report: Value = serde_json::from_str(body).unwrap();
    report["backend"].as_str().unwrap().to_owned()
}

async fn get(proxy: SocketAddr, path: &str) -> String {
    get_over(TcpStream::connect(proxy).await.unwrap(), path, "").await
}

async fn ws(proxy: SocketAddr) -> (Ws, String) {
    ws_over(TcpStream::connect(proxy).await.unwrap(), &[]).await
}

/// Connections the proxy counts as open to the peer at `peer` of `app`.
fn active(proxy: &Proxy, peer: SocketAddr) -> u32 {
    let site = proxy.shared().site.load();
    let peers = &site.upstreams["app"].peers;
    let state = peers.iter().find(|p| p.address == peer.to_string());
    state.expect("a peer of app").active()
}

/// Closes a WebSocket cleanly and waits for the proxy to count it gone.
async fn close(proxy: &Proxy, peer: SocketAddr, mut ws: Ws) {
    let before = active(proxy, peer);
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}
    drop(ws);
    let deadline = Instant::now() + PATIENCE;
    while active(proxy, peer) >= before {
        assert!(Instant::now() < deadline, "the proxy never saw the close");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn smooth_weighted_round_robin_follows_nginx_sequence() {
    let backends = start_backends(&["a", "b", "c"]).await;
    let config = config(|u| {
        u.server_with(backends[0].addr, "{ weight = 5 }")
            .servers(addrs(&backends[1..]))
    });
    let (_proxy, addr) = start_proxy(&config.build()).await;

    let mut seen = String::new();
    for _ in 0..7 {
        seen += &get(addr, "/").await;
    }
    // WebSockets share the same schedule.
    for _ in 0..7 {
        seen += &ws(addr).await.1;
    }
    assert_eq!(seen, "aabacaa".repeat(2));
}

#[tokio::test]
async fn ip_hash_sticks_per_client_network_and_spreads_networks() {
    let backends = start_backends(&["a", "b", "c"]).await;
    let config = config(|u| u.set("balance", "ip_hash").servers(addrs(&backends)));
    let (_proxy, addr) = start_proxy(&config.build()).await;

    let mut homes = HashMap::new();
    for net in 1..=12u8 {
        let mut by_address = Vec::new();
        // Two addresses of one /24: nginx hashes the first three octets.
        for host in [1, 2] {
            let source = Ipv4Addr::new(127, 0, net, host);
            let mut seen = HashSet::new();
            for n in 0..20 {
                let stream = connect_from(addr, source).await;
                let backend = if n % 2 == 0 {
                    get_over(stream, "/", "").await
                } else {
                    ws_over(stream, &[]).await.1
                };
                seen.insert(backend);
            }
            assert_eq!(seen.len(), 1, "{source} went to {seen:?}");
            by_address.extend(seen);
        }
        assert_eq!(by_address[0], by_address[1], "127.0.{net}.0/24 is split");
        homes.insert(net, by_address.remove(0));
    }
    let used: HashSet<&String> = homes.values().collect();
    assert!(used.len() >= 2, "every network on one backend: {homes:?}");
}

#[tokio::test]
async fn least_conn_sends_each_websocket_to_the_emptiest_peer() {
    let backends = start_backends(&["a", "b", "c"]).await;
    let config = config(|u| u.set("balance", "least_conn").servers(addrs(&backends)));
    let (proxy, addr) = start_proxy(&config.build()).await;
    let peer: HashMap<String, SocketAddr> =
        backends.iter().map(|b| (b.name.clone(), b.addr)).collect();
    let mut open: HashMap<String, Vec<Ws>> = peer.keys().map(|n| (n.clone(), vec![])).collect();

    // Opens one WebSocket and checks it went to a peer with the fewest.
    async fn open_one(addr: SocketAddr, open: &mut HashMap<String, Vec<Ws>>) -> String {
        let fewest = open.values().map(Vec::len).min().unwrap();
        let (ws, backend) = ws(addr).await;
        let count = open.get_mut(&backend).unwrap();
        assert_eq!(count.len(), fewest, "{backend} was not the emptiest peer");
        count.push(ws);
        backend
    }

    for _ in 0..9 {
        open_one(addr, &mut open).await;
    }
    for (name, sockets) in &open {
        assert_eq!(sockets.len(), 3, "{name}");
        assert_eq!(active(&proxy, peer[name]), 3, "{name}");
    }

    // b drops to one: the next two go to b.
    for _ in 0..2 {
        let ws = open.get_mut("b").unwrap().pop().unwrap();
        close(&proxy, peer["b"], ws).await;
    }
    assert_eq!(open_one(addr, &mut open).await, "b");
    assert_eq!(open_one(addr, &mut open).await, "b");

    // c drops to two: the next goes to c.
    let ws = open.get_mut("c").unwrap().pop().unwrap();
    close(&proxy, peer["c"], ws).await;
    assert_eq!(open_one(addr, &mut open).await, "c");
}

#[tokio::test]
async fn a_killed_backend_is_skipped_for_fail_timeout_and_used_again_when_back() {
    let mut backends = start_backends(&["a", "b", "c"]).await;
    let config = config(|u| {
        backends.iter().fold(u, |u, b| {
            u.server_with(b.addr, r#"{ max_fails = 1, fail_timeout = "1s" }"#)
        })
    });
    let (_proxy, addr) = start_proxy(&config.build()).await;

    let mut clients = Vec::new();
    for expected in ["a", "b", "c"] {
        let (ws, backend) = ws(addr).await;
        assert_eq!(backend, expected);
        clients.push(ws);
    }

    let b = backends.remove(1);
    let b_addr = b.addr;
    let killed = Instant::now();
    b.stop().await;

    // b's client loses its WebSocket and reconnects, to a live backend.
    let mut orphan = clients.remove(1);
    let ended = async {
        while let Some(Ok(message)) = orphan.next().await {
            if message.is_close() {
                break;
            }
        }
    };
    tokio::time::timeout(PATIENCE, ended)
        .await
        .expect("the killed backend's WebSocket ends");
    let (_reconnected, backend) = ws(addr).await;
    assert_ne!(backend, "b");
    // The others carry on.
    for ws in &mut clients {
        ws.send(Message::text("still here")).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text("still here")
        );
    }

    // No request fails: three in a row reach b's turn, whose connect error
    // is retried on a live peer and takes b out for fail_timeout.
    for _ in 0..6 {
        assert_ne!(get(addr, "/").await, "b");
    }

    // b comes back at once, but is skipped until fail_timeout has passed. A
    // response received within 1 s of the kill was picked within 1 s of
    // the failure, which came after the kill.
    let _b = Backend::start_at("b", b_addr).await;
    let mut within_timeout = 0;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let backend = get(addr, "/").await;
        if killed.elapsed() < Duration::from_secs(1) {
            assert_ne!(backend, "b", "b was picked within its fail_timeout");
            within_timeout += 1;
        } else if backend == "b" {
            break;
        }
        assert!(Instant::now() < deadline, "b never came back");
    }
    assert!(
        within_timeout > 0,
        "no request was made within fail_timeout"
    );
}

#[tokio::test]
async fn consistent_hash_moves_only_the_new_backends_share_of_keys() {
    let backends = start_backends(&["a", "b", "c", "d"]).await;
    let hash = |backends: &[Backend]| {
        config(|u| {
            u.set("balance", "hash")
                .set("hash_key", "$arg_room")
                .set("consistent", true)
                .servers(addrs(backends))
        })
        .build()
    };

    async fn homes(addr: SocketAddr) -> Vec<String> {
        let mut homes = Vec::new();
        for n in 0..1000 {
            homes.push(get(addr, &format!("/chat?room=room-{n}")).await);
        }
        homes
    }

    let (_three, addr) = start_proxy(&hash(&backends[..3])).await;
    let before = homes(addr).await;
    // The same keys again land where they did.
    assert_eq!(&homes(addr).await[..100], &before[..100]);
    let used: HashSet<&String> = before.iter().collect();
    assert_eq!(used.len(), 3, "keys spread over every backend");

    let (_four, addr) = start_proxy(&hash(&backends)).await;
    let after = homes(addr).await;
    let moved: Vec<(&String, &String)> =
        before.iter().zip(&after).filter(|(b, a)| b != a).collect();
    assert!(
        (150..=350).contains(&moved.len()),
        "{} of 1000 keys moved",
        moved.len()
    );
    assert!(
        moved.iter().all(|(_, to)| *to == "d"),
        "keys moved between old backends"
    );
}

/// Writes the header balancer's component to a fresh file.
fn header_balancer_wasm() -> PathBuf {
    let (_, bytes) = example_balancers::PLUGINS
        .iter()
        .find(|(name, _)| *name == "header-balancer")
        .expect("tests/build.rs builds the header balancer");
    let path = crate::support::temp_dir("header-balancer").join("header_balancer.wasm");
    std::fs::write(&path, bytes).unwrap();
    path
}

#[tokio::test]
async fn a_custom_balancer_plugin_replaces_the_default() {
    let backends = start_backends(&["a", "b", "c"]).await;
    let wasm = header_balancer_wasm();
    let config = config(|u| u.servers(addrs(&backends))).plugin("balancer", &wasm);
    let (_proxy, addr) = start_proxy(&config.build()).await;

    // The same header picks the same backend every time (round-robin would
    // rotate), for requests and WebSocket handshakes alike.
    for _ in 0..3 {
        for (index, name) in [("2", "c"), ("0", "a"), ("1", "b")] {
            let header = format!("x-backend: {index}\r\n");
            let stream = TcpStream::connect(addr).await.unwrap();
            assert_eq!(get_over(stream, "/", &header).await, name);
            let stream = TcpStream::connect(addr).await.unwrap();
            let (_ws, backend) = ws_over(stream, &[("x-backend", index)]).await;
            assert_eq!(backend, name);
        }
    }
    std::fs::remove_dir_all(wasm.parent().unwrap()).unwrap();
}

#[tokio::test]
async fn active_health_checks_steer_traffic_around_an_unhealthy_peer() {
    let backends = start_backends(&["a", "b", "c"]).await;
    let health = toml_value(r#"{ path = "/health", interval = "100ms", rise = 1, fall = 1 }"#);
    let config = config(|u| u.set("health", health).servers(addrs(&backends)));
    let (_proxy, addr) = start_proxy(&config.build()).await;

    // Three requests in a row are one round of the round-robin.
    async fn round(addr: SocketAddr) -> HashSet<String> {
        let mut seen = HashSet::new();
        for _ in 0..3 {
            seen.insert(get(addr, "/").await);
        }
        seen
    }

    let deadline = Instant::now() + PATIENCE;
    while round(addr).await.len() < 3 {
        assert!(Instant::now() < deadline, "not every backend takes traffic");
    }
    backends[1].set_healthy(false);
    // A round without b means a check took it out; it stays out while its
    // checks keep failing.
    let deadline = Instant::now() + PATIENCE;
    while round(addr).await.contains("b") {
        assert!(Instant::now() < deadline, "b never went unhealthy");
    }
    for _ in 0..20 {
        assert_ne!(get(addr, "/").await, "b");
    }

    backends[1].set_healthy(true);
    let deadline = Instant::now() + PATIENCE;
    while get(addr, "/").await != "b" {
        assert!(Instant::now() < deadline, "b never came back");
    }
}

/// `GET path`: the status and, when it is 200, the backend that answered.
async fn try_get(proxy: SocketAddr, path: &str) -> (u16, Option<String>) {
    let (status, body) = request(proxy, "GET", path).await;
    let backend = (status == 200).then(|| {
        let report: Value = serde_json::from_str(&body).unwrap();
        report["backend"].as_str().unwrap().to_owned()
    });
    (status, backend)
}

#[tokio::test]
async fn a_backup_serves_only_while_every_primary_is_unusable() {
    let mut backends = start_backends(&["a", "b", "c"]).await;
    let primary = r#"{ max_fails = 1, fail_timeout = "1s" }"#;
    let config = config(|u| {
        u.server_with(backends[0].addr, primary)
            .server_with(backends[1].addr, primary)
            .server_with(backends[2].addr, "{ backup = true }")
    });
    let (_proxy, addr) = start_proxy(&config.build()).await;

    let mut seen = String::new();
    for _ in 0..6 {
        seen += &get(addr, "/").await;
    }
    assert_eq!(
        seen, "ababab",
        "the backup took traffic while primaries were up"
    );

    // Both primaries die: the first request's connect errors move it on to
    // the backup, which serves from then on.
    let b = backends.remove(1);
    let a = backends.remove(0);
    let a_addr = a.addr;
    a.stop().await;
    b.stop().await;
    for _ in 0..6 {
        assert_eq!(get(addr, "/").await, "c");
    }

    // A primary back (once its fail_timeout is over) takes the traffic back;
    // b, still dead, is retried on it, not on the backup.
    let _a = Backend::start_at("a", a_addr).await;
    let deadline = Instant::now() + PATIENCE;
    while get(addr, "/").await != "a" {
        assert!(Instant::now() < deadline, "a never came back");
    }
    for _ in 0..6 {
        assert_eq!(get(addr, "/").await, "a");
    }
}

#[tokio::test]
async fn a_down_server_never_takes_traffic() {
    let backends = start_backends(&["a", "b", "c"]).await;
    let down = "{ down = true }";
    let config = ConfigBuilder::new()
        .upstream("app", |u| {
            u.server(backends[0].addr)
                .server_with(backends[1].addr, down)
        })
        .upstream("spare", |u| {
            u.server_with(backends[1].addr, down)
                .server_with(backends[2].addr, "{ backup = true }")
        })
        .location("/", |l| l.proxy_pass("app"))
        .location("/spare/", |l| l.proxy_pass("spare"));
    let (_proxy, addr) = start_proxy(&config.build()).await;

    for _ in 0..6 {
        assert_eq!(get(addr, "/").await, "a");
    }
    // A down primary leaves the work to the backup.
    for _ in 0..6 {
        assert_eq!(get(addr, "/spare/").await, "c");
    }
    // Not even when the only other peer is dead: nginx answers 502 (no live
    // upstreams) rather than use a server marked down.
    // (b and c keep running: dropping a handle does not stop a backend.)
    backends.into_iter().next().unwrap().stop().await;
    for n in 0..6 {
        assert_eq!(try_get(addr, "/").await, (502, None), "request {n}");
    }
}

#[tokio::test]
async fn plain_hash_keeps_each_key_on_one_backend_and_spreads_keys() {
    let mut backends = start_backends(&["a", "b", "c"]).await;
    let config = config(|u| {
        u.set("balance", "hash")
            .set("hash_key", "$arg_room")
            .servers(addrs(&backends))
    });
    let (_proxy, addr) = start_proxy(&config.build()).await;

    async fn homes(addr: SocketAddr) -> Vec<String> {
        let mut homes = Vec::new();
        for n in 0..200 {
            homes.push(get(addr, &format!("/chat?room=room-{n}")).await);
        }
        homes
    }
    let before = homes(addr).await;
    assert_eq!(homes(addr).await, before, "a key changed backend");
    let used: HashSet<&String> = before.iter().collect();
    assert_eq!(used.len(), 3, "keys spread over every backend");

    // An empty key falls back to round-robin, as in nginx.
    let round: HashSet<String> = [
        get(addr, "/chat").await,
        get(addr, "/chat").await,
        get(addr, "/chat").await,
    ]
    .into_iter()
    .collect();
    assert_eq!(
        round.len(),
        3,
        "an empty key does not round-robin: {round:?}"
    );

    // A dead backend's keys are rehashed onto the others; every other key
    // stays where it was.
    backends.remove(2).stop().await;
    let after = homes(addr).await;
    for (n, (before, after)) in before.iter().zip(&after).enumerate() {
        if before == "c" {
            assert_ne!(after, "c", "room-{n}");
        } else {
            assert_eq!(after, before, "room-{n} moved off a live backend");
        }
    }
}

#[tokio::test]
async fn next_upstream_tries_stops_before_a_live_peer_beyond_the_limit() {
    let live = Backend::start("live").await;
    let dead = [free_addr(), free_addr()];
    // Two dead primaries (never taken out, so every request tries both) and
    // the live peer as a backup: it comes third in every request's order.
    let group = |tries: u32| {
        move |u: Upstream| {
            let u = dead
                .iter()
                .fold(u, |u, d| u.server_with(d, "{ max_fails = 0 }"));
            u.server_with(live.addr, "{ backup = true }")
                .set("next_upstream_tries", i64::from(tries))
        }
    };
    let config = ConfigBuilder::new()
        .upstream("limited", group(2))
        .upstream("unlimited", group(0))
        .location("/limited/", |l| l.proxy_pass("limited"))
        .location("/unlimited/", |l| l.proxy_pass("unlimited"));
    let (proxy, addr) = start_proxy(&config.build()).await;

    // nginx's `proxy_next_upstream_tries 2`: both connects are refused, the
    // attempts stop there and the client gets 502; the live peer a third
    // try would reach is not tried.
    for _ in 0..3 {
        assert_eq!(try_get(addr, "/limited/").await, (502, None));
    }
    let failures = |upstream: &str, peer: SocketAddr| {
        let series =
            format!(r#"wasp_upstream_failures_total{{upstream="{upstream}",peer="{peer}"}}"#);
        sample(&proxy.shared().metrics.encode(), &series).unwrap_or(0.0)
    };
    for peer in dead {
        assert_eq!(failures("limited", peer), 3.0, "attempts on {peer}");
    }
    // 0, the default, is every peer: the third try reaches the live one.
    for _ in 0..3 {
        assert_eq!(
            try_get(addr, "/unlimited/").await,
            (200, Some("live".into()))
        );
    }
}
