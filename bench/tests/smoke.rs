//! Smoke runs of every `wasp-bench` mode for a second or two against a `wasp-echo` on an ephemeral port: they
//! assert that nothing failed and something was measured, never how fast.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    process::{Child, Command, Stdio},
};

use wasp_bench::outcome::Outcome;

/// A running `wasp-echo`, killed when dropped.
struct Backend {
    child: Child,
    addr: String,
}

impl Backend {
    fn start() -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wasp-echo"))
            .args(["--listen", "127.0.0.1:0", "--threads", "2"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("wasp-echo starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line.trim().rsplit(' ').next().unwrap().to_owned();
        assert!(
            addr.starts_with("127.0.0.1:"),
            "unexpected first line {line:?}"
        );
        Self { child, addr }
    }

    fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `wasp-bench` with `args` plus `--json` and returns the parsed JSON line.
fn bench(args: &[&str]) -> Outcome {
    let output = Command::new(env!("CARGO_BIN_EXE_wasp-bench"))
        .args(args)
        .arg("--json")
        .output()
        .expect("wasp-bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json = stdout
        .lines()
        .find(|line| line.starts_with('{'))
        .expect("a JSON line");
    let outcome: Outcome = serde_json::from_str(json).unwrap();
    assert_eq!(outcome.errors(), 0, "{outcome}");
    outcome
}

#[test]
fn echo_closed_loop() {
    let backend = Backend::start();
    let url = backend.url();
    let pid = backend.child.id().to_string();
    let Outcome::Echo(echo) = bench(&[
        "echo", "--url", &url, "-c", "4", "-m", "4", "-s", "1k", "-d", "1s", "--warmup", "200ms",
        "--pid", &pid,
    ]) else {
        panic!("echo outcome expected");
    };
    assert!(echo.messages > 0 && echo.latency.p99_us > 0.0, "{echo:?}");
    // The backend echoed thousands of messages in the window: its CPU time shows.
    let cpu = echo.cpu.expect("CPU measured with --pid");
    assert!(cpu.total_us_per_op() > 0.0, "{cpu:?}");
}

#[test]
fn echo_fixed_rate() {
    let backend = Backend::start();
    let url = backend.url();
    let Outcome::Echo(echo) = bench(&[
        "echo",
        "--url",
        &url,
        "-c",
        "4",
        "--rate",
        "400",
        "-d",
        "1s",
        "--warmup",
        "200ms",
        "--sources",
        "0",
    ]) else {
        panic!("echo outcome expected");
    };
    assert!(echo.messages > 0 && echo.rate == Some(400.0), "{echo:?}");
}

#[test]
fn handshakes() {
    let backend = Backend::start();
    let url = backend.url();
    let Outcome::Handshake(handshake) = bench(&["handshake", "--url", &url, "-c", "4", "-d", "1s"])
    else {
        panic!("handshake outcome expected");
    };
    assert!(handshake.handshakes > 0, "{handshake:?}");
    assert_eq!(handshake.cpu, None, "no --pid, no CPU figure");
}

#[test]
fn idle_connections_and_backend_memory() {
    let backend = Backend::start();
    let url = backend.url();
    let pid = backend.child.id().to_string();
    let Outcome::Idle(idle) = bench(&[
        "idle",
        "--url",
        &url,
        "-n",
        "300",
        "--sources",
        "3",
        "--settle",
        "100ms",
        "--pid",
        &pid,
    ]) else {
        panic!("idle outcome expected");
    };
    assert!(!idle.echo_first);
    // Every connection answered the ping after the reading: the backend itself, with no proxy in front.
    assert_eq!(
        (idle.opened, idle.held, idle.served),
        (300, 300, 300),
        "{idle:?}"
    );
    assert!(
        idle.rss_after_kib.is_some() && idle.kib_per_conn.is_some(),
        "{idle:?}"
    );
}

#[test]
fn idle_connections_after_one_echo_each() {
    let backend = Backend::start();
    let url = backend.url();
    let pid = backend.child.id().to_string();
    let Outcome::Idle(idle) = bench(&[
        "idle",
        "--echo-first",
        "--url",
        &url,
        "-n",
        "300",
        "--settle",
        "100ms",
        "--pid",
        &pid,
    ]) else {
        panic!("idle outcome expected");
    };
    assert!(idle.echo_first);
    assert_eq!(
        (idle.opened, idle.held, idle.served),
        (300, 300, 300),
        "{idle:?}"
    );
    assert!(idle.kib_per_conn.is_some(), "{idle:?}");
}

#[test]
fn spinners_against_a_backend_that_only_echoes() {
    // No filter spins here: every abusive message comes back, and both phases measure the echo.
    let backend = Backend::start();
    let url = backend.url();
    let Outcome::Spinners(spinners) = bench(&[
        "spinners",
        "--url",
        &url,
        "--spin-url",
        &url,
        "-c",
        "4",
        "--rate",
        "200",
        "-d",
        "1s",
        "--warmup",
        "200ms",
        "--abusers-per-sec",
        "20",
    ]) else {
        panic!("spinners outcome expected");
    };
    assert!(
        spinners.quiet.messages > 0 && spinners.abused.messages > 0,
        "{spinners:?}"
    );
    let abusers = &spinners.abusers;
    assert!(abusers.started > 0, "{spinners:?}");
    assert_eq!(abusers.answered, abusers.started, "{spinners:?}");
    assert_eq!(abusers.closed_1011 + abusers.refused + abusers.other, 0);
}

#[test]
fn backend_answers_plain_http_for_health_checks() {
    let backend = Backend::start();
    let mut stream = TcpStream::connect(&backend.addr).unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
}
