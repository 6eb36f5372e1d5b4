//! Loading plugins: the wasm engine shared by every plugin (compilation
//! with an on-disk cache, the pooling allocator, epoch interruption) and
//! the linker holding the host functions.

use crate::bindings::Full;
use crate::error::LoadError;
use crate::host_api::{HostState, SharedState};
use crate::plugin::Plugin;
use crate::sandbox::{CallObserver, Limits, Sandbox};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{
    Cache, CacheConfig, Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig,
};

/// Compiles and links plugins. One per process (tests make several).
pub struct Runtime {
    sandbox: Arc<Sandbox>,
    linker: Linker<HostState>,
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
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        Full::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)?;

        Ok(Arc::new(Runtime {
            sandbox: Arc::new(Sandbox::new(engine, limits, observer)),
            linker,
        }))
    }

    /// The host kv and counters every plugin shares (to replicate them).
    pub fn kv(&self) -> &Arc<SharedState> {
        self.sandbox.kv()
    }

    pub fn limits(&self) -> &Limits {
        self.sandbox.limits()
    }

    /// Compiles `bytes` as plugin `name`. Slow (tens of milliseconds unless
    /// cached): call it off the request path.
    pub fn load(&self, name: &str, bytes: &[u8]) -> Result<Arc<Plugin>, LoadError> {
        let started = Instant::now();
        let component = Component::new(self.sandbox.engine(), bytes)
            .map_err(|e| LoadError::NotAComponent(format!("{e:#}")))?;
        crate::contract::check_version(self.sandbox.engine(), &component)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Link(format!("{e:#}")))?;
        Plugin::new(self.sandbox.clone(), name, bytes, pre, started.elapsed())
    }

    /// Reads and compiles a plugin file; the plugin is named after the path.
    pub fn load_file(&self, path: &Path) -> Result<Arc<Plugin>, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.display().to_string(),
            source,
        })?;
        self.load(&path.display().to_string(), &bytes)
    }
}
