//! Hot reload through the real proxy: a filter `.wasm` replaced again and
//! again under load, configuration rewrites (the watched file and
//! `POST /reload`) while a WebSocket stays open, and SIGHUP to the `wasp`
//! binary.

use crate::support::backend::Backend;
use crate::support::config::ConfigBuilder;
use crate::support::process::WaspProcess;
use crate::support::{eventually, free_addr, request, sample, start_proxy, temp_dir, test_plugins};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};
use wasp::config::Config;
use wasp::proxy::Proxy;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Bound on a reload showing: a debug-built host compiles components slowly.
const RELOAD: Duration = Duration::from_secs(15);
/// Bound on any other wait.
const WAIT: Duration = Duration::from_secs(10);

/// Opens a WebSocket through wasp; returns it with the backend's first
/// message (its report of the handshake, possibly tagged by a filter).
async fn ws_connect(addr: SocketAddr, path: &str) -> (Ws, String) {
    let (mut ws, response) = timeout(WAIT, connect_async(format!("ws://{addr}{path}")))
        .await
        .expect("handshake in time")
        .expect("handshake through wasp");
    assert_eq!(response.status(), 101);
    match timeout(WAIT, ws.next()).await.expect("report in time") {
        Some(Ok(Message::Text(report))) => (ws, report.to_string()),
        other => panic!("expected the backend's report, got {other:?}"),
    }
}

/// Sends `text` and expects it back.
async fn echo(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
    match timeout(WAIT, ws.next()).await.expect("echo in time") {
        Some(Ok(Message::Text(echoed))) => assert_eq!(echoed.as_str(), text),
        other => panic!("expected the echo of {text:?}, got {other:?}"),
    }
}

/// Replaces `file` as a user does: written in place, or written next to it
/// and renamed over it.
fn replace(file: &Path, bytes: &[u8], in_place: bool) {
    if in_place {
        std::fs::write(file, bytes).unwrap();
    } else {
        let temporary = file.with_extension("tmp");
        std::fs::write(&temporary, bytes).unwrap();
        std::fs::rename(&temporary, file).unwrap();
    }
}

/// The metrics sample `series`, 0 when absent.
fn metric(proxy: &Proxy, series: &str) -> f64 {
    sample(&proxy.shared().metrics.encode(), series).unwrap_or(0.0)
}

/// What a load client shows the test while it runs.
#[derive(Default)]
struct Progress {
    /// The tag of the filter version that passed the latest reply to the client.
    tag: AtomicU8,
    /// Replies received.
    received: AtomicU64,
}

/// Messages each load client keeps in flight.
const WINDOW: u64 = 4;

/// A load client: sends `c{id}:0`, `c{id}:1`... with up to `WINDOW` in
/// flight until `stop`, checks that every reply is the next number, filtered
/// both ways, then closes. Returns how many messages went both ways.
async fn load_client(
    addr: SocketAddr,
    id: usize,
    progress: Arc<Progress>,
    stop: Arc<AtomicBool>,
) -> u64 {
    let (ws, _) = ws_connect(addr, "/ws/").await;
    let (mut tx, mut rx) = ws.split();
    let (mut sent, mut received) = (0u64, 0u64);
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        if !stopping && sent - received < WINDOW {
            let text = format!("c{id}:{sent}");
            tx.send(Message::text(text)).await.expect("send");
            sent += 1;
            continue;
        }
        if stopping && sent == received {
            break;
        }
        let reply = match timeout(WAIT, rx.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => text,
            other => panic!("client {id}: expected reply {received}, got {other:?}"),
        };
        // `X<Y>c{id}:{n}`: X tagged it client-bound, Y upstream-bound.
        let expected = format!("c{id}:{received}");
        let tags = reply.as_bytes();
        let tagged = |i: usize| matches!(tags.get(i), Some(b'A' | b'B'));
        assert!(
            tagged(0) && tagged(2) && reply.get(1..2) == Some("<") && reply.get(3..4) == Some(">"),
            "client {id}: untagged reply {reply:?}"
        );
        assert_eq!(&reply[4..], expected, "client {id}: replies out of order");
        received += 1;
        progress.tag.store(tags[0], Ordering::Relaxed);
        progress.received.store(received, Ordering::Relaxed);
    }
    tx.send(Message::Close(None)).await.expect("close");
    while let Some(frame) = timeout(WAIT, rx.next()).await.expect("close handshake") {
        assert!(
            matches!(frame, Ok(Message::Close(_))),
            "client {id}: after close: {frame:?}"
        );
    }
    received
}

/// wasp with one filtered location `/ws/` in front of an echo backend; the
/// filter is the file `filter`, first written with `first`.
struct FilteredProxy {
    proxy: Proxy,
    addr: SocketAddr,
    dir: std::path::PathBuf,
    filter: std::path::PathBuf,
    _backend: Backend,
}

async fn filtered_proxy(name: &str, first: &[u8]) -> FilteredProxy {
    let backend = Backend::start("echo").await;
    let dir = temp_dir(name);
    let filter = dir.join("filter.wasm");
    std::fs::write(&filter, first).unwrap();
    let config = ConfigBuilder::new()
        .upstream("echo", |u| u.server(backend.addr))
        .location("/ws/", |l| l.proxy_pass("echo").filter_file(&filter))
        .build();
    let (proxy, addr) = start_proxy(&config).await;
    FilteredProxy {
        proxy,
        addr,
        dir,
        filter,
        _backend: backend,
    }
}

/// WebSockets outlive reloads but keep only their location: the site they
/// were opened under (its router, balancer and origin instances, every
/// plugin's compiled code) goes as soon as a reload replaced it, through a
/// tunnel and through a filter alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_websockets_keep_only_their_location_across_a_reload() {
    let backend = Backend::start("echo").await;
    let dir = temp_dir("reload-site-dropped");
    let filter = dir.join("filter.wasm");
    std::fs::write(&filter, test_plugins::get("passthrough")).unwrap();
    let config = ConfigBuilder::new()
        .upstream("echo", |u| u.server(backend.addr))
        .location("/raw/", |l| l.proxy_pass("echo"))
        .location("/ws/", |l| l.proxy_pass("echo").filter_file(&filter))
        .build();
    let (proxy, addr) = start_proxy(&config).await;
    let opened_under = Arc::downgrade(&proxy.shared().site.load_full());
    let (mut raw, _) = ws_connect(addr, "/raw/").await;
    let (mut filtered, _) = ws_connect(addr, "/ws/").await;
    echo(&mut raw, "before").await;
    echo(&mut filtered, "before").await;

    proxy.reload().await.expect("the reload applies");
    eventually("the replaced site to be dropped", WAIT, async || {
        (opened_under.strong_count() == 0).then_some(())
    })
    .await;
    echo(&mut raw, "after").await;
    echo(&mut filtered, "after").await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_replaced_under_load_drops_no_connection_and_no_message() {
    const CLIENTS: usize = 50;
    const SWAPS: usize = 20;
    let versions = [test_plugins::get("tag-a"), test_plugins::get("tag-b")];
    let tags = [b'A', b'B'];
    let FilteredProxy {
        proxy,
        addr,
        dir,
        filter,
        _backend,
    } = filtered_proxy("reload-load", versions[0]).await;

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<Arc<Progress>> = (0..CLIENTS).map(|_| Arc::default()).collect();
    let tasks: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(id, progress)| tokio::spawn(load_client(addr, id, progress.clone(), stop.clone())))
        .collect();
    let all_tagged = |tag: u8| clients.iter().all(|c| c.tag.load(Ordering::Relaxed) == tag);
    eventually(
        "every client exchanging through version A",
        WAIT,
        async || all_tagged(b'A').then_some(()),
    )
    .await;

    let errors = r#"wasp_reloads_total{kind="plugin",result="error"}"#;
    let mut serving = 0;
    for swap in 0..SWAPS {
        let in_place = swap % 2 == 1;
        if swap % 3 == 2 {
            // A truncated file is refused: the version in service stays.
            let refused = metric(&proxy, errors);
            let next = versions[1 - serving];
            replace(&filter, &next[..next.len() / 2], in_place);
            eventually(
                &format!("swap {swap}: the broken file refused"),
                RELOAD,
                async || (metric(&proxy, errors) > refused).then_some(()),
            )
            .await;
            let marks: Vec<u64> = clients
                .iter()
                .map(|c| c.received.load(Ordering::Relaxed))
                .collect();
            eventually(
                "every client exchanging after the refusal",
                WAIT,
                async || {
                    let mut clients = clients.iter().zip(&marks);
                    clients
                        .all(|(c, &mark)| c.received.load(Ordering::Relaxed) > mark + WINDOW)
                        .then_some(())
                },
            )
            .await;
            assert!(
                all_tagged(tags[serving]),
                "swap {swap}: the broken file changed the filter"
            );
        } else {
            serving = 1 - serving;
            replace(&filter, versions[serving], in_place);
            let version = tags[serving] as char;
            eventually(
                &format!("swap {swap}: every client seeing version {version}"),
                RELOAD,
                async || all_tagged(tags[serving]).then_some(()),
            )
            .await;
        }
    }

    stop.store(true, Ordering::Relaxed);
    let mut exchanged = 0;
    for task in tasks {
        exchanged += timeout(WAIT, task)
            .await
            .expect("client finishes")
            .expect("client succeeded");
    }
    assert!(
        exchanged > (CLIENTS * SWAPS) as u64,
        "only {exchanged} messages exchanged"
    );
    let reloaded = metric(&proxy, r#"wasp_reloads_total{kind="plugin",result="ok"}"#);
    assert!(reloaded >= 14.0, "{reloaded} good reloads");
    proxy.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

/// A configuration with the admin listener on `admin`, upstream `app` on
/// `backend`, WebSockets at `/ws/`, and `= /version` answering `version`.
fn app_config(admin: SocketAddr, backend: SocketAddr, version: Option<&str>) -> ConfigBuilder {
    let config = ConfigBuilder::new()
        .set("admin", admin.to_string())
        .upstream("app", |u| u.server(backend))
        .location("/ws/", |l| l.proxy_pass("app"));
    match version {
        Some(version) => config.location("= /version", |l| l.returns(200, version)),
        None => config,
    }
}

/// The name of the backend a new WebSocket reaches.
async fn backend_of_new_websocket(addr: SocketAddr) -> String {
    let (mut ws, report) = ws_connect(addr, "/ws/").await;
    ws.close(None).await.unwrap();
    let report: Value = serde_json::from_str(&report).unwrap();
    report["backend"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn config_rewrites_apply_while_a_websocket_stays_open() {
    let (one, two) = (Backend::start("one").await, Backend::start("two").await);
    let dir = temp_dir("reload-config");
    let path = dir.join("wasp.toml");
    let admin = free_addr();
    std::fs::write(&path, app_config(admin, one.addr, None).build()).unwrap();
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let proxy = Proxy::start_file(config, path.clone())
        .await
        .expect("proxy starts");
    let addr = proxy.local_addr("127.0.0.1:0").await.expect("bound");

    let (mut open, report) = ws_connect(addr, "/ws/").await;
    assert!(report.contains(r#""backend":"one""#), "{report}");
    assert_eq!(request(addr, "GET", "/version").await.0, 404);

    // A new location and another upstream peer, written in place.
    std::fs::write(&path, app_config(admin, two.addr, Some("v2")).build()).unwrap();
    eventually("the new location", RELOAD, async || {
        (request(addr, "GET", "/version").await == (200, "v2".into())).then_some(())
    })
    .await;
    assert_eq!(backend_of_new_websocket(addr).await, "two");
    echo(&mut open, "still open after the reload").await;

    // An invalid configuration changes nothing.
    let errors = r#"wasp_reloads_total{kind="config",result="error"}"#;
    let metrics = async || request(admin, "GET", "/metrics").await.1;
    let refused = sample(&metrics().await, errors).unwrap();
    let invalid = app_config(admin, one.addr, Some("v3")).set("unknown_key", 1);
    std::fs::write(&path, invalid.build()).unwrap();
    eventually("the invalid configuration refused", RELOAD, async || {
        (sample(&metrics().await, errors).unwrap() > refused).then_some(())
    })
    .await;
    assert_eq!(request(addr, "GET", "/version").await, (200, "v2".into()));
    assert_eq!(backend_of_new_websocket(addr).await, "two");
    echo(&mut open, "still open after the refusal").await;

    // A later valid one applies.
    replace(
        &path,
        app_config(admin, one.addr, Some("v4")).build().as_bytes(),
        false,
    );
    eventually("the next valid configuration", RELOAD, async || {
        (request(addr, "GET", "/version").await == (200, "v4".into())).then_some(())
    })
    .await;
    assert_eq!(backend_of_new_websocket(addr).await, "one");

    // `POST /reload` puts the file in service before it answers (whether
    // or not the watcher got there first)...
    std::fs::write(&path, app_config(admin, two.addr, Some("v5")).build()).unwrap();
    let (status, body) = request(admin, "POST", "/reload").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["ok"], true);
    assert_eq!(request(addr, "GET", "/version").await, (200, "v5".into()));
    assert_eq!(backend_of_new_websocket(addr).await, "two");
    // ...and refuses an invalid one.
    std::fs::write(&path, "[[server]\n").unwrap();
    let (status, body) = request(admin, "POST", "/reload").await;
    assert_eq!(status, 500, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["ok"], false);
    assert!(
        answer["error"].as_str().unwrap().contains("wasp.toml"),
        "{answer}"
    );
    assert_eq!(request(addr, "GET", "/version").await, (200, "v5".into()));

    let status: Value = serde_json::from_str(&request(admin, "GET", "/status").await.1).unwrap();
    let peers = status["upstreams"]["app"]["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0]["address"], two.addr.to_string());
    echo(&mut open, "still open at the end").await;
    open.close(None).await.unwrap();
    proxy.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn the_last_of_quick_successive_writes_is_the_version_serving() {
    let versions = [test_plugins::get("tag-a"), test_plugins::get("tag-b")];
    let FilteredProxy {
        proxy,
        addr,
        dir,
        filter,
        _backend,
    } = filtered_proxy("reload-quick", versions[0]).await;
    let (mut ws, _) = ws_connect(addr, "/ws/").await;
    let mut serving = async |tag: u8| {
        ws.send(Message::text("x")).await.expect("send");
        match timeout(WAIT, ws.next()).await.expect("echo in time") {
            Some(Ok(Message::Text(text))) => text.as_bytes()[0] == tag,
            other => panic!("expected an echo, got {other:?}"),
        }
    };
    // Both versions compiled once, so that reloads are quick.
    replace(&filter, versions[1], false);
    eventually("version B", RELOAD, async || {
        serving(b'B').await.then_some(())
    })
    .await;
    replace(&filter, versions[0], false);
    eventually("version A", RELOAD, async || {
        serving(b'A').await.then_some(())
    })
    .await;

    // B, then A again after `delay`: whatever the watcher and the reloads
    // made of the first write, the second must end up in service. The
    // delays span a whole reload (debounce, compile, swap).
    for delay in (0..=400).step_by(10) {
        replace(&filter, versions[1], false);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        replace(&filter, versions[0], true);
        tokio::time::sleep(Duration::from_millis(300)).await;
        eventually(
            &format!("version A after B and {delay} ms"),
            RELOAD,
            async || serving(b'A').await.then_some(()),
        )
        .await;
    }
    drop(ws);
    proxy.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn sighup_reloads_the_file_and_a_broken_file_keeps_the_old_one_serving() {
    let dir = temp_dir("sighup");
    let addr = free_addr();
    let config = |body: &str| {
        ConfigBuilder::new()
            .server(|s| {
                s.set("listen", addr.to_string())
                    .location("/", |l| l.returns(200, body))
            })
            .build()
    };
    // wasp watches the directory of its file, and would reload on a change
    // by itself. Writes through a hard link in another directory change the
    // same file without an event in the watched directory (inotify reports
    // a write to the directory the file was opened through), so what is
    // served below changes only when SIGHUP asks.
    std::fs::create_dir_all(dir.join("watched")).unwrap();
    std::fs::create_dir_all(dir.join("edit")).unwrap();
    let served = dir.join("watched/wasp.toml");
    let edit = dir.join("edit/wasp.toml");
    std::fs::write(&served, config("one")).unwrap();
    std::fs::hard_link(&served, &edit).unwrap();
    let mut wasp = WaspProcess::start(&served, dir.join("wasp.log"));
    let body = async || -> Option<String> {
        TcpStream::connect(addr).await.ok()?;
        Some(request(addr, "GET", "/").await.1)
    };
    let started = eventually("wasp to serve", Duration::from_secs(60), &body).await;
    assert_eq!(started, "one", "{}", wasp.log());

    std::fs::write(&edit, config("two")).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(body().await.unwrap(), "one", "reloaded without SIGHUP");
    wasp.signal(libc::SIGHUP);
    eventually("the reload on SIGHUP", RELOAD, async || {
        (body().await? == "two").then_some(())
    })
    .await;

    // nginx -s reload with a broken file: an error logged, the old
    // configuration keeps serving.
    std::fs::write(&edit, "[[server]\nlisten = ").unwrap();
    wasp.signal(libc::SIGHUP);
    eventually("the refused reload", RELOAD, async || {
        wasp.log().contains("reload refused").then_some(())
    })
    .await;
    assert_eq!(body().await.unwrap(), "two");

    let status = wasp.stop().await;
    assert!(status.success(), "{status}: {}", wasp.log());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs the `wasp` binary with `top` (top-level settings) and one server
/// answering `ok`, its log in a file; requests `path`, stops it, and
/// returns what it logged.
async fn log_of_one_request(name: &str, top: &str, path: &str) -> String {
    let dir = temp_dir(name);
    let config = dir.join("wasp.toml");
    let port = free_addr().port();
    std::fs::write(
        &config,
        format!(
            "{top}[[server]]\nlisten = \"127.0.0.1:{port}\"\n\
             [[server.location]]\npath = \"/\"\nreturn = {{ status = 200, body = \"ok\" }}\n"
        ),
    )
    .unwrap();
    let mut wasp = WaspProcess::start(&config, dir.join("wasp.log"));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    eventually("wasp to serve", WAIT, async || {
        TcpStream::connect(addr).await.is_ok().then_some(())
    })
    .await;
    assert_eq!(request(addr, "GET", path).await, (200, "ok".into()));
    assert!(wasp.stop().await.success());
    let log = wasp.log();
    std::fs::remove_dir_all(&dir).unwrap();
    log
}

#[tokio::test]
async fn a_log_written_to_a_file_has_no_colour_escapes() {
    let log = log_of_one_request("log-colours", "", "/").await;
    // Its access line and the shutdown lines, in plain text.
    assert!(log.contains("\"GET / HTTP/1.1\" 200"), "{log}");
    assert!(
        !log.contains('\x1b'),
        "colour escapes in a log file:\n{log:?}"
    );
}

#[tokio::test]
async fn log_format_json_writes_one_object_per_line() {
    let log = log_of_one_request("log-json", "log_format = \"json\"\n", "/json").await;
    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    for line in &lines {
        for key in ["timestamp", "level", "target", "fields"] {
            assert!(line.get(key).is_some(), "no {key} in {line}");
        }
    }
    // The access log's line is one of them, its fields named as in an
    // access-log file with `log_format = "json"`.
    let access = lines
        .iter()
        .find(|line| line["target"] == "access")
        .unwrap_or_else(|| panic!("no access line in {log}"));
    let fields = &access["fields"];
    assert_eq!(fields["request"], "GET /json HTTP/1.1", "{access}");
    assert_eq!(fields["status"], 200, "{access}");
    assert_eq!(fields["remote_addr"], "127.0.0.1", "{access}");
    assert_eq!(fields["body_bytes_sent"], 2, "{access}");
}
