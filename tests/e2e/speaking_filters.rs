//! Filters that speak (`host.send`, `host.set-timer`), through the real
//! proxy and real sockets: the two examples, `examples/heartbeat` and
//! `examples/server-notice`, loaded from their `.wasm` files.
//!
//! The messages they send cross real WebSocket clients and the test
//! backend, which read them as frames of their own: tungstenite refuses a
//! masked frame from a server and an unmasked one from a client, so the
//! exchanges below also prove that sends to the client go unmasked and
//! sends to the upstream masked.

use crate::support::backend::Backend;
use crate::support::config::ConfigBuilder;
use crate::support::ws::{WAIT, Ws, next, next_text};
use crate::support::{start_proxy, temp_dir, test_plugins};
use futures_util::SinkExt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::timeout;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;
use wasp::plugins::{
    Direction, FilterPool, Limits, Message as WitMessage, Opened, Outgoing, RequestHead, Runtime,
    SendLimits, Speech, TimerRequest,
};

mod example_heartbeat {
    include!(concat!(env!("OUT_DIR"), "/example_heartbeat.rs"));
}

mod example_server_notice {
    include!(concat!(env!("OUT_DIR"), "/example_server_notice.rs"));
}

/// Writes an example's component to a file of its own, as a user's build would.
fn wasm(name: &str, plugins: &[(&str, &[u8])]) -> PathBuf {
    let (_, bytes) = plugins
        .iter()
        .find(|(built, _)| *built == name)
        .unwrap_or_else(|| panic!("tests/build.rs builds {name}"));
    let path = temp_dir(&format!("speaking-{name}")).join(format!("{name}.wasm"));
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A WebSocket through wasp at `path`, past the backend's report.
async fn connect(addr: SocketAddr, path: &str) -> Ws {
    let (mut ws, response) = timeout(WAIT, connect_async(format!("ws://{addr}{path}")))
        .await
        .expect("handshake in time")
        .unwrap_or_else(|e| panic!("WebSocket {path} through wasp: {e}"));
    assert_eq!(response.status(), 101);
    let report = next(&mut ws).await;
    assert!(
        report.is_text(),
        "the backend's report first, got {report:?}"
    );
    ws
}

#[tokio::test]
async fn heartbeat_pings_idle_clients_and_closes_the_silent_one_with_1001() {
    let backend = Backend::start("one").await;
    let heartbeat = wasm("heartbeat", example_heartbeat::PLUGINS);
    let chain = format!(
        r#"[{{ plugin = "{}", config = {{ interval_ms = 100, timeout_ms = 2000, ping = "ping", pong = "pong" }} }}]"#,
        heartbeat.display()
    );
    let config = ConfigBuilder::new()
        .location("/ws", |l| l.proxy_pass(backend.addr).filters(&chain))
        .build();
    let (_proxy, addr) = start_proxy(&config).await;
    let mut alive = connect(addr, "/ws").await;
    let mut silent = connect(addr, "/ws").await;

    // The live client answers three pings; the filter swallows its pongs,
    // so the backend (which echoes everything) never answers one.
    for _ in 0..3 {
        assert_eq!(next_text(&mut alive).await, "ping");
        alive.send(Message::text("pong")).await.unwrap();
    }
    alive.send(Message::text("hello")).await.unwrap();
    loop {
        match next_text(&mut alive).await.as_str() {
            "ping" => alive.send(Message::text("pong")).await.unwrap(),
            "hello" => break,
            other => panic!("only pings and the echo expected, got {other:?}"),
        }
    }

    // The silent client got pinged, then closed as gone away.
    let mut pings = 0;
    let close = loop {
        match next(&mut silent).await {
            Message::Text(text) if text.as_str() == "ping" => pings += 1,
            Message::Close(frame) => break frame.expect("a close code"),
            other => panic!("pings and a close expected, got {other:?}"),
        }
    };
    assert_eq!(pings, 1, "one ping, then the wait for its answer");
    assert_eq!(u16::from(close.code), 1001);
    assert_eq!(close.reason.as_str(), "no answer to the heartbeat");

    // The live one is still served.
    alive.send(Message::text("still here")).await.unwrap();
    loop {
        match next_text(&mut alive).await.as_str() {
            "ping" => alive.send(Message::text("pong")).await.unwrap(),
            "still here" => break,
            other => panic!("only pings and the echo expected, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_notice_set_on_the_admin_location_reaches_every_open_websocket() {
    let backend = Backend::start("one").await;
    let notice = wasm("server-notice", example_server_notice::PLUGINS);
    let chain = |config: &str| {
        format!(
            r#"[{{ plugin = "{}", config = {{ {config} }} }}]"#,
            notice.display()
        )
    };
    let public = chain(r#"poll_ms = 50, to = "both""#);
    let admin = chain("admin = true");
    let config = ConfigBuilder::new()
        .location("/ws", |l| l.proxy_pass(backend.addr).filters(&public))
        .location("/admin", |l| l.proxy_pass(backend.addr).filters(&admin))
        .build();
    let (_proxy, addr) = start_proxy(&config).await;
    let mut clients = [connect(addr, "/ws").await, connect(addr, "/ws").await];
    let mut operator = connect(addr, "/admin").await;

    operator
        .send(Message::text("maintenance at 22:00"))
        .await
        .unwrap();
    assert_eq!(next_text(&mut operator).await, "notice 1 set");
    // The notice went no further than the filter: the backend echoes the
    // next message first (binary: every text sets the notice).
    operator
        .send(Message::binary(&b"anyone?"[..]))
        .await
        .unwrap();
    assert_eq!(next(&mut operator).await, Message::binary(&b"anyone?"[..]));

    // Each client gets the notice twice without asking: once from wasp,
    // once echoed by the backend, which got its own copy (`to = "both"`).
    for client in &mut clients {
        assert_eq!(next_text(client).await, "maintenance at 22:00");
        assert_eq!(next_text(client).await, "maintenance at 22:00");
        client.send(Message::text("hi")).await.unwrap();
        assert_eq!(next_text(client).await, "hi");
    }
}

/// The heartbeat's handshake.
fn ws_head() -> RequestHead {
    RequestHead {
        method: "GET".into(),
        path: "/ws".into(),
        query: String::new(),
        headers: String::new(),
        client_ip: "127.0.0.1".into(),
        client_port: 40000,
        listener: "127.0.0.1:8000".into(),
        tls: false,
        sni: None,
    }
}

/// The host's side of `send` and `set-timer`, under the frame relay: the
/// heartbeat component, its `on-timer` called through the runtime with the
/// limits the relay would give it.
#[test]
fn the_host_refuses_sends_past_a_peers_room_or_the_message_size() {
    let runtime = Runtime::new(Limits::default(), None, None).expect("engine");
    let (_, bytes) = example_heartbeat::PLUGINS[0];
    let plugin = runtime.load("heartbeat", bytes).expect("heartbeat loads");
    let config = r#"{"interval_ms": 1, "timeout_ms": 5, "ping": "ping"}"#;
    let pool = FilterPool::new(plugin, config.into()).expect("configures");
    let head = ws_head();
    let roomy = SendLimits {
        max_message: 1 << 20,
        room: [1 << 20; 2],
    };
    let ping = Outgoing {
        dir: Direction::UpstreamToClient,
        message: WitMessage::Text("ping".into()),
    };

    // The timer asked for in `on-open` comes back with the speech.
    let mut opened = [(); 3].map(|()| Opened::default());
    let mut speech = Speech::new(roomy);
    for (conn, opened) in (2..).zip(&mut opened) {
        pool.open_speaking(opened, conn, &head, &mut speech)
            .unwrap();
        assert_eq!(speech.timer.take(), Some(TimerRequest::After(1)));
    }
    // The clients are idle for the interval (1 ms, by the wall clock).
    std::thread::sleep(Duration::from_millis(2));

    // A client that can take nothing more: the ping is refused, the filter
    // waits for an answer all the same, and closes after it.
    let mut busy = Speech::new(SendLimits {
        room: [1 << 20, 0],
        ..roomy
    });
    assert_eq!(pool.on_timer(&mut opened[0], 2, &head, &mut busy), Ok(None));
    assert!(busy.take_sent().is_empty());
    assert_eq!(busy.timer.take(), Some(TimerRequest::After(5)));
    let close = pool.on_timer(&mut opened[0], 2, &head, &mut busy).unwrap();
    assert_eq!(close.map(|frame| frame.code), Some(1001));

    // A message over the location's max_message_size is refused too.
    let mut small = Speech::new(SendLimits {
        max_message: 3,
        ..roomy
    });
    assert_eq!(
        pool.on_timer(&mut opened[1], 3, &head, &mut small),
        Ok(None)
    );
    assert!(small.take_sent().is_empty());

    // Within the limits it is queued, for the client.
    assert_eq!(
        pool.on_timer(&mut opened[2], 4, &head, &mut speech),
        Ok(None)
    );
    assert_eq!(speech.take_sent(), [ping]);
}

/// Sends from `on-message`: one the same way as the message, after it in
/// the same write, and one the other way, ahead of anything the upstream
/// answers (the relay writes what a peer is owed before reading on).
#[tokio::test]
async fn sends_from_on_message_follow_the_message_and_reach_the_other_peer_first() {
    let backend = Backend::start("one").await;
    let probe = temp_dir("speaking-probe").join("probe.wasm");
    std::fs::write(&probe, test_plugins::get("probe")).unwrap();
    let chain = format!(
        r#"[{{ plugin = "{}", config = {{ tag = "p" }} }}]"#,
        probe.display()
    );
    let config = ConfigBuilder::new()
        .location("/ws", |l| l.proxy_pass(backend.addr).filters(&chain))
        .build();
    let (_proxy, addr) = start_proxy(&config).await;
    let mut ws = connect(addr, "/ws").await;
    ws.send(Message::text("say:extra")).await.unwrap();
    // To the client, from the filter; then the backend's echoes, which the
    // probe marks on their way back: the message, then what was sent.
    assert_eq!(next_text(&mut ws).await, "p heard");
    assert_eq!(next_text(&mut ws).await, "p<say:extra");
    assert_eq!(next_text(&mut ws).await, "p<extra");
}
