//! The plugin contract: what each default role's `configure` receives.
//!
//! wasp builds these values from its validated configuration and sends them
//! as JSON (`serde_json`); a plugin reads them back with [`parse_config`]:
//!
//! ```
//! use wasp_sdk::config::RouterConfig;
//!
//! let table: RouterConfig = wasp_sdk::parse_config(r#"{ "servers": [] }"#)?;
//! assert!(table.servers.is_empty());
//! # Ok::<(), String>(())
//! ```
//!
//! | Role       | `configure` receives |
//! |------------|----------------------|
//! | `router`   | [`RouterConfig`]: servers, their listen addresses and names, their numbered locations |
//! | `balancer` | [`BalancerConfig`]: every upstream's policy and servers |
//! | `origin`   | [`OriginConfig`]: each location's Origin allow-list |
//! | `filter`   | the location's `config` table for that filter, as written (`{}` when absent) |
//!
//! Reading is lenient where the host may add to the contract (unknown keys
//! are ignored, except by the origin policy, whose typos would silently
//! open a location), and fields a plugin can do without have defaults.

mod balancer;
mod origin;
mod router;

pub use balancer::{Balance, BalancerConfig, Upstream, UpstreamServer};
pub use origin::{OriginConfig, OriginPolicy};
pub use router::{FixedResponse, Location, LocationAction, MatchKind, RouterConfig, Server};

/// Parses a `configure` string as JSON into `T`, with an error message that
/// names the cause (`serde_json` reports line and column).
///
/// An empty string (no configuration given) parses as `{}` so that structs
/// whose fields all have defaults need no configuration at all.
pub fn parse_config<T: serde::de::DeserializeOwned>(config: &str) -> Result<T, String> {
    let text = if config.trim().is_empty() {
        "{}"
    } else {
        config
    };
    serde_json::from_str(text).map_err(|e| format!("invalid configuration: {e}"))
}
