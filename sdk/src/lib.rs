//! Write [wasp](https://github.com/wasp-proxy/wasp) plugins in Rust.
//!
//! wasp asks WebAssembly plugins for every decision it makes: which location
//! serves a request ([`Router`]), which upstream peer gets it ([`Balancer`]),
//! whether a WebSocket's `Origin` is allowed ([`Origin`]) and what happens to
//! each WebSocket message ([`Filter`]). A plugin is a small crate that
//! implements one or more of these traits and names them in [`export!`]:
//!
//! ```
//! use wasp_sdk::{Action, Direction, Filter, Message, RequestHead};
//!
//! struct Shout;
//!
//! impl Filter for Shout {
//!     // Nothing kept per connection.
//!     type Connection = ();
//!
//!     fn configure(_config: &str) -> Result<Self, String> {
//!         Ok(Shout)
//!     }
//!     fn on_open(&mut self, _conn: u64, _head: &RequestHead) {}
//!     fn on_message(&mut self, _: &mut (), _dir: Direction, msg: Message) -> Action {
//!         match msg {
//!             Message::Text(text) => Action::Replace(Message::Text(text.to_uppercase())),
//!             Message::Binary(_) => Action::Forward,
//!         }
//!     }
//! }
//!
//! wasp_sdk::export!(filter: Shout);
//! ```
//!
//! Build it with `cargo build --target wasm32-wasip2 --release` (the crate
//! must be a `cdylib`) and point wasp's configuration at the `.wasm` file.
//!
//! # The life of a plugin instance
//!
//! wasp keeps live instances of each plugin and reuses them. Each instance
//! is created, then `configure` is called once with the role's
//! configuration (JSON); its result becomes the instance's state, and every
//! later call gets `&mut self`.
//!
//! A router, balancer or origin instance answers one call at a time, for
//! any request. A filter instance serves many WebSockets at once: every
//! connection of a wasp worker thread on the locations that use the filter
//! with that configuration (the proxy-wasm model: an instance per worker, a
//! context per connection). What a filter keeps for one connection is its
//! [`Filter::Connection`] state: `on_open` creates it, each `on_message` of
//! that connection gets it as `&mut`, and it is dropped after `on_close`;
//! [`export!`] does the bookkeeping. The [`Filter`] docs show an example.
//!
//! Instances can be thrown away at any time (a trap, an overrun deadline,
//! memory exhausted, a reload, the pool shrinking), and several run side by
//! side, so nothing kept inside one is durable. When a filter instance is
//! replaced, each connection it served gets `on_open` on its new instance
//! before its next message and its state starts afresh; only the connection
//! whose message broke the instance is closed. Keep state that must be
//! shared or must survive in [`host`]'s counters and key/value store.
//!
//! # Configuration
//!
//! What each default role's `configure` receives is defined once, as the
//! serde types of [`config`]: wasp serializes them, plugins read them back
//! with [`parse_config`]. Sizes and durations are parsed by [`units`], the
//! same functions wasp uses for its configuration file.
//!
//! # Features
//!
//! - `guest` (default): everything a plugin needs: the role traits,
//!   [`export!`], the WIT types and the [`host`] imports. Without it the
//!   crate is [`config`] and [`units`] alone, which compile natively without
//!   `wit-bindgen`; the wasp host depends on it that way.
//! - `testing`: [`testing`], to run a plugin natively in `cargo test` with
//!   an in-memory host (kv, counters, a clock under the test's control,
//!   captured log lines). Enable it in `[dev-dependencies]`.
//!
//! # The contract
//!
//! `wit/wasp.wit` in this crate is the contract, package
//! `wasp:plugin@`[`WIT_VERSION`]; wasp refuses, at load, a plugin built
//! against another version, naming both.

pub mod config;
pub mod kv_store;
pub mod units;

#[cfg(feature = "guest")]
mod bindings;
#[cfg(feature = "guest")]
mod connections;
#[cfg(feature = "guest")]
mod export;
#[cfg(feature = "guest")]
mod head;
#[cfg(feature = "guest")]
pub mod host;
#[cfg(all(feature = "testing", not(target_arch = "wasm32")))]
mod native_host;
#[cfg(feature = "guest")]
mod roles;
#[cfg(all(feature = "testing", not(target_arch = "wasm32")))]
pub mod testing;

#[cfg(feature = "guest")]
pub(crate) use bindings::router_world::wasp::plugin::host::KvScope;
#[cfg(feature = "guest")]
pub use bindings::router_world::wasp::plugin::types::{
    Action, CloseFrame, Decision, Direction, LogLevel, Message, Peer, ProxyTo, RequestHead,
    Response, StaticFiles,
};
#[doc(hidden)]
#[cfg(feature = "guest")]
pub use bindings::{balancer_world, filter_world, origin_world, router_world};
pub use config::parse_config;

/// The version of the `wasp:plugin` package this SDK builds plugins for.
pub const WIT_VERSION: &str = "0.3.0";

/// The longest timer a filter may set (`host.set-timer`): a day; a longer
/// one is cut to it. wasp's runtime and the test host both use this.
pub const MAX_TIMER_MS: u64 = 86_400_000;
#[doc(hidden)]
#[cfg(feature = "guest")]
pub use connections::{Connections as __Connections, unpack as __unpack};
#[doc(hidden)]
#[cfg(feature = "guest")]
pub use export::__log_panics;
#[cfg(feature = "guest")]
pub use roles::{Balancer, Directions, Filter, Origin, Router};

#[cfg(test)]
mod tests {
    const WIT: &str = include_str!("../wit/wasp.wit");

    #[test]
    fn the_wit_file_declares_this_version() {
        let declared = format!("\npackage wasp:plugin@{};\n", super::WIT_VERSION);
        assert!(
            WIT.contains(&declared),
            "wit/wasp.wit does not declare {declared:?}"
        );
    }

    #[test]
    fn the_wit_file_documents_the_store_limits() {
        use crate::kv_store::{MAX_BYTES, MAX_KEY_BYTES, MAX_KEYS, MAX_VALUE_BYTES};
        let documented = WIT.replace("\n    /// ", " ").replace("\n/// ", " ");
        for limit in [
            format!("keys at most {MAX_KEY_BYTES} bytes"),
            format!("values at most {MAX_VALUE_BYTES} bytes"),
            format!("at most {MAX_KEYS} live keys and {} MiB", MAX_BYTES >> 20),
        ] {
            assert!(
                documented.contains(&limit),
                "wasp.wit does not say {limit:?}"
            );
        }
    }
}
