//! Moving WebSocket traffic once the handshake is done. Knows nothing of
//! configuration: callers pass sockets, timeouts and (for frames) filters.

pub mod deflate;
pub(crate) mod endpoint;
pub mod frames;
pub mod tunnel;
mod wire;
