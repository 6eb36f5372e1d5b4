//! What a scenario run reports: one human-readable line, and the same as a JSON line for bench/run.sh.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::cpu::CpuUse;
use crate::histogram::LatencySummary;

/// The result of one scenario run, tagged by mode in JSON (`{"mode":"echo",…}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Outcome {
    Echo(EchoOutcome),
    Handshake(HandshakeOutcome),
    Idle(IdleOutcome),
    Spinners(Box<SpinnersOutcome>),
}

/// `echo`: messages echoed in the measured window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EchoOutcome {
    pub url: String,
    pub connections: u32,
    /// Messages in flight per connection; absent in fixed-rate runs.
    pub in_flight: Option<u32>,
    /// Requested total rate (messages/s); absent in closed-loop runs.
    pub rate: Option<f64>,
    pub size: usize,
    pub duration_s: f64,
    pub messages: u64,
    pub msgs_per_sec: f64,
    pub latency: LatencySummary,
    /// The `--pid` processes' CPU time per echoed message (absent without `--pid`).
    #[serde(default)]
    pub cpu: Option<CpuUse>,
    pub errors: u64,
    pub first_error: Option<String>,
}

/// `handshake`: connections set up, used once and closed in the measured window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandshakeOutcome {
    pub url: String,
    pub concurrency: u32,
    /// Size of the one message echoed per connection.
    pub size: usize,
    pub duration_s: f64,
    pub handshakes: u64,
    pub handshakes_per_sec: f64,
    /// Time for one whole cycle: connect, upgrade, one echoed message, close.
    pub latency: LatencySummary,
    /// The `--pid` processes' CPU time per handshake (absent without `--pid`).
    #[serde(default)]
    pub cpu: Option<CpuUse>,
    pub errors: u64,
    pub first_error: Option<String>,
}

/// `idle`: connections held open and the memory they cost the measured processes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdleOutcome {
    pub url: String,
    /// Each connection echoed one message before the reading (else none: handshake only).
    pub echo_first: bool,
    pub requested: u32,
    /// Connections whose upgrade completed.
    pub opened: u32,
    /// Connections held at the reading: the opened ones, less those whose first echo failed.
    pub held: u32,
    /// Held connections that passed the check after the reading (a ping round trip, or with `echo_first` a
    /// second echo), all held at once.
    pub served: u32,
    /// Time to open them all (and echo the first message).
    pub open_s: f64,
    pub pids: Vec<u32>,
    pub rss_before_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    /// RSS delta divided by the connections held.
    pub kib_per_conn: Option<f64>,
    pub errors: u64,
    pub first_error: Option<String>,
}

/// `spinners`: well-behaved connections' fixed-rate echo, alone and while abusive clients make a filter spin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpinnersOutcome {
    /// Where the abusive connections went.
    pub spin_url: String,
    pub abusers_per_sec: f64,
    /// The one text message each abusive connection sent.
    pub spin_message: String,
    /// The well-behaved connections alone.
    pub quiet: EchoOutcome,
    /// The same load while abusive connections kept arriving.
    pub abused: EchoOutcome,
    pub abusers: AbuseCounts,
}

/// What became of the abusive connections of a `spinners` run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AbuseCounts {
    /// Connections attempted.
    pub started: u64,
    /// Closed by the target with 1011 after their message (a fail-closed filter overran its deadline).
    pub closed_1011: u64,
    /// Upgrade refused, or no connection.
    pub refused: u64,
    /// Their message came back: nothing spun (a target without the spinning filter).
    pub answered: u64,
    /// Anything else: another close code, no answer within 5 s, a broken connection.
    pub other: u64,
    pub first_refused: Option<String>,
    pub first_other: Option<String>,
}

impl Outcome {
    /// Errors counted during the run.
    pub fn errors(&self) -> u64 {
        match self {
            Outcome::Echo(o) => o.errors,
            Outcome::Handshake(o) => o.errors,
            Outcome::Idle(o) => o.errors,
            Outcome::Spinners(o) => o.quiet.errors + o.abused.errors,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Echo(o) => {
                let load = match (o.rate, o.in_flight) {
                    (Some(rate), _) => format!("rate {rate} msg/s"),
                    (None, Some(m)) => format!("{m} in flight each"),
                    (None, None) => String::new(),
                };
                write!(
                    f,
                    "echo {}: {} conns, {}, {} B, {:.1}s: {} msgs, {:.0} msg/s, latency µs p50 {:.0} p90 {:.0} \
                     p99 {:.0} p99.9 {:.0} max {:.0}, {} errors",
                    o.url,
                    o.connections,
                    load,
                    o.size,
                    o.duration_s,
                    o.messages,
                    o.msgs_per_sec,
                    o.latency.p50_us,
                    o.latency.p90_us,
                    o.latency.p99_us,
                    o.latency.p999_us,
                    o.latency.max_us,
                    o.errors
                )?;
                write_cpu(f, o.cpu, "msg")?;
            }
            Outcome::Handshake(o) => {
                write!(
                    f,
                    "handshake {}: {} concurrent, {:.1}s: {} handshakes, {:.0}/s, cycle µs p50 {:.0} p99 {:.0} \
                     max {:.0}, {} errors",
                    o.url,
                    o.concurrency,
                    o.duration_s,
                    o.handshakes,
                    o.handshakes_per_sec,
                    o.latency.p50_us,
                    o.latency.p99_us,
                    o.latency.max_us,
                    o.errors
                )?;
                write_cpu(f, o.cpu, "handshake")?;
            }
            Outcome::Idle(o) => {
                let exchange = if o.echo_first {
                    "after one echo each"
                } else {
                    "no message"
                };
                write!(
                    f,
                    "idle ({exchange}) {}: {}/{} open, {} held in {:.1}s, {} served",
                    o.url, o.opened, o.requested, o.held, o.open_s, o.served
                )?;
                if let (Some(before), Some(after), Some(per)) =
                    (o.rss_before_kib, o.rss_after_kib, o.kib_per_conn)
                {
                    write!(
                        f,
                        ", RSS {before} → {after} KiB of pids {:?}, {per:.1} KiB/conn",
                        o.pids
                    )?;
                }
                write!(f, ", {} errors", o.errors)?;
            }
            Outcome::Spinners(o) => {
                let a = &o.abusers;
                write!(
                    f,
                    "spinners {}: {} conns at {} msg/s, latency µs p50 {:.0} p99 {:.0} alone, p50 {:.0} p99 {:.0} \
                     with {} abusive connections/s to {} ({} started: {} closed 1011, {} refused, {} answered, {} \
                     other), {} errors",
                    o.quiet.url,
                    o.quiet.connections,
                    o.quiet.rate.unwrap_or_default(),
                    o.quiet.latency.p50_us,
                    o.quiet.latency.p99_us,
                    o.abused.latency.p50_us,
                    o.abused.latency.p99_us,
                    o.abusers_per_sec,
                    o.spin_url,
                    a.started,
                    a.closed_1011,
                    a.refused,
                    a.answered,
                    a.other,
                    self.errors()
                )?;
                for (what, first) in [
                    (
                        "first error",
                        o.quiet
                            .first_error
                            .as_ref()
                            .or(o.abused.first_error.as_ref()),
                    ),
                    ("first refusal", a.first_refused.as_ref()),
                    ("first other", a.first_other.as_ref()),
                ] {
                    if let Some(first) = first {
                        write!(f, " ({what}: {first})")?;
                    }
                }
            }
        }
        match self {
            Outcome::Echo(EchoOutcome {
                first_error: Some(e),
                ..
            })
            | Outcome::Handshake(HandshakeOutcome {
                first_error: Some(e),
                ..
            })
            | Outcome::Idle(IdleOutcome {
                first_error: Some(e),
                ..
            }) => write!(f, " (first: {e})"),
            _ => Ok(()),
        }
    }
}

/// `, target CPU 2.20 µs/msg (user 0.25)` when the CPU time was measured.
fn write_cpu(f: &mut fmt::Formatter<'_>, cpu: Option<CpuUse>, op: &str) -> fmt::Result {
    match cpu {
        Some(cpu) => write!(
            f,
            ", target CPU {:.2} µs/{op} (user {:.2})",
            cpu.total_us_per_op(),
            cpu.user_us_per_op
        ),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_tagged_by_mode_and_round_trips() {
        let outcome = Outcome::Idle(IdleOutcome {
            url: "ws://127.0.0.1:9001/".into(),
            echo_first: false,
            requested: 10,
            opened: 10,
            held: 10,
            served: 9,
            open_s: 0.1,
            pids: vec![42],
            rss_before_kib: Some(1_000),
            rss_after_kib: Some(1_500),
            kib_per_conn: Some(50.0),
            errors: 0,
            first_error: None,
        });
        let json = serde_json::to_string(&outcome).unwrap();
        assert!(json.starts_with(r#"{"mode":"idle","#), "{json}");
        assert_eq!(serde_json::from_str::<Outcome>(&json).unwrap(), outcome);
        let line = outcome.to_string();
        assert!(
            line.contains("10/10 open, 10 held")
                && line.contains("9 served")
                && line.contains("50.0 KiB/conn"),
            "{line}"
        );
    }
}
