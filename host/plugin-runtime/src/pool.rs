//! Live plugin instances: a pool per (plugin, role, configuration) for the
//! per-request roles, and dedicated instances for filtered WebSockets.
//!
//! Creating a store per call costs 30–65 µs; a call on a live instance
//! ~0.2–4 µs. So instances are made once (from the `InstancePre`, with the
//! pooling allocator), configured once, and reused until one fails.

use crate::error::{CallError, LoadError};
use crate::host_api::HostState;
use crate::plugin::Plugin;
use crate::role::Role;
use crate::sandbox::CallRecorder;
use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use wasmtime::component::{Instance, InstancePre};
use wasmtime::{Store, Trap};

/// Idle instances kept per pool; more are only ever needed when more calls
/// run at once than there are worker threads.
const MAX_IDLE: usize = 64;

/// The typed exports of one role (the `Guest` struct bindgen generates).
pub trait RoleExport: Sized + Send + 'static {
    const ROLE: Role;
    type Indices: Send + Sync + 'static;
    fn indices(pre: &InstancePre<HostState>) -> wasmtime::Result<Self::Indices>;
    fn load(
        indices: &Self::Indices,
        store: &mut Store<HostState>,
        instance: &Instance,
    ) -> wasmtime::Result<Self>;
    fn configure(
        &self,
        store: &mut Store<HostState>,
        config: &str,
    ) -> wasmtime::Result<Result<(), String>>;
}

/// A configured instance of one role of a plugin.
pub struct Live<G> {
    store: Store<HostState>,
    guest: G,
    plugin: Arc<Plugin>,
    recorder: Option<Arc<dyn CallRecorder>>,
}

impl<G: RoleExport> Live<G> {
    /// Runs `f` under the call deadline. On failure the instance must not be
    /// entered again (a trapped instance's state is undefined): drop it.
    pub fn call<R>(
        &mut self,
        f: impl FnOnce(&G, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        self.call_sized(0, 0, f)
    }

    /// [`call`](Self::call) for a call handed `messages` messages of
    /// `bytes` bytes: its deadline grows with both
    /// ([`Limits::call_budget`](crate::Limits::call_budget)).
    pub fn call_sized<R>(
        &mut self,
        messages: usize,
        bytes: usize,
        f: impl FnOnce(&G, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        let _running = self
            .plugin
            .sandbox
            .arm_call(&mut self.store, messages, bytes);
        // quanta reads the TSC directly: a filtered message makes two calls
        // and four clock reads, and the vDSO clock was ~7 % of that CPU.
        let started = quanta::Instant::now();
        let result = match guarded(|| f(&self.guest, &mut self.store)) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(classify(error, &self.store)),
            Err(panicked) => Err(panicked),
        };
        if let Some(recorder) = &self.recorder {
            recorder.record(started.elapsed(), result.as_ref().err());
        }
        if let Err(error) = &result {
            tracing::warn!(plugin = &**self.plugin.name(), role = %G::ROLE, %error, "plugin call failed; instance discarded");
        }
        result
    }

    /// The host state of this instance's store.
    pub fn host_state(&mut self) -> &mut HostState {
        self.store.data_mut()
    }

    /// The plugin this instance belongs to.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }
}

/// Runs guest code, turning a panic in a host function under it into a
/// trap of this instance. wasmtime-wasi's synchronous stdio blocks on tokio,
/// so a guest writing to stdout/stderr from a tokio worker panics there; the
/// SDK routes guest panic messages to the host log instead, but a plugin
/// that prints must still fail alone, not take the proxy down.
fn guarded<R>(f: impl FnOnce() -> R) -> Result<R, CallError> {
    panic::catch_unwind(AssertUnwindSafe(f)).map_err(|panic| {
        CallError::Trap(format!(
            "host function panicked: {}",
            panic_message(&*panic)
        ))
    })
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    match panic.downcast_ref::<&str>() {
        Some(message) => message,
        None => panic.downcast_ref::<String>().map_or("?", String::as_str),
    }
}

/// Tells a deadline or memory-cap failure from any other trap.
fn classify(error: wasmtime::Error, store: &Store<HostState>) -> CallError {
    if store.data().memory.exceeded {
        CallError::OutOfMemory
    } else if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        CallError::Timeout
    } else {
        CallError::Trap(format!("{error:#}"))
    }
}

/// Instances of one role of a plugin, all configured with `config`.
pub struct Pool<G: RoleExport> {
    plugin: Arc<Plugin>,
    indices: G::Indices,
    config: String,
    idle: Mutex<Vec<Live<G>>>,
    recorder: Option<Arc<dyn CallRecorder>>,
}

impl<G: RoleExport> Pool<G> {
    /// Prepares `plugin`'s role `G` with `config`, and proves the
    /// configuration by configuring a first instance.
    pub fn new(plugin: Arc<Plugin>, config: String) -> Result<Self, LoadError> {
        if !plugin.roles().contains(&G::ROLE) {
            return Err(LoadError::MissingRole(G::ROLE));
        }
        let indices =
            G::indices(&plugin.pre).map_err(|e| LoadError::Instantiate(format!("{e:#}")))?;
        let recorder = plugin
            .sandbox
            .observer()
            .map(|o| o.bind(plugin.name(), G::ROLE));
        let pool = Pool {
            plugin,
            indices,
            config,
            idle: Mutex::new(Vec::new()),
            recorder,
        };
        let first = pool.instantiate()?;
        pool.idle.lock().unwrap().push(first);
        Ok(pool)
    }

    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    /// The configuration every instance of this pool receives.
    pub fn config(&self) -> &str {
        &self.config
    }

    /// Runs `f` on an idle instance (or a new one); a failed instance is
    /// dropped instead of going back to the pool.
    pub fn call<R>(
        &self,
        f: impl FnOnce(&G, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        let mut live = self.take()?;
        let result = live.call(f)?;
        let mut idle = self.idle.lock().unwrap();
        if idle.len() < MAX_IDLE {
            idle.push(live);
        }
        Ok(result)
    }

    /// A configured instance owned by the caller: an idle one, or a new one.
    pub fn take(&self) -> Result<Live<G>, CallError> {
        let idle = self.idle.lock().unwrap().pop();
        match idle {
            Some(live) => Ok(live),
            None => self.dedicated(),
        }
    }

    /// A new configured instance owned by the caller.
    pub fn dedicated(&self) -> Result<Live<G>, CallError> {
        self.instantiate().map_err(|error| {
            tracing::warn!(plugin = &**self.plugin.name(), role = %G::ROLE, %error, "cannot create a plugin instance");
            match error {
                LoadError::ConfigureFailed(call) => call,
                other => CallError::Unavailable(other.to_string()),
            }
        })
    }

    fn instantiate(&self) -> Result<Live<G>, LoadError> {
        let sandbox = &self.plugin.sandbox;
        let mut store = sandbox.new_store(self.plugin.name().clone());
        // A new store's deadline is 0: set it before any guest code runs.
        let _running = sandbox.arm_configure(&mut store);
        let instance = guarded(|| self.plugin.pre.instantiate(&mut store))
            .map_err(LoadError::ConfigureFailed)?
            .map_err(|e| LoadError::Instantiate(format!("{e:#}")))?;
        let guest = G::load(&self.indices, &mut store, &instance)
            .map_err(|e| LoadError::Instantiate(format!("{e:#}")))?;
        match guarded(|| guest.configure(&mut store, &self.config))
            .map_err(LoadError::ConfigureFailed)?
        {
            Ok(Ok(())) => Ok(Live {
                store,
                guest,
                plugin: self.plugin.clone(),
                recorder: self.recorder.clone(),
            }),
            Ok(Err(message)) => Err(LoadError::Configure(message)),
            Err(error) => Err(LoadError::ConfigureFailed(classify(error, &store))),
        }
    }
}
