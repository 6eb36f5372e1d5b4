//! What can go wrong with a plugin, as typed errors the proxy maps to a
//! response (fail closed) or ignores (fail open) per role.

use std::fmt;

/// A plugin could not be loaded: the previous version, if any, keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("not a valid wasm component: {0}")]
    NotAComponent(String),
    #[error(
        "exports no wasp role (expected one of wasp:plugin/router, balancer, origin, filter @{})",
        crate::WIT_VERSION
    )]
    NoRole,
    #[error(
        "was built against {plugin} but this wasp speaks wasp:plugin@{host}: rebuild it with the wasp-sdk of this wasp"
    )]
    WitVersion { plugin: String, host: &'static str },
    #[error("does not export the {0} role")]
    MissingRole(crate::Role),
    #[error("imports something wasp does not provide: {0}")]
    Link(String),
    #[error("cannot be instantiated: {0}")]
    Instantiate(String),
    #[error("configure refused the configuration: {0}")]
    Configure(String),
    #[error("configure failed: {0}")]
    ConfigureFailed(CallError),
}

/// A call into a plugin failed. The instance that failed is thrown away; the
/// next call gets a fresh one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The call ran past its CPU deadline.
    Timeout,
    /// The instance tried to grow its memory past the cap.
    OutOfMemory,
    /// The guest trapped (panic, unreachable, out-of-bounds access...).
    Trap(String),
    /// No instance could be created (e.g. every pooling slot is in use).
    Unavailable(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Timeout => f.write_str("exceeded its CPU deadline"),
            CallError::OutOfMemory => f.write_str("exceeded its memory cap"),
            CallError::Trap(msg) => write!(f, "trapped: {msg}"),
            CallError::Unavailable(msg) => write!(f, "no instance available: {msg}"),
        }
    }
}

impl std::error::Error for CallError {}
