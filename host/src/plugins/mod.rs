//! Sandboxed plugins: every decision wasp makes is asked of a wasm component.
//!
//! `Runtime` compiles components (cached on disk) and enforces limits: each
//! call runs under an epoch deadline and each instance under a memory cap.
//! `Plugin` is a compiled component and the roles it exports. `Pool` keeps
//! configured live instances of one role; a failing instance is discarded
//! and the caller gets a typed `CallError` to fail open or closed on.
//! This module knows nothing of sockets or configuration files.

mod bindings;
mod deadline;
mod error;
mod host_api;
mod plugin;
mod pool;
mod roles;
mod runtime;
mod ticker;

pub use bindings::{
    Action, CloseFrame, Decision, Direction, LogLevel, Message, Peer, ProxyTo, RequestHead,
    Response, StaticFiles,
};
pub use error::{CallError, LoadError};
pub use plugin::{Plugin, Role};
pub use pool::{Live, Pool, RoleExport};
pub use roles::{BalancerPool, FilterInstance, FilterPool, OriginPool, RouterPool};
pub use runtime::{CallObserver, CallRecorder, Limits, Runtime};

/// The default plugins, compiled from `plugins/*` by the build script:
/// `(directory name, component bytes)`.
pub mod embedded {
    include!(concat!(env!("OUT_DIR"), "/default_plugins.rs"));

    /// The bytes of default plugin `name` (e.g. `router`, `filter-json`).
    pub fn get(name: &str) -> Option<&'static [u8]> {
        PLUGINS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, bytes)| *bytes)
    }
}
