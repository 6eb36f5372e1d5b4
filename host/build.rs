//! Compiles the default plugins (`plugins/*`) to wasm components and embeds
//! them in the `wasp` binary, so wasp runs with no plugin files.

fn main() {
    wasp_build_wasm::build_plugin_dir("plugins", "wasp-plugin-", "default_plugins.rs");
    wasp_build_wasm::write_plugin_names("plugins", "default_plugin_names.rs");
}
