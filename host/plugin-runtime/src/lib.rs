//! wasp's plugin runtime: every decision wasp makes is asked of a wasm
//! component, and this crate runs them.
//!
//! [`Runtime`] compiles components (cached on disk) and links the host
//! functions. A [`Plugin`] is one compiled component and the roles it
//! exports. Its instances live in a [`Sandbox`]: each call runs under a CPU
//! deadline and each instance under a memory cap. A [`Pool`] keeps
//! configured live instances of one role for the per-request roles; a failing
//! instance is discarded and the caller gets a typed [`CallError`] to fail
//! open or closed on. [`FilterPool`] serves WebSocket filters, whose
//! instances are shared by the connections of a thread.
//!
//! This crate knows nothing of sockets, HTTP or configuration files.

mod bindings;
mod contract;
mod deadline;
mod error;
mod filter_pool;
mod host_api;
mod packed;
mod plugin;
mod pool;
mod role;
mod roles;
mod runtime;
mod sandbox;
mod speech;
mod ticker;

pub use bindings::{
    Action, CloseFrame, Decision, Direction, KvError, KvScope, LogLevel, Message, Peer, ProxyTo,
    RequestHead, Response, SendError, StaticFiles,
};
pub use contract::WIT_VERSION;
pub use error::{CallError, LoadError};
pub use filter_pool::{FilterPool, Opened, Outcome};
pub use host_api::{KvReplica, KvWrite, SharedState};
pub use packed::Packed;
pub use plugin::Plugin;
pub use pool::{Live, Pool, RoleExport};
pub use role::Role;
pub use roles::{BalancerPool, OriginPool, RouterPool};
pub use runtime::Runtime;
pub use sandbox::{CallObserver, CallRecorder, Limits, Sandbox};
pub use speech::{MAX_TIMER_MS, Outgoing, SendLimits, Speech, TimerRequest};
