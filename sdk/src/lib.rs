//! Write [wasp](https://github.com/wasp-proxy/wasp) plugins in Rust.
//!
//! wasp asks WebAssembly plugins for every decision it makes: which location
//! serves a request ([`Router`]), which upstream peer gets it ([`Balancer`]),
//! whether a WebSocket's `Origin` is allowed ([`Origin`]) and what happens to
//! each WebSocket message ([`Filter`]). A plugin is a small crate that
//! implements one or more of these traits and names them in [`export!`]:
//!
//! ```ignore
//! use wasp_sdk::{Action, Direction, Filter, Message};
//!
//! struct Shout;
//!
//! impl Filter for Shout {
//!     fn configure(_config: &str) -> Result<Self, String> {
//!         Ok(Shout)
//!     }
//!     fn on_message(&mut self, _conn: u64, _dir: Direction, msg: Message) -> Action {
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
//! wasp keeps a pool of live instances of each plugin and reuses them. Each
//! instance is created, then `configure` is called once with the role's
//! configuration (JSON); its result becomes the instance's state, and every
//! later call gets `&mut self`. Instances can be thrown away at any time (a
//! trap, a reload, the pool shrinking), and several run side by side, so keep
//! state that must be shared or must survive in [`host`]'s counters and
//! key/value store.

mod bindings;
mod head;
pub mod host;

pub use bindings::router_world::wasp::plugin::types::{
    Action, CloseFrame, Decision, Direction, LogLevel, Message, Peer, ProxyTo, RequestHead,
    Response, StaticFiles,
};
#[doc(hidden)]
pub use bindings::{balancer_world, filter_world, origin_world, router_world};

/// Parses a `configure` string as JSON into `T`, with an error message that
/// names the plugin role and the cause (`serde_json` reports line and column).
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

/// Parses a size as wasp's configuration writes it: a number of bytes
/// (`"4096"`) or a number with a `k`, `m` or `g` suffix in powers of 1024
/// (`"64k"` is 65536). The suffix may be upper-case; nothing else may follow.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let invalid = || format!("invalid size {text:?}: expected bytes or a number with k, m or g");
    let (digits, shift) = match text.as_bytes().last().map(u8::to_ascii_lowercase) {
        Some(b'k') => (&text[..text.len() - 1], 10),
        Some(b'm') => (&text[..text.len() - 1], 20),
        Some(b'g') => (&text[..text.len() - 1], 30),
        _ => (text, 0),
    };
    // `u64::from_str` accepts a leading `+`; a size is digits only.
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let number: u64 = digits.parse().map_err(|_| invalid())?;
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("invalid size {text:?}: too large"))
}

/// Deserializes a size given either as a JSON number of bytes or as a
/// string accepted by [`parse_size`]; use it as
/// `#[serde(deserialize_with = "wasp_sdk::deserialize_size")]` on a `u64`.
pub fn deserialize_size<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<u64, D::Error> {
    struct SizeVisitor;

    impl serde::de::Visitor<'_> for SizeVisitor {
        type Value = u64;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a size: a number of bytes or a string like \"64k\"")
        }
        fn visit_u64<E: serde::de::Error>(self, bytes: u64) -> Result<u64, E> {
            Ok(bytes)
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<u64, E> {
            parse_size(text).map_err(E::custom)
        }
    }

    deserializer.deserialize_any(SizeVisitor)
}

/// Which messages a filter looks at, for a filter's configuration:
/// `"both"` (the default), `"client"` (client → upstream only) or
/// `"upstream"` (upstream → client only).
#[derive(serde::Deserialize, Clone, Copy, Default, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum Directions {
    /// Both ways.
    #[default]
    Both,
    /// Client → upstream only.
    Client,
    /// Upstream → client only.
    Upstream,
}

impl Directions {
    /// Whether a message travelling in `dir` is looked at.
    pub fn includes(self, dir: Direction) -> bool {
        match self {
            Directions::Both => true,
            Directions::Client => dir == Direction::ClientToUpstream,
            Directions::Upstream => dir == Direction::UpstreamToClient,
        }
    }
}

/// Routing: decides which location handles each request.
pub trait Router: Sized + 'static {
    /// Builds the router from the routing table wasp sends (JSON: servers,
    /// their listen addresses and names, and their numbered locations).
    /// An error refuses the plugin with this message.
    fn configure(config: &str) -> Result<Self, String>;

    /// Decides what to do with a request. Called for every request and every
    /// WebSocket handshake, before anything is sent upstream.
    fn route(&mut self, head: &RequestHead) -> Decision;
}

/// Load balancing: picks the upstream peer for each proxied request.
pub trait Balancer: Sized + 'static {
    /// Builds the balancer from the upstreams wasp sends (JSON: each
    /// upstream's policy, hash key and servers).
    fn configure(config: &str) -> Result<Self, String>;

    /// Returns the index in `peers` of the peer that gets this request, or
    /// `None` to answer 502. `cursor` counts the picks made for this upstream
    /// so far; wasp keeps it across plugin reloads. `hash_key` is the
    /// upstream's key template expanded for this request.
    fn pick(
        &mut self,
        head: &RequestHead,
        upstream: &str,
        peers: &[Peer],
        cursor: u64,
        hash_key: &str,
    ) -> Option<u32>;
}

/// Origin validation: accepts or refuses WebSocket handshakes.
pub trait Origin: Sized + 'static {
    /// Builds the checker from each location's origin policy (JSON).
    fn configure(config: &str) -> Result<Self, String>;

    /// Accepts the handshake for `location`, or refuses it with a short
    /// reason: the client gets 403 and the reason is logged.
    fn check(&mut self, head: &RequestHead, location: u32) -> Result<(), String>;
}

/// Per-message WebSocket filtering, in both directions.
pub trait Filter: Sized + 'static {
    /// Builds the filter from its configuration (JSON).
    fn configure(config: &str) -> Result<Self, String>;

    /// A WebSocket `conn` opened on a location using this filter. Connection
    /// ids are unique for the life of the wasp process.
    fn on_open(&mut self, conn: u64, head: &RequestHead) {
        let _ = (conn, head);
    }

    /// A complete message travels in direction `dir` on `conn`: forward it,
    /// replace it, drop it or close the connection.
    fn on_message(&mut self, conn: u64, dir: Direction, msg: Message) -> Action;

    /// `conn` closed: forget what was kept for it.
    fn on_close(&mut self, conn: u64) {
        let _ = conn;
    }
}

/// Sends panic messages to wasp's log (tagged with the plugin's name)
/// instead of stderr: the instance still traps, and the log says why.
/// Called by [`export!`] before `configure`; not public API.
#[doc(hidden)]
pub fn __log_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            host::log(LogLevel::Error, &format!("panic: {info}"))
        }));
    });
}

/// Exports plugin types as the roles they fill, e.g.
/// `wasp_sdk::export!(filter: MyFilter);` or
/// `wasp_sdk::export!(router: MyRouter, origin: MyOrigin);`.
///
/// Roles are `router`, `balancer`, `origin` and `filter`; each names a type
/// implementing the trait of the same name. Each role gets its own state,
/// built by its own `configure`.
///
/// The exports exist only when compiling for wasm: a native build (e.g. the
/// plugin's unit tests) cannot link the component ABI's symbol names, which
/// contain `:` and `@`.
#[macro_export]
macro_rules! export {
    ($($role:ident : $ty:ty),+ $(,)?) => {
        $(
            #[cfg(target_arch = "wasm32")]
            $crate::__export_role!($role $ty);
        )+
    };
}

/// Implements one role's generated `Guest` trait over a user type whose state
/// lives in a thread-local (a wasm instance has one thread). Not public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_role {
    (router $ty:ty) => {
        const _: () = {
            use $crate::router_world::exports::wasp::plugin::router::Guest;
            $crate::__state!($ty);
            struct Export;
            impl Guest for Export {
                fn configure(config: String) -> Result<(), String> {
                    $crate::__log_panics();
                    init(<$ty as $crate::Router>::configure(&config)?);
                    Ok(())
                }
                fn route(head: $crate::RequestHead) -> $crate::Decision {
                    with(|s| $crate::Router::route(s, &head))
                }
            }
    $crate::router_world::export!(Export with_types_in $crate::router_world);
        };
    };
    (balancer $ty:ty) => {
        const _: () = {
            use $crate::balancer_world::exports::wasp::plugin::balancer::Guest;
            $crate::__state!($ty);
            struct Export;
            impl Guest for Export {
                fn configure(config: String) -> Result<(), String> {
                    $crate::__log_panics();
                    init(<$ty as $crate::Balancer>::configure(&config)?);
                    Ok(())
                }
                fn pick(
                    head: $crate::RequestHead,
                    upstream: String,
                    peers: Vec<$crate::Peer>,
                    cursor: u64,
                    hash_key: String,
                ) -> Option<u32> {
                    with(|s| $crate::Balancer::pick(s, &head, &upstream, &peers, cursor, &hash_key))
                }
            }
    $crate::balancer_world::export!(Export with_types_in $crate::balancer_world);
        };
    };
    (origin $ty:ty) => {
        const _: () = {
            use $crate::origin_world::exports::wasp::plugin::origin::Guest;
            $crate::__state!($ty);
            struct Export;
            impl Guest for Export {
                fn configure(config: String) -> Result<(), String> {
                    $crate::__log_panics();
                    init(<$ty as $crate::Origin>::configure(&config)?);
                    Ok(())
                }
                fn check(head: $crate::RequestHead, location: u32) -> Result<(), String> {
                    with(|s| $crate::Origin::check(s, &head, location))
                }
            }
    $crate::origin_world::export!(Export with_types_in $crate::origin_world);
        };
    };
    (filter $ty:ty) => {
        const _: () = {
            use $crate::filter_world::exports::wasp::plugin::filter::Guest;
            $crate::__state!($ty);
            struct Export;
            impl Guest for Export {
                fn configure(config: String) -> Result<(), String> {
                    $crate::__log_panics();
                    init(<$ty as $crate::Filter>::configure(&config)?);
                    Ok(())
                }
                fn on_open(conn: u64, head: $crate::RequestHead) {
                    with(|s| $crate::Filter::on_open(s, conn, &head))
                }
                fn on_message(
                    conn: u64,
                    dir: $crate::Direction,
                    msg: $crate::Message,
                ) -> $crate::Action {
                    with(|s| $crate::Filter::on_message(s, conn, dir, msg))
                }
                fn on_close(conn: u64) {
                    with(|s| $crate::Filter::on_close(s, conn))
                }
            }
    $crate::filter_world::export!(Export with_types_in $crate::filter_world);
        };
    };
    ($other:ident $ty:ty) => {
        compile_error!(concat!(
            "unknown wasp role `",
            stringify!($other),
            "`: expected router, balancer, origin or filter"
        ));
    };
}

/// The per-role state slot: `init` stores what `configure` built, `with`
/// lends it to a call. Not public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __state {
    ($ty:ty) => {
        ::std::thread_local! {
            static STATE: ::std::cell::RefCell<Option<$ty>> = const { ::std::cell::RefCell::new(None) };
        }
        fn init(state: $ty) {
            STATE.with(|slot| *slot.borrow_mut() = Some(state));
        }
        fn with<R>(f: impl FnOnce(&mut $ty) -> R) -> R {
            STATE.with(|slot| {
                let mut slot = slot.borrow_mut();
                // wasp always calls `configure` first on a new instance.
                f(slot.as_mut().expect("wasp called the plugin before configure"))
            })
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_bytes_or_powers_of_1024() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        for bad in [
            "",
            "k",
            "+5",
            "-5",
            "1.5k",
            "5 k",
            "5kb",
            "5t",
            "99999999999g",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn sizes_deserialize_from_numbers_and_strings() {
        #[derive(serde::Deserialize)]
        struct Limit {
            #[serde(deserialize_with = "deserialize_size")]
            max: u64,
        }
        let max = |json: &str| parse_config::<Limit>(json).map(|l| l.max);
        assert_eq!(max(r#"{"max": 100}"#), Ok(100));
        assert_eq!(max(r#"{"max": "16k"}"#), Ok(16 << 10));
        for bad in [
            r#"{"max": -1}"#,
            r#"{"max": 1.5}"#,
            r#"{"max": "lots"}"#,
            r#"{"max": true}"#,
        ] {
            assert!(max(bad).is_err(), "{bad} parsed");
        }
    }
}
