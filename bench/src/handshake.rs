//! The `handshake` scenario: C workers each repeatedly connect, upgrade, send one message, await its echo and
//! close, measuring complete cycles per second and the time one cycle takes.

use std::{sync::Arc, time::Duration};

use anyhow::{Result, ensure};
use tokio::time::{Instant, sleep, timeout_at};

use crate::{
    cli::HandshakeArgs,
    connect::{Target, close, round_trip},
    cpu,
    errors::ErrorLog,
    histogram::Latencies,
    outcome::{HandshakeOutcome, Outcome},
    payload::{Clock, STAMP_LEN},
};

/// Longest time one cycle may take before it counts as an error.
const CYCLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after a failed cycle, so a refusing target does not turn the run into a busy loop.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// Runs the scenario and reports the cycles completed before the end of the run.
pub async fn run(args: &HandshakeArgs) -> Result<Outcome> {
    ensure!(
        args.size >= STAMP_LEN,
        "messages need at least {STAMP_LEN} bytes"
    );
    let target = Arc::new(Target::resolve(&args.target.url, args.target.sources).await?);
    let clock = Arc::new(Clock::new(args.size));
    let errors = Arc::new(ErrorLog::default());
    let started = Instant::now();
    let until = started + args.duration;
    let cpu = tokio::spawn(cpu::sample_window(args.target.pids.clone(), started, until));

    let workers: Vec<_> = (0..args.concurrency as usize)
        .map(|worker| {
            let (target, clock, errors) = (target.clone(), clock.clone(), errors.clone());
            let stride = args.concurrency as usize;
            tokio::spawn(async move {
                let mut latencies = Latencies::new();
                // Successive cycles of a worker rotate over the source addresses.
                for index in (worker..).step_by(stride) {
                    let started = Instant::now();
                    if started >= until {
                        break;
                    }
                    match timeout_at(started + CYCLE_TIMEOUT, cycle(&target, index, &clock)).await {
                        Ok(Ok(())) if Instant::now() <= until => {
                            latencies.record(started.elapsed())
                        }
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            errors.add(format!("{e:#}"));
                            sleep(ERROR_BACKOFF).await;
                        }
                        Err(_) => errors.add(format!("cycle took longer than {CYCLE_TIMEOUT:?}")),
                    }
                }
                latencies
            })
        })
        .collect();

    let mut latencies = Latencies::new();
    for worker in workers {
        latencies.merge(&worker.await?);
    }
    let duration_s = args.duration.as_secs_f64();
    let cpu = cpu::per_op(cpu.await??, latencies.len());
    Ok(Outcome::Handshake(HandshakeOutcome {
        url: target.url().to_owned(),
        concurrency: args.concurrency,
        size: args.size,
        duration_s,
        handshakes: latencies.len(),
        handshakes_per_sec: latencies.len() as f64 / duration_s,
        latency: latencies.summary(),
        cpu,
        errors: errors.count(),
        first_error: errors.first(),
    }))
}

/// One connection's life: upgrade, one message and its echo, closing handshake.
async fn cycle(target: &Target, index: usize, clock: &Clock) -> Result<()> {
    let mut ws = target.connect(index).await?;
    round_trip(&mut ws, clock.message(std::time::Instant::now())).await?;
    close(ws).await
}
