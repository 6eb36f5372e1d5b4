//! What the host offers a plugin: logging, the clock, and counters and a
//! key/value store kept by the host, so that they are shared by every
//! instance of the plugin and survive instance failures and reloads.
//!
//! The store has a namespace per plugin, [`kv()`], that no other plugin
//! sees, and one namespace every plugin shares, [`shared_kv()`]. Limits per
//! namespace (from `wasp.wit`, enforced by the host): keys at most
//! [`MAX_KEY_BYTES`], values at most [`MAX_VALUE_BYTES`], at most
//! [`MAX_KEYS`] live keys and [`MAX_BYTES`] of keys and values; a write
//! over a limit returns a [`KvError`] and changes nothing.
//!
//! A filter may also speak during its calls: [`send`] a message to either
//! peer of the connection the call is for, and [`set_timer`] to have its
//! [`on_timer`](crate::Filter::on_timer) called for that connection later.
//!
//! In a wasm build these call wasp. In a native build (a plugin's unit
//! tests) they call the in-memory host that [`testing`](crate::testing) reads,
//! which needs the `testing` feature.

use crate::KvScope;
pub use crate::LogLevel;
pub use crate::kv_store::{KvError, MAX_BYTES, MAX_KEY_BYTES, MAX_KEYS, MAX_VALUE_BYTES};
/// Why [`send`] queued nothing: `NoConnection` (not in a filter's call for
/// a connection), `TooLarge(len)` (over the location's
/// `max_message_size`), `PeerBusy` (the peer has not taken what it is
/// owed; try again later).
pub use crate::router_world::wasp::plugin::host::SendError;
use crate::{Direction, Message};

#[cfg(all(not(target_arch = "wasm32"), feature = "testing"))]
use crate::native_host::imports;
#[cfg(all(not(target_arch = "wasm32"), not(feature = "testing")))]
use unavailable as imports;
#[cfg(target_arch = "wasm32")]
use wasp as imports;

/// Writes a line to wasp's log, tagged with the plugin's name.
pub fn log(level: LogLevel, message: &str) {
    imports::log(level, message);
}

/// Wall-clock time in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    imports::now_ms()
}

/// Filters: sends `msg` to a peer of the connection this call is for:
/// `Direction::UpstreamToClient` to the client, `ClientToUpstream` to the
/// upstream. Callable from `on_open`, `on_message` and `on_timer`.
///
/// It leaves when the call returns, after the message the call was handed
/// (if that goes the same way and is passed on), as a frame of its own;
/// other filters of the chain do not see it. Limits: at most the
/// location's `max_message_size` ([`SendError::TooLarge`]), and refused
/// with [`SendError::PeerBusy`] while the peer is owed that much already
/// (relayed or sent, not yet taken). A peer that takes nothing for
/// `send_timeout` is closed with 1001. Sending is not activity: it does not
/// keep a connection from its `idle_timeout`.
pub fn send(dir: Direction, msg: Message) -> Result<(), SendError> {
    let sent = imports::send(dir, &msg);
    if sent.is_ok() {
        SENT.set(SENT.get().wrapping_add(1));
    }
    sent
}

std::thread_local! {
    /// Successful [`send`]s so far: `on-messages` tells wasp how many each
    /// message made, so that they leave after the right message.
    static SENT: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// How many [`send`]s succeeded so far (wrapping); differences count the
/// sends of one message.
pub(crate) fn sends_so_far() -> u32 {
    SENT.get()
}

/// Filters: [`send`] to the client.
pub fn send_to_client(msg: Message) -> Result<(), SendError> {
    send(Direction::UpstreamToClient, msg)
}

/// Filters: [`send`] to the upstream.
pub fn send_to_upstream(msg: Message) -> Result<(), SendError> {
    send(Direction::ClientToUpstream, msg)
}

/// Filters: calls [`on_timer`](crate::Filter::on_timer) for the connection
/// this call is for, `after_ms` milliseconds from now (at most a day:
/// [`MAX_TIMER_MS`]). One timer per filter and connection: a later call
/// replaces it, and it fires once. It survives the connection moving to a
/// new instance (a reload, a failed instance): `on_open` runs there first.
/// Outside a filter's call for a connection it does nothing.
pub fn set_timer(after_ms: u64) {
    imports::set_timer(after_ms);
}

/// Filters: forgets this filter's timer for the connection this call is for.
pub fn cancel_timer() {
    imports::cancel_timer();
}

pub use crate::MAX_TIMER_MS;

/// This plugin's own counters and key/value pairs.
pub fn kv() -> Kv {
    Kv(KvScope::Plugin)
}

/// The counters and key/value pairs every plugin shares.
pub fn shared_kv() -> Kv {
    Kv(KvScope::Shared)
}

/// A namespace of the host's store: [`kv()`] or [`shared_kv()`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kv(KvScope);

impl Kv {
    /// Adds `delta` to counter `key` (created at 0) and returns the new
    /// value. Counters are apart from values: `get("n")` does not read one.
    pub fn counter_add(self, key: &str, delta: i64) -> Result<i64, KvError> {
        imports::counter_add(self.0, key, delta)
    }

    /// The value of `key`, unless unset or expired.
    pub fn get(self, key: &str) -> Option<String> {
        imports::kv_get(self.0, key)
    }

    /// Stores `value` under `key`, expiring `ttl_ms` milliseconds from now
    /// when given.
    pub fn set(self, key: &str, value: &str, ttl_ms: Option<u64>) -> Result<(), KvError> {
        imports::kv_set(self.0, key, value, ttl_ms)
    }

    /// Removes `key`; true when it held a live value.
    pub fn delete(self, key: &str) -> bool {
        imports::kv_delete(self.0, key)
    }

    /// Atomically, across every instance: when the value of `key` is
    /// `expected` (`None`: unset or expired), sets it to `value` (`None`:
    /// deletes it) and returns true; otherwise changes nothing and returns
    /// false. A lease: `compare_and_set(k, None, Some(me), Some(ttl))` takes
    /// it, `compare_and_set(k, Some(me), None, None)` gives it back.
    pub fn compare_and_set(
        self,
        key: &str,
        expected: Option<&str>,
        value: Option<&str>,
        ttl_ms: Option<u64>,
    ) -> Result<bool, KvError> {
        imports::kv_compare_and_set(self.0, key, expected, value, ttl_ms)
    }
}

/// The host's functions, with its errors as [`KvError`].
#[cfg(target_arch = "wasm32")]
mod wasp {
    use super::{KvError, KvScope};
    use crate::router_world::wasp::plugin::host::{self as wit, KvError as WitError};
    pub use wit::{cancel_timer, kv_delete, kv_get, log, now_ms, send, set_timer};

    fn error(error: WitError) -> KvError {
        match error {
            WitError::KeyTooLong(len) => KvError::KeyTooLong(len),
            WitError::ValueTooLarge(len) => KvError::ValueTooLarge(len),
            WitError::NamespaceFull => KvError::NamespaceFull,
        }
    }

    pub fn counter_add(scope: KvScope, key: &str, delta: i64) -> Result<i64, KvError> {
        wit::counter_add(scope, key, delta).map_err(error)
    }

    pub fn kv_set(scope: KvScope, key: &str, value: &str, ttl: Option<u64>) -> Result<(), KvError> {
        wit::kv_set(scope, key, value, ttl).map_err(error)
    }

    pub fn kv_compare_and_set(
        scope: KvScope,
        key: &str,
        expected: Option<&str>,
        value: Option<&str>,
        ttl: Option<u64>,
    ) -> Result<bool, KvError> {
        wit::kv_compare_and_set(scope, key, expected, value, ttl).map_err(error)
    }
}

/// A native build without the `testing` feature has no host to call.
#[cfg(all(not(target_arch = "wasm32"), not(feature = "testing")))]
mod unavailable {
    use super::{KvError, KvScope, LogLevel};

    const WHY: &str = "wasp_sdk::host outside wasm needs the in-memory host: add \
        `wasp-sdk = { ..., features = [\"testing\"] }` to [dev-dependencies]";

    pub fn log(_: LogLevel, _: &str) {
        panic!("{WHY}")
    }
    pub fn now_ms() -> u64 {
        panic!("{WHY}")
    }
    pub fn counter_add(_: KvScope, _: &str, _: i64) -> Result<i64, KvError> {
        panic!("{WHY}")
    }
    pub fn kv_get(_: KvScope, _: &str) -> Option<String> {
        panic!("{WHY}")
    }
    pub fn kv_set(_: KvScope, _: &str, _: &str, _: Option<u64>) -> Result<(), KvError> {
        panic!("{WHY}")
    }
    pub fn kv_delete(_: KvScope, _: &str) -> bool {
        panic!("{WHY}")
    }
    pub fn kv_compare_and_set(
        _: KvScope,
        _: &str,
        _: Option<&str>,
        _: Option<&str>,
        _: Option<u64>,
    ) -> Result<bool, KvError> {
        panic!("{WHY}")
    }
    pub fn send(_: crate::Direction, _: &crate::Message) -> Result<(), super::SendError> {
        panic!("{WHY}")
    }
    pub fn set_timer(_: u64) {
        panic!("{WHY}")
    }
    pub fn cancel_timer() {
        panic!("{WHY}")
    }
}
