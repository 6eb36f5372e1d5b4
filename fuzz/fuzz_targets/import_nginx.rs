//! Arbitrary text as an nginx configuration → `wasp import-nginx`'s
//! translation: never panics, and an import that reports no difference
//! is a configuration `wasp check` accepts (a translation bug otherwise).

#![no_main]

use libfuzzer_sys::fuzz_target;

// wasp's config and import modules, compiled from source as `config_parse`
// does (README.md: the `wasp` crate cannot be built with nightly).
#[allow(dead_code)]
#[path = "../../host/src/config/mod.rs"]
mod config;

#[allow(dead_code)]
#[path = "../../host/src/import_nginx/mod.rs"]
mod import_nginx;

mod plugins {
    pub mod embedded {
        include!(concat!(env!("OUT_DIR"), "/default_plugin_names.rs"));
    }
}

fuzz_target!(|text: &str| {
    // Includes resolve against a directory with no configuration files.
    let Ok(imported) = import_nginx::import_text(text, "fuzz.conf", std::path::Path::new("/nonexistent")) else {
        return;
    };
    if !imported.differs()
        && let Err(e) = config::Config::parse(&imported.toml, "imported")
    {
        panic!("an import without differences fails wasp check: {e}\n{}", imported.toml);
    }
});
