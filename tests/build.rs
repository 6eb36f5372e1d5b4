//! Compiles the test plugins (`tests/plugins/*`) and the example router
//! (`examples/custom-router`) to wasm components.

#[path = "../host/build_wasm.rs"]
mod build_wasm;

fn main() {
    build_wasm::build_plugin_dir("tests/plugins", "wasp-test-", "test_plugins.rs");
    let room_router = [("custom-router".to_owned(), "room-router".to_owned())];
    build_wasm::build_plugins("examples/custom-router", &room_router, "example_plugins.rs");
}
