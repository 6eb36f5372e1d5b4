//! wasp: a WebAssembly-scriptable, WebSocket-aware reverse proxy.
//!
//! The modules follow the path of a connection: `listener` accepts, `http`
//! parses and routes (asking `plugins`), serves static files or forwards
//! through `upstream`, and hands WebSockets to `relay`; `config` and `site`
//! hold what was loaded; `shutdown` is the signal every long-lived task
//! waits on.

pub mod access_log;
pub mod admin;
pub mod buffered;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod cpu_bans;
pub mod digest;
pub mod direction;
pub mod file_watch;
pub mod filter_chain;
pub mod heap;
pub mod http;
pub mod import_nginx;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod plugin_check;
pub mod plugin_crate;
pub mod plugins;
pub mod proxy;
pub mod relay;
pub mod shutdown;
pub mod site;
pub mod tls;
pub mod upstream;
pub mod vars;
pub mod workers;
