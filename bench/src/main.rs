//! `wasp-bench`: runs one scenario against a WebSocket target and prints a human line (and with `--json` a JSON
//! line), or writes the report section of BENCHMARKS.md. See `wasp_bench::cli` for the options.

use anyhow::{Context, Result};
use clap::Parser;
use wasp_bench::{
    cli::{Cli, Command},
    echo, handshake, idle, report, rlimit, spinners,
};

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let nofile = rlimit::raise_nofile().context("raising the open-file limit")?;
    let (outcome, json) = match &cli.command {
        Command::Echo(args) => (echo::run(args).await?, args.target.json),
        Command::Handshake(args) => (handshake::run(args).await?, args.target.json),
        Command::Idle(args) => (idle::run(args, nofile).await?, args.target.json),
        Command::Spinners(args) => (spinners::run(args).await?, args.target.json),
        Command::Report(args) => return report::write(args),
    };
    println!("{outcome}");
    if json {
        println!("{}", serde_json::to_string(&outcome)?);
    }
    Ok(())
}
