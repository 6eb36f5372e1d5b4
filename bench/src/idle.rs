//! The `idle` scenario: open N connections (each proven by one echoed message), hold them, and read how much the
//! measured processes' resident memory grew per connection.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, ensure};
use futures_util::{StreamExt, stream};
use tokio::time::{Instant, sleep, timeout};
use tokio_tungstenite::tungstenite::Message;

use crate::{
    cli::IdleArgs,
    connect::{Target, Ws, round_trip},
    errors::ErrorLog,
    outcome::{IdleOutcome, Outcome},
    rss::tree_rss_kib,
};

/// File descriptors kept free for everything else the load generator opens.
const SPARE_FDS: u64 = 64;

/// Longest time one connection may take to open.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the scenario; `nofile` is the load generator's own open-file limit.
pub async fn run(args: &IdleArgs, nofile: u64) -> Result<Outcome> {
    ensure!(
        u64::from(args.connections) + SPARE_FDS <= nofile,
        "{} connections need more than the {nofile} open files this process may have",
        args.connections
    );
    let target = Arc::new(Target::resolve(&args.target.url, args.target.sources).await?);
    let rss = || -> Result<Option<u64>> {
        Ok(if args.target.pids.is_empty() {
            None
        } else {
            Some(tree_rss_kib(&args.target.pids)?)
        })
    };
    let rss_before_kib = rss()?;
    let errors = ErrorLog::default();

    let started = Instant::now();
    let held: Vec<Ws> = stream::iter(0..args.connections as usize)
        .map(|index| {
            let target = target.clone();
            async move {
                timeout(OPEN_TIMEOUT, open(&target, index))
                    .await
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("not open within {OPEN_TIMEOUT:?}")))
            }
        })
        .buffer_unordered(args.concurrency as usize)
        .filter_map(|result| {
            let kept = result.map_err(|e| errors.add(format!("{e:#}"))).ok();
            async move { kept }
        })
        .collect()
        .await;
    let open_s = started.elapsed().as_secs_f64();

    sleep(args.settle).await;
    let rss_after_kib = rss()?;
    sleep(args.hold).await;
    let opened = u32::try_from(held.len())?;
    drop(held);

    let kib_per_conn = match (rss_before_kib, rss_after_kib) {
        (Some(before), Some(after)) if opened > 0 => {
            Some((after as f64 - before as f64) / f64::from(opened))
        }
        _ => None,
    };
    Ok(Outcome::Idle(IdleOutcome {
        url: target.url().to_owned(),
        requested: args.connections,
        opened,
        open_s,
        pids: args.target.pids.clone(),
        rss_before_kib,
        rss_after_kib,
        kib_per_conn,
        errors: errors.count(),
        first_error: errors.first(),
    }))
}

/// Opens one connection and checks it end to end with one echoed message.
async fn open(target: &Target, index: usize) -> Result<Ws> {
    let mut ws = target.connect(index).await?;
    let probe = Message::binary(u64::try_from(index)?.to_le_bytes().to_vec());
    round_trip(&mut ws, probe).await?;
    Ok(ws)
}
