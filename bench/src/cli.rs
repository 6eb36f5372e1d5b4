//! The `wasp-bench` command line: one subcommand per scenario, plus `report`, and the parsers for durations
//! (`"500ms"`, `"10s"`, `"2m"`) and sizes (`"64"`, `"16k"`, `"1m"`).

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

/// WebSocket load generator for wasp, nginx, HAProxy and direct connections.
#[derive(Debug, Parser)]
#[command(name = "wasp-bench", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The scenarios, and the report writer.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// N connections echoing messages: closed loop with M in flight each, or a fixed total rate.
    Echo(EchoArgs),
    /// New connections per second, each doing upgrade + one message + close.
    Handshake(HandshakeArgs),
    /// Open N connections, hold them idle (with --echo-first: after one echoed message each), and report the
    /// target processes' memory per connection and how many connections were served.
    Idle(IdleArgs),
    /// Fixed-rate echo over well-behaved connections, first alone, then while abusive clients keep opening
    /// connections whose one message makes their filter spin until the per-call deadline.
    Spinners(SpinnersArgs),
    /// Turn the JSON lines collected by bench/run.sh into the Markdown section of BENCHMARKS.md.
    Report(ReportArgs),
}

/// Options every scenario shares.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// WebSocket URL of the proxy or backend under test (ws:// only).
    #[arg(long, default_value = "ws://127.0.0.1:9001/")]
    pub url: String,
    /// Spread connections over this many source addresses 127.0.0.2, 127.0.0.3, … (0: let the kernel choose).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(0..=250))]
    pub sources: u8,
    /// Also print the results as a single JSON line.
    #[arg(long)]
    pub json: bool,
    /// Process whose CPU time per operation (echo, handshake) or resident memory (idle) is measured, with its
    /// descendants; repeatable.
    #[arg(long = "pid")]
    pub pids: Vec<u32>,
}

/// `wasp-bench echo`.
#[derive(Debug, Clone, Args)]
pub struct EchoArgs {
    #[command(flatten)]
    pub target: Target,
    /// Connections.
    #[arg(short, long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub connections: u32,
    /// Messages in flight per connection (closed loop; ignored with --rate).
    #[arg(short = 'm', long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub in_flight: u32,
    /// Message size (at least 8 bytes, which carry the send time).
    #[arg(short, long, default_value = "64", value_parser = parse_size)]
    pub size: usize,
    /// Measured time.
    #[arg(short, long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Unmeasured time before it (connecting, warming caches).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Fixed total rate in messages/s, spread over the connections; latency then counts from each message's
    /// scheduled send time, so a stalled target cannot hide its delay (no coordinated omission).
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<f64>,
}

/// `wasp-bench handshake`.
#[derive(Debug, Clone, Args)]
pub struct HandshakeArgs {
    #[command(flatten)]
    pub target: Target,
    /// Connections being set up at the same time.
    #[arg(short, long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,
    /// Size of the one message sent on each connection.
    #[arg(short, long, default_value = "64", value_parser = parse_size)]
    pub size: usize,
    /// Measured time.
    #[arg(short, long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
}

/// `wasp-bench idle`.
#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    #[command(flatten)]
    pub target: Target,
    /// Connections to open and hold.
    #[arg(short = 'n', long, default_value_t = 9_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub connections: u32,
    /// Handshakes in progress at the same time while opening.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,
    /// Wait this long after the last connection opened before reading memory.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub settle: Duration,
    /// Keep the connections open this long after the reading.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub hold: Duration,
    /// Each connection echoes one message before the reading (and another after it) instead of exchanging none
    /// (and a ping after it).
    #[arg(long)]
    pub echo_first: bool,
}

/// `wasp-bench spinners`.
#[derive(Debug, Clone, Args)]
pub struct SpinnersArgs {
    /// The well-behaved connections' target (`--url`, a location whose filter forwards messages).
    #[command(flatten)]
    pub target: Target,
    /// WebSocket URL of a location whose filter spins on `--spin-message`.
    #[arg(long)]
    pub spin_url: String,
    /// Well-behaved connections.
    #[arg(short, long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub connections: u32,
    /// Total rate of the well-behaved connections' messages, in messages/s.
    #[arg(long, default_value = "2000", value_parser = parse_rate)]
    pub rate: f64,
    /// Size of the well-behaved messages (at least 8 bytes, which carry the send time).
    #[arg(short, long, default_value = "64", value_parser = parse_size)]
    pub size: usize,
    /// Measured time of each phase (without, then with abusers).
    #[arg(short, long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Unmeasured time before each phase.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// New abusive connections per second during the second phase.
    #[arg(long, default_value = "50", value_parser = parse_rate)]
    pub abusers_per_sec: f64,
    /// The text message each abusive connection sends.
    #[arg(long, default_value = "loop")]
    pub spin_message: String,
    /// Source addresses of the abusive connections, the ones after the well-behaved connections' `--sources`:
    /// a proxy refusing abusive addresses for a while does not refuse the well-behaved ones with them.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=250))]
    pub abuser_sources: u8,
}

/// `wasp-bench report`.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// JSON lines `{"round":N,"target":"…","scenario":"…","result":{…}}` written by bench/run.sh.
    #[arg(long)]
    pub results: PathBuf,
    /// Markdown file whose section between the marker comments is replaced (created when missing).
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub out: PathBuf,
    /// File describing the machine (lscpu, free, versions), quoted verbatim.
    #[arg(long)]
    pub machine: PathBuf,
    /// The command that produced the results.
    #[arg(long)]
    pub command: String,
    /// A line to add under the tables (e.g. why a row is missing); repeatable.
    #[arg(long = "note")]
    pub notes: Vec<String>,
}

/// A duration: a number with `ms`, `s`, `m` or `h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 500ms, 10s or 2m"))?;
    let seconds = match unit {
        "ms" => value / 1_000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3_600.0,
        _ => {
            return Err(format!(
                "unknown duration unit `{unit}` (use ms, s, m or h)"
            ));
        }
    };
    Ok(Duration::from_secs_f64(seconds))
}

/// A size in bytes: a whole number with an optional `k`, `m` or `g` (powers
/// of 1024), as wasp's configuration writes sizes.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let bytes = wasp_sdk::units::parse_size(text)?;
    usize::try_from(bytes).map_err(|_| format!("size `{text}` is too large"))
}

/// A positive rate (messages or connections per second).
fn parse_rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!("`{text}` is not a positive rate per second")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("wasp-bench").chain(args.iter().copied()))
            .map(|cli| cli.command)
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1_500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3_600)));
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64"), Ok(64));
        assert_eq!(parse_size("16k"), Ok(16 * 1024));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert!(parse_size("k").is_err());
        assert!(parse_size("-1").is_err());
    }

    #[test]
    fn echo_defaults_and_options() {
        let Command::Echo(echo) = parse(&["echo"]).unwrap() else {
            panic!("echo expected");
        };
        assert_eq!(echo.target.url, "ws://127.0.0.1:9001/");
        assert_eq!((echo.connections, echo.in_flight, echo.size), (50, 1, 64));
        assert_eq!((echo.duration, echo.rate), (Duration::from_secs(10), None));

        let Command::Echo(echo) = parse(&[
            "echo",
            "--url",
            "ws://127.0.0.1:8080/ws",
            "-c",
            "8",
            "-m",
            "4",
            "-s",
            "4k",
            "-d",
            "2s",
            "--warmup",
            "0s",
            "--rate",
            "2500",
            "--sources",
            "0",
            "--json",
        ])
        .unwrap() else {
            panic!("echo expected");
        };
        assert_eq!(echo.target.url, "ws://127.0.0.1:8080/ws");
        assert_eq!((echo.connections, echo.in_flight, echo.size), (8, 4, 4096));
        assert_eq!(
            (echo.duration, echo.warmup),
            (Duration::from_secs(2), Duration::ZERO)
        );
        assert_eq!(
            (echo.rate, echo.target.sources, echo.target.json),
            (Some(2500.0), 0, true)
        );
    }

    #[test]
    fn handshake_and_idle_options() {
        let Command::Handshake(hs) =
            parse(&["handshake", "-c", "4", "-d", "1s", "--pid", "7"]).unwrap()
        else {
            panic!("handshake expected");
        };
        assert_eq!(
            (hs.concurrency, hs.duration, hs.target.pids),
            (4, Duration::from_secs(1), vec![7])
        );

        let Command::Idle(idle) = parse(&[
            "idle",
            "-n",
            "100",
            "--pid",
            "12",
            "--pid",
            "13",
            "--sources",
            "8",
        ])
        .unwrap() else {
            panic!("idle expected");
        };
        assert_eq!(
            (idle.connections, idle.target.pids, idle.target.sources),
            (100, vec![12, 13], 8)
        );
    }

    #[test]
    fn idle_variants_and_spinners_options() {
        let Command::Idle(idle) = parse(&["idle", "--echo-first"]).unwrap() else {
            panic!("idle expected");
        };
        assert!(idle.echo_first);
        let Command::Idle(idle) = parse(&["idle"]).unwrap() else {
            panic!("idle expected");
        };
        assert!(!idle.echo_first);

        let Command::Spinners(spinners) = parse(&[
            "spinners",
            "--url",
            "ws://127.0.0.1:9104/",
            "--spin-url",
            "ws://127.0.0.1:9104/spin/",
            "--abusers-per-sec",
            "20",
        ])
        .unwrap() else {
            panic!("spinners expected");
        };
        assert_eq!(spinners.spin_url, "ws://127.0.0.1:9104/spin/");
        assert_eq!(
            (
                spinners.connections,
                spinners.rate,
                spinners.abusers_per_sec
            ),
            (100, 2000.0, 20.0)
        );
        assert_eq!(
            (spinners.spin_message.as_str(), spinners.abuser_sources),
            ("loop", 4)
        );
        assert!(parse(&["spinners"]).is_err(), "--spin-url is required");
        assert!(
            parse(&[
                "spinners",
                "--spin-url",
                "ws://x/",
                "--abusers-per-sec",
                "0"
            ])
            .is_err()
        );
    }

    #[test]
    fn invalid_scenarios_are_rejected() {
        assert!(parse(&["echo", "-c", "0"]).is_err());
        assert!(parse(&["echo", "--rate", "0"]).is_err());
        assert!(parse(&["echo", "-d", "soon"]).is_err());
        assert!(parse(&["idle", "--sources", "251"]).is_err());
        assert!(parse(&["flood"]).is_err());
    }
}
