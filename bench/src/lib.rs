//! `wasp-bench`: a WebSocket load generator and echo backend for comparing wasp with nginx, HAProxy and a
//! direct connection.
//!
//! The `wasp-bench` binary has one subcommand per scenario ([`echo`], [`handshake`], [`idle`], [`spinners`]) plus
//! [`report`], which turns the JSON lines collected by `bench/run.sh` into the Markdown section of
//! `BENCHMARKS.md`. The `wasp-echo` binary is the [`backend`].

pub mod backend;
pub mod cli;
pub mod connect;
pub mod cpu;
pub mod echo;
pub mod errors;
pub mod handshake;
pub mod histogram;
pub mod idle;
pub mod outcome;
pub mod payload;
pub mod report;
pub mod rlimit;
pub mod rss;
pub mod spinners;
