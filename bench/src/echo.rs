//! The `echo` scenario: N connections sending stamped binary messages that the target echoes back.
//!
//! Closed loop (default): each connection keeps M messages in flight and sends a new one for every echo, which
//! measures the most messages/s the target sustains. Fixed rate (`--rate R`): each connection sends on its own
//! schedule, R/N messages/s, and latency counts from the *scheduled* send time (less up to 2 ms of the timer's own
//! lateness), so a stall delays every message behind it in the histogram too (no coordinated omission).

use std::{sync::Arc, time::Duration};

use anyhow::{Result, anyhow, ensure};
use futures_util::{FutureExt, SinkExt, StreamExt, stream::SplitStream};
use tokio::time::{Instant, MissedTickBehavior, interval_at, timeout_at};
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message};

use crate::{
    cli::EchoArgs,
    connect::{Target, Ws, close},
    cpu,
    errors::ErrorLog,
    histogram::Latencies,
    outcome::{EchoOutcome, Outcome},
    payload::{Clock, STAMP_LEN},
};

/// How long to wait for outstanding echoes after the measured window.
const DRAIN: Duration = Duration::from_secs(5);

/// How late tokio's millisecond timer may wake a fixed-rate sender before the lateness counts as latency.
const TIMER_SLACK: Duration = Duration::from_millis(2);

/// Timing shared by all connections of one run.
struct Window {
    clock: Clock,
    /// Echoes received from here on are measured.
    from: Instant,
    /// No new messages are sent from here on, and echoes are no longer measured.
    until: Instant,
}

impl Window {
    fn measures(&self, at: Instant) -> bool {
        at >= self.from && at < self.until
    }
}

/// Runs the scenario and reports the echoes received in the measured window.
pub async fn run(args: &EchoArgs) -> Result<Outcome> {
    Ok(Outcome::Echo(measure(args).await?))
}

/// The scenario's measurement, for scenarios built on it.
pub async fn measure(args: &EchoArgs) -> Result<EchoOutcome> {
    ensure!(
        args.size >= STAMP_LEN,
        "messages need at least {STAMP_LEN} bytes for the send time"
    );
    let target = Arc::new(Target::resolve(&args.target.url, args.target.sources).await?);
    let start = Instant::now();
    let window = Arc::new(Window {
        clock: Clock::new(args.size),
        from: start + args.warmup,
        until: start + args.warmup + args.duration,
    });
    let errors = Arc::new(ErrorLog::default());
    let cpu = tokio::spawn(cpu::sample_window(
        args.target.pids.clone(),
        window.from,
        window.until,
    ));
    let per_connection = args
        .rate
        .map(|rate| Duration::from_secs_f64(f64::from(args.connections) / rate));

    let tasks: Vec<_> = (0..args.connections)
        .map(|i| {
            let (target, window, errors) = (target.clone(), window.clone(), errors.clone());
            let (in_flight, connections) = (args.in_flight, args.connections);
            tokio::spawn(async move {
                let mut latencies = Latencies::new();
                let result = match target.connect(i as usize).await {
                    Ok(ws) => match per_connection {
                        None => closed_loop(ws, in_flight, &window, &mut latencies).await,
                        Some(period) => {
                            // Stagger the connections' schedules evenly over one period.
                            let offset = period.mul_f64(f64::from(i) / f64::from(connections));
                            fixed_rate(ws, period, offset, &window, &mut latencies).await
                        }
                    },
                    Err(e) => Err(e),
                };
                if let Err(e) = result {
                    errors.add(format!("{e:#}"));
                }
                latencies
            })
        })
        .collect();

    let mut latencies = Latencies::new();
    for task in tasks {
        latencies.merge(&task.await?);
    }
    let duration_s = args.duration.as_secs_f64();
    let cpu = cpu::per_op(cpu.await??, latencies.len());
    Ok(EchoOutcome {
        url: target.url().to_owned(),
        connections: args.connections,
        in_flight: args.rate.is_none().then_some(args.in_flight),
        rate: args.rate,
        size: args.size,
        duration_s,
        messages: latencies.len(),
        msgs_per_sec: latencies.len() as f64 / duration_s,
        latency: latencies.summary(),
        cpu,
        errors: errors.count(),
        first_error: errors.first(),
    })
}

/// Keeps `in_flight` messages outstanding until the window ends, then waits for the last echoes.
async fn closed_loop(
    mut ws: Ws,
    in_flight: u32,
    window: &Window,
    latencies: &mut Latencies,
) -> Result<()> {
    for _ in 0..in_flight {
        ws.feed(window.clock.message(Instant::now().into_std()))
            .await?;
    }
    ws.flush().await?;
    let mut outstanding = in_flight;
    while outstanding > 0 {
        let first = timeout_at(window.until + DRAIN, ws.next())
            .await
            .map_err(|_| anyhow!("{outstanding} echoes still missing {DRAIN:?} after the end"))?;
        // Answer every echo already buffered before writing, so one flush carries several messages.
        let mut next = Some(first);
        while let Some(item) = next {
            if let Some(payload) = echoed_payload(item)? {
                let now = Instant::now();
                let latency = window
                    .clock
                    .latency(&payload, now.into_std())
                    .ok_or_else(|| anyhow!("short echo"))?;
                if window.measures(now) {
                    latencies.record(latency);
                }
                outstanding -= 1;
                if now < window.until {
                    ws.feed(window.clock.message(now.into_std())).await?;
                    outstanding += 1;
                }
            }
            next = ws.next().now_or_never();
        }
        ws.flush().await?;
    }
    close(ws).await
}

/// Sends one message every `period` (starting after `offset`) until the window ends, stamping each with its
/// scheduled time (plus at most [`TIMER_SLACK`]), while the receiving side records latencies.
async fn fixed_rate(
    ws: Ws,
    period: Duration,
    offset: Duration,
    window: &Window,
    latencies: &mut Latencies,
) -> Result<()> {
    let (mut sink, mut stream) = ws.split();
    let clock = window.clock.clone();
    let until = window.until;
    let sender = tokio::spawn(async move {
        let mut ticker = interval_at(Instant::now() + offset, period);
        // Late ticks fire at once, keeping their scheduled times: the delay lands in the latencies.
        ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let mut sent = 0u64;
        loop {
            let scheduled = ticker.tick().await;
            if scheduled >= until {
                return Ok::<_, anyhow::Error>((sink, sent));
            }
            // Forgive the timer's own lateness up to TIMER_SLACK; any delay beyond it (the socket was full, the
            // generator fell behind) counts against the target, as the scheduled time would.
            let stamp = Instant::now().min(scheduled + TIMER_SLACK);
            sink.send(clock.message(stamp.into_std())).await?;
            sent += 1;
        }
    });

    let mut received = 0u64;
    let mut record = |payload: &[u8]| -> Result<()> {
        let now = Instant::now();
        let latency = window
            .clock
            .latency(payload, now.into_std())
            .ok_or_else(|| anyhow!("short echo"))?;
        if window.measures(now) {
            latencies.record(latency);
        }
        Ok(())
    };
    while let Some(payload) = next_echo(&mut stream, until).await? {
        record(&payload)?;
        received += 1;
    }
    let (sink, sent) = sender.await??;
    while received < sent {
        let payload = next_echo(&mut stream, until + DRAIN)
            .await?
            .ok_or_else(|| {
                anyhow!(
                    "{} echoes still missing {DRAIN:?} after the end",
                    sent - received
                )
            })?;
        record(&payload)?;
        received += 1;
    }
    close(sink.reunite(stream)?).await
}

/// The next echoed payload, or `None` when `deadline` passes first.
async fn next_echo(stream: &mut SplitStream<Ws>, deadline: Instant) -> Result<Option<Bytes>> {
    loop {
        let Ok(item) = timeout_at(deadline, stream.next()).await else {
            return Ok(None);
        };
        if let Some(payload) = echoed_payload(item)? {
            return Ok(Some(payload));
        }
    }
}

/// The payload of an echoed message; `None` for control frames, an error for anything unexpected.
fn echoed_payload(item: Option<Result<Message, WsError>>) -> Result<Option<Bytes>> {
    match item {
        Some(Ok(Message::Binary(payload))) => Ok(Some(payload)),
        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Ok(None),
        Some(Ok(Message::Text(_))) => Err(anyhow!("text message where a binary echo was expected")),
        Some(Ok(Message::Close(frame))) => Err(anyhow!("closed by the target: {frame:?}")),
        Some(Err(e)) => Err(e.into()),
        None => Err(anyhow!("connection ended without a close frame")),
    }
}
