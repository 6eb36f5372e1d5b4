//! The `wasp` command: `wasp run -c FILE`, `wasp check -c FILE`,
//! `wasp import-nginx nginx.conf`, or `wasp` alone to run the embedded
//! chat-app configuration.

use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use wasp::config::{Config, LogFormat};
use wasp::proxy::Proxy;

#[derive(Parser)]
#[command(
    name = "wasp",
    version,
    about = "A WebAssembly-scriptable, WebSocket-aware reverse proxy"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Configuration file (TOML); without one, the embedded chat-app default.
    #[arg(short, long, global = true)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Run,
    /// Validate the configuration and print it resolved, like `nginx -t`.
    Check,
    /// Translate an nginx configuration to wasp's TOML (on stdout); exits 1
    /// when wasp would behave differently (the reasons on stderr), 2 when the
    /// file cannot be read.
    ImportNginx {
        /// The nginx configuration file (its `include`s are followed).
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::ImportNginx { file }) = &cli.command {
        return import_nginx(file);
    }
    let config = match &cli.config {
        Some(path) => Config::load(path),
        None => Ok(Config::embedded_default()),
    };
    let format = config.as_ref().map_or(LogFormat::Text, |c| c.log_format);
    init_logging(format);
    let path = cli.config.clone();
    let source = cli
        .config
        .as_ref()
        .map_or("(embedded default)".to_string(), |p| {
            p.display().to_string()
        });
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => match config {
            Ok(config) => {
                print!("{}", config.render());
                eprintln!("wasp: the configuration file {source} syntax is ok");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("{error}");
                eprintln!("wasp: configuration file {source} test failed");
                ExitCode::FAILURE
            }
        },
        Command::ImportNginx { .. } => unreachable!("handled before the configuration is loaded"),
        Command::Run => match config {
            Ok(config) => run(config, path),
            Err(error) => {
                eprintln!("{error}");
                ExitCode::FAILURE
            }
        },
    }
}

/// `wasp import-nginx FILE`: the TOML on stdout, what differs on stderr.
fn import_nginx(file: &std::path::Path) -> ExitCode {
    match wasp::import_nginx::import(file) {
        Ok(imported) => {
            print!("{}", imported.toml);
            let differing: Vec<_> = imported.notes.iter().filter(|n| n.differs).collect();
            for note in &differing {
                eprintln!("{note}");
            }
            if differing.is_empty() {
                eprintln!(
                    "wasp: {} imported; wasp behaves as nginx does",
                    file.display()
                );
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "wasp: {} imported with {} difference(s) from nginx (commented in the TOML)",
                    file.display(),
                    differing.len()
                );
                ExitCode::from(1)
            }
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::from(2)
        }
    }
}

/// Logs to stderr (stdout is for what a command prints: `wasp check`'s
/// configuration), filtered by `RUST_LOG` (default `info`).
fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        // Colour escapes only for a person at a terminal: in a file,
        // journald or a log shipper they are noise (https://no-color.org).
        LogFormat::Text => logs
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .init(),
        LogFormat::Json => logs.json().init(),
    }
}

/// Serves until SIGTERM/SIGINT; SIGHUP reloads the configuration and
/// plugins, SIGUSR1 reopens the access-log files (log rotation, as nginx).
/// This thread's runtime only starts, reloads and stops the proxy (and runs
/// the admin listener and health checks); connections are served by the
/// worker threads (see `wasp::workers`).
fn run(config: Config, path: Option<PathBuf>) -> ExitCode {
    use tokio::signal::unix::{SignalKind, signal};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        raise_fd_limit();
        // Before serving: a signal that came first would otherwise take
        // its default action (SIGUSR1's and SIGHUP's end the process).
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
        let mut usr1 = signal(SignalKind::user_defined1()).expect("SIGUSR1 handler");
        let started = match path {
            // A file is watched and reloaded; the embedded default is fixed.
            Some(path) => Proxy::start_file(config, path).await,
            None => Proxy::start(config).await,
        };
        let proxy = match started {
            Ok(proxy) => proxy,
            Err(error) => {
                tracing::error!("{error:#}");
                return ExitCode::FAILURE;
            }
        };
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    let _ = proxy.reload().await;
                }
                _ = usr1.recv() => {
                    let _ = proxy.reopen_logs().await;
                }
            }
        }
        tracing::info!("shutting down: no new connections, finishing requests in flight");
        proxy.shutdown().await;
        ExitCode::SUCCESS
    })
}

/// Two descriptors per proxied connection: take every one the hard limit allows.
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
