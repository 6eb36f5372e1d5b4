//! `wasp-reload`: how fast a replaced filter `.wasm` goes into service, and
//! what reloading costs the traffic. Run by `bench/reload.sh`.
//!
//! Starts an echo backend and `wasp` with one location filtered by a file
//! holding `--filter-a` (a filter tagging text messages `A>`/`A<`), then
//! keeps `--connections` WebSockets echoing (closed loop, `WINDOW` messages
//! in flight each). It measures the echo rate for `--phase` without reloads,
//! then replaces the file `--reloads` times, alternating `--filter-b` and
//! `--filter-a` (written next to it and renamed over it), each time timing
//! from the rename to the first reply tagged by the new version on a probe
//! connection, and measures the echo rate over that reloading phase. Prints
//! Markdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Messages each load connection keeps in flight.
const WINDOW: u64 = 4;

#[derive(Debug, Parser)]
#[command(name = "wasp-reload")]
struct Args {
    /// The wasp binary (a release build).
    #[arg(long)]
    wasp: PathBuf,
    /// The filter component in service first (tags messages `A`).
    #[arg(long)]
    filter_a: PathBuf,
    /// The other version (tags messages `B`).
    #[arg(long)]
    filter_b: PathBuf,
    #[arg(long, default_value_t = 50)]
    connections: usize,
    #[arg(long, default_value_t = 20)]
    reloads: usize,
    /// Length of the phase without reloads.
    #[arg(long, default_value = "5s", value_parser = wasp_bench::cli::parse_duration)]
    phase: Duration,
}

/// Stops wasp when dropped.
struct Wasp(Child);

impl Drop for Wasp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let versions = [
        std::fs::read(&args.filter_a)?,
        std::fs::read(&args.filter_b)?,
    ];
    let dir = std::env::temp_dir().join(format!("wasp-reload-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let filter = dir.join("filter.wasm");
    std::fs::write(&filter, &versions[0])?;

    let backend = TcpListener::bind("127.0.0.1:0").await?;
    let backend_addr = backend.local_addr()?;
    tokio::spawn(wasp_bench::backend::serve(backend));
    let listen = free_addr()?;
    let config = dir.join("wasp.toml");
    std::fs::write(
        &config,
        format!(
            "[upstreams.echo]\nservers = [\"{backend_addr}\"]\n\n[[server]]\nlisten = \"{listen}\"\n\n\
             [[server.location]]\npath = \"/\"\nproxy_pass = \"http://echo\"\nfilters = [\"{}\"]\n",
            filter.display()
        ),
    )?;
    let _wasp = Wasp(
        Command::new(&args.wasp)
            .args(["run", "-c"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("starting wasp")?,
    );
    let url = format!("ws://{listen}/");
    let mut probe = wait_for_wasp(&url).await?;
    if tag_of(&mut probe).await? != b'A' {
        bail!("the first filter does not tag messages with A");
    }

    let echoed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..args.connections {
        let (ws, _) = connect_async(url.as_str()).await?;
        clients.push(tokio::spawn(load(ws, echoed.clone(), stop.clone())));
    }

    tokio::time::sleep(Duration::from_secs(1)).await;
    let (before, started) = (echoed.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(args.phase).await;
    let quiet_rate =
        (echoed.load(Ordering::Relaxed) - before) as f64 / started.elapsed().as_secs_f64();

    let mut latencies = Vec::new();
    let (before, started) = (echoed.load(Ordering::Relaxed), Instant::now());
    for reload in 0..args.reloads {
        let next = (reload + 1) % 2;
        let temporary = dir.join("filter.wasm.tmp");
        std::fs::write(&temporary, &versions[next])?;
        std::fs::rename(&temporary, &filter)?;
        let written = Instant::now();
        loop {
            if tag_of(&mut probe).await? == [b'A', b'B'][next] {
                break;
            }
            if written.elapsed() > Duration::from_secs(30) {
                bail!("reload {reload} did not show within 30 s");
            }
        }
        latencies.push(written.elapsed());
    }
    let reloading = started.elapsed();
    let reload_rate = (echoed.load(Ordering::Relaxed) - before) as f64 / reloading.as_secs_f64();

    stop.store(true, Ordering::Relaxed);
    let mut failed = 0;
    for client in clients {
        if let Err(error) = client.await? {
            eprintln!("wasp-reload: a load connection failed: {error:#}");
            failed += 1;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);

    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let percentile = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    println!("| reloads | median ms | p99 ms | min ms | max ms |");
    println!("| ---: | ---: | ---: | ---: | ---: |");
    println!(
        "| {} | {:.1} | {:.1} | {:.1} | {:.1} |",
        latencies.len(),
        ms(percentile(0.5)),
        ms(percentile(0.99)),
        ms(latencies[0]),
        ms(latencies[latencies.len() - 1]),
    );
    println!();
    println!("| phase | msg/s | duration s | failed connections |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| no reloads | {quiet_rate:.0} | {:.1} | – |",
        args.phase.as_secs_f64()
    );
    println!(
        "| {} reloads back to back | {reload_rate:.0} | {:.1} | {failed} |",
        args.reloads,
        reloading.as_secs_f64()
    );
    Ok(())
}

fn free_addr() -> Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Connects once wasp listens (it compiles the filter first).
async fn wait_for_wasp(url: &str) -> Result<Ws> {
    let started = Instant::now();
    loop {
        match connect_async(url).await {
            Ok((ws, _)) => return Ok(ws),
            Err(_) if started.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(error) => return Err(error).context("wasp did not start"),
        }
    }
}

/// The tag of the filter version that passed an echo back to the client.
async fn tag_of(ws: &mut Ws) -> Result<u8> {
    ws.send(Message::text("probe")).await?;
    match ws.next().await {
        Some(Ok(Message::Text(text))) => Ok(text.as_bytes()[0]),
        other => bail!("probe: unexpected {other:?}"),
    }
}

/// Echoes with `WINDOW` messages in flight until `stop`, counting replies.
async fn load(ws: Ws, echoed: Arc<AtomicU64>, stop: Arc<AtomicBool>) -> Result<()> {
    let (mut tx, mut rx) = ws.split();
    let (mut sent, mut received) = (0u64, 0u64);
    while !stop.load(Ordering::Relaxed) || received < sent {
        if !stop.load(Ordering::Relaxed) && sent - received < WINDOW {
            tx.send(Message::text(format!("m{sent}"))).await?;
            sent += 1;
            continue;
        }
        match rx.next().await {
            Some(Ok(Message::Text(text))) if text.ends_with(&format!("m{received}")) => {
                received += 1
            }
            other => bail!("expected the echo of m{received}, got {other:?}"),
        }
        echoed.fetch_add(1, Ordering::Relaxed);
    }
    tx.send(Message::Close(None)).await?;
    Ok(())
}
