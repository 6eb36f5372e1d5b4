//! Compiles the test plugins (`tests/plugins/*`) to wasm components.

#[path = "../host/build_wasm.rs"]
mod build_wasm;

fn main() {
    build_wasm::build_plugin_dir("tests/plugins", "wasp-test-", "test_plugins.rs");
}
