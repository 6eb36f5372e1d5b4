//! Several wasp processes on one port (`reuse_port`): a zero-downtime
//! upgrade, with the real binary in processes of its own and a real
//! backend on loopback.

use crate::support::backend::Backend;
use crate::support::process::WaspProcess;
use crate::support::{eventually, free_addr, temp_dir};
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
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
