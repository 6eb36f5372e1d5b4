//! Where plugin code runs: the engine, the limits every instance and call
//! gets, the store each instance lives in, and the deadline armed before
//! each call. Plugins and pools hold it; the [`Runtime`](crate::Runtime)
//! that loads plugins builds it.

use crate::error::CallError;
use crate::host_api::{HostState, SharedState};
use crate::role::Role;
use crate::ticker::{Running, TICK, Ticker};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::{Engine, Store};

/// `configure` may compile regexes or parse big tables: give it more room
/// than a per-request call, but still bound it.
const CONFIGURE_TIMEOUT: Duration = Duration::from_secs(1);

/// Resource limits applied to every plugin instance.
#[derive(Debug, Clone)]
pub struct Limits {
    /// CPU deadline of one call (rounded up to whole milliseconds); a call
    /// handed several messages gets it once per message.
    pub call_timeout: Duration,
    /// Extra CPU a call gets per MiB of the message it is handed, so that a
    /// large message a location allows is not refused for its size alone.
    pub call_timeout_per_mib: Duration,
    /// Cap on an instance's linear memory, in bytes.
    pub memory_limit: usize,
    /// Live instances the pooling allocator has room for, over all plugins.
    pub instances: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            call_timeout: Duration::from_millis(10),
            call_timeout_per_mib: Duration::from_millis(10),
            memory_limit: 64 << 20,
            instances: 1000,
        }
    }
}

impl Limits {
    /// The CPU budget of a call handed `messages` messages (0 for a call
    /// handed none) of `bytes` bytes in all.
    pub fn call_budget(&self, messages: usize, bytes: usize) -> Duration {
        let per_byte = self.call_timeout_per_mib.as_nanos() as f64 / (1 << 20) as f64;
        let calls = u32::try_from(messages.max(1)).unwrap_or(u32::MAX);
        self.call_timeout * calls + Duration::from_nanos((per_byte * bytes as f64) as u64)
    }
}

/// Told about plugin calls (metrics). A pool binds a recorder for its
/// `(plugin, role)` once, so a call records without any lookup.
pub trait CallObserver: Send + Sync {
    fn bind(&self, plugin: &str, role: Role) -> Arc<dyn CallRecorder>;
}

/// Records the calls of one `(plugin, role)`; runs inline after every call.
pub trait CallRecorder: Send + Sync {
    fn record(&self, elapsed: Duration, error: Option<&CallError>);
}

pub struct Sandbox {
    engine: Engine,
    limits: Limits,
    observer: Option<Arc<dyn CallObserver>>,
    /// The host kv and counters, shared by every instance of every plugin.
    shared: Arc<SharedState>,
    ticker: Arc<Ticker>,
}

impl Sandbox {
    pub(crate) fn new(
        engine: Engine,
        limits: Limits,
        observer: Option<Arc<dyn CallObserver>>,
    ) -> Self {
        let ticker = Ticker::start(&engine);
        Sandbox {
            engine,
            limits,
            observer,
            shared: Arc::default(),
            ticker,
        }
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The host kv and counters.
    pub(crate) fn kv(&self) -> &Arc<SharedState> {
        &self.shared
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    pub(crate) fn observer(&self) -> Option<&Arc<dyn CallObserver>> {
        self.observer.as_ref()
    }

    /// A fresh store for one instance of plugin `name`.
    pub(crate) fn new_store(&self, name: Arc<str>) -> Store<HostState> {
        let mut store = Store::new(
            &self.engine,
            HostState::new(name, self.shared.clone(), self.limits.memory_limit),
        );
        store.limiter(|state| &mut state.memory);
        store.epoch_deadline_callback(|mut ctx| Ok(ctx.data_mut().deadline.on_deadline()));
        store
    }

    /// Arms the deadline of one call handed `messages` messages of `bytes`
    /// bytes on `store`; the epoch advances until the guard is dropped.
    pub(crate) fn arm_call(
        &self,
        store: &mut Store<HostState>,
        messages: usize,
        bytes: usize,
    ) -> Running<'_> {
        let running = self.ticker.call_starting();
        arm(store, self.limits.call_budget(messages, bytes));
        running
    }

    /// Arms the deadline of instantiation plus `configure` on `store`; the
    /// epoch advances until the guard is dropped.
    pub(crate) fn arm_configure(&self, store: &mut Store<HostState>) -> Running<'_> {
        let running = self.ticker.call_starting();
        arm(store, CONFIGURE_TIMEOUT);
        running
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_budget_grows_with_the_messages_and_their_size() {
        let limits = Limits::default();
        assert_eq!(limits.call_budget(0, 0), Duration::from_millis(10));
        assert_eq!(limits.call_budget(1, 0), Duration::from_millis(10));
        assert_eq!(limits.call_budget(1, 100), Duration::from_nanos(10_000_953));
        assert_eq!(limits.call_budget(1, 16 << 20), Duration::from_millis(170));
        // Each message of a batch brings its own call's worth.
        assert_eq!(limits.call_budget(3, 0), Duration::from_millis(30));
    }
}
