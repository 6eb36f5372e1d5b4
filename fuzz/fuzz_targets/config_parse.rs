//! Arbitrary text → `Config::parse`: never panics, and a parsed config
//! renders (`wasp check`'s output) to TOML that parses back to an equal config.

#![no_main]

use libfuzzer_sys::fuzz_target;

// wasp's config module itself (plain data; its one `crate::` path outside
// itself is the names of the embedded plugins, listed by fuzz/build.rs as
// host/build.rs lists them), compiled here: the `wasp` crate cannot be built
// with nightly (README.md).
#[allow(dead_code)]
#[path = "../../host/src/config/mod.rs"]
mod config;

mod plugins {
    pub mod embedded {
        include!(concat!(env!("OUT_DIR"), "/default_plugin_names.rs"));
    }
}

use config::Config;

fuzz_target!(|text: &str| {
    let Ok(config) = Config::parse(text, "fuzz.toml") else {
        return;
    };
    let rendered = config.render();
    match Config::parse(&rendered, "rendered") {
        Ok(again) => assert_eq!(again, config, "render round trip changed:\n{rendered}"),
        Err(e) => panic!("rendered config does not parse: {e}\n{rendered}"),
    }
    // The router JSON is built from every parsed config: it must not panic either.
    let _ = config.router_json();
});
