//! A WebSocket client for Autobahn|Testsuite's fuzzingserver, as Autobahn's
//! own testee clients are written: `getCaseCount`, then for every case
//! `runCase?case=N&agent=AGENT`, echoing every message back until the server
//! closes, then `updateReports?agent=AGENT`. tungstenite does the protocol
//! (the client is conformant on its own); pointed at wasp instead of the
//! fuzzingserver, it puts wasp's upstream side (the relay as a WebSocket
//! client to its backend) under the fuzzingserver's cases.
//!
//! usage: wasp-autobahn-client BASE_URL AGENT
//!   BASE_URL: the fuzzingserver (`ws://127.0.0.1:9001`) or a wasp location
//!   proxying to it (`ws://127.0.0.1:8080/raw`); paths are appended to it.

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::{Error, Message};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(base), Some(agent)) = (args.next(), args.next()) else {
        bail!("usage: wasp-autobahn-client BASE_URL AGENT");
    };
    let base = base.trim_end_matches('/');
    let count = case_count(base).await?;
    eprintln!("{count} cases for agent {agent} at {base}");
    for case in 1..=count {
        let url = format!("{base}/runCase?case={case}&agent={agent}");
        if let Err(error) = run_case(&url).await {
            // A failed connection is what many cases expect; the server grades it.
            eprintln!("case {case}: {error}");
        }
    }
    let url = format!("{base}/updateReports?agent={agent}");
    let (mut ws, _) = connect_async(&url).await.context("updateReports")?;
    ws.close(None).await.ok();
    while ws.next().await.is_some() {}
    Ok(())
}

/// The number of cases the server runs: one text message on `getCaseCount`.
async fn case_count(base: &str) -> Result<u32> {
    let (mut ws, _) = connect_async(format!("{base}/getCaseCount"))
        .await
        .context("getCaseCount")?;
    let count = loop {
        match ws.next().await.context("getCaseCount: no answer")?? {
            Message::Text(text) => break text.parse().context("getCaseCount: not a number")?,
            _ => continue,
        }
    };
    ws.close(None).await.ok();
    while ws.next().await.is_some() {}
    Ok(count)
}

/// Echoes every data message until the server closes (tungstenite answers
/// pings and the close itself, and fails the connection on a violation).
async fn run_case(url: &str) -> Result<(), Error> {
    let (mut ws, _) = connect_async(url).await?;
    while let Some(message) = ws.next().await {
        if let message @ (Message::Text(_) | Message::Binary(_)) = message? {
            ws.send(message).await?;
        }
    }
    Ok(())
}
