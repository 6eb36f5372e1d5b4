//! The default plugins' names, listed as `host/build.rs` lists them: the
//! config module validates filter names against them (nothing is compiled
//! to wasm here: nightly has no wasm32-wasip2 standard library).

fn main() {
    wasp_build_wasm::write_plugin_names("plugins", "default_plugin_names.rs");
}
