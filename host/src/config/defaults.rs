//! What each setting is when the configuration file leaves it out. Where
//! nginx has the setting, the default is nginx's, so that a configuration
//! carried over from nginx behaves the same. Switches (`redirect_http`,
//! `backup`, `websocket`, ...) are off and lists empty unless written.

use std::time::Duration;

use super::Balance;

// ---- top level ----

/// Client connections open at once. wasp's own: nginx counts
/// `worker_connections` (512) per worker process.
pub const MAX_CONNECTIONS: usize = 10_000;
/// In-flight work's time to finish on SIGTERM. wasp's own: nginx's
/// `worker_shutdown_timeout` is unset, waiting for ever.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

// ---- [plugins]: wasp's own, nginx has no plugins ----

/// CPU deadline per plugin call.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(10);
/// Extra CPU per MiB of the message a filter call is handed: scanning a
/// 16 MiB message with a regex takes tens of milliseconds.
pub const CALL_TIMEOUT_PER_MIB: Duration = Duration::from_millis(10);
/// Filter-call overruns on one address's messages, within [`BAN_TIME`],
/// that refuse its filtered WebSockets (`crate::cpu_bans`).
pub const BAN_AFTER_OVERRUNS: u32 = 3;
/// How long those overruns are counted, and how long a ban lasts.
pub const BAN_TIME: Duration = Duration::from_secs(60);
/// Linear-memory cap per plugin instance.
pub const MEMORY_LIMIT: usize = 64 << 20;
/// Live plugin instances.
pub const INSTANCES: u32 = 1000;

// ---- [upstreams.NAME] ----

/// nginx balances round-robin unless `ip_hash`, `least_conn` or `hash` is given.
pub const BALANCE: Balance = Balance::RoundRobin;
/// nginx `proxy_next_upstream_tries 0`: every peer may be tried.
pub const NEXT_UPSTREAM_TRIES: u32 = 0;
/// nginx `server ... weight=1`.
pub const WEIGHT: u32 = 1;
/// nginx `server ... max_fails=1`.
pub const MAX_FAILS: u32 = 1;
/// nginx `server ... fail_timeout=10s`.
pub const FAIL_TIMEOUT: Duration = Duration::from_secs(10);
/// nginx: an upstream server (or `proxy_pass` host) without a port is on port 80.
pub const UPSTREAM_PORT: u16 = 80;
/// nginx: a `proxy_pass https://` host without a port is on port 443.
pub const UPSTREAM_TLS_PORT: u16 = 443;
/// `proxy_ssl_verify`. wasp's own: nginx's `off` accepts any certificate,
/// so anyone on the path to the upstream can read and change the traffic.
pub const PROXY_SSL_VERIFY: bool = true;
/// `proxy_ssl_server_name`. wasp's own: nginx's `off` sends no SNI, which
/// a backend serving several names (or a CDN) refuses or answers with the
/// wrong certificate.
pub const PROXY_SSL_SERVER_NAME: bool = true;
/// nginx `keepalive_timeout 60s` (in an upstream block).
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// nginx `keepalive_requests 1000` (in an upstream block).
pub const KEEPALIVE_REQUESTS: u32 = 1000;
/// nginx Plus `health_check interval=5s`.
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// HAProxy's `rise 2` (nginx Plus trusts one success, `passes=1`).
pub const HEALTH_RISE: u32 = 2;
/// HAProxy's `fall 3` (nginx Plus gives up after one failure, `fails=1`).
pub const HEALTH_FALL: u32 = 3;

// ---- [[server]] ----

/// nginx `client_header_timeout 60s`.
pub const CLIENT_HEADER_TIMEOUT: Duration = Duration::from_secs(60);
/// nginx `client_body_timeout 60s`.
pub const CLIENT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// nginx `client_max_body_size 1m`.
pub const CLIENT_MAX_BODY_SIZE: u64 = 1 << 20;
/// nginx `large_client_header_buffers 4 8k`: a head of at most 32 KiB.
pub const MAX_HEADER_SIZE: usize = 32 << 10;
/// The smallest `max_header_size`: hyper's read buffer cannot be smaller
/// (nginx's one header buffer, `large_client_header_buffers ... 8k`, is
/// the same size).
pub const MIN_HEADER_SIZE: u64 = 8 << 10;

// ---- [[server.location]] ----

/// nginx `proxy_connect_timeout`, `proxy_read_timeout` and
/// `proxy_send_timeout`: 60s each.
pub const PROXY_TIMEOUT: Duration = Duration::from_secs(60);
/// nginx `proxy_buffer_size 4k` (one memory page): what WebSocket relays
/// read at a time, per direction.
pub const BUFFER_SIZE: usize = 4 << 10;
/// nginx `limit_conn_status 503`.
pub const LIMIT_CONN_STATUS: u16 = 503;
/// Key of `limit_conn` and `limit_req`. nginx has no default; this is the
/// key its documentation uses (`limit_conn_zone $binary_remote_addr ...`).
pub const LIMIT_KEY: &str = "$binary_remote_addr";
/// nginx `limit_req` without `burst=`: no request above the rate.
pub const LIMIT_REQ_BURST: u32 = 0;
/// With `origins` set, still accept handshakes without an `Origin` header.
/// wasp's own: browsers always send one, other clients often none.
pub const ALLOW_MISSING_ORIGIN: bool = true;
/// Largest relayed WebSocket message. wasp's own, the same 1 MiB as
/// `client_max_body_size`.
pub const MAX_MESSAGE_SIZE: usize = 1 << 20;
/// permessage-deflate negotiated on filtered WebSockets, as browsers offer
/// it and nginx passes it through (costing nothing per connection: see
/// `relay::deflate`).
pub const WEBSOCKET_DEFLATE: bool = true;
/// nginx `index index.html`.
pub const INDEX: &str = "index.html";

/// `[cluster] timeout`: the longest a request waits for Redis.
pub const CLUSTER_TIMEOUT: Duration = Duration::from_millis(50);
/// `[cluster] retry`: how often a lost Redis connection is tried again.
pub const CLUSTER_RETRY: Duration = Duration::from_secs(1);
