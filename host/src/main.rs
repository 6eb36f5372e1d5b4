//! The `wasp` command: `wasp run -c FILE`, `wasp check -c FILE`,
//! `wasp import-nginx nginx.conf`, or `wasp` alone to run the embedded
//! chat-app configuration; `wasp plugin new` and `wasp plugin check` for
//! plugin authors.

use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use wasp::config::{Config, LogFormat};
use wasp::plugins::Role;
use wasp::proxy::Proxy;
use wasp::{plugin_check, plugin_crate};

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
    #[arg(short, long)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Run {
        /// Configuration file (TOML); without one, the embedded chat-app default.
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Validate the configuration and print it resolved, like `nginx -t`.
    Check {
        /// Configuration file (TOML); without one, the embedded chat-app default.
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Translate an nginx configuration to wasp's TOML (on stdout); exits 1
    /// when wasp would behave differently (the reasons on stderr), 2 when the
    /// file cannot be read.
    ImportNginx {
        /// The nginx configuration file (its `include`s are followed).
        file: PathBuf,
    },
    /// Write and check plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Create a plugin crate NAME in the current directory: the role's
    /// smallest implementation, a native test, a wasp.toml that runs it.
    New {
        /// The crate's name (and directory).
        name: String,
        /// The role it fills.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// The wasp-sdk crate to depend on (a directory); by default the
        /// sdk/ of the sources this wasp was built from.
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Load a component as wasp would and run each role's configure.
    Check {
        /// The component (`.wasm`).
        file: PathBuf,
        /// What configure receives (JSON).
        #[arg(long, default_value = "{}")]
        config: String,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum RoleArg {
    Filter,
    Router,
    Balancer,
    Origin,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Role {
        match role {
            RoleArg::Filter => Role::Filter,
            RoleArg::Router => Role::Router,
            RoleArg::Balancer => Role::Balancer,
            RoleArg::Origin => Role::Origin,
        }
    }
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    let command = match cli.command.take() {
        Some(Command::ImportNginx { file }) => return import_nginx(&file),
        Some(Command::Plugin(command)) => {
            init_logging(LogFormat::Text);
            return plugin(command);
        }
        Some(Command::Run { config }) => {
            cli.config = config.or(cli.config);
            Command::Run { config: None }
        }
        Some(Command::Check { config }) => {
            cli.config = config.or(cli.config);
            Command::Check { config: None }
        }
        None => Command::Run { config: None },
    };
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
    match command {
        Command::Check { .. } => match config {
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
        Command::Run { .. } => match config {
            Ok(config) => run(config, path),
            Err(error) => {
                eprintln!("{error}");
                ExitCode::FAILURE
            }
        },
        Command::Plugin(_) | Command::ImportNginx { .. } => unreachable!("handled above"),
    }
}

fn plugin(command: PluginCommand) -> ExitCode {
    match command {
        PluginCommand::New { name, role, sdk } => {
            let sdk = sdk.unwrap_or_else(plugin_crate::default_sdk);
            match plugin_crate::create(Path::new("."), &name, role.into(), &sdk) {
                Ok(dir) => {
                    println!(
                        "created {}: cd {name} && cargo build --target wasm32-wasip2 --release",
                        dir.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("wasp: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        PluginCommand::Check { file, config } => {
            let report = match plugin_check::check(&file, &config) {
                Ok(report) => report,
                Err(error) => {
                    eprintln!("wasp: {}: {error}", file.display());
                    return ExitCode::FAILURE;
                }
            };
            let plugin = &report.plugin;
            println!(
                "{}: wasp:plugin@{} component, sha256 {}, loaded in {} ms",
                file.display(),
                wasp::plugins::WIT_VERSION,
                plugin.sha256(),
                plugin.load_time().as_millis()
            );
            for (role, result) in &report.configured {
                match result {
                    Ok(()) => println!("{role}: configure ok"),
                    Err(message) => println!("{role}: configure refused: {message}"),
                }
            }
            if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
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

/// Serves until SIGTERM/SIGINT/SIGQUIT (all three graceful, as nginx's
/// SIGQUIT: stop accepting, let connections finish within `shutdown_grace`;
/// SIGQUIT is what an nginx operator sends to the old process of an
/// upgrade); SIGHUP reloads the configuration and
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
        let mut quit = signal(SignalKind::quit()).expect("SIGQUIT handler");
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
                _ = quit.recv() => break,
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
