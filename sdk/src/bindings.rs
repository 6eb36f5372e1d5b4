//! Bindings generated from `wit/wasp.wit` (inside this crate, so that it
//! ships with it), one module per role's world.
//!
//! A role's world is generated on its own so that a plugin exports only the
//! roles it names in `export!`: each world's export macro emits the custom
//! section that declares its exports, and the component linker unions the
//! sections of the roles a plugin uses. The shared `types` and `host`
//! interfaces are generated once (in `router_world`) and reused by the others.

pub mod router_world {
    wit_bindgen::generate!({
        path: "wit",
        world: "wasp:plugin/router-plugin",
        pub_export_macro: true,
        // Native tests compare what a plugin answers.
        additional_derives: [PartialEq],
        default_bindings_module: "wasp_sdk::router_world",
    });
}

pub mod balancer_world {
    wit_bindgen::generate!({
        path: "wit",
        world: "wasp:plugin/balancer-plugin",
        pub_export_macro: true,
        default_bindings_module: "wasp_sdk::balancer_world",
        with: {
            "wasp:plugin/types@0.3.0": crate::router_world::wasp::plugin::types,
            "wasp:plugin/host@0.3.0": crate::router_world::wasp::plugin::host,
        },
    });
}

pub mod origin_world {
    wit_bindgen::generate!({
        path: "wit",
        world: "wasp:plugin/origin-plugin",
        pub_export_macro: true,
        default_bindings_module: "wasp_sdk::origin_world",
        with: {
            "wasp:plugin/types@0.3.0": crate::router_world::wasp::plugin::types,
            "wasp:plugin/host@0.3.0": crate::router_world::wasp::plugin::host,
        },
    });
}

pub mod filter_world {
    wit_bindgen::generate!({
        path: "wit",
        world: "wasp:plugin/filter-plugin",
        pub_export_macro: true,
        default_bindings_module: "wasp_sdk::filter_world",
        with: {
            "wasp:plugin/types@0.3.0": crate::router_world::wasp::plugin::types,
            "wasp:plugin/host@0.3.0": crate::router_world::wasp::plugin::host,
        },
    });
}
