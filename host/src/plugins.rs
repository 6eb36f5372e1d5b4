//! The host's view of plugins: the plugin runtime crate, and the default
//! plugins embedded in the binary.

pub use wasp_plugin_runtime::*;

/// The default plugins, compiled from `plugins/*` by the build script:
/// `(directory name, component bytes)`.
pub mod embedded {
    include!(concat!(env!("OUT_DIR"), "/default_plugins.rs"));
    // `NAMES`: the same plugins' names alone.
    include!(concat!(env!("OUT_DIR"), "/default_plugin_names.rs"));

    /// The bytes of default plugin `name` (e.g. `router`, `filter-json`).
    pub fn get(name: &str) -> Option<&'static [u8]> {
        PLUGINS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, bytes)| *bytes)
    }
}
