//! `wasp-echo`: the WebSocket echo backend the benchmarks run behind every proxy (see `wasp_bench::backend`).

use std::net::SocketAddr;

use anyhow::{Context, Result};
use clap::Parser;
use tokio::net::TcpSocket;

/// WebSocket echo backend: echoes text and binary messages, answers plain HTTP with 200.
#[derive(Debug, Parser)]
#[command(name = "wasp-echo", version)]
struct Args {
    /// Address to listen on (port 0: any free port; the address is printed on the first line).
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: SocketAddr,
    /// Worker threads (default: one per CPU).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    wasp_bench::rlimit::raise_nofile().context("raising the open-file limit")?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads);
    }
    runtime.enable_all().build()?.block_on(async {
        let socket = match args.listen {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket
            .bind(args.listen)
            .with_context(|| format!("binding {}", args.listen))?;
        let listener = socket.listen(4096)?;
        println!("wasp-echo listening on {}", listener.local_addr()?);
        wasp_bench::backend::serve(listener).await;
        Ok(())
    })
}
