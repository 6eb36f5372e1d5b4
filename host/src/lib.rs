//! wasp: a WebAssembly-scriptable, WebSocket-aware reverse proxy.

pub mod config;
pub mod plugins;
pub mod relay;
pub mod vars;
