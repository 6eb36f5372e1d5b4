//! The wasm engine shared by every plugin: compilation (with an on-disk
//! cache), the pooling allocator, the epoch ticker that enforces per-call
//! CPU deadlines, and the linker holding the host functions.

use super::bindings::Full;
use super::error::{CallError, LoadError};
use super::host_api::{HostState, SharedState};
use super::plugin::{Plugin, Role};
use super::ticker::{TICK, Ticker};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{
    Cache, CacheConfig, Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
};

/// `configure` may compile regexes or parse big tables: give it more room
/// than a per-request call, but still bound it.
const CONFIGURE_TIMEOUT: Duration = Duration::from_secs(1);

/// Resource limits applied to every plugin instance.
#[derive(Debug, Clone)]
pub struct Limits {
    /// CPU deadline of one call (rounded up to whole milliseconds).
    pub call_timeout: Duration,
    /// Cap on an instance's linear memory, in bytes.
    pub memory_limit: usize,
    /// Live instances the pooling allocator has room for, over all plugins.
    pub instances: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            call_timeout: Duration::from_millis(10),
            memory_limit: 64 << 20,
            instances: 1000,
        }
    }
}

/// Compiles and runs plugins. One per process (tests make several).
/// Told about plugin calls (metrics). A pool binds a recorder for its
/// `(plugin, role)` once, so a call records without any lookup.
pub trait CallObserver: Send + Sync {
    fn bind(&self, plugin: &str, role: Role) -> Arc<dyn CallRecorder>;
}

/// Records the calls of one `(plugin, role)`; runs inline after every call.
pub trait CallRecorder: Send + Sync {
    fn record(&self, elapsed: Duration, error: Option<&CallError>);
}

pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    limits: Limits,
    observer: Option<Arc<dyn CallObserver>>,
    shared: Arc<SharedState>,
    ticker: Arc<Ticker>,
}

impl Runtime {
    /// Builds the engine. `cache_dir` holds compiled plugins so a restart does
    /// not recompile unchanged ones; `None` uses wasmtime's per-user cache.
    pub fn new(
        limits: Limits,
        cache_dir: Option<&Path>,
        observer: Option<Arc<dyn CallObserver>>,
    ) -> wasmtime::Result<Arc<Self>> {
        // Calls are timed with quanta's TSC clock, which calibrates itself
        // (up to 200 ms) on first use: do that now, not on a request.
        let _ = quanta::Instant::now();
        let mut pool = PoolingAllocationConfig::new();
        // A Rust component holds a few core instances and tables (the main
        // module plus the shims the component linker adds): size those ~10×.
        pool.total_component_instances(limits.instances)
            .total_core_instances(limits.instances.saturating_mul(10))
            .total_memories(limits.instances.saturating_mul(2))
            .total_tables(limits.instances.saturating_mul(10))
            .max_memory_size(limits.memory_limit);

        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            // Reserving only the cap (instead of 4 GiB per slot) keeps the
            // address space of a thousand slots modest.
            .memory_reservation(limits.memory_limit as u64)
            .memory_reservation_for_growth(0);
        let mut cache = CacheConfig::new();
        if let Some(dir) = cache_dir {
            cache.with_directory(dir);
        }
        config.cache(Some(Cache::new(cache)?));

        let engine = Engine::new(&config)?;
        let ticker = Ticker::start(&engine);

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        Full::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)?;

        Ok(Arc::new(Runtime {
            observer,
            engine,
            linker,
            limits,
            shared: Arc::default(),
            ticker,
        }))
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub(super) fn observer(&self) -> Option<&Arc<dyn CallObserver>> {
        self.observer.as_ref()
    }

    /// Compiles `bytes` as plugin `name`. Slow (tens of milliseconds unless
    /// cached): call it off the request path.
    pub fn load(self: &Arc<Self>, name: &str, bytes: &[u8]) -> Result<Arc<Plugin>, LoadError> {
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| LoadError::NotAComponent(format!("{e:#}")))?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Link(format!("{e:#}")))?;
        Plugin::new(self.clone(), name, bytes, pre)
    }

    /// Reads and compiles a plugin file; the plugin is named after the path.
    pub fn load_file(self: &Arc<Self>, path: &Path) -> Result<Arc<Plugin>, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.display().to_string(),
            source,
        })?;
        self.load(&path.display().to_string(), &bytes)
    }

    pub(super) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// A fresh store for one instance of plugin `name`.
    pub(super) fn new_store(&self, name: Arc<str>) -> Store<HostState> {
        let mut store = Store::new(
            &self.engine,
            HostState::new(name, self.shared.clone(), self.limits.memory_limit),
        );
        store.limiter(|state| &mut state.memory);
        store.epoch_deadline_callback(|mut ctx| Ok(ctx.data_mut().deadline.on_deadline()));
        store
    }

    /// Arms the deadline of one call on `store`.
    pub(super) fn arm_call(&self, store: &mut Store<HostState>) {
        self.ticker.call_starting();
        arm(store, self.limits.call_timeout);
    }

    /// Arms the deadline of instantiation plus `configure` on `store`.
    pub(super) fn arm_configure(&self, store: &mut Store<HostState>) {
        self.ticker.call_starting();
        arm(store, CONFIGURE_TIMEOUT);
    }
}

fn arm(store: &mut Store<HostState>, budget: Duration) {
    let ticks = ticks(budget);
    store.data_mut().deadline.arm(budget, ticks);
    store.set_epoch_deadline(ticks);
}

fn ticks(timeout: Duration) -> u64 {
    timeout.as_nanos().div_ceil(TICK.as_nanos()).max(1) as u64
}
