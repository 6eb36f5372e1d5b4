//! `wasp plugin new`: writes a plugin crate that builds to a wasm component
//! with one command and runs under `wasp run -c wasp.toml` as it is: a
//! `Cargo.toml` on `wasp-sdk`, the role's smallest useful implementation
//! with a native test (`wasp_sdk::testing`), a `wasp.toml` that uses it and
//! a README. The templates sit in `plugin_crate/`, one `lib.rs` and one
//! `wasp.toml` per role, with `{{NAME}}`, `{{TYPE}}`, `{{LIB}}` and
//! `{{SDK}}` filled in here (a templating library would be a dependency for
//! four literal replacements).

use crate::plugins::Role;
use std::path::{Path, PathBuf};

/// What went wrong creating a crate.
#[derive(Debug, thiserror::Error)]
pub enum NewPluginError {
    #[error("`{0}` is not a crate name: use letters, digits, `-` and `_`, starting with a letter")]
    BadName(String),
    #[error("{0} already exists: choose another name or remove it")]
    Exists(PathBuf),
    #[error(
        "no wasp-sdk at {0} (no Cargo.toml there): pass --sdk PATH, the sdk/ directory of a wasp checkout"
    )]
    NoSdk(PathBuf),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The SDK this wasp was built from, when its sources are still there.
pub fn default_sdk() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk")
}

/// Writes crate `name` for `role` in `parent/name`, depending on the SDK at
/// `sdk`; returns the crate's directory.
pub fn create(
    parent: &Path,
    name: &str,
    role: Role,
    sdk: &Path,
) -> Result<PathBuf, NewPluginError> {
    let valid = name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return Err(NewPluginError::BadName(name.to_owned()));
    }
    let sdk = std::path::absolute(sdk).unwrap_or_else(|_| sdk.to_path_buf());
    if !sdk.join("Cargo.toml").is_file() {
        return Err(NewPluginError::NoSdk(sdk));
    }
    // `..` segments would work but read badly in the generated Cargo.toml.
    let sdk = sdk.canonicalize().unwrap_or(sdk);
    let dir = parent.join(name);
    if dir.exists() {
        return Err(NewPluginError::Exists(dir));
    }
    let fill = |template: &str| {
        template
            .replace("{{NAME}}", name)
            .replace("{{LIB}}", &name.replace('-', "_"))
            .replace("{{TYPE}}", &type_name(name))
            .replace("{{ROLE}}", role.as_str())
            .replace("{{SDK}}", &sdk.display().to_string())
    };
    let (lib, config) = match role {
        Role::Filter => (FILTER_LIB, FILTER_TOML),
        Role::Router => (ROUTER_LIB, ROUTER_TOML),
        Role::Balancer => (BALANCER_LIB, BALANCER_TOML),
        Role::Origin => (ORIGIN_LIB, ORIGIN_TOML),
    };
    let files = [
        ("Cargo.toml", CARGO_TOML),
        ("src/lib.rs", lib),
        ("wasp.toml", config),
        ("README.md", README),
        (".gitignore", "/target\n"),
    ];
    for (file, template) in files {
        let path = dir.join(file);
        let write = std::fs::create_dir_all(path.parent().expect("a file in the crate"))
            .and_then(|()| std::fs::write(&path, fill(template)));
        write.map_err(|source| NewPluginError::Write { path, source })?;
    }
    Ok(dir)
}

/// `my-filter` → `MyFilter`.
fn type_name(name: &str) -> String {
    name.split(['-', '_'])
        .filter(|word| !word.is_empty())
        .map(|word| {
            let mut chars = word.chars();
            let first = chars.next().expect("not empty").to_ascii_uppercase();
            std::iter::once(first).chain(chars).collect::<String>()
        })
        .collect()
}

const CARGO_TOML: &str = include_str!("plugin_crate/Cargo.toml.in");
const README: &str = include_str!("plugin_crate/README.md.in");
const FILTER_LIB: &str = include_str!("plugin_crate/filter.rs.in");
const FILTER_TOML: &str = include_str!("plugin_crate/filter.toml.in");
const ROUTER_LIB: &str = include_str!("plugin_crate/router.rs.in");
const ROUTER_TOML: &str = include_str!("plugin_crate/router.toml.in");
const BALANCER_LIB: &str = include_str!("plugin_crate/balancer.rs.in");
const BALANCER_TOML: &str = include_str!("plugin_crate/balancer.toml.in");
const ORIGIN_LIB: &str = include_str!("plugin_crate/origin.rs.in");
const ORIGIN_TOML: &str = include_str!("plugin_crate/origin.toml.in");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_are_camel_case() {
        assert_eq!(type_name("my-filter"), "MyFilter");
        assert_eq!(type_name("room_router2"), "RoomRouter2");
    }

    #[test]
    fn bad_names_and_missing_sdks_are_refused_before_writing() {
        let parent = std::env::temp_dir().join(format!("wasp-new-{}", std::process::id()));
        let sdk = default_sdk();
        for bad in ["", "9lives", "a b", "../escape"] {
            let error = create(&parent, bad, Role::Filter, &sdk).unwrap_err();
            assert!(
                matches!(error, NewPluginError::BadName(_)),
                "{bad}: {error}"
            );
        }
        let error = create(&parent, "ok", Role::Filter, Path::new("/nonexistent")).unwrap_err();
        assert!(error.to_string().contains("pass --sdk PATH"), "{error}");
        assert!(!parent.exists());
    }
}
