//! The state every plugin instance's store carries, and the host functions
//! of the `host` interface (log, clock, counters and key/value store).

use crate::bindings::wasp::plugin::{host, types};
use crate::bindings::{Direction, KvError, KvScope, LogLevel, Message, SendError};
use crate::deadline::CpuDeadline;
use crate::speech::{Speech, TimerRequest};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Result};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasp_sdk::kv_store::{KvError as Refusal, Namespace, Scope, Store};

/// Counters and key/value pairs, a namespace per plugin and one shared
/// (`wasp_sdk::kv_store`: the same code the SDK's test host runs); owned by
/// the runtime, so they survive plugin reloads.
pub struct SharedState {
    store: Mutex<Store>,
    /// Expiry is measured on a monotonic clock from here: a wall clock set
    /// back would keep values alive.
    epoch: Instant,
    /// Told of every write a plugin makes (the host's cluster replication).
    replica: OnceLock<Arc<dyn KvReplica>>,
}

/// A write a plugin made, as another process applies it. `namespace` is the
/// plugin's name, `None` for the shared namespace.
#[derive(Debug, Clone, PartialEq)]
pub enum KvWrite {
    Set {
        namespace: Option<Arc<str>>,
        key: String,
        value: String,
        ttl_ms: Option<u64>,
    },
    Delete {
        namespace: Option<Arc<str>>,
        key: String,
    },
    /// A counter changed by `delta` (the replica learns the cluster's total
    /// and applies it with [`KvWrite::Counter`]).
    CounterAdd {
        namespace: Option<Arc<str>>,
        key: String,
        delta: i64,
    },
    /// A counter's value, as the cluster counts it.
    Counter {
        namespace: Option<Arc<str>>,
        key: String,
        value: i64,
    },
}

/// Receives plugins' writes, after they were applied here. Runs inline in
/// the plugin call: it must hand the write on without waiting.
pub trait KvReplica: Send + Sync {
    fn written(&self, write: KvWrite);
}

impl Default for SharedState {
    fn default() -> Self {
        SharedState {
            store: Mutex::new(Store::default()),
            epoch: Instant::now(),
            replica: OnceLock::new(),
        }
    }
}

impl SharedState {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Sends every later write to `replica`; once (at start).
    pub fn replicate(&self, replica: Arc<dyn KvReplica>) {
        let _ = self.replica.set(replica);
    }

    /// Applies a write that another process made, without replicating it
    /// again. A write over the limits is dropped (the other process has the
    /// same limits, so it only happens when this namespace is fuller).
    pub fn apply(&self, write: &KvWrite) {
        let now = self.now();
        let mut store = self.store.lock().unwrap();
        fn ns<'s>(store: &'s mut Store, name: &Option<Arc<str>>) -> &'s mut Namespace {
            match name {
                Some(plugin) => store.namespace(Scope::Plugin(plugin)),
                None => store.namespace(Scope::Shared),
            }
        }
        match write {
            KvWrite::Set {
                namespace,
                key,
                value,
                ttl_ms,
            } => {
                let _ = ns(&mut store, namespace).set(key, value, *ttl_ms, now);
            }
            KvWrite::Delete { namespace, key } => {
                ns(&mut store, namespace).delete(key, now);
            }
            KvWrite::CounterAdd {
                namespace,
                key,
                delta,
            } => {
                let _ = ns(&mut store, namespace).counter_add(key, *delta);
            }
            KvWrite::Counter {
                namespace,
                key,
                value,
            } => {
                let _ = ns(&mut store, namespace).counter_set(key, *value);
            }
        }
    }

    /// Hands a write this process's plugin made to the replica, if any.
    fn replicate_write(&self, write: impl FnOnce() -> KvWrite) {
        if let Some(replica) = self.replica.get() {
            replica.written(write());
        }
    }

    /// Runs `f` on `plugin`'s namespace or the shared one.
    fn with<R>(&self, plugin: &str, scope: KvScope, f: impl FnOnce(&mut Namespace, u64) -> R) -> R {
        let now = self.now();
        let mut store = self.store.lock().unwrap();
        let scope = match scope {
            KvScope::Plugin => Scope::Plugin(plugin),
            KvScope::Shared => Scope::Shared,
        };
        f(store.namespace(scope), now)
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
    /// What a filter call says on its own (sends, timer); lent by the
    /// caller for the call (`FilterPool`).
    pub speech: Speech,
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
            speech: Speech::default(),
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

    fn counter_add(&mut self, scope: KvScope, key: String, delta: i64) -> Result<i64, KvError> {
        let added = self
            .shared
            .with(&self.plugin, scope, |ns, _| ns.counter_add(&key, delta));
        if added.is_ok() {
            self.shared.replicate_write(|| KvWrite::CounterAdd {
                namespace: self.namespace(scope),
                key: key.clone(),
                delta,
            });
        }
        self.refused("counter-add", &key, added)
    }

    fn kv_get(&mut self, scope: KvScope, key: String) -> Option<String> {
        self.shared.with(&self.plugin, scope, |ns, now| {
            ns.get(&key, now).map(str::to_owned)
        })
    }

    fn kv_set(
        &mut self,
        scope: KvScope,
        key: String,
        value: String,
        ttl_ms: Option<u64>,
    ) -> Result<(), KvError> {
        let set = self.shared.with(&self.plugin, scope, |ns, now| {
            ns.set(&key, &value, ttl_ms, now)
        });
        self.refused("kv-set", &key, set)?;
        self.shared.replicate_write(|| KvWrite::Set {
            namespace: self.namespace(scope),
            key,
            value,
            ttl_ms,
        });
        Ok(())
    }

    fn kv_delete(&mut self, scope: KvScope, key: String) -> bool {
        let deleted = self
            .shared
            .with(&self.plugin, scope, |ns, now| ns.delete(&key, now));
        self.shared.replicate_write(|| KvWrite::Delete {
            namespace: self.namespace(scope),
            key,
        });
        deleted
    }

    fn kv_compare_and_set(
        &mut self,
        scope: KvScope,
        key: String,
        expected: Option<String>,
        value: Option<String>,
        ttl_ms: Option<u64>,
    ) -> Result<bool, KvError> {
        let swapped = self.shared.with(&self.plugin, scope, |ns, now| {
            ns.compare_and_set(&key, expected.as_deref(), value.as_deref(), ttl_ms, now)
        });
        let swapped = self.refused("kv-compare-and-set", &key, swapped)?;
        // Compared here only: the swap reaches other processes as a plain
        // write (last writer wins there).
        if swapped {
            let namespace = self.namespace(scope);
            self.shared.replicate_write(|| match value {
                Some(value) => KvWrite::Set {
                    namespace,
                    key,
                    value,
                    ttl_ms,
                },
                None => KvWrite::Delete { namespace, key },
            });
        }
        Ok(swapped)
    }

    fn send(&mut self, dir: Direction, msg: Message) -> Result<(), SendError> {
        self.speech.send(dir, msg)
    }

    fn set_timer(&mut self, after_ms: u64) {
        self.speech.timer(TimerRequest::After(after_ms));
    }

    fn cancel_timer(&mut self) {
        self.speech.timer(TimerRequest::Cancel);
    }
}

impl HostState {
    /// The namespace of `scope` as [`KvWrite`] names it.
    fn namespace(&self, scope: KvScope) -> Option<Arc<str>> {
        match scope {
            KvScope::Plugin => Some(self.plugin.clone()),
            KvScope::Shared => None,
        }
    }

    /// Logs a refused write (the plugin gets the error too: a plugin that
    /// ignores it still leaves a trace) and converts it for the plugin.
    fn refused<T>(&self, call: &str, key: &str, result: Result<T, Refusal>) -> Result<T, KvError> {
        result.map_err(|refusal| {
            let key: String = key.chars().take(64).collect();
            tracing::warn!(plugin = &*self.plugin, "{call} {key:?} refused: {refusal}");
            match refusal {
                Refusal::KeyTooLong(len) => KvError::KeyTooLong(len),
                Refusal::ValueTooLarge(len) => KvError::ValueTooLarge(len),
                Refusal::NamespaceFull => KvError::NamespaceFull,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(plugin: &str, shared: &Arc<SharedState>) -> HostState {
        HostState::new(plugin.into(), shared.clone(), 1 << 20)
    }

    #[test]
    fn each_plugin_has_its_namespace_and_shares_one() {
        use host::Host;
        let shared = Arc::new(SharedState::default());
        let (mut a, mut b) = (state("a.wasm", &shared), state("b.wasm", &shared));
        a.kv_set(KvScope::Plugin, "k".into(), "a's".into(), None)
            .unwrap();
        b.kv_set(KvScope::Shared, "k".into(), "everyone's".into(), None)
            .unwrap();
        assert_eq!(b.kv_get(KvScope::Plugin, "k".into()), None);
        assert_eq!(
            a.kv_get(KvScope::Plugin, "k".into()).as_deref(),
            Some("a's")
        );
        assert_eq!(
            a.kv_get(KvScope::Shared, "k".into()).as_deref(),
            Some("everyone's")
        );
        // Another instance of plugin `a` (or its reloaded version) finds it.
        let mut a2 = state("a.wasm", &shared);
        assert_eq!(
            a2.kv_get(KvScope::Plugin, "k".into()).as_deref(),
            Some("a's")
        );
        assert_eq!(a2.counter_add(KvScope::Plugin, "n".into(), 2), Ok(2));
        assert_eq!(b.counter_add(KvScope::Plugin, "n".into(), 1), Ok(1));
        assert_eq!(
            a.kv_set(KvScope::Plugin, "x".repeat(300), String::new(), None),
            Err(KvError::KeyTooLong(300))
        );
    }
}
