//! `wasp-soak`: wasp for a long time under steady load and injected faults.
//! Run by `bench/soak.sh`, which writes its Markdown to BENCHMARKS.md.
//!
//! Starts two `wasp-echo` backends and `wasp` with one location whose filter
//! (the test plugin `probe`, `fail = "open"`) tags every message. Holds
//! `--connections` WebSockets, each sending one message every `--interval`
//! and waiting for its echo, for `--minutes`, while:
//! - the filter file is replaced every `--reload-every` (two versions that
//!   differ by a custom section, so each write is a new plugin version);
//! - one message every `--trap-every` is `trap`, on which the filter panics
//!   (a trap, twice: on the way up and back; failing open, it comes back
//!   unchanged);
//! - a backend is killed (SIGKILL) and started again every `--restart-every`,
//!   alternating the two: its WebSockets close with 1001 and reconnect.
//!
//! It asserts that no message was lost but those in flight on a WebSocket
//! whose backend was killed (counted), that wasp's resident memory and open
//! descriptors after warm-up (the first third) grew at most 5 % (the median
//! of the last sixth of the run against that of the sixth after warm-up), and
//! that wasp logged no warning or error but those the faults explain.
//! Prints Markdown; exits 1 if an assertion failed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The filter's tag, as its configuration sets it.
const TAG: &str = "s";

/// Longest wait for an echo before the message counts as lost.
const ECHO_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Parser)]
#[command(name = "wasp-soak")]
struct Args {
    /// The wasp binary.
    #[arg(long)]
    wasp: PathBuf,
    /// The `wasp-echo` binary.
    #[arg(long)]
    echo: PathBuf,
    /// The `probe` test filter component.
    #[arg(long)]
    filter: PathBuf,
    #[arg(long, default_value_t = 30.0)]
    minutes: f64,
    #[arg(long, default_value_t = 5000)]
    connections: usize,
    /// Time between two messages of one WebSocket.
    #[arg(long, default_value = "2s", value_parser = wasp_bench::cli::parse_duration)]
    interval: Duration,
    #[arg(long, default_value = "10s", value_parser = wasp_bench::cli::parse_duration)]
    reload_every: Duration,
    #[arg(long, default_value = "5s", value_parser = wasp_bench::cli::parse_duration)]
    trap_every: Duration,
    #[arg(long, default_value = "2m", value_parser = wasp_bench::cli::parse_duration)]
    restart_every: Duration,
    /// MiB that wasp's resident memory may grow beyond the 5 %: for short
    /// runs at small scale, where the allocator's retained pages swing by a
    /// few MiB between windows (the heap in use tells a leak there).
    #[arg(long, default_value_t = 0)]
    rss_slack_mib: u64,
    /// Where wasp's log goes (kept for reading after the run).
    #[arg(long)]
    log: Option<PathBuf>,
}

/// Kills a child process when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the load connections counted.
#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    echoed: AtomicU64,
    /// In flight on a WebSocket closed because its backend was killed.
    lost_to_restart: AtomicU64,
    /// Lost any other way, or a wrong echo: each a failure.
    unexpected: AtomicU64,
    traps: AtomicU64,
    reconnects: AtomicU64,
    /// Trap messages still to send (one added every `trap_every`).
    trap_tokens: AtomicU64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    wasp_bench::rlimit::raise_nofile().context("raising the open-file limit")?;
    let dir = std::env::temp_dir().join(format!("wasp-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let probe = std::fs::read(&args.filter).context("reading the probe filter")?;
    let versions = [
        probe.clone(),
        with_custom_section(&probe, b"soak version b"),
    ];
    let filter = dir.join("probe.wasm");
    std::fs::write(&filter, &versions[0])?;

    let backends = [free_addr()?, free_addr()?];
    let mut echoes = Vec::new();
    for addr in backends {
        echoes.push(start_echo(&args.echo, addr)?);
    }
    let listen = free_addr()?;
    let admin = free_addr()?;
    let config = dir.join("wasp.toml");
    std::fs::write(
        &config,
        format!(
            "admin = \"{admin}\"\naccess_log = \"off\"\n\n[upstreams.echo]\nservers = [\"{}\", \"{}\"]\n\n\
             [[server]]\nlisten = \"{listen}\"\n\n[[server.location]]\npath = \"/\"\nproxy_pass = \"http://echo\"\n\
             filters = [{{ plugin = \"{}\", config = {{ tag = \"{TAG}\" }}, fail = \"open\" }}]\n",
            backends[0],
            backends[1],
            filter.display()
        ),
    )?;
    let log_path = args.log.clone().unwrap_or_else(|| dir.join("wasp.log"));
    let log = std::fs::File::create(&log_path)?;
    let mut wasp = Proc(
        Command::new(&args.wasp)
            .args(["run", "-c"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting wasp")?,
    );
    let pid = wasp.0.id();
    let url = format!("ws://{listen}/");
    wait_for(&url).await?;

    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for id in 0..args.connections {
        // Spread the connections' messages over the interval.
        let phase = args.interval.mul_f64(id as f64 / args.connections as f64);
        clients.push(tokio::spawn(client(
            id,
            url.clone(),
            args.interval,
            phase,
            counts.clone(),
            stop.clone(),
        )));
        if id % 100 == 99 {
            tokio::task::yield_now().await;
        }
    }

    let total = Duration::from_secs_f64(args.minutes * 60.0);
    let started = Instant::now();
    let (mut next_reload, mut next_trap, mut next_restart, mut next_sample) = (
        args.reload_every,
        args.trap_every,
        args.restart_every,
        Duration::ZERO,
    );
    let (mut reloads, mut restarts, mut version) = (0u64, 0u64, 0usize);
    let mut samples: Vec<Sample> = Vec::new();
    while started.elapsed() < total {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = started.elapsed();
        if now >= next_reload {
            next_reload += args.reload_every;
            version = 1 - version;
            let temporary = dir.join("probe.wasm.tmp");
            std::fs::write(&temporary, &versions[version])?;
            std::fs::rename(&temporary, &filter)?;
            reloads += 1;
        }
        if now >= next_trap {
            next_trap += args.trap_every;
            counts.trap_tokens.fetch_add(1, Ordering::Relaxed);
        }
        if now >= next_restart {
            next_restart += args.restart_every;
            let which = (restarts % 2) as usize;
            drop(echoes.remove(which));
            echoes.insert(which, start_echo(&args.echo, backends[which])?);
            restarts += 1;
        }
        if now >= next_sample {
            next_sample += Duration::from_secs(5);
            if let Some(status) = wasp.0.try_wait()? {
                stop.store(true, Ordering::Relaxed);
                bail!("wasp exited after {:.0} s: {status}", now.as_secs_f64());
            }
            let rss = wasp_bench::rss::rss_kib(pid).context("wasp's memory")?;
            let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
            // What the allocator has in use tells a leak (it grows) from
            // memory the allocator keeps (resident grows, in use does not).
            let metrics = admin_metrics(admin).await.unwrap_or_default();
            let heap = sum_samples(&metrics, "wasp_heap_in_use_bytes", "") / 1024;
            samples.push((now, rss, fds, heap));
            if samples.len() % 6 == 1 {
                eprintln!(
                    "wasp-soak: {:.0} s: wasp {} KiB resident ({heap} KiB heap in use), {fds} descriptors, {} echoed",
                    now.as_secs_f64(),
                    rss,
                    counts.echoed.load(Ordering::Relaxed)
                );
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await?;
    }
    let metrics = admin_metrics(admin).await.unwrap_or_default();
    drop(wasp);
    drop(echoes);

    let c = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let (sent, echoed, lost, unexpected) = (
        c(&counts.sent),
        c(&counts.echoed),
        c(&counts.lost_to_restart),
        c(&counts.unexpected),
    );
    let median = |from: f64, to: f64, pick: &dyn Fn(&Sample) -> u64| {
        let mut values: Vec<u64> = samples
            .iter()
            .filter(|(at, ..)| (from..to).contains(&(at.as_secs_f64() / total.as_secs_f64())))
            .map(pick)
            .collect();
        values.sort_unstable();
        values.get(values.len() / 2).copied().unwrap_or(0)
    };
    let (rss_warm, rss_end) = (
        median(1.0 / 3.0, 0.5, &|s| s.1),
        median(5.0 / 6.0, 1.01, &|s| s.1),
    );
    let (fds_warm, fds_end) = (
        median(1.0 / 3.0, 0.5, &|s| s.2 as u64),
        median(5.0 / 6.0, 1.01, &|s| s.2 as u64),
    );
    let (heap_warm, heap_end) = (
        median(1.0 / 3.0, 0.5, &|s| s.3),
        median(5.0 / 6.0, 1.01, &|s| s.3),
    );
    let growth = |warm: u64, end: u64| (end as f64 / warm.max(1) as f64 - 1.0) * 100.0;
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let (mut injected, mut other) = (0, Vec::new());
    for line in log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
    {
        if explained(line, &backends) {
            injected += 1;
        } else {
            other.push(line.to_owned());
        }
    }
    let plugin_traps = sum_samples(&metrics, "wasp_plugin_calls_total{", "outcome=\"trap\"");
    let reloads_ok = sum_samples(&metrics, "wasp_reloads_total{", "result=\"ok\"");

    println!(
        "| minutes | WebSockets | messages sent | echoed | lost to a killed backend | lost otherwise or wrong | reconnects |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    println!(
        "| {:.1} | {} | {sent} | {echoed} | {lost} | {unexpected} | {} |",
        started.elapsed().as_secs_f64() / 60.0,
        args.connections,
        c(&counts.reconnects)
    );
    println!();
    println!(
        "| filter files replaced | reloads ok (wasp) | traps sent | plugin traps (wasp) | backend restarts | log lines from faults | other log lines |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    println!(
        "| {reloads} | {reloads_ok} | {} | {plugin_traps} | {restarts} | {injected} | {} |",
        c(&counts.traps),
        other.len()
    );
    println!();
    println!("| wasp | after warm-up | at the end | growth |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| resident memory (MiB) | {:.1} | {:.1} | {:+.1} % |",
        rss_warm as f64 / 1024.0,
        rss_end as f64 / 1024.0,
        growth(rss_warm, rss_end)
    );
    println!(
        "| heap in use (MiB; not asserted: tells a leak from memory the allocator keeps) | {:.1} | {:.1} | {:+.1} % |",
        heap_warm as f64 / 1024.0,
        heap_end as f64 / 1024.0,
        growth(heap_warm, heap_end)
    );
    println!(
        "| open descriptors | {fds_warm} | {fds_end} | {:+.1} % |",
        growth(fds_warm, fds_end)
    );

    let mut failures = Vec::new();
    if unexpected > 0 {
        failures.push(format!(
            "{unexpected} messages lost or wrong other than to a killed backend"
        ));
    }
    if sent != echoed + lost + unexpected {
        failures.push(format!(
            "{sent} sent but {echoed} echoed, {lost} lost to restarts, {unexpected} otherwise"
        ));
    }
    if echoed == 0 {
        failures.push("nothing was echoed".into());
    }
    if growth(rss_warm.saturating_add(args.rss_slack_mib << 10), rss_end) > 5.0 {
        failures.push(format!(
            "wasp's resident memory grew more than 5 % (+{} MiB allowed) after warm-up",
            args.rss_slack_mib
        ));
    }
    if growth(fds_warm, fds_end) > 5.0 {
        failures.push("wasp's open descriptors grew more than 5 % after warm-up".into());
    }
    for line in other.iter().take(20) {
        eprintln!("wasp-soak: unexplained log line: {line}");
    }
    if !other.is_empty() {
        failures.push(format!("{} log lines no fault explains", other.len()));
    }
    let _ = std::fs::remove_dir_all(&dir);
    if !failures.is_empty() {
        bail!("soak failed: {}", failures.join("; "));
    }
    Ok(())
}

/// One load connection: a message every `interval`, its echo awaited;
/// reconnects when its backend was killed.
async fn client(
    id: usize,
    url: String,
    interval: Duration,
    phase: Duration,
    counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
) {
    tokio::time::sleep(phase).await;
    let mut seq = 0u64;
    'connect: while !stop.load(Ordering::Relaxed) {
        let mut ws = match connect(&url).await {
            Some(ws) => ws,
            None => {
                counts.unexpected.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if stop.load(Ordering::Relaxed) {
                let _ = ws.close(None).await;
                return;
            }
            let trap = take_token(&counts.trap_tokens);
            let (text, expected) = if trap {
                counts.traps.fetch_add(1, Ordering::Relaxed);
                // Failing open, a message the filter trapped on passes unchanged.
                ("trap".to_owned(), "trap".to_owned())
            } else {
                seq += 1;
                let text = format!("c{id}-m{seq}");
                let expected = format!("{TAG}<{TAG}>{text}");
                (text, expected)
            };
            counts.sent.fetch_add(1, Ordering::Relaxed);
            if ws.send(Message::text(text)).await.is_err() {
                // The close that explains it is still to be read.
            }
            let reply = tokio::time::timeout(ECHO_WAIT, next_data(&mut ws)).await;
            match reply {
                Ok(Reply::Text(got)) if got == expected => {
                    counts.echoed.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Reply::Text(got)) => {
                    eprintln!("wasp-soak: connection {id}: expected {expected:?}, got {got:?}");
                    counts.unexpected.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Reply::Closed(reason)) if reason == "1001 upstream went away" => {
                    counts.lost_to_restart.fetch_add(1, Ordering::Relaxed);
                    counts.reconnects.fetch_add(1, Ordering::Relaxed);
                    continue 'connect;
                }
                Ok(Reply::Closed(reason)) => {
                    eprintln!("wasp-soak: connection {id} ended: {reason}");
                    counts.unexpected.fetch_add(1, Ordering::Relaxed);
                    counts.reconnects.fetch_add(1, Ordering::Relaxed);
                    continue 'connect;
                }
                Err(_) => {
                    eprintln!("wasp-soak: connection {id}: no echo within {ECHO_WAIT:?}");
                    counts.unexpected.fetch_add(1, Ordering::Relaxed);
                    continue 'connect;
                }
            }
        }
    }
}

enum Reply {
    Text(String),
    /// How the connection ended: `CODE reason`, or what broke it.
    Closed(String),
}

/// The next data message, or how the connection ended (pings are answered
/// by tungstenite).
async fn next_data(ws: &mut Ws) -> Reply {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => return Reply::Text(text.to_string()),
            Some(Ok(Message::Close(frame))) => {
                return Reply::Closed(frame.map_or("no code".into(), |f| {
                    format!("{} {}", u16::from(f.code), f.reason)
                }));
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => return Reply::Closed(error.to_string()),
            None => return Reply::Closed("end of stream".into()),
        }
    }
}

fn take_token(tokens: &AtomicU64) -> bool {
    tokens
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
}

/// Connects, retrying for a while: a backend may be restarting.
async fn connect(url: &str) -> Option<Ws> {
    for _ in 0..100 {
        match connect_async(url).await {
            Ok((ws, _)) => return Some(ws),
            Err(error) => {
                eprintln!("wasp-soak: connect: {error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    None
}

/// Whether a wasp warning or error is one the injected faults explain: the
/// three lines of a filter trap (the guest's panic at the probe's `trap`,
/// the discarded instance, the message forwarded failing open), or a line
/// naming a killed backend's address.
fn explained(line: &str, backends: &[SocketAddr]) -> bool {
    let trap = line.contains("panicked at tests/plugins/probe/src/lib.rs")
        || (line.contains("plugin call failed; instance discarded") && line.contains("trapped"))
        || line.contains("filter failed (fail-open): message forwarded unchanged");
    trap || backends.iter().any(|addr| line.contains(&addr.to_string()))
}

/// One reading of wasp: when, resident KiB, open descriptors, heap in use KiB.
type Sample = (Duration, u64, usize, u64);

/// The sum of the samples of series starting with `prefix` whose labels
/// contain `label`.
fn sum_samples(metrics: &str, prefix: &str, label: &str) -> u64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(prefix) && line.contains(label))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The admin listener's `/metrics`.
async fn admin_metrics(admin: SocketAddr) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(admin).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .await?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    Ok(text)
}

fn start_echo(binary: &Path, addr: SocketAddr) -> Result<Proc> {
    Ok(Proc(
        Command::new(binary)
            .args(["--threads", "1", "--listen"])
            .arg(addr.to_string())
            .stdout(Stdio::null())
            .spawn()
            .context("starting wasp-echo")?,
    ))
}

/// The component with a custom section appended: another file (another
/// plugin version to wasp) that behaves the same.
fn with_custom_section(component: &[u8], payload: &[u8]) -> Vec<u8> {
    let name = b"wasp-soak";
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(payload);
    let mut out = component.to_vec();
    out.push(0);
    let mut len = section.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(&section);
    out
}

fn free_addr() -> Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Waits until wasp answers the WebSocket (it compiles the filter first).
async fn wait_for(url: &str) -> Result<()> {
    let started = Instant::now();
    loop {
        match connect_async(url).await {
            Ok((mut ws, _)) => {
                let _ = ws.close(None).await;
                return Ok(());
            }
            Err(_) if started.elapsed() < Duration::from_secs(60) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(error) => return Err(error).context("wasp did not start"),
        }
    }
}
