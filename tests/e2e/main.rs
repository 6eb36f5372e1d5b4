//! wasp end to end, in one test binary (so the suite links wasmtime once):
//! the real proxy on loopback, real backends and clients, real wasm
//! components built by `tests/build.rs`. One module per area; `support`
//! holds what they share. Run one area with `cargo test -p wasp-tests -- proxy::`.

mod support;

mod access_log;
mod balancing;
mod buffers;
mod cluster;
mod custom_router;
mod deflate;
mod filter_batches;
mod filters;
mod frame_relay;
mod framing;
mod http2;
mod metrics;
mod nginx_parity;
mod plugin_failures;
mod plugin_runtime;
mod proxy;
mod reload;
mod security;
mod shared_filters;
mod slow_peers;
mod speaking_filters;
mod upstream_keepalive;
mod upstream_tls;
