//! The Markdown report: medians over rounds per scenario and target, with ratios to the direct connection and
//! to nginx, written between marker comments in BENCHMARKS.md so other sections of that file survive.

use std::{fmt::Write as _, fs};

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::{cli::ReportArgs, outcome::Outcome};

mod tables;

use tables::{Column, describe};

/// Marks the start of this harness's section in BENCHMARKS.md.
pub const START: &str = "<!-- bench:proxy:start -->";
/// Marks its end.
pub const END: &str = "<!-- bench:proxy:end -->";

/// One run as bench/run.sh records it.
#[derive(Debug, Clone, Deserialize)]
pub struct Record {
    pub round: u32,
    pub target: String,
    pub scenario: String,
    pub result: Outcome,
}

/// Reads the results, renders the section and puts it into the output file.
pub fn write(args: &ReportArgs) -> Result<()> {
    let text = fs::read_to_string(&args.results)
        .with_context(|| format!("reading {}", args.results.display()))?;
    let records = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).with_context(|| format!("bad result line `{line}`")))
        .collect::<Result<Vec<Record>>>()?;
    let machine = fs::read_to_string(&args.machine)
        .with_context(|| format!("reading {}", args.machine.display()))?;
    let section = render(&records, &machine, &args.command, &args.notes);
    let existing = fs::read_to_string(&args.out).unwrap_or_default();
    fs::write(&args.out, replace_section(&existing, &section))
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!("wrote {} results to {}", records.len(), args.out.display());
    Ok(())
}

/// The whole section, markers included.
pub fn render(records: &[Record], machine: &str, command: &str, notes: &[String]) -> String {
    let rounds = records.iter().map(|r| r.round).max().unwrap_or(0);
    let mut out = String::new();
    let _ = writeln!(out, "{START}");
    let _ = writeln!(
        out,
        "## WebSocket proxies: wasp vs nginx vs HAProxy (`wasp-bench`)\n"
    );
    let _ = writeln!(
        out,
        "Every cell is the median of {rounds} round(s). In each round the targets ran one after another (A B C … A B \
         C …); each memory scenario (idle, idle-after-echo) ran on a freshly started backend and proxy of its own, \
         the others one after another on a third pair. `÷ direct` and `÷ nginx` divide a target's median by that \
         row's median: above 1 is more throughput, more latency or more memory. Latencies are µs unless marked ms. \
         The direct rows of the memory tables are the echo backend's own memory. `opened` counts completed \
         upgrades; `served` the connections that passed the check after the memory reading with all of them held \
         at once.\n"
    );
    let _ = writeln!(
        out,
        "Command (from the repository root):\n\n```sh\n{command}\n```\n"
    );
    let _ = writeln!(out, "Machine:\n\n```text\n{}\n```\n", machine.trim_end());
    for scenario in first_seen(records.iter().map(|r| r.scenario.as_str())) {
        let runs: Vec<&Record> = records.iter().filter(|r| r.scenario == scenario).collect();
        render_table(&mut out, scenario, &runs);
    }
    for note in notes {
        let _ = writeln!(out, "- {note}");
    }
    if !notes.is_empty() {
        out.push('\n');
    }
    let _ = writeln!(out, "{END}");
    out
}

/// One scenario's heading and table.
fn render_table(out: &mut String, scenario: &str, runs: &[&Record]) {
    let table = describe(&runs[0].result);
    let _ = writeln!(out, "### {scenario}: {}\n", table.title);
    if let Some(note) = table.note {
        let _ = writeln!(out, "{note}\n");
    }
    let mut heading = String::from("| target |");
    let mut rule = String::from("| --- |");
    for (i, column) in table.columns.iter().enumerate() {
        let _ = write!(heading, " {} |", column.heading);
        rule.push_str(" ---: |");
        if i == 0 && table.ratios {
            heading.push_str(" ÷ direct | ÷ nginx |");
            rule.push_str(" ---: | ---: |");
        }
    }
    let _ = writeln!(out, "{heading} errors |\n{rule} ---: |");

    let median_of = |target: &str, column: &Column| {
        median(
            runs.iter()
                .filter(|r| r.target == target)
                .filter_map(|r| (column.value)(&r.result))
                .collect(),
        )
    };
    let ratio = |value: Option<f64>, base: &str| match (value, median_of(base, &table.columns[0])) {
        (Some(v), Some(b)) if b != 0.0 => format!("{:.2}", v / b),
        _ => "–".to_owned(),
    };
    for target in first_seen(runs.iter().map(|r| r.target.as_str())) {
        let _ = write!(out, "| {target} |");
        for (i, column) in table.columns.iter().enumerate() {
            let value = median_of(target, column);
            let _ = write!(out, " {} |", cell(value, column.decimals));
            if i == 0 && table.ratios {
                let _ = write!(
                    out,
                    " {} | {} |",
                    ratio(value, "direct"),
                    ratio(value, "nginx")
                );
            }
        }
        let errors: u64 = runs
            .iter()
            .filter(|r| r.target == target)
            .map(|r| r.result.errors())
            .sum();
        let _ = writeln!(out, " {errors} |");
    }
    out.push('\n');
}

/// A number with fixed decimals, or a dash when there is none.
fn cell(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "–".to_owned(), |v| format!("{v:.decimals$}"))
}

/// The median (mean of the middle two for an even count); `None` for no values.
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// Distinct items in the order they first appear.
fn first_seen<'a>(items: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = Vec::new();
    for item in items {
        if !seen.contains(&item) {
            seen.push(item);
        }
    }
    seen
}

/// `existing` with the text between (and including) the markers replaced by `section`; the section is appended
/// when the markers are missing, under a `# Benchmarks` title when the file is empty.
pub fn replace_section(existing: &str, section: &str) -> String {
    if let Some(start) = existing.find(START)
        && let Some(end) = existing[start..].find(END).map(|i| start + i + END.len())
    {
        let rest = existing[end..]
            .strip_prefix('\n')
            .unwrap_or(&existing[end..]);
        return format!("{}{section}{rest}", &existing[..start]);
    }
    if existing.trim().is_empty() {
        format!("# Benchmarks\n\n{section}")
    } else {
        format!("{}\n\n{section}", existing.trim_end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        cpu::CpuUse,
        histogram::LatencySummary,
        outcome::{AbuseCounts, EchoOutcome, IdleOutcome, SpinnersOutcome},
    };

    fn echo(target: &str, round: u32, msgs_per_sec: f64, p99_us: f64) -> Record {
        Record {
            round,
            target: target.into(),
            scenario: "echo".into(),
            result: Outcome::Echo(EchoOutcome {
                url: "ws://127.0.0.1:1/".into(),
                connections: 50,
                in_flight: Some(8),
                rate: None,
                size: 64,
                duration_s: 10.0,
                messages: (msgs_per_sec * 10.0) as u64,
                msgs_per_sec,
                latency: LatencySummary {
                    p99_us,
                    ..LatencySummary::default()
                },
                cpu: (target == "nginx").then_some(CpuUse {
                    user_us_per_op: 0.5,
                    system_us_per_op: 1.5,
                }),
                errors: u64::from(target == "haproxy"),
                first_error: None,
            }),
        }
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn tables_hold_medians_ratios_and_error_sums() {
        let mut records = Vec::new();
        for (round, scale) in [(1, 1.0), (2, 1.1), (3, 0.9)] {
            records.push(echo("direct", round, 100_000.0 * scale, 50.0));
            records.push(echo("nginx", round, 50_000.0 * scale, 100.0));
            records.push(echo("haproxy", round, 40_000.0 * scale, 120.0));
        }
        let section = render(
            &records,
            "CPU: test",
            "bench/run.sh --quick",
            &["wasp skipped".into()],
        );
        assert!(
            section.starts_with(START) && section.trim_end().ends_with(END),
            "{section}"
        );
        assert!(
            section.contains("closed loop, 50 connections × 8 in flight, 64 B messages"),
            "{section}"
        );
        assert!(
            section.contains("| direct | 100000 | 1.00 | 2.00 |"),
            "{section}"
        );
        assert!(
            section.contains("| nginx | 50000 | 0.50 | 1.00 | 0 | 0 | 100 | 0 | 2.00 | 0.50 | 0 |"),
            "{section}"
        );
        assert!(
            section.contains("| haproxy | 40000 | 0.40 | 0.80 | 0 | 0 | 120 | 0 | – | – | 3 |"),
            "{section}"
        );
        assert!(section.contains("bench/run.sh --quick") && section.contains("CPU: test"));
        assert!(section.contains("- wasp skipped"));
    }

    #[test]
    fn missing_baselines_and_values_show_dashes() {
        let record = Record {
            round: 1,
            target: "wasp".into(),
            scenario: "idle".into(),
            result: Outcome::Idle(IdleOutcome {
                url: "ws://127.0.0.1:1/".into(),
                echo_first: false,
                requested: 9_000,
                opened: 9_000,
                held: 9_000,
                served: 8_999,
                open_s: 2.0,
                pids: vec![],
                rss_before_kib: None,
                rss_after_kib: None,
                kib_per_conn: None,
                errors: 0,
                first_error: None,
            }),
        };
        let section = render(&[record], "", "x", &[]);
        assert!(
            section.contains(
                "### idle: 9000 connections held idle after the handshake, no message exchanged"
            ),
            "{section}"
        );
        assert!(
            section.contains("| wasp | – | – | – | 9000 | 8999 | – | – | 0 |"),
            "{section}"
        );
    }

    #[test]
    fn spinners_tables_compare_phases_without_ratios_between_targets() {
        let phase = |p99_us: f64| {
            let Outcome::Echo(mut e) = echo("wasp-filter", 1, 2_000.0, p99_us).result else {
                unreachable!()
            };
            (e.rate, e.in_flight) = (Some(2_000.0), None);
            e
        };
        let record = Record {
            round: 1,
            target: "wasp-filter".into(),
            scenario: "spinners".into(),
            result: Outcome::Spinners(Box::new(SpinnersOutcome {
                spin_url: "ws://127.0.0.1:1/spin/".into(),
                abusers_per_sec: 50.0,
                spin_message: "loop".into(),
                quiet: phase(500.0),
                abused: phase(12_000.0),
                abusers: AbuseCounts {
                    started: 500,
                    closed_1011: 498,
                    other: 2,
                    ..AbuseCounts::default()
                },
            })),
        };
        let section = render(&[record], "", "x", &[]);
        assert!(
            section.contains("50 abusive connections a second each send `loop`"),
            "{section}"
        );
        assert!(
            section.contains("Only wasp-filter runs this scenario"),
            "{section}"
        );
        assert!(
            section.contains("| target | p50 alone | p99 alone |"),
            "no ratio columns: {section}"
        );
        assert!(
            section.contains(
                "| wasp-filter | 0 | 500 | 0 | 12000 | 24.00 | – | – | 500 | 498 | 0 | 0 | 2 | 0 |"
            ),
            "{section}"
        );
    }

    #[test]
    fn only_the_marked_section_is_replaced() {
        let old =
            format!("# Benchmarks\n\nintro\n\n{START}\nold table\n{END}\n\n## Filters\nkept\n");
        let new = replace_section(&old, &format!("{START}\nnew table\n{END}\n"));
        assert_eq!(
            new,
            format!("# Benchmarks\n\nintro\n\n{START}\nnew table\n{END}\n\n## Filters\nkept\n")
        );
        let appended = replace_section(
            "# Benchmarks\n\n## Filters\n",
            &format!("{START}\nx\n{END}\n"),
        );
        assert_eq!(
            appended,
            format!("# Benchmarks\n\n## Filters\n\n{START}\nx\n{END}\n")
        );
        assert_eq!(replace_section("", "S\n"), "# Benchmarks\n\nS\n");
    }
}
