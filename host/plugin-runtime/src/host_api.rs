//! The state every plugin instance's store carries, and the host functions
//! of the `host` interface (log, clock, shared counters and key/value store).

use crate::bindings::LogLevel;
use crate::bindings::wasp::plugin::{host, types};
use crate::deadline::CpuDeadline;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Result};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Bounds on the shared store, so a plugin cannot grow host memory at will.
const MAX_KV_ENTRIES: usize = 100_000;
const MAX_KV_VALUE: usize = 64 * 1024;

/// Counters and key/value pairs shared by every instance of every plugin;
/// owned by the runtime, so they survive plugin reloads.
#[derive(Default)]
pub struct SharedState {
    counters: Mutex<HashMap<String, i64>>,
    kv: Mutex<HashMap<String, (String, Option<Instant>)>>,
}

impl SharedState {
    fn counter_add(&self, key: String, delta: i64) -> i64 {
        let mut counters = self.counters.lock().unwrap();
        if counters.len() >= MAX_KV_ENTRIES && !counters.contains_key(&key) {
            return 0;
        }
        let value = counters.entry(key).or_insert(0);
        *value = value.wrapping_add(delta);
        *value
    }

    fn kv_get(&self, key: &str) -> Option<String> {
        let kv = self.kv.lock().unwrap();
        let (value, expires) = kv.get(key)?;
        match expires {
            Some(at) if *at <= Instant::now() => None,
            _ => Some(value.clone()),
        }
    }

    /// Returns false when the value is refused (too big, or the store is full
    /// even after dropping expired entries).
    fn kv_set(&self, key: String, value: String, ttl_ms: Option<u64>) -> bool {
        if value.len() > MAX_KV_VALUE {
            return false;
        }
        let now = Instant::now();
        let mut kv = self.kv.lock().unwrap();
        if kv.len() >= MAX_KV_ENTRIES && !kv.contains_key(&key) {
            kv.retain(|_, (_, expires)| expires.is_none_or(|at| at > now));
            if kv.len() >= MAX_KV_ENTRIES {
                return false;
            }
        }
        let expires = ttl_ms.map(|ms| now + std::time::Duration::from_millis(ms));
        kv.insert(key, (value, expires));
        true
    }
}

/// Caps an instance's linear memory and remembers that it tried to exceed
/// the cap, so the failure is reported as out-of-memory rather than as a
/// generic trap. (wasmtime's `StoreLimits` enforces but does not tell.)
pub struct MemoryCap {
    max_bytes: usize,
    pub exceeded: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> Result<bool> {
        let allowed = desired <= self.max_bytes;
        self.exceeded |= !allowed;
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> Result<bool> {
        // Tables hold function references; Rust guests keep them tiny.
        Ok(desired <= 100_000)
    }
}

/// Data of one plugin instance's store.
pub struct HostState {
    plugin: Arc<str>,
    shared: Arc<SharedState>,
    wasi: WasiCtx,
    table: ResourceTable,
    pub memory: MemoryCap,
    pub deadline: CpuDeadline,
}

impl HostState {
    /// A plugin gets no filesystem, network, environment or arguments: only
    /// what `wasi:cli`/`wasi:random`/clocks give a Rust `std` guest.
    pub fn new(plugin: Arc<str>, shared: Arc<SharedState>, memory_limit: usize) -> Self {
        HostState {
            plugin,
            shared,
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            memory: MemoryCap {
                max_bytes: memory_limit,
                exceeded: false,
            },
            deadline: CpuDeadline::default(),
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for HostState {}

impl host::Host for HostState {
    fn log(&mut self, level: LogLevel, message: String) {
        let plugin = &*self.plugin;
        match level {
            LogLevel::Trace => tracing::trace!(plugin, "{message}"),
            LogLevel::Debug => tracing::debug!(plugin, "{message}"),
            LogLevel::Info => tracing::info!(plugin, "{message}"),
            LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            LogLevel::Error => tracing::error!(plugin, "{message}"),
        }
    }

    fn now_ms(&mut self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    fn counter_add(&mut self, key: String, delta: i64) -> i64 {
        self.shared.counter_add(key, delta)
    }

    fn kv_get(&mut self, key: String) -> Option<String> {
        self.shared.kv_get(&key)
    }

    fn kv_set(&mut self, key: String, value: String, ttl_ms: Option<u64>) {
        if !self.shared.kv_set(key, value, ttl_ms) {
            tracing::warn!(
                plugin = &*self.plugin,
                "kv-set refused: value over 64 KiB or store full"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_accumulate() {
        let shared = SharedState::default();
        assert_eq!(shared.counter_add("a".into(), 2), 2);
        assert_eq!(shared.counter_add("a".into(), -5), -3);
    }

    #[test]
    fn kv_values_expire() {
        let shared = SharedState::default();
        assert!(shared.kv_set("k".into(), "v".into(), None));
        assert_eq!(shared.kv_get("k").as_deref(), Some("v"));
        assert!(shared.kv_set("t".into(), "v".into(), Some(0)));
        assert_eq!(shared.kv_get("t"), None);
        assert!(!shared.kv_set("big".into(), "x".repeat(MAX_KV_VALUE + 1), None));
    }
}
