//! `wasp-chat`: the WebSocket chat backend of wasp's chat example.
//!
//! It serves one endpoint, `ws://<listen>/ws/chat`, speaking the JSON protocol of [`protocol`].
//! Static files are wasp's job. With `--redis`, several backends behind wasp share their rooms.
//!
//! Once it accepts connections it prints `wasp-chat listening on <address>` on stdout; logs go to
//! stderr (`RUST_LOG` filters them, `info` by default).

mod fanout;
mod protocol;
mod rooms;
mod session;

use anyhow::Context;
use clap::Parser;
use fanout::Hub;
use std::io::{IsTerminal, Write};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

/// Chat rooms over WebSockets, to run behind wasp.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Share rooms with other backends through this Redis server, e.g. redis://127.0.0.1:6379.
    #[arg(long)]
    redis: Option<String>,
    /// This backend's name, shown to clients; must be unique among backends sharing a Redis
    /// server. Default: the listen address.
    #[arg(long)]
    name: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let args = Args::parse();

    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let name = args.name.unwrap_or_else(|| addr.to_string());

    let (hub, subscriber) = match &args.redis {
        None => (Hub::local(name), None),
        Some(url) => {
            let (hub, task) = Hub::with_redis(name, url).await?;
            (hub, Some(task))
        }
    };
    tracing::info!(
        backend = hub.backend(),
        redis = args.redis.as_deref().unwrap_or("-"),
        "ready"
    );
    println!("wasp-chat listening on {addr}");
    std::io::stdout().flush()?;

    let accept = async {
        let mut next_client = 0;
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    next_client += 1;
                    tokio::spawn(session::serve(stream, peer, next_client, hub.clone()));
                }
                Err(e) => tracing::warn!("accept failed: {e}"),
            }
        }
    };
    let subscription_lost = async {
        match subscriber {
            Some(task) => task.await?,
            None => std::future::pending().await,
        }
    };

    let outcome = tokio::select! {
        () = accept => Ok(()),
        result = subscription_lost => result,
        result = shutdown_signal() => result,
    };
    hub.shutdown().await;
    tracing::info!("stopped");
    outcome
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
