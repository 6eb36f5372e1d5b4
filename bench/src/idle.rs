//! The `idle` scenario: open N connections, hold them, and read how much the measured processes' resident memory
//! grew per connection held; then check that every one is still served, all N being held at once.
//!
//! Two variants, told apart by `--echo-first` (bench/run.sh's `idle` and `idle-after-echo`):
//! - without it, a connection completes the handshake and exchanges no message before the reading: what an idle
//!   WebSocket costs. After the reading, a ping round trip proves it still open end to end
//!   ([`ping_pong`] says who answers);
//! - with it, once all are open, each echoes one message through the target (through its filter, where the target
//!   filters), then idles: what a connection that has been used costs. After the reading each echoes a second
//!   message: served means both echoes came back unchanged.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, anyhow, ensure};
use futures_util::{StreamExt, stream};
use tokio::time::{Instant, sleep, timeout};
use tokio_tungstenite::tungstenite::Message;

use crate::{
    cli::IdleArgs,
    connect::{Target, Ws, ping_pong, round_trip},
    errors::ErrorLog,
    outcome::{IdleOutcome, Outcome},
    rss::tree_rss_kib,
};

/// File descriptors kept free for everything else the load generator opens.
const SPARE_FDS: u64 = 64;

/// Longest time one connection may take to open, or to pass a check.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

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
    let concurrency = args.concurrency as usize;

    let started = Instant::now();
    let held: Vec<Held> = stream::iter(0..args.connections as usize)
        .map(|index| {
            let target = target.clone();
            async move {
                let ws = limited(target.connect(index)).await?;
                Ok(Held { index, ws })
            }
        })
        .buffer_unordered(concurrency)
        .filter_map(|result: Result<Held>| {
            let kept = result.map_err(|e| errors.add(format!("{e:#}"))).ok();
            async move { kept }
        })
        .collect()
        .await;
    let opened = u32::try_from(held.len())?;
    // A connection closed on its first message (a proxy answering 101, then closing) costs the target nothing
    // any more: it is not held, so the memory is divided by the connections really held.
    let held = if args.echo_first {
        check_all(held, Check::Echo { round: 0 }, concurrency, &errors).await
    } else {
        held
    };
    let open_s = started.elapsed().as_secs_f64();

    sleep(args.settle).await;
    let rss_after_kib = rss()?;
    let held_at_reading = u32::try_from(held.len())?;
    let after = if args.echo_first {
        Check::Echo { round: 1 }
    } else {
        Check::Ping
    };
    let held = check_all(held, after, concurrency, &errors).await;
    let served = u32::try_from(held.len())?;
    sleep(args.hold).await;
    drop(held);

    let kib_per_conn = match (rss_before_kib, rss_after_kib) {
        (Some(before), Some(after)) if held_at_reading > 0 => {
            Some((after as f64 - before as f64) / f64::from(held_at_reading))
        }
        _ => None,
    };
    Ok(Outcome::Idle(IdleOutcome {
        url: target.url().to_owned(),
        echo_first: args.echo_first,
        requested: args.connections,
        opened,
        held: held_at_reading,
        served,
        open_s,
        pids: args.target.pids.clone(),
        rss_before_kib,
        rss_after_kib,
        kib_per_conn,
        errors: errors.count(),
        first_error: errors.first(),
    }))
}

/// An open connection and the index it was opened with.
struct Held {
    index: usize,
    ws: Ws,
}

/// How a held connection proves it is served.
#[derive(Debug, Clone, Copy)]
enum Check {
    /// A ping round trip: a control frame, which no filter sees.
    Ping,
    /// One binary message echoed unchanged; `round` 0 before the reading, 1 after.
    Echo { round: u8 },
}

impl Check {
    /// Runs the check on one connection, within [`STEP_TIMEOUT`].
    async fn run(self, held: &mut Held) -> Result<()> {
        // Distinct per connection and round, so an echo from another connection or a stale one is caught.
        let mut payload = u64::try_from(held.index)?.to_le_bytes().to_vec();
        limited(async move {
            match self {
                Check::Ping => ping_pong(&mut held.ws, payload.into()).await,
                Check::Echo { round } => {
                    payload.push(round);
                    round_trip(&mut held.ws, Message::binary(payload)).await
                }
            }
        })
        .await
    }
}

/// Runs `check` on every connection, `concurrency` at a time; keeps those that passed and counts the others'
/// errors.
async fn check_all(
    held: Vec<Held>,
    check: Check,
    concurrency: usize,
    errors: &ErrorLog,
) -> Vec<Held> {
    stream::iter(held)
        .map(|mut held| async move {
            match check.run(&mut held).await {
                Ok(()) => Some(held),
                Err(e) => {
                    errors.add(format!("{e:#}"));
                    None
                }
            }
        })
        .buffer_unordered(concurrency)
        .filter_map(|kept| async move { kept })
        .collect()
        .await
}

/// `step` bounded by [`STEP_TIMEOUT`].
async fn limited<T>(step: impl Future<Output = Result<T>>) -> Result<T> {
    timeout(STEP_TIMEOUT, step)
        .await
        .unwrap_or_else(|_| Err(anyhow!("no answer within {STEP_TIMEOUT:?}")))
}
