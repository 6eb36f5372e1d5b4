//! The frame relay between real sockets on loopback: a tokio-tungstenite
//! client, the relay (both legs plain `TcpStream`s, upgraded by hand as the
//! proxy does), and a tokio-tungstenite echo upstream, with real wasm filters.

use crate::support::test_plugins;
use arc_swap::ArcSwap;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use wasp::filter_chain::{FilterChain, FilterSlot};
use wasp::plugins::{FilterPool, Limits, Plugin, RequestHead, Runtime};
use wasp::relay::frames::{self, FrameRelayConfig, RelayStats};

/// Bound on every wait: generous, only there to fail instead of hanging.
const WAIT: Duration = Duration::from_secs(10);

type Ws = WebSocketStream<TcpStream>;

fn runtime() -> &'static Arc<Runtime> {
    static RUNTIME: OnceLock<Arc<Runtime>> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let limits = Limits {
            instances: 200,
            ..Limits::default()
        };
        Runtime::new(limits, None, None).expect("engine")
    })
}

fn probe() -> Arc<Plugin> {
    static PROBE: OnceLock<Arc<Plugin>> = OnceLock::new();
    PROBE
        .get_or_init(|| runtime().load("probe", test_plugins::get("probe")).unwrap())
        .clone()
}

fn probe_pool(tag: &str) -> Arc<FilterPool> {
    Arc::new(FilterPool::new(probe(), format!(r#"{{"tag":"{tag}"}}"#)).unwrap())
}

fn slot(name: &str, pool: Arc<FilterPool>, fail_open: bool) -> FilterSlot {
    FilterSlot {
        name: name.into(),
        pool: Arc::new(ArcSwap::new(pool)),
        fail_open,
    }
}

fn config() -> FrameRelayConfig {
    FrameRelayConfig {
        max_message_size: 1 << 20,
        deflate: Default::default(),
        idle_timeout: Duration::from_secs(60),
        send_timeout: Duration::from_secs(60),
        traffic: wasp::metrics::Metrics::new().location("test"),
        read_buffer: 4096,
    }
}

fn head() -> RequestHead {
    RequestHead {
        method: "GET".into(),
        path: "/ws".into(),
        query: String::new(),
        headers: "upgrade: websocket".into(),
        client_ip: "127.0.0.1".into(),
        client_port: 40000,
        listener: "127.0.0.1:0".into(),
        tls: false,
        sni: None,
    }
}

/// Reads an HTTP head; returns it and the bytes read past it.
async fn read_head(stream: &mut TcpStream) -> (String, Bytes) {
    let mut buf = Vec::new();
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = Bytes::copy_from_slice(&buf[end + 4..]);
            buf.truncate(end);
            return (String::from_utf8(buf).unwrap(), rest);
        }
        let mut chunk = [0; 1024];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed inside an HTTP head");
        buf.extend_from_slice(&chunk[..n]);
    }
}

const UPGRADE_REQUEST: &str = "GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

/// Answers a client's upgrade with 101, as the proxy does before relaying.
async fn accept_upgrade(stream: &mut TcpStream) -> Bytes {
    let (head, rest) = read_head(stream).await;
    let key = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-key")
                .then(|| value.trim().to_owned())
        })
        .expect("a Sec-WebSocket-Key");
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    stream.write_all(response.as_bytes()).await.unwrap();
    rest
}

/// Upgrades a connection to a WebSocket server; returns the bytes read past the 101.
async fn request_upgrade(stream: &mut TcpStream, request: &[u8]) -> Bytes {
    stream.write_all(request).await.unwrap();
    let (head, rest) = read_head(stream).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    rest
}

/// An echo server recording every message it reads. A text ending in
/// `ping-me` also makes it ping, `close-me` close with 4100, `stall` stop reading.
async fn upstream() -> (SocketAddr, mpsc::UnboundedReceiver<Message>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen_tx, seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let seen = seen_tx.clone();
            tokio::spawn(async move {
                let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
                while let Some(Ok(message)) = ws.next().await {
                    let _ = seen.send(message.clone());
                    let text = message.to_text().unwrap_or_default().to_owned();
                    if text.ends_with("stall") {
                        return std::future::pending().await;
                    }
                    if text.ends_with("ping-me") {
                        ws.send(Message::Ping(Bytes::from_static(b"up")))
                            .await
                            .unwrap();
                    }
                    if text.ends_with("close-me") {
                        let bye = CloseFrame {
                            code: 4100.into(),
                            reason: "upstream bye".into(),
                        };
                        ws.close(Some(bye)).await.unwrap();
                    } else if message.is_text() || message.is_binary() {
                        ws.send(message).await.unwrap();
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// A listener relaying each connection to `upstream` through `chain`.
struct Proxy {
    addr: SocketAddr,
    stats: mpsc::UnboundedReceiver<RelayStats>,
    shutdown: watch::Sender<bool>,
}

async fn proxy(upstream: SocketAddr, chain: Vec<FilterSlot>, config: FrameRelayConfig) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stats_tx, stats) = mpsc::unbounded_channel();
    let (shutdown, shutdown_rx) = watch::channel(false);
    let chain = Arc::new(chain);
    static CONN_IDS: AtomicU64 = AtomicU64::new(1);
    tokio::spawn(async move {
        loop {
            let (mut client, _) = listener.accept().await.unwrap();
            let (chain, stats_tx, shutdown_rx, config) = (
                chain.clone(),
                stats_tx.clone(),
                shutdown_rx.clone(),
                config.clone(),
            );
            tokio::spawn(async move {
                let client_prefix = accept_upgrade(&mut client).await;
                let mut up = TcpStream::connect(upstream).await.unwrap();
                let upstream_prefix = request_upgrade(&mut up, UPGRADE_REQUEST.as_bytes()).await;
                let conn = CONN_IDS.fetch_add(1, Ordering::Relaxed);
                let stats = frames::run(
                    client,
                    client_prefix,
                    up,
                    upstream_prefix,
                    FilterChain::new(conn, head(), &chain),
                    config,
                    shutdown_rx.into(),
                )
                .await;
                let _ = stats_tx.send(stats);
            });
        }
    });
    Proxy {
        addr,
        stats,
        shutdown,
    }
}

impl Proxy {
    async fn client(&self) -> Ws {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        let url = format!("ws://{}/ws", self.addr);
        tokio_tungstenite::client_async(url, tcp).await.unwrap().0
    }

    async fn stats(&mut self) -> RelayStats {
        within(self.stats.recv()).await.unwrap()
    }
}

async fn within<F: Future>(future: F) -> F::Output {
    timeout(WAIT, future).await.expect("timed out")
}

async fn recv(ws: &mut Ws) -> Message {
    within(ws.next()).await.expect("stream ended").unwrap()
}

async fn seen(upstream: &mut mpsc::UnboundedReceiver<Message>) -> Message {
    within(upstream.recv()).await.unwrap()
}

fn text(s: &str) -> Message {
    Message::text(s)
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code: code.into(),
        reason: reason.into(),
    }))
}

/// Expects a close frame next, then reads to the end of the stream.
async fn expect_close(ws: &mut Ws, code: u16, reason: &str) {
    assert_eq!(recv(ws).await, close(code, reason));
    while within(ws.next()).await.is_some() {}
}

#[tokio::test]
async fn messages_are_replaced_each_way_dropped_or_forwarded() {
    let (up, mut seen_up) = upstream().await;
    let mut proxy = proxy(up, vec![slot("probe", probe_pool("a"), false)], config()).await;
    let mut ws = proxy.client().await;

    ws.send(text("x")).await.unwrap();
    assert_eq!(seen(&mut seen_up).await, text("a>x"));
    assert_eq!(recv(&mut ws).await, text("a<a>x"));

    ws.send(text("drop")).await.unwrap();
    ws.send(text("y")).await.unwrap();
    assert_eq!(seen(&mut seen_up).await, text("a>y"));
    assert_eq!(recv(&mut ws).await, text("a<a>y"));

    let binary = Message::binary(vec![0u8, 1, 2]);
    ws.send(binary.clone()).await.unwrap();
    assert_eq!(seen(&mut seen_up).await, binary);
    assert_eq!(recv(&mut ws).await, binary);

    ws.close(None).await.unwrap();
    assert_eq!(seen(&mut seen_up).await, Message::Close(None));
    let stats = proxy.stats().await;
    assert_eq!(stats.messages, [4, 3]);
    assert_eq!(stats.bytes, [1 + 4 + 1 + 3, 3 + 3 + 3]);
    assert_eq!(stats.close_code, Some(1005));
}

#[tokio::test]
async fn chained_filters_apply_in_order() {
    let (up, mut seen_up) = upstream().await;
    let chain = vec![
        slot("a", probe_pool("a"), false),
        slot("b", probe_pool("b"), false),
    ];
    let proxy = proxy(up, chain, config()).await;
    let mut ws = proxy.client().await;
    ws.send(text("x")).await.unwrap();
    assert_eq!(seen(&mut seen_up).await, text("b>a>x"));
    assert_eq!(recv(&mut ws).await, text("b<a<b>a>x"));
}

#[tokio::test]
async fn a_filter_close_reaches_both_peers() {
    let (up, mut seen_up) = upstream().await;
    let mut proxy = proxy(up, vec![slot("probe", probe_pool("a"), false)], config()).await;
    let mut ws = proxy.client().await;
    ws.send(text("close")).await.unwrap();
    expect_close(&mut ws, 4000, "closed by probe").await;
    assert_eq!(seen(&mut seen_up).await, close(4000, "closed by probe"));
    assert_eq!(proxy.stats().await.close_code, Some(4000));
}

#[tokio::test]
async fn close_codes_are_relayed_from_either_side() {
    let (up, mut seen_up) = upstream().await;
    let mut proxy = proxy(up, vec![slot("probe", probe_pool("a"), false)], config()).await;

    let mut ws = proxy.client().await;
    ws.close(Some(CloseFrame {
        code: 4001.into(),
        reason: "client bye".into(),
    }))
    .await
    .unwrap();
    assert_eq!(seen(&mut seen_up).await, close(4001, "client bye"));
    // tungstenite answers the client's close with its own code.
    expect_close(&mut ws, 4001, "client bye").await;
    assert_eq!(proxy.stats().await.close_code, Some(4001));

    let mut ws = proxy.client().await;
    ws.send(text("close-me")).await.unwrap();
    assert_eq!(seen(&mut seen_up).await, text("a>close-me"));
    expect_close(&mut ws, 4100, "upstream bye").await;
    assert_eq!(proxy.stats().await.close_code, Some(4100));
}

#[tokio::test]
async fn a_fragmented_message_with_a_ping_inside_is_filtered_as_one() {
    let (up, mut seen_up) = upstream().await;
    let proxy = proxy(up, vec![slot("probe", probe_pool("a"), false)], config()).await;

    // Masked client frames (mask key 0), sent with the upgrade request so the
    // relay gets them as the bytes read past the HTTP head.
    let mut bytes = UPGRADE_REQUEST.as_bytes().to_vec();
    bytes.extend_from_slice(&[0x01, 0x83, 0, 0, 0, 0]); // text, not final
    bytes.extend_from_slice(b"hel");
    bytes.extend_from_slice(&[0x89, 0x81, 0, 0, 0, 0]); // ping between fragments
    bytes.extend_from_slice(b"p");
    bytes.extend_from_slice(&[0x80, 0x82, 0, 0, 0, 0]); // final continuation
    bytes.extend_from_slice(b"lo");
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let rest = request_upgrade(&mut tcp, &bytes).await;
    let mut ws = WebSocketStream::from_partially_read(tcp, rest.to_vec(), Role::Client, None).await;

    assert_eq!(
        seen(&mut seen_up).await,
        Message::Ping(Bytes::from_static(b"p"))
    );
    assert_eq!(seen(&mut seen_up).await, text("a>hello"));
    assert_eq!(recv(&mut ws).await, Message::Pong(Bytes::from_static(b"p")));
    assert_eq!(recv(&mut ws).await, text("a<a>hello"));
}

#[tokio::test]
async fn pings_and_pongs_pass_through_and_each_ping_gets_one_pong() {
    let (up, mut seen_up) = upstream().await;
    let proxy = proxy(up, vec![slot("probe", probe_pool("a"), false)], config()).await;
    let mut ws = proxy.client().await;

    ws.send(Message::Ping(Bytes::from_static(b"c")))
        .await
        .unwrap();
    assert_eq!(recv(&mut ws).await, Message::Pong(Bytes::from_static(b"c")));
    assert_eq!(
        seen(&mut seen_up).await,
        Message::Ping(Bytes::from_static(b"c"))
    );
    // That pong was the upstream's own, the only one.
    ws.send(text("x")).await.unwrap();
    assert_eq!(recv(&mut ws).await, text("a<a>x"));
    assert_eq!(seen(&mut seen_up).await, text("a>x"));

    // A ping from upstream reaches the client, and the client's pong (sent
    // when it reads) reaches the upstream.
    ws.send(text("ping-me")).await.unwrap();
    assert_eq!(seen(&mut seen_up).await, text("a>ping-me"));
    assert_eq!(
        recv(&mut ws).await,
        Message::Ping(Bytes::from_static(b"up"))
    );
    assert_eq!(recv(&mut ws).await, text("a<a>ping-me"));
    assert_eq!(
        seen(&mut seen_up).await,
        Message::Pong(Bytes::from_static(b"up"))
    );
    ws.send(text("z")).await.unwrap();
    assert_eq!(seen(&mut seen_up).await, text("a>z"));

    // An unsolicited pong (a heartbeat) passes through.
    ws.send(Message::Pong(Bytes::from_static(b"hb")))
        .await
        .unwrap();
    assert_eq!(
        seen(&mut seen_up).await,
        Message::Pong(Bytes::from_static(b"hb"))
    );
}

/// An upstream that reads frames by hand, so it answers nothing by itself:
/// it records the pings it gets until a text message, then pongs each of
/// them and sends `done`.
async fn late_ponging_upstream() -> (SocketAddr, mpsc::UnboundedReceiver<Vec<Bytes>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (pings_tx, pings) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let rest = accept_upgrade(&mut tcp).await;
        assert!(rest.is_empty());
        let mut got = Vec::new();
        loop {
            // A masked client frame with a payload under 126 bytes.
            let mut head = [0u8; 6];
            tcp.read_exact(&mut head).await.unwrap();
            let mut payload = vec![0u8; usize::from(head[1] & 0x7f)];
            tcp.read_exact(&mut payload).await.unwrap();
            for (i, byte) in payload.iter_mut().enumerate() {
                *byte ^= head[2 + i % 4];
            }
            match head[0] & 0x0f {
                0x9 => got.push(Bytes::from(payload)),
                0x1 => break,
                opcode => panic!("unexpected opcode {opcode}"),
            }
        }
        for ping in &got {
            let mut pong = vec![0x8a, ping.len() as u8];
            pong.extend_from_slice(ping);
            tcp.write_all(&pong).await.unwrap();
        }
        tcp.write_all(b"\x81\x04done").await.unwrap();
        let _ = pings_tx.send(got);
        std::future::pending::<()>().await;
    });
    (addr, pings)
}

#[tokio::test]
async fn a_burst_of_pings_is_relayed_and_each_gets_the_upstreams_pong() {
    let (up, mut pings) = late_ponging_upstream().await;
    let proxy = proxy(up, vec![slot("probe", probe_pool("a"), false)], config()).await;
    let mut ws = proxy.client().await;
    let payloads: Vec<Bytes> = (0..12).map(|i| Bytes::from(format!("p{i}"))).collect();
    for payload in &payloads {
        ws.send(Message::Ping(payload.clone())).await.unwrap();
    }
    ws.send(text("x")).await.unwrap();
    for payload in &payloads {
        assert_eq!(recv(&mut ws).await, Message::Pong(payload.clone()));
    }
    // The relay answers none itself: every pong came from the upstream,
    // which got every ping.
    let relayed = within(pings.recv()).await.unwrap();
    assert_eq!(relayed, payloads);
    assert_eq!(recv(&mut ws).await, text("a<done"));
}

#[tokio::test]
async fn a_message_over_the_limit_closes_with_1009() {
    let (up, mut seen_up) = upstream().await;
    let config = FrameRelayConfig {
        max_message_size: 1024,
        deflate: Default::default(),
        ..config()
    };
    let mut proxy = proxy(up, vec![slot("probe", probe_pool("a"), false)], config).await;
    let mut ws = proxy.client().await;

    let fits = Message::binary(vec![7u8; 1024]);
    ws.send(fits.clone()).await.unwrap();
    assert_eq!(recv(&mut ws).await, fits);
    assert_eq!(seen(&mut seen_up).await, fits);

    ws.send(Message::binary(vec![7u8; 1025])).await.unwrap();
    expect_close(&mut ws, 1009, "message too big from client").await;
    assert_eq!(
        seen(&mut seen_up).await,
        close(1009, "message too big from client")
    );
    assert_eq!(proxy.stats().await.close_code, Some(1009));
}

#[tokio::test]
async fn the_default_max_size_filter_closes_with_1009() {
    let (up, mut seen_up) = upstream().await;
    let bytes = wasp::plugins::embedded::get("filter-max-size").unwrap();
    let plugin = runtime().load("filter-max-size", bytes).unwrap();
    let pool = Arc::new(FilterPool::new(plugin, r#"{"max": 16}"#.into()).unwrap());
    let proxy = proxy(up, vec![slot("max-size", pool, false)], config()).await;
    let mut ws = proxy.client().await;

    ws.send(text("sixteen bytes ok")).await.unwrap();
    assert_eq!(recv(&mut ws).await, text("sixteen bytes ok"));
    ws.send(text("seventeen bytes!!")).await.unwrap();
    expect_close(&mut ws, 1009, "message too big").await;
    assert_eq!(seen(&mut seen_up).await, text("sixteen bytes ok"));
    assert_eq!(seen(&mut seen_up).await, close(1009, "message too big"));
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007_and_protocol_errors_with_1002() {
    let (up, mut seen_up) = upstream().await;
    let proxy = proxy(up, vec![slot("probe", probe_pool("a"), false)], config()).await;

    let mut ws = proxy.client().await;
    let invalid = Frame::message(vec![b'a', 0xff, 0xfe], OpCode::Data(Data::Text), true);
    ws.send(Message::Frame(invalid)).await.unwrap();
    expect_close(&mut ws, 1007, "invalid UTF-8 from client").await;
    assert_eq!(
        seen(&mut seen_up).await,
        close(1007, "invalid UTF-8 from client")
    );

    let mut ws = proxy.client().await;
    let stray = Frame::message(b"x".to_vec(), OpCode::Data(Data::Continue), true);
    ws.send(Message::Frame(stray)).await.unwrap();
    expect_close(&mut ws, 1002, "protocol error from client").await;
    assert_eq!(
        seen(&mut seen_up).await,
        close(1002, "protocol error from client")
    );
}

#[tokio::test]
async fn a_trap_closes_only_its_connection_and_the_others_restart_on_a_fresh_instance() {
    let (up, _seen_up) = upstream().await;
    let mut proxy = proxy(up, vec![slot("probe", probe_pool("a"), false)], config()).await;
    let mut first = proxy.client().await;
    let mut second = proxy.client().await;

    // The probe counts the messages of its connection, both directions.
    second.send(text("count")).await.unwrap();
    assert_eq!(recv(&mut second).await, text("a<a#1"));
    first.send(text("count")).await.unwrap();
    assert_eq!(recv(&mut first).await, text("a<a#1"));

    first.send(text("trap")).await.unwrap();
    expect_close(&mut first, 1011, "filter probe failed").await;
    assert_eq!(proxy.stats().await.close_code, Some(1011));

    // The instance both shared was replaced: the second connection goes on,
    // opened on the fresh one (`on-open`) before its message, so its count
    // starts over.
    second.send(text("count")).await.unwrap();
    assert_eq!(recv(&mut second).await, text("a<a#1"));
    second.send(text("count")).await.unwrap();
    assert_eq!(recv(&mut second).await, text("a<a#3"));
}

#[tokio::test]
async fn fail_open_forwards_unchanged_and_replaces_the_instance() {
    let (up, mut seen_up) = upstream().await;
    let proxy = proxy(up, vec![slot("probe", probe_pool("a"), true)], config()).await;
    let mut ws = proxy.client().await;

    ws.send(text("count")).await.unwrap();
    assert_eq!(recv(&mut ws).await, text("a<a#1"));
    // It traps on the way up and, on a new instance, again on the echo.
    ws.send(text("trap")).await.unwrap();
    assert_eq!(recv(&mut ws).await, text("trap"));
    ws.send(text("count")).await.unwrap();
    assert_eq!(recv(&mut ws).await, text("a<a#1"));
    assert_eq!(seen(&mut seen_up).await, text("a#1"));
    assert_eq!(seen(&mut seen_up).await, text("trap"));
    assert_eq!(seen(&mut seen_up).await, text("a#1"));
}

#[tokio::test]
async fn a_reload_moves_the_connection_to_the_new_version_at_its_next_message() {
    let (up, _seen_up) = upstream().await;
    let probe = slot("probe", probe_pool("a"), false);
    let pool = probe.pool.clone();
    let proxy = proxy(up, vec![probe], config()).await;
    let mut ws = proxy.client().await;

    ws.send(text("count")).await.unwrap();
    assert_eq!(recv(&mut ws).await, text("a<a#1"));
    ws.send(text("count")).await.unwrap();
    assert_eq!(recv(&mut ws).await, text("a<a#3"));
    pool.store(probe_pool("b"));
    ws.send(text("count")).await.unwrap();
    assert_eq!(recv(&mut ws).await, text("b<b#1"));
}

#[tokio::test]
async fn shutdown_closes_both_peers_with_1001() {
    let (up, mut seen_up) = upstream().await;
    let mut proxy = proxy(up, vec![slot("probe", probe_pool("a"), false)], config()).await;
    let mut ws = proxy.client().await;
    ws.send(text("x")).await.unwrap();
    assert_eq!(recv(&mut ws).await, text("a<a>x"));

    proxy.shutdown.send(true).unwrap();
    expect_close(&mut ws, 1001, "server shutting down").await;
    assert_eq!(seen(&mut seen_up).await, text("a>x"));
    assert_eq!(
        seen(&mut seen_up).await,
        close(1001, "server shutting down")
    );
    let stats = proxy.stats().await;
    assert_eq!((stats.messages, stats.close_code), ([1, 1], Some(1001)));
}

#[tokio::test]
async fn an_idle_connection_is_closed_with_1001() {
    let (up, mut seen_up) = upstream().await;
    let config = FrameRelayConfig {
        idle_timeout: Duration::from_millis(300),
        ..config()
    };
    let proxy = proxy(up, vec![slot("probe", probe_pool("a"), false)], config).await;
    let mut ws = proxy.client().await;
    // Pings keep it open.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        ws.send(Message::Ping(Bytes::new())).await.unwrap();
        assert_eq!(recv(&mut ws).await, Message::Pong(Bytes::new()));
    }
    let started = tokio::time::Instant::now();
    expect_close(&mut ws, 1001, "idle timeout").await;
    assert!(started.elapsed() >= Duration::from_millis(250));
    let mut last = seen(&mut seen_up).await;
    while let Message::Ping(_) = last {
        last = seen(&mut seen_up).await;
    }
    assert_eq!(last, close(1001, "idle timeout"));
}

#[tokio::test]
async fn a_peer_that_takes_nothing_for_send_timeout_is_closed_with_1001() {
    let (up, _seen_up) = upstream().await;
    let config = FrameRelayConfig {
        send_timeout: Duration::from_millis(500),
        ..config()
    };
    let mut proxy = proxy(up, vec![slot("probe", probe_pool("a"), false)], config).await;
    let mut ws = proxy.client().await;
    ws.send(text("stall")).await.unwrap();
    // Fill the upstream's socket buffers until the relay holds bytes for it.
    let chunk = Message::binary(vec![0u8; 64 << 10]);
    while timeout(Duration::from_secs(1), ws.send(chunk.clone()))
        .await
        .is_ok()
    {}
    expect_close(&mut ws, 1001, "upstream not reading").await;
    assert_eq!(proxy.stats().await.close_code, Some(1001));
}
