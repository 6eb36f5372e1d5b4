//! wasp's configuration: the TOML file described in `docs-config-spec.md`,
//! read into typed, validated, defaults-filled structures.
//!
//! Plain data: nothing here opens sockets, reads TLS files or loads plugins.
//! Errors carry `SOURCE:LINE:COL` positions, both for TOML syntax and for
//! semantic checks (unknown upstream, bad regex, ...), and several may be
//! reported at once. Every default a setting takes is named in [`defaults`].

pub mod defaults;
mod plugin_json;
mod raw;
mod read;
mod render;
mod units;
mod validate;
pub mod variables;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

// Balancing policies and location match kinds are the plugin contract's
// types: the configuration and the plugins' JSON name them the same way.
pub use wasp_sdk::config::{Balance, MatchKind};

/// The embedded default configuration: the chat example (`examples/chat-app/wasp.toml`),
/// the nginx guide's chat-app layout plus an Origin check and the redact filter.
pub const DEFAULT_CONFIG: &str = include_str!("../../../examples/chat-app/wasp.toml");

/// How wasp writes its log (stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Lines for people: time, level, target, message and fields.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, fields), for log
    /// shippers.
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// Where access-log lines go (`access_log`, nginx's namesake).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum AccessLog {
    /// No access log (the requests are still counted in the metrics).
    Off,
    /// Through the process log on stderr, target `access`.
    #[default]
    Stderr,
    /// Appended to this file, which SIGUSR1 and reloads reopen.
    File(PathBuf),
}

impl AccessLog {
    /// As written in the file: `off`, `stderr` or the path.
    pub fn as_setting(&self) -> String {
        match self {
            AccessLog::Off => "off".to_owned(),
            AccessLog::Stderr => "stderr".to_owned(),
            AccessLog::File(path) => path.display().to_string(),
        }
    }
}

/// A complete, validated configuration with every default filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Admin listener (metrics, status, reload); off when `None`.
    pub admin: Option<SocketAddr>,
    /// Overall cap on client connections; extra ones are closed at accept.
    pub max_connections: usize,
    /// Threads serving connections, each with its own event loop; `None`:
    /// one per CPU. Applies at start.
    pub workers: Option<usize>,
    /// On SIGTERM, how long in-flight work may finish before WebSockets are closed with 1001.
    pub shutdown_grace: Duration,
    /// How log lines (the access log's too) are written. Applies at start.
    pub log_format: LogFormat,
    /// The access log of servers that do not name their own.
    pub access_log: AccessLog,
    /// Plugin replacements and sandbox limits.
    pub plugins: PluginSettings,
    /// Declared upstreams plus one implicit upstream per `proxy_pass` to a `host:port`.
    pub upstreams: BTreeMap<String, Upstream>,
    /// `[[server]]` blocks in file order.
    pub servers: Vec<Server>,
    /// Shared limits and plugin state through Redis, if configured. Applies at start.
    pub cluster: Option<ClusterSettings>,
}

/// The `[cluster]` table: several wasp processes share `limit_conn`,
/// `limit_req` and the plugins' kv and counters through Redis.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSettings {
    /// `redis://[user:password@]host:port[/db]`.
    pub redis: String,
    /// This process's name among the others (metrics' `instance` label,
    /// its share of the connection counts); `None`: host name and pid.
    pub instance: Option<String>,
    /// Longest a request waits for Redis to admit it; then the local limits
    /// decide (default 50 ms).
    pub timeout: Duration,
    /// How often a lost connection to Redis is tried again (default 1 s).
    pub retry: Duration,
}

/// The `[plugins]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginSettings {
    /// Replacement router `.wasm`; the embedded router when `None`.
    pub router: Option<PathBuf>,
    /// Replacement balancer `.wasm`; the embedded balancer when `None`.
    pub balancer: Option<PathBuf>,
    /// Replacement origin checker `.wasm`; the embedded one when `None`.
    pub origin: Option<PathBuf>,
    /// CPU deadline per plugin call (default 10 ms).
    pub call_timeout: Duration,
    /// Extra CPU deadline per MiB of the message a filter is handed
    /// (default 10 ms), so a message the location allows is never refused
    /// for its size alone.
    pub call_timeout_per_mib: Duration,
    /// Filter-call overruns on one address's messages within `ban_time`
    /// that refuse its filtered WebSockets for `ban_time` (default 3;
    /// 0 never bans).
    pub ban_after_overruns: u32,
    /// How long overruns are counted and a ban lasts (default 60 s).
    pub ban_time: Duration,
    /// Linear-memory cap per plugin instance in bytes (default 64 MiB).
    pub memory_limit: usize,
    /// Maximum live plugin instances (default 1000).
    pub instances: u32,
    /// Compiled-plugin cache; wasmtime's per-user cache when `None`.
    pub cache_dir: Option<PathBuf>,
}

/// An `[upstreams.NAME]` group of servers.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    /// Balancing policy (default round-robin).
    pub balance: Balance,
    /// Template of nginx variables hashed by [`Balance::Hash`]; set iff `balance` is `Hash`.
    pub hash_key: Option<String>,
    /// Ketama consistent hashing (only with [`Balance::Hash`]).
    pub consistent: bool,
    /// Attempts over distinct peers (after connect failures, and errors or
    /// timeouts of requests that can be sent again); 0 means all peers.
    pub next_upstream_tries: u32,
    /// Servers in configuration order (at least one).
    pub servers: Vec<UpstreamServer>,
    /// Active health checks, if configured.
    pub health: Option<HealthCheck>,
    /// Idle connections kept for reuse (nginx's `keepalive`), if any.
    pub keepalive: Option<Keepalive>,
}

/// nginx's `keepalive N` with `keepalive_timeout` and `keepalive_requests`:
/// idle connections to the upstream's servers cached for plain requests.
#[derive(Debug, Clone, PartialEq)]
pub struct Keepalive {
    /// Idle connections kept per worker thread (nginx: per worker process).
    pub connections: u32,
    /// How long an idle connection is kept (default 60 s).
    pub timeout: Duration,
    /// Requests served on one connection before it is closed (default 1000).
    pub requests: u32,
}

/// One server of an upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamServer {
    /// `host:port` (port 80 when the file omits it, like nginx).
    pub address: String,
    /// Weight, at least 1 (default 1).
    pub weight: u32,
    /// Failures within `fail_timeout` that mark the server unavailable; 0 disables (default 1).
    pub max_fails: u32,
    /// Failure window and unavailability period (default 10 s).
    pub fail_timeout: Duration,
    /// Used only when no primary server is usable.
    pub backup: bool,
    /// Permanently unavailable.
    pub down: bool,
}

/// Active health checks of an upstream's servers.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    /// Request path, e.g. `/health`.
    pub path: String,
    /// Time between checks (default 5 s).
    pub interval: Duration,
    /// Consecutive successes that mark a server healthy (default 2).
    pub rise: u32,
    /// Consecutive failures that mark a server unhealthy (default 3).
    pub fall: u32,
    /// Check with a WebSocket handshake instead of a plain GET.
    pub websocket: bool,
}

/// A `[[server]]` block.
#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    /// Listen addresses as written (`IP:PORT`), at least one.
    pub listen: Vec<String>,
    /// Host names this server answers; empty (or `""`) means any.
    pub server_names: Vec<String>,
    /// Certificate and key when the server speaks TLS.
    pub tls: Option<TlsFiles>,
    /// Answer every request with a 301 to `https://`.
    pub redirect_http: bool,
    /// Speak HTTP/2 (nginx's `http2 on`): offered by ALPN beside HTTP/1.1
    /// on TLS, by prior knowledge (h2c) on plain TCP. Default: on with TLS,
    /// off without.
    pub http2: bool,
    /// Time allowed to receive a request head (default 60 s).
    pub client_header_timeout: Duration,
    /// Time allowed between two reads of a request body; 408 after (default 60 s).
    pub client_body_timeout: Duration,
    /// Largest request body in bytes; 413 above (default 1 MiB).
    pub client_max_body_size: u64,
    /// Largest request head in bytes; 431 above (default 32 KiB).
    pub max_header_size: usize,
    /// Reject upgrades without a valid `Sec-WebSocket-Key`/version 13 with 400.
    pub strict_websocket: bool,
    /// Where its requests are logged (the top-level `access_log` unless set).
    pub access_log: AccessLog,
    /// SO_REUSEPORT on its listen addresses (nginx's `listen ... reuseport`):
    /// several wasp processes may listen on them at once. Applies at start.
    pub reuse_port: bool,
    /// Locations in file order.
    pub locations: Vec<Location>,
}

/// Certificate chain and private key files (read by the TLS module, not here).
#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// A `[[server.location]]` block.
#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    /// Index across all servers in file order; the id plugins refer to.
    pub id: u32,
    /// How `pattern` matches the request path.
    pub kind: MatchKind,
    /// The path prefix, exact path or regex, without its modifier.
    pub pattern: String,
    /// What the location does with a request.
    pub action: LocationAction,
    /// Request headers set upstream, in the order written; values may use nginx variables.
    pub set_headers: Vec<(String, String)>,
    /// Upstream connect timeout (default 60 s).
    pub connect_timeout: Duration,
    /// Upstream read idle timeout (default 60 s).
    pub read_timeout: Duration,
    /// Upstream send idle timeout (default 60 s).
    pub send_timeout: Duration,
    /// `proxy_buffer_size` in bytes (default 4 KiB).
    pub buffer_size: usize,
    /// Open connections allowed per `limit_conn_key`, if limited.
    pub limit_conn: Option<u32>,
    /// Template keying `limit_conn` (default `$binary_remote_addr`).
    pub limit_conn_key: String,
    /// Status answered over `limit_conn`, 400..=599 (default 503).
    pub limit_conn_status: u16,
    /// Request-rate limit, if any.
    pub limit_req: Option<LimitReq>,
    /// Origin allow-list for WebSocket handshakes; empty means no check.
    pub origins: Vec<String>,
    /// Accept handshakes without an `Origin` header when `origins` is set (default true).
    pub allow_missing_origin: bool,
    /// WebSocket filters in order.
    pub filters: Vec<FilterSpec>,
    /// Largest relayed WebSocket message in bytes; 1009 above (default 1 MiB).
    pub max_message_size: usize,
    /// permessage-deflate (RFC 7692): on a filtered location negotiated by
    /// wasp with each peer; on a tunnel passed through. Off: the
    /// `Sec-WebSocket-Extensions` offer is removed (default on).
    pub websocket_deflate: bool,
}

/// What a location does.
#[derive(Debug, Clone, PartialEq)]
pub enum LocationAction {
    /// `proxy_pass`: relay to an upstream.
    Proxy {
        /// Always a key of [`Config::upstreams`].
        upstream: String,
        /// URI part of `proxy_pass`, replacing the matched prefix (nginx rules).
        uri: Option<String>,
        /// TLS towards the upstream: `proxy_pass https://`.
        tls: Option<UpstreamTls>,
    },
    /// `root`: serve files.
    Static {
        /// Directory the request path is looked up under.
        root: PathBuf,
        /// Index files for directory requests (default `index.html`).
        index: Vec<String>,
        /// nginx `try_files` candidates; empty means just `$uri`.
        try_files: Vec<String>,
    },
    /// `return`: answer directly.
    Return {
        /// HTTP status.
        status: u16,
        /// Response headers (`location` from `return.location`).
        headers: Vec<(String, String)>,
        /// Response body.
        body: String,
    },
}

/// How wasp speaks TLS to an upstream (`proxy_pass https://`, nginx's
/// `proxy_ssl_*`). The files are read when the configuration is loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamTls {
    /// Verify the upstream's certificate chain and name (`proxy_ssl_verify`,
    /// default on: nginx's default, off, accepts any certificate, which a
    /// man in the middle can present).
    pub verify: bool,
    /// PEM file of the CAs to trust (`proxy_ssl_trusted_certificate`); the
    /// system's store when `None`.
    pub trusted_certificate: Option<PathBuf>,
    /// Send [`name`](Self::name) as SNI (`proxy_ssl_server_name`, default
    /// on: nginx's is off, but a name-based TLS backend needs it).
    pub server_name: bool,
    /// The name sent and verified (`proxy_ssl_name`, default the
    /// upstream's host without its port, as nginx's `$proxy_host`).
    pub name: String,
    /// Client certificate and key presented to the upstream
    /// (`proxy_ssl_certificate`, `proxy_ssl_certificate_key`).
    pub client_certificate: Option<TlsFiles>,
}

/// `limit_req`: a leaky-bucket request rate per key.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitReq {
    /// Allowed requests per second (`"60r/m"` is 1.0).
    pub rate_per_sec: f64,
    /// Requests allowed above the rate before refusing (default 0).
    pub burst: u32,
    /// Template keying the limit (default `$binary_remote_addr`).
    pub key: String,
}

/// One entry of a location's `filters`.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterSpec {
    /// A built-in name (the embedded `filter-NAME` plugins: `json`, `max-size`, ...) or
    /// a path to a `.wasm` file.
    pub plugin: String,
    /// The filter's `config` table as JSON (`{}` when absent).
    pub config: serde_json::Value,
    /// On filter failure, keep relaying unfiltered instead of closing (`fail = "open"`).
    pub fail_open: bool,
}

/// One problem found in a configuration, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// File name (or other label) given to [`Config::parse`].
    pub source: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong, on one line.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.source, self.line, self.column, self.message
        )
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Syntax or semantic errors, one per line, in file order.
    #[error("{}", .0.iter().map(Diagnostic::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Diagnostic>),
}

impl Config {
    /// Parses and validates configuration `text`; `source` names it in
    /// error messages. Every problem found is reported, in file order.
    pub fn parse(text: &str, source: &str) -> Result<Config, ConfigError> {
        let read = read::read(text, source);
        let mut problems = read.problems;
        if let Some(raw) = read.raw {
            match validate::validate(raw, text, source) {
                Ok(config) if problems.is_empty() => return Ok(config),
                Ok(_) => {}
                Err(ConfigError::Invalid(more)) => problems.extend(more),
                Err(other) => return Err(other),
            }
        }
        problems.sort_by_key(|problem| (problem.line, problem.column));
        Err(ConfigError::Invalid(problems))
    }

    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// The embedded default ([`DEFAULT_CONFIG`]): static files from
    /// `examples/chat-app/public` on 127.0.0.1:8000, `/ws/` proxied to 127.0.0.1:8080.
    pub fn embedded_default() -> Config {
        Config::parse(DEFAULT_CONFIG, "<embedded default>")
            .expect("the embedded default configuration is valid (unit-tested)")
    }

    /// Iterates over every location of every server, in id order.
    pub fn locations(&self) -> impl Iterator<Item = &Location> {
        self.servers.iter().flat_map(|server| &server.locations)
    }
}

/// Builds a diagnostic for byte `offset` of `text`.
fn diagnostic(text: &str, source: &str, offset: usize, message: String) -> Diagnostic {
    let before = &text[..offset.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Diagnostic {
        source: source.to_owned(),
        line: before.matches('\n').count() + 1,
        column: before[line_start..].chars().count() + 1,
        message,
    }
}

#[cfg(test)]
mod tests;
