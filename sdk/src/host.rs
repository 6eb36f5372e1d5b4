//! What the host offers a plugin: logging, the clock, and counters and a
//! key/value store shared by every instance and kept across reloads.

pub use crate::LogLevel;
use crate::router_world::wasp::plugin::host as imports;

/// Writes a line to wasp's log, tagged with the plugin's name.
pub fn log(level: LogLevel, message: &str) {
    imports::log(level, message);
}

/// Wall-clock time in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    imports::now_ms()
}

/// Adds `delta` to the shared counter `key` (created at 0) and returns the
/// new value.
pub fn counter_add(key: &str, delta: i64) -> i64 {
    imports::counter_add(key, delta)
}

/// Reads a value from the shared key/value store.
pub fn kv_get(key: &str) -> Option<String> {
    imports::kv_get(key)
}

/// Stores a value in the shared key/value store, expiring after `ttl_ms`
/// milliseconds when given.
pub fn kv_set(key: &str, value: &str, ttl_ms: Option<u64>) {
    imports::kv_set(key, value, ttl_ms)
}
