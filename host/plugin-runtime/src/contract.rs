//! The version of the plugin contract (`package wasp:plugin@X.Y.Z` in
//! `sdk/wit/wasp.wit`) and the check that a component was built against it.
//!
//! Without the check, a plugin built with another SDK fails to link with a
//! list of missing functions, or is taken for a component that exports no
//! role; with it, the refusal names both versions.

use crate::error::LoadError;
use wasmtime::Engine;
use wasmtime::component::Component;

/// Spelled once as a macro so that the role interfaces' names are
/// `concat!`-ed constants (see `Role::interface`).
macro_rules! wit_version {
    () => {
        "0.3.0"
    };
}
pub(crate) use wit_version;

/// The `wasp:plugin` package version this wasp speaks.
pub const WIT_VERSION: &str = wit_version!();

const PACKAGE: &str = "wasp:plugin/";

/// Refuses a component that imports or exports a `wasp:plugin` interface of
/// another version than [`WIT_VERSION`] (or of none).
pub(crate) fn check_version(engine: &Engine, component: &Component) -> Result<(), LoadError> {
    let ty = component.component_type();
    let names = ty
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .chain(ty.exports(engine).map(|(name, _)| name.to_string()));
    for name in names {
        let Some(interface) = name.strip_prefix(PACKAGE) else {
            continue;
        };
        let version = interface.split_once('@').map_or("", |(_, v)| v);
        if version != WIT_VERSION {
            let plugin = if version.is_empty() {
                "an unversioned wasp:plugin".to_string()
            } else {
                format!("wasp:plugin@{version}")
            };
            return Err(LoadError::WitVersion {
                plugin,
                host: WIT_VERSION,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_the_one_the_wit_file_declares() {
        let wit = include_str!("../../../sdk/wit/wasp.wit");
        let declared = format!("\npackage wasp:plugin@{WIT_VERSION};\n");
        assert!(
            wit.contains(&declared),
            "sdk/wit/wasp.wit does not declare {declared:?}"
        );
    }
}
