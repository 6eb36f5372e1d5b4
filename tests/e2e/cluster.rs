//! Several wasp processes on one port (`reuse_port`): a zero-downtime
//! upgrade; and `[cluster]`: limits and plugin kv shared through a real
//! redis-server, which the tests kill and start again. The real binary in
//! processes of its own, real backends on loopback.

use crate::support::backend::{Backend, connect_from, ws_over};
use crate::support::process::{EchoProcess, WaspProcess, workspace_binary};
use crate::support::redis::Redis;
use crate::support::{eventually, free_addr, request, sample, temp_dir, test_plugins};
use futures_util::{SinkExt, StreamExt};
use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Bound on a process starting (the first call builds the binary).
const START: Duration = Duration::from_secs(120);
/// Bound on what follows a signal or a message.
const WAIT: Duration = Duration::from_secs(20);

/// When a process sharing a port closes its listening socket, the
/// connections waiting in its accept queue are reset unless the kernel
/// migrates them to another socket of the port (`tcp_migrate_req`, Linux
/// 5.14): the setting a zero-downtime upgrade needs, which the README's
/// operations section asks for. Set here (it needs root) rather than
/// assumed.
fn migrate_queued_connections() {
    const SETTING: &str = "/proc/sys/net/ipv4/tcp_migrate_req";
    if std::fs::read_to_string(SETTING).is_ok_and(|v| v.trim() == "1") {
        return;
    }
    std::fs::write(SETTING, "1").unwrap_or_else(|e| {
        panic!("this test needs `sysctl -w net.ipv4.tcp_migrate_req=1` (root): {e}")
    });
}

/// A configuration sharing `addr` with `reuse_port`, proxying to `backend`.
fn write_config(path: &Path, addr: SocketAddr, backend: SocketAddr) {
    std::fs::write(
        path,
        format!(
            "shutdown_grace = \"60s\"\n\
             [[server]]\nlisten = \"{addr}\"\nreuse_port = true\n\
             [[server.location]]\npath = \"/\"\nproxy_pass = \"http://{backend}\"\n"
        ),
    )
    .unwrap();
}

/// A WebSocket through wasp to the echo backend, its report read.
async fn open(addr: SocketAddr, path: &str) -> Result<Ws, String> {
    let (mut ws, _) = connect_async(format!("ws://{addr}{path}"))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    match ws.next().await {
        Some(Ok(Message::Text(_))) => Ok(ws),
        other => Err(format!("expected the backend's report, got {other:?}")),
    }
}

/// Sends `text` and waits for its echo.
async fn echo(ws: &mut Ws, text: &str) -> Result<(), String> {
    ws.send(Message::text(text))
        .await
        .map_err(|e| e.to_string())?;
    match ws.next().await {
        Some(Ok(Message::Text(echoed))) if echoed.as_str() == text => Ok(()),
        other => Err(format!("expected the echo of {text:?}, got {other:?}")),
    }
}

/// Counts the access-log lines of WebSockets opened on `path` in a log.
fn served(log: &str, path: &str) -> usize {
    log.matches(&format!("\"GET {path} HTTP/1.1\" 101")).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_keeps_the_old_websockets_and_refuses_no_connection() {
    migrate_queued_connections();
    let backend = Backend::start("echo").await;
    let dir = temp_dir("upgrade");
    let addr = SocketAddr::from(([127, 0, 0, 1], free_addr().port()));
    write_config(&dir.join("old.toml"), addr, backend.addr);
    write_config(&dir.join("new.toml"), addr, backend.addr);

    let mut old = WaspProcess::start(&dir.join("old.toml"), dir.join("old.log"));
    eventually("the old process to serve", START, async || {
        open(addr, "/probe").await.ok()
    })
    .await;

    // WebSockets of the old process, each echoing without pause.
    let stop = Arc::new(AtomicBool::new(false));
    let echoed = Arc::new(AtomicUsize::new(0));
    let mut flows = Vec::new();
    for n in 0..4 {
        let mut ws = open(addr, "/old").await.unwrap();
        let (stop, echoed) = (stop.clone(), echoed.clone());
        flows.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                echo(&mut ws, &format!("old {n} {i}")).await?;
                echoed.fetch_add(1, Ordering::SeqCst);
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok::<Ws, String>(ws)
        }));
    }
    // New clients all along, two at a time: each one must get its
    // WebSocket and an echo; any failure is recorded.
    let opened = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let mut churn = Vec::new();
    for _ in 0..2 {
        let (stop, opened, failures) = (stop.clone(), opened.clone(), failures.clone());
        churn.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let result = async {
                    let mut ws = open(addr, "/new").await?;
                    echo(&mut ws, "new").await?;
                    ws.close(None).await.map_err(|e| e.to_string())
                };
                match result.await {
                    Ok(()) => opened.fetch_add(1, Ordering::SeqCst),
                    Err(error) => {
                        failures.lock().unwrap().push(error);
                        0
                    }
                };
            }
        }));
    }
    let at_least = async |counter: &AtomicUsize, more: usize, what: &str| {
        let target = counter.load(Ordering::SeqCst) + more;
        eventually(what, WAIT, async || {
            (counter.load(Ordering::SeqCst) >= target).then_some(())
        })
        .await;
    };
    at_least(&opened, 20, "new clients on the old process").await;

    // The new process binds the same address beside the old one.
    let mut new = WaspProcess::start(&dir.join("new.toml"), dir.join("new.log"));
    eventually("the new process to listen", START, async || {
        new.log().contains("listening").then_some(())
    })
    .await;
    at_least(&opened, 50, "new clients on both processes").await;

    // The old one stops accepting and drains.
    old.signal(libc::SIGQUIT);
    eventually("the old process to drain", WAIT, async || {
        old.log().contains("shutting down").then_some(())
    })
    .await;
    let before_swap = opened.load(Ordering::SeqCst);
    at_least(&opened, 100, "new clients after the swap").await;
    at_least(
        &echoed,
        100,
        "messages on the old WebSockets after the swap",
    )
    .await;
    assert!(
        old.exited().is_none(),
        "the old process left its WebSockets: {}",
        old.log()
    );

    stop.store(true, Ordering::SeqCst);
    for task in churn {
        task.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} of {} new clients failed during the swap: {:?}",
        failures.len(),
        opened.load(Ordering::SeqCst) + failures.len(),
        &failures[..failures.len().min(5)]
    );
    // Everything after the swap went to the new process.
    let after_swap = opened.load(Ordering::SeqCst) - before_swap;
    eventually("the new process's access lines", WAIT, async || {
        (served(&new.log(), "/new") >= after_swap).then_some(())
    })
    .await;

    // The old process ends when its last WebSocket closes.
    for flow in flows {
        let mut ws = flow.await.unwrap().unwrap();
        ws.close(None).await.unwrap();
        while ws.next().await.is_some() {}
    }
    let status = eventually("the old process to exit", WAIT, async || old.exited()).await;
    assert!(status.success(), "{status}: {}", old.log());
    assert_eq!(served(&old.log(), "/old"), 4, "{}", old.log());
    assert!(new.stop().await.success(), "{}", new.log());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// One wasp process of a cluster: on the shared port and on one of its
/// own (so a test can choose which process a client reaches), with an
/// admin listener.
struct Member {
    name: &'static str,
    process: WaspProcess,
    own: SocketAddr,
    admin: SocketAddr,
}

impl Member {
    /// Starts `name` with `top` (tables before the server: `[plugins]`)
    /// and one location `/` made of `location`; waits until it serves and
    /// is connected to Redis.
    async fn start(
        dir: &Path,
        name: &'static str,
        redis: &Redis,
        shared: SocketAddr,
        top: &str,
        location: &str,
    ) -> Member {
        let (own, admin) = (free_addr(), free_addr());
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "admin = \"{admin}\"\nshutdown_grace = \"1s\"\n{top}\n\
                 [cluster]\nredis = \"{}\"\ninstance = \"{name}\"\nretry = \"100ms\"\n\
                 [[server]]\nlisten = [\"{shared}\", \"{own}\"]\nreuse_port = true\n\
                 [[server.location]]\npath = \"/\"\n{location}\n",
                redis.url()
            ),
        )
        .unwrap();
        let process = WaspProcess::start(&config, dir.join(format!("{name}.log")));
        let member = Member {
            name,
            process,
            own,
            admin,
        };
        eventually(&format!("{name} to join the cluster"), START, async || {
            (member.connected().await == Some(true)).then_some(())
        })
        .await;
        member
    }

    async fn metrics(&self) -> Option<String> {
        TcpStream::connect(self.admin).await.ok()?;
        Some(request(self.admin, "GET", "/metrics").await.1)
    }

    /// `wasp_cluster_connected` of this instance.
    async fn connected(&self) -> Option<bool> {
        let metrics = self.metrics().await?;
        let series = format!("wasp_cluster_connected{{instance=\"{}\"}}", self.name);
        sample(&metrics, &series).map(|value| value == 1.0)
    }

    async fn wait_connected(&self, connected: bool) {
        let what = format!(
            "{} to see Redis {}",
            self.name,
            if connected { "back" } else { "gone" }
        );
        eventually(&what, WAIT, async || {
            (self.connected().await == Some(connected)).then_some(())
        })
        .await;
    }

    fn log(&self) -> String {
        self.process.log()
    }
}

/// A WebSocket handshake through `addr`: the socket, or the status wasp
/// refused it with.
async fn try_open(addr: SocketAddr) -> Result<Ws, u16> {
    use tokio_tungstenite::tungstenite::Error;
    match connect_async(format!("ws://{addr}/ws")).await {
        Ok((mut ws, _)) => match ws.next().await {
            Some(Ok(Message::Text(_))) => Ok(ws),
            other => panic!("expected the backend's report, got {other:?}"),
        },
        Err(Error::Http(response)) => Err(response.status().as_u16()),
        Err(error) => panic!("handshake through {addr}: {error}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_conn_counts_the_connections_of_every_process() {
    let mut redis = Redis::start().await;
    let backend = Backend::start("echo").await;
    let dir = temp_dir("cluster-limit-conn");
    let shared = SocketAddr::from(([127, 0, 0, 1], free_addr().port()));
    let location = format!("proxy_pass = \"http://{}\"\nlimit_conn = 10", backend.addr);
    let a = Member::start(&dir, "a", &redis, shared, "", &location).await;
    let b = Member::start(&dir, "b", &redis, shared, "", &location).await;

    // Ten WebSockets from 127.0.0.1, five through each process.
    let mut on_a = Vec::new();
    let mut on_b = Vec::new();
    for _ in 0..5 {
        on_a.push(try_open(a.own).await.expect("within the limit on a"));
        on_b.push(try_open(b.own).await.expect("within the limit on b"));
    }
    // The 11th is refused whichever process receives it.
    assert_eq!(try_open(a.own).await.err(), Some(503));
    assert_eq!(try_open(b.own).await.err(), Some(503));
    for _ in 0..4 {
        assert_eq!(try_open(shared).await.err(), Some(503));
    }
    // One closes on a: b may take one more.
    drop(on_a.pop());
    on_b.push(
        eventually("a's released slot to reach b", WAIT, async || {
            try_open(b.own).await.ok()
        })
        .await,
    );
    assert_eq!(try_open(a.own).await.err(), Some(503));

    // Redis gone: each process keeps serving within its own limit of 10
    // (a holds 4, b 6), which lets the cluster exceed 10.
    redis.kill();
    a.wait_connected(false).await;
    b.wait_connected(false).await;
    on_a.push(try_open(a.own).await.expect("a's own limit allows it"));
    for _ in 0..4 {
        on_b.push(try_open(b.own).await.expect("b's own limit allows it"));
    }
    assert_eq!(try_open(b.own).await.err(), Some(503), "b's own limit");

    // Redis back, empty: both processes count their connections there
    // again (15), and a refuses though its own count (5) is low.
    redis.restart().await;
    a.wait_connected(true).await;
    b.wait_connected(true).await;
    assert_eq!(try_open(a.own).await.err(), Some(503));
    for ws in on_b.drain(..) {
        drop(ws);
    }
    // b's ten closed: a has 5 of 10.
    let reopened = eventually("b's slots to be given back", WAIT, async || {
        try_open(a.own).await.ok()
    })
    .await;
    on_a.push(reopened);

    // Said once each way.
    for member in [&a, &b] {
        let log = member.log();
        assert_eq!(log.matches("Redis unreachable").count(), 1, "{log}");
        assert_eq!(log.matches("connected to Redis").count(), 2, "{log}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_req_counts_the_requests_of_every_process() {
    let redis = Redis::start().await;
    let backend = Backend::start("plain").await;
    let dir = temp_dir("cluster-limit-req");
    let shared = SocketAddr::from(([127, 0, 0, 1], free_addr().port()));
    // One request a minute plus a burst of two: three pass across the
    // cluster while the test runs.
    let location = format!(
        "proxy_pass = \"http://{}\"\n\
         limit_req = {{ rate = \"1r/m\", burst = 2, key = \"$binary_remote_addr\" }}",
        backend.addr
    );
    let a = Member::start(&dir, "a", &redis, shared, "", &location).await;
    let b = Member::start(&dir, "b", &redis, shared, "", &location).await;
    assert_eq!(request(a.own, "GET", "/").await.0, 200);
    assert_eq!(request(b.own, "GET", "/").await.0, 200);
    assert_eq!(request(a.own, "GET", "/").await.0, 200);
    // Each process alone has seen at most two: only the cluster's count refuses.
    assert_eq!(request(b.own, "GET", "/").await.0, 503);
    assert_eq!(request(a.own, "GET", "/").await.0, 503);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugins_kv_write_in_one_process_is_read_in_the_other_within_100_ms() {
    let mut redis = Redis::start().await;
    let dir = temp_dir("cluster-kv");
    let probe = dir.join("probe.wasm");
    std::fs::write(&probe, test_plugins::get("probe")).unwrap();
    let shared = SocketAddr::from(([127, 0, 0, 1], free_addr().port()));
    let top = format!("[plugins]\nrouter = \"{}\"", probe.display());
    let location = "return = { status = 200, body = \"ok\" }";
    let a = Member::start(&dir, "a", &redis, shared, &top, location).await;
    let b = Member::start(&dir, "b", &redis, shared, &top, location).await;
    let read = async |member: &Member, path: &str| {
        let (status, body) = request(member.own, "GET", path).await;
        (status == 200).then(|| body.split(" instance").next().unwrap().to_owned())
    };
    let within = Duration::from_millis(100);

    // The shared namespace and the plugin's own (the same plugin file in both).
    for prefix in ["/shared", ""] {
        assert_eq!(
            request(a.own, "GET", &format!("{prefix}/kv/set/greeting/hello"))
                .await
                .0,
            200
        );
        let value = eventually("the write to reach b", within, async || {
            read(&b, &format!("{prefix}/kv/get/greeting")).await
        })
        .await;
        assert_eq!(value, "hello");
    }
    // A delete too.
    assert_eq!(
        request(b.own, "GET", "/shared/kv/delete/greeting").await.0,
        200
    );
    eventually("the delete to reach a", within, async || {
        (request(a.own, "GET", "/shared/kv/get/greeting").await.0 == 404).then_some(())
    })
    .await;
    // Counters add up across processes.
    for n in 1..=3 {
        assert_eq!(read(&a, "/shared/counter/hits").await, Some(n.to_string()));
    }
    request(a.own, "GET", "/shared/kv/set/after/counting").await;
    eventually("a's writes to reach b", within, async || {
        read(&b, "/shared/kv/get/after").await
    })
    .await;
    assert_eq!(read(&b, "/shared/counter/hits").await.as_deref(), Some("4"));

    // Redis gone: plugins keep their local store; writes wait for Redis.
    redis.kill();
    a.wait_connected(false).await;
    b.wait_connected(false).await;
    assert_eq!(
        read(&a, "/shared/kv/set/offline/1").await.as_deref(),
        Some("1")
    );
    assert_eq!(read(&b, "/shared/kv/get/offline").await, None);
    redis.restart().await;
    let value = eventually("the write made while Redis was away", WAIT, async || {
        read(&b, "/shared/kv/get/offline").await
    })
    .await;
    assert_eq!(value, "1");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_series_of_a_cluster_member_carries_its_instance() {
    let redis = Redis::start().await;
    let dir = temp_dir("cluster-metrics");
    let shared = SocketAddr::from(([127, 0, 0, 1], free_addr().port()));
    let location = "return = { status = 200, body = \"ok\" }";
    let a = Member::start(&dir, "a", &redis, shared, "", location).await;
    let b = Member::start(&dir, "b", &redis, shared, "", location).await;
    assert_eq!(request(a.own, "GET", "/").await.0, 200);
    assert_eq!(request(b.own, "GET", "/").await.0, 200);
    for member in [&a, &b] {
        let metrics = member.metrics().await.unwrap();
        let label = format!("instance=\"{}\"", member.name);
        let series: Vec<&str> = metrics.lines().filter(|l| !l.starts_with('#')).collect();
        assert!(!series.is_empty());
        for line in series {
            assert!(line.contains(&label), "{line} has no {label}");
        }
        // The request it answered, counted under its instance.
        let requests = format!("wasp_http_requests_total{{{label},class=\"2xx\"}}");
        assert!(
            sample(&metrics, &requests).is_some_and(|n| n >= 1.0),
            "{metrics}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Members `a` and `b` on one shared port (returned first), proxying `/`
/// to `servers` balanced by `balance`.
async fn pair_over(
    dir: &Path,
    redis: &Redis,
    balance: &str,
    servers: impl IntoIterator<Item = SocketAddr>,
) -> (SocketAddr, Member, Member) {
    let shared = SocketAddr::from(([127, 0, 0, 1], free_addr().port()));
    let servers: Vec<String> = servers.into_iter().map(|a| format!("\"{a}\"")).collect();
    let top = format!(
        "[upstreams.app]\nbalance = \"{balance}\"\nservers = [{}]\n",
        servers.join(", ")
    );
    let location = "proxy_pass = \"http://app\"";
    let a = Member::start(dir, "a", redis, shared, &top, location).await;
    let b = Member::start(dir, "b", redis, shared, &top, location).await;
    (shared, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_hash_sends_a_client_to_one_backend_through_either_process() {
    let redis = Redis::start().await;
    let backends = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ];
    let dir = temp_dir("cluster-ip-hash");
    let addrs = backends.iter().map(|b| b.addr);
    let (shared, a, b) = pair_over(&dir, &redis, "ip_hash", addrs).await;

    let mut homes = HashSet::new();
    for net in 1..=12u8 {
        let source = Ipv4Addr::new(127, 0, net, 1);
        let mut seen = HashSet::new();
        for via in [a.own, b.own, shared, b.own, a.own] {
            let (_ws, backend) = ws_over(connect_from(via, source).await, &[]).await;
            seen.insert(backend);
        }
        assert_eq!(seen.len(), 1, "{source} went to {seen:?}");
        homes.extend(seen);
    }
    assert!(homes.len() >= 2, "every network on one backend: {homes:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A proxied WebSocket takes two of a process's descriptors, and a process
/// here may hold 20,000: 18,000 WebSockets open at once need both
/// processes. The load generator (the bench's `idle` scenario, in a process
/// of its own with the clients' 18,000 descriptors) opens them all through
/// the shared port; each echoes a message through one of three backends
/// (processes of their own too), then, all being open, a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_port_hold_18000_websockets_that_all_echo() {
    const WEBSOCKETS: usize = 18_000;
    let redis = Redis::start().await;
    let backends: Vec<EchoProcess> = (0..3).map(|_| EchoProcess::start()).collect();
    let dir = temp_dir("cluster-18000");
    let addrs = backends.iter().map(|b| b.addr);
    let (shared, a, b) = pair_over(&dir, &redis, "round_robin", addrs).await;

    let bench = tokio::process::Command::new(workspace_binary("wasp-bench", "wasp-bench"))
        .args([
            "idle",
            "--echo-first",
            "--json",
            "--settle",
            "0s",
            "--sources",
            "16",
        ])
        .args(["--connections", &WEBSOCKETS.to_string()])
        .args(["--url", &format!("ws://{shared}/many")])
        .output()
        .await
        .expect("wasp-bench runs");
    let stdout = String::from_utf8_lossy(&bench.stdout);
    assert!(
        bench.status.success(),
        "{}: {stdout}{}",
        bench.status,
        String::from_utf8_lossy(&bench.stderr)
    );
    let outcome: serde_json::Value = stdout
        .lines()
        .find_map(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("no JSON line: {stdout}"));
    for field in ["opened", "held", "served"] {
        assert_eq!(outcome[field], WEBSOCKETS, "{field}: {outcome}");
    }
    assert_eq!(outcome["errors"], 0, "{outcome}");

    // Each process logs its WebSockets as they close: both carried a share
    // no single process could have carried alone together.
    let shares = eventually("every WebSocket to be logged", WAIT, async || {
        let shares = [served(&a.log(), "/many"), served(&b.log(), "/many")];
        (shares.iter().sum::<usize>() == WEBSOCKETS).then_some(shares)
    })
    .await;
    assert!(shares.iter().all(|&n| n > 0), "{shares:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
