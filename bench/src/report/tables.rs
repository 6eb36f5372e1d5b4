//! What each scenario's table shows: its title, an optional note, and its columns, each read from one run's
//! outcome (the report takes the median over rounds).

use crate::outcome::{EchoOutcome, HandshakeOutcome, IdleOutcome, Outcome, SpinnersOutcome};

/// A table column: a heading and how to read its value from one run.
pub struct Column {
    pub heading: &'static str,
    pub value: fn(&Outcome) -> Option<f64>,
    pub decimals: usize,
}

/// One scenario's table.
pub struct Table {
    pub title: String,
    /// A line under the heading, before the table.
    pub note: Option<&'static str>,
    /// The first column is also divided by the direct row's and nginx's (`÷ direct`, `÷ nginx`).
    pub ratios: bool,
    pub columns: Vec<Column>,
}

/// The table for the scenario whose first run is `outcome`.
pub fn describe(outcome: &Outcome) -> Table {
    match outcome {
        Outcome::Echo(e) => echo_table(e),
        Outcome::Handshake(h) => handshake_table(h),
        Outcome::Idle(i) => idle_table(i),
        Outcome::Spinners(s) => spinners_table(s),
    }
}

fn echo(o: &Outcome) -> Option<&EchoOutcome> {
    match o {
        Outcome::Echo(e) => Some(e),
        _ => None,
    }
}

fn handshake(o: &Outcome) -> Option<&HandshakeOutcome> {
    match o {
        Outcome::Handshake(h) => Some(h),
        _ => None,
    }
}

fn idle(o: &Outcome) -> Option<&IdleOutcome> {
    match o {
        Outcome::Idle(i) => Some(i),
        _ => None,
    }
}

fn spinners(o: &Outcome) -> Option<&SpinnersOutcome> {
    match o {
        Outcome::Spinners(s) => Some(s),
        _ => None,
    }
}

fn echo_table(e: &EchoOutcome) -> Table {
    let msgs = Column {
        heading: "msg/s",
        value: |o| echo(o).map(|e| e.msgs_per_sec),
        decimals: 0,
    };
    let p50 = Column {
        heading: "p50",
        value: |o| echo(o).map(|e| e.latency.p50_us),
        decimals: 0,
    };
    let p90 = Column {
        heading: "p90",
        value: |o| echo(o).map(|e| e.latency.p90_us),
        decimals: 0,
    };
    let p99 = Column {
        heading: "p99",
        value: |o| echo(o).map(|e| e.latency.p99_us),
        decimals: 0,
    };
    let p999 = Column {
        heading: "p99.9",
        value: |o| echo(o).map(|e| e.latency.p999_us),
        decimals: 0,
    };
    // The target's own CPU time per message (its processes, from /proc), whatever the others used.
    let cpu = Column {
        heading: "CPU µs/msg",
        value: |o| echo(o)?.cpu.map(|c| c.total_us_per_op()),
        decimals: 2,
    };
    let cpu_user = Column {
        heading: "of which user",
        value: |o| echo(o)?.cpu.map(|c| c.user_us_per_op),
        decimals: 2,
    };
    let (title, columns) = match (e.rate, e.in_flight) {
        (Some(rate), _) => (
            format!(
                "fixed rate {rate:.0} msg/s over {} connections, {} B messages, {} s (latency from scheduled send time)",
                e.connections, e.size, e.duration_s
            ),
            vec![p99, p50, p90, p999, msgs, cpu, cpu_user],
        ),
        (None, in_flight) => (
            format!(
                "closed loop, {} connections × {} in flight, {} B messages, {} s",
                e.connections,
                in_flight.unwrap_or(1),
                e.size,
                e.duration_s
            ),
            vec![msgs, p50, p90, p99, p999, cpu, cpu_user],
        ),
    };
    Table {
        title,
        note: None,
        ratios: true,
        columns,
    }
}

fn handshake_table(h: &HandshakeOutcome) -> Table {
    Table {
        title: format!(
            "{} concurrent cycles of connect + upgrade + one {} B echo + close, {} s",
            h.concurrency, h.size, h.duration_s
        ),
        note: None,
        ratios: true,
        columns: vec![
            Column {
                heading: "handshakes/s",
                value: |o| handshake(o).map(|h| h.handshakes_per_sec),
                decimals: 0,
            },
            Column {
                heading: "p50 ms",
                value: |o| handshake(o).map(|h| h.latency.p50_us / 1e3),
                decimals: 2,
            },
            Column {
                heading: "p99 ms",
                value: |o| handshake(o).map(|h| h.latency.p99_us / 1e3),
                decimals: 2,
            },
            Column {
                heading: "CPU µs/handshake",
                value: |o| handshake(o)?.cpu.map(|c| c.total_us_per_op()),
                decimals: 1,
            },
            Column {
                heading: "of which user",
                value: |o| handshake(o)?.cpu.map(|c| c.user_us_per_op),
                decimals: 1,
            },
        ],
    }
}

fn idle_table(i: &IdleOutcome) -> Table {
    let title = if i.echo_first {
        format!(
            "{} connections held idle after one echoed message each (through the filter on wasp-filter); resident \
             memory of the target's processes; served: a second echo after the reading came back unchanged too",
            i.requested
        )
    } else {
        format!(
            "{} connections held idle after the handshake, no message exchanged; resident memory of the target's \
             processes; served: answered a ping after the reading",
            i.requested
        )
    };
    Table {
        title,
        note: None,
        ratios: true,
        columns: vec![
            Column {
                heading: "KiB/conn",
                value: |o| idle(o)?.kib_per_conn,
                decimals: 1,
            },
            Column {
                heading: "opened",
                value: |o| idle(o).map(|i| f64::from(i.opened)),
                decimals: 0,
            },
            Column {
                heading: "served",
                value: |o| idle(o).map(|i| f64::from(i.served)),
                decimals: 0,
            },
            Column {
                heading: "RSS before MiB",
                value: |o| idle(o)?.rss_before_kib.map(|k| k as f64 / 1024.0),
                decimals: 1,
            },
            Column {
                heading: "RSS after MiB",
                value: |o| idle(o)?.rss_after_kib.map(|k| k as f64 / 1024.0),
                decimals: 1,
            },
        ],
    }
}

/// The target's CPU time in an echo phase's measured window, in % of one core.
fn cpu_percent(e: &EchoOutcome) -> Option<f64> {
    Some(e.cpu?.total_us_per_op() * e.msgs_per_sec / 1e4)
}

fn spinners_table(s: &SpinnersOutcome) -> Table {
    let e = &s.quiet;
    Table {
        title: format!(
            "{} connections echoing {} B at {:.0} msg/s in all (latency from scheduled send time), {} s alone, then \
             {} s while {} abusive connections a second each send `{}` to a location whose filter spins on it",
            e.connections,
            e.size,
            e.rate.unwrap_or_default(),
            e.duration_s,
            s.abused.duration_s,
            s.abusers_per_sec,
            s.spin_message
        ),
        note: Some(
            "Only wasp-filter runs this scenario: nginx and HAProxy run no filters, so nothing of theirs can spin. \
             An abusive connection's message costs its worker the per-call deadline (`call_timeout`), then the \
             connection (1011). CPU % is the target's CPU time in the measured window, in % of one core, the \
             abusers' included.",
        ),
        ratios: false,
        columns: vec![
            Column {
                heading: "p50 alone",
                value: |o| spinners(o).map(|s| s.quiet.latency.p50_us),
                decimals: 0,
            },
            Column {
                heading: "p99 alone",
                value: |o| spinners(o).map(|s| s.quiet.latency.p99_us),
                decimals: 0,
            },
            Column {
                heading: "p50 with abusers",
                value: |o| spinners(o).map(|s| s.abused.latency.p50_us),
                decimals: 0,
            },
            Column {
                heading: "p99 with abusers",
                value: |o| spinners(o).map(|s| s.abused.latency.p99_us),
                decimals: 0,
            },
            Column {
                heading: "p99 ÷ alone",
                value: |o| {
                    let s = spinners(o)?;
                    (s.quiet.latency.p99_us > 0.0)
                        .then(|| s.abused.latency.p99_us / s.quiet.latency.p99_us)
                },
                decimals: 2,
            },
            Column {
                heading: "CPU % alone",
                value: |o| cpu_percent(&spinners(o)?.quiet),
                decimals: 0,
            },
            Column {
                heading: "CPU % with abusers",
                value: |o| cpu_percent(&spinners(o)?.abused),
                decimals: 0,
            },
            Column {
                heading: "abusers",
                value: |o| spinners(o).map(|s| s.abusers.started as f64),
                decimals: 0,
            },
            Column {
                heading: "closed 1011",
                value: |o| spinners(o).map(|s| s.abusers.closed_1011 as f64),
                decimals: 0,
            },
            Column {
                heading: "refused",
                value: |o| spinners(o).map(|s| s.abusers.refused as f64),
                decimals: 0,
            },
            Column {
                heading: "answered",
                value: |o| spinners(o).map(|s| s.abusers.answered as f64),
                decimals: 0,
            },
            Column {
                heading: "other",
                value: |o| spinners(o).map(|s| s.abusers.other as f64),
                decimals: 0,
            },
        ],
    }
}
