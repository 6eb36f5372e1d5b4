//! Helpers shared by the end-to-end tests.
#![allow(dead_code)] // each test binary uses its own subset

pub mod backend;

use std::net::SocketAddr;
use wasp::config::Config;
use wasp::proxy::Proxy;

/// The test plugins compiled by `tests/build.rs`.
pub mod test_plugins {
    include!(concat!(env!("OUT_DIR"), "/test_plugins.rs"));

    pub fn get(name: &str) -> &'static [u8] {
        PLUGINS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, bytes)| *bytes)
            .unwrap_or_else(|| panic!("no test plugin {name}"))
    }
}

/// Starts wasp in-process from TOML text whose servers listen on
/// `127.0.0.1:0`; returns it with the address of the first listener.
pub async fn start_proxy(toml: &str) -> (Proxy, SocketAddr) {
    let config = Config::parse(toml, "test.toml").unwrap_or_else(|e| panic!("test config: {e}"));
    let listen = config.servers[0].listen[0].clone();
    let proxy = Proxy::start(config).await.expect("proxy starts");
    let addr = proxy.local_addr(&listen).await.expect("bound");
    (proxy, addr)
}

/// A guide configuration from `examples/nginx-guide/`, with its listen
/// address moved to an ephemeral port and its backends to `backends`
/// (in order of appearance of 127.0.0.1:8080, :8081, ...).
pub fn guide_config(name: &str, backends: &[SocketAddr]) -> String {
    let path = format!(
        "{}/../examples/nginx-guide/{name}.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text = text.replace("127.0.0.1:8000", "127.0.0.1:0");
    for (i, backend) in backends.iter().enumerate() {
        text = text.replace(&format!("127.0.0.1:{}", 8080 + i), &backend.to_string());
    }
    // `localhost:8080` in the chat example.
    if let Some(first) = backends.first() {
        text = text.replace("localhost:8080", &first.to_string());
    }
    text
}
