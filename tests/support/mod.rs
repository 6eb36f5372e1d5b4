//! Helpers shared by the end-to-end tests.
#![allow(dead_code)] // each test binary uses its own subset

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
