//! The `access_log` setting: lines in a file, none lost when the file is
//! rotated (`mv` then SIGUSR1, as logrotate does it), JSON lines that
//! parse, one server logging elsewhere than another, and lines counted as
//! dropped, not waited for, when the file does not keep up.

use crate::support::backend::Backend;
use crate::support::config::ConfigBuilder;
use crate::support::process::WaspProcess;
use crate::support::{eventually, free_addr, sample, start_proxy, temp_dir};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

/// Bound on any wait.
const WAIT: Duration = Duration::from_secs(10);

/// A keep-alive HTTP/1.1 client connection to `addr`.
async fn client(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

/// `GET path` on `sender`; the status.
async fn get(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    path: &str,
) -> u16 {
    sender.ready().await.unwrap();
    let request = http::Request::get(path)
        .header("host", "localhost")
        .body(Empty::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    response.into_body().collect().await.unwrap();
    status
}

/// The request paths of the access lines in `file`.
fn paths_in(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            // ... "GET /r/7 HTTP/1.1" 200 ...
            let request = line.split('"').nth(1).unwrap_or_else(|| panic!("{line}"));
            request.split(' ').nth(1).unwrap().to_owned()
        })
        .collect()
}

#[tokio::test]
async fn a_log_file_rotated_with_mv_and_sigusr1_keeps_every_line() {
    let dir = temp_dir("access-rotate");
    let addr = free_addr();
    let log = dir.join("access.log");
    let rotated = dir.join("access.log.1");
    let config = dir.join("wasp.toml");
    std::fs::write(
        &config,
        ConfigBuilder::new()
            .set("access_log", log.display().to_string())
            .server(|s| {
                s.set("listen", addr.to_string())
                    .location("/", |l| l.returns(200, "ok"))
            })
            .build(),
    )
    .unwrap();
    let mut wasp = WaspProcess::start(&config, dir.join("wasp.log"));
    eventually("wasp to serve", Duration::from_secs(60), async || {
        TcpStream::connect(addr).await.ok()
    })
    .await;

    // A client keeps requesting while the file is rotated under it; once
    // told the reopen happened, it sends 50 more and says from where.
    let reopened = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn({
        let reopened = reopened.clone();
        async move {
            let mut sender = client(addr).await;
            let mut sent = 0;
            while !reopened.load(Ordering::SeqCst) {
                assert_eq!(get(&mut sender, &format!("/r/{sent}")).await, 200);
                sent += 1;
            }
            let after = sent;
            for _ in 0..50 {
                assert_eq!(get(&mut sender, &format!("/r/{sent}")).await, 200);
                sent += 1;
            }
            (after, sent)
        }
    });
    eventually("lines in the log", WAIT, async || {
        (paths_in(&log).len() >= 50).then_some(())
    })
    .await;
    std::fs::rename(&log, &rotated).unwrap();
    wasp.signal(libc::SIGUSR1);
    eventually("the reopen", WAIT, async || {
        wasp.log().contains("access logs reopened").then_some(())
    })
    .await;
    reopened.store(true, Ordering::SeqCst);
    let (after, sent) = load.await.unwrap();
    // SIGTERM writes out every line logged before wasp exits.
    let status = wasp.stop().await;
    assert!(status.success(), "{status}: {}", wasp.log());

    let old = paths_in(&rotated);
    let new = paths_in(&log);
    assert_eq!(old.len() + new.len(), sent, "lines lost or doubled");
    // The old file holds the first requests, the new one the rest, and
    // everything sent after the reopen was logged.
    let index = |path: &String| path.strip_prefix("/r/").unwrap().parse::<usize>().unwrap();
    let old: Vec<usize> = old.iter().map(index).collect();
    let new: Vec<usize> = new.iter().map(index).collect();
    assert_eq!(old, (0..old.len()).collect::<Vec<_>>());
    assert_eq!(new, (old.len()..sent).collect::<Vec<_>>());
    assert!(
        old.len() <= after,
        "{} lines in the old file, {after} requests before",
        old.len()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn json_access_lines_parse_with_the_fields_named() {
    let dir = temp_dir("access-json");
    let log = dir.join("access.log");
    let backend = Backend::start("ws").await;
    let toml = ConfigBuilder::new()
        .set("log_format", "json")
        .set("access_log", log.display().to_string())
        .server(|s| {
            s.set("listen", "127.0.0.1:0")
                .location("/ws/", |l| l.proxy_pass(backend.addr))
                .location("/", |l| l.returns(200, "ok"))
        })
        .build();
    let (proxy, addr) = start_proxy(&toml).await;
    let mut sender = client(addr).await;
    assert_eq!(get(&mut sender, "/plain?x=1").await, 200);
    let (mut ws, _) = connect_async(format!("ws://{addr}/ws/"))
        .await
        .expect("handshake");
    ws.next().await.unwrap().unwrap(); // the backend's report
    ws.send(Message::text("hello")).await.unwrap();
    ws.next().await.unwrap().unwrap(); // its echo
    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}
    drop((ws, sender));
    proxy.shutdown().await;

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    let plain = &lines[0];
    assert_eq!(plain["request"], "GET /plain?x=1 HTTP/1.1");
    assert_eq!(plain["status"], 200);
    assert_eq!(plain["body_bytes_sent"], 2);
    assert_eq!(plain["remote_addr"], "127.0.0.1");
    assert_eq!(plain["http_referer"], "-");
    assert!(plain["time_local"].as_str().unwrap().ends_with(" +0000"));
    assert!(plain["request_time"].is_f64());
    assert!(plain.get("ws_up").is_none(), "{plain}");
    let websocket = &lines[1];
    assert_eq!(websocket["request"], "GET /ws/ HTTP/1.1");
    assert_eq!(websocket["status"], 101);
    assert_eq!(websocket["peer"], backend.addr.to_string());
    // The client sent "hello" (5 bytes of payload through a tunnel: framed,
    // masked, plus the close frame), so more than 5 bytes went up.
    assert!(websocket["ws_up"].as_u64().unwrap() > 5, "{websocket}");
    assert!(websocket["ws_end"].is_string(), "{websocket}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn each_server_logs_where_its_access_log_says() {
    let dir = temp_dir("access-servers");
    let (a, b) = (free_addr(), free_addr());
    let toml = ConfigBuilder::new()
        .set("access_log", dir.join("top.log").display().to_string())
        .server(|s| {
            s.set("listen", a.to_string())
                .location("/", |l| l.returns(200, "a"))
        })
        .server(|s| {
            s.set("listen", b.to_string())
                .set("access_log", "off")
                .location("/", |l| l.returns(200, "b"))
        })
        .build();
    let (proxy, _) = start_proxy(&toml).await;
    assert_eq!(get(&mut client(a).await, "/to-a").await, 200);
    assert_eq!(get(&mut client(b).await, "/to-b").await, 200);
    let metrics = proxy.shared().metrics.clone();
    proxy.shutdown().await;
    assert_eq!(paths_in(&dir.join("top.log")), ["/to-a"]);
    // Off: no line, but the request still counts.
    assert_eq!(
        sample(&metrics.encode(), "wasp_http_requests_total{class=\"2xx\"}"),
        Some(2.0)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn lines_a_stalled_log_cannot_take_are_dropped_and_counted_not_waited_for() {
    let dir = temp_dir("access-fifo");
    let fifo = dir.join("access.fifo");
    let c_path = std::ffi::CString::new(fifo.display().to_string()).unwrap();
    // SAFETY: mkfifo with a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    // A reader that reads nothing until every request is answered: wasp's
    // writer thread blocks once the pipe is full.
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    {
        use std::os::fd::AsRawFd;
        // The smallest pipe (one page), so that few lines fill it.
        // SAFETY: fcntl on a descriptor this test owns.
        assert!(unsafe { libc::fcntl(reader.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) } > 0);
    }
    let toml = ConfigBuilder::new()
        .set("access_log", fifo.display().to_string())
        .server(|s| {
            s.set("listen", "127.0.0.1:0")
                .location("/", |l| l.returns(200, "ok"))
        })
        .build();
    let (proxy, addr) = start_proxy(&toml).await;
    let metrics = proxy.shared().metrics.clone();
    let dropped = || sample(&metrics.encode(), "wasp_access_log_dropped_lines_total");
    assert_eq!(dropped(), Some(0.0), "the series exists from the start");

    // More lines than the pipe, the writer's 64 KiB buffer (lines are
    // longer than 64 bytes) and the queue can hold: every request is still
    // answered, and the rest of the lines are dropped.
    let requests = wasp::access_log::QUEUE_LINES + (4096 + 64 * 1024) / 64 + 1000;
    let mut sender = client(addr).await;
    for i in 0..requests {
        assert_eq!(get(&mut sender, &format!("/{i}")).await, 200);
    }
    drop(sender);

    // Now read: the writer catches up, shutdown waits for it, and every
    // line is either in the FIFO or counted as dropped.
    let stop = Arc::new(AtomicBool::new(false));
    let drain = std::thread::spawn({
        let stop = stop.clone();
        move || {
            let mut read = Vec::new();
            let mut buffer = [0u8; 64 * 1024];
            loop {
                let done = stop.load(Ordering::SeqCst);
                match reader.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(n) => read.extend_from_slice(&buffer[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if done {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            read
        }
    });
    proxy.shutdown().await;
    stop.store(true, Ordering::SeqCst);
    let read = String::from_utf8(drain.join().unwrap()).unwrap();
    let written = read.lines().count();
    assert!(
        read.lines().all(|line| line.starts_with("127.0.0.1 - - [")),
        "a torn line"
    );
    let dropped = dropped().unwrap() as usize;
    assert!(dropped > 0, "nothing dropped of {requests} lines");
    assert_eq!(
        written + dropped,
        requests,
        "{written} written, {dropped} dropped"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
