//! Compiles the test plugins (`tests/plugins/*`), the example router
//! (`examples/custom-router`), the example balancer
//! (`examples/header-balancer`) and the example filters that speak
//! (`examples/heartbeat`, `examples/server-notice`) to wasm components.

fn main() {
    wasp_build_wasm::build_plugin_dir("tests/plugins", "wasp-test-", "test_plugins.rs");
    let room_router = [("custom-router".to_owned(), "room-router".to_owned())];
    wasp_build_wasm::build_plugins("examples/custom-router", &room_router, "example_plugins.rs");
    let header_balancer = [(
        "header-balancer".to_owned(),
        "wasp-example-header-balancer".to_owned(),
    )];
    wasp_build_wasm::build_plugins(
        "examples/header-balancer",
        &header_balancer,
        "example_balancers.rs",
    );
    for (dir, name) in [
        ("heartbeat", "heartbeat"),
        ("server-notice", "server_notice"),
    ] {
        let package = [(dir.to_owned(), format!("wasp-example-{dir}"))];
        let out = format!("example_{name}.rs");
        wasp_build_wasm::build_plugins(&format!("examples/{dir}"), &package, &out);
    }
}
