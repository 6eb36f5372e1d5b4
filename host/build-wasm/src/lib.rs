//! Compiles this workspace's plugin crates for `wasm32-wasip2` from a build
//! script, the way wasmtime's test-programs are built: a nested `cargo build`
//! with its own target directory (so it never waits on the outer build's
//! lock), then a generated Rust file that embeds the resulting components.
//!
//! A build-dependency of `wasp` (`host/build.rs`: the default plugins,
//! embedded in the binary) and `wasp-tests` (`tests/build.rs`: the test and
//! example plugins). Its functions run inside those build scripts, so the
//! workspace root is found from their `CARGO_MANIFEST_DIR`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::{env, fs};

const TARGET: &str = "wasm32-wasip2";

/// Builds every crate in `root/dir/*` (package `{prefix}{dir name}`) and
/// writes `$OUT_DIR/{out_file}` declaring
/// `pub const PLUGINS: &[(&str, &[u8])]`: each directory name with the bytes
/// of its component.
pub fn build_plugin_dir(dir: &str, prefix: &str, out_file: &str) {
    let plugins: Vec<(String, String)> = plugin_names(dir)
        .into_iter()
        .map(|name| {
            let package = format!("{prefix}{name}");
            (name, package)
        })
        .collect();
    build_plugins(dir, &plugins, out_file);
}

/// Writes `$OUT_DIR/{out_file}` declaring `pub const NAMES: &[&str]`: the
/// directory names of the crates in `root/dir/*`, sorted, without building
/// them (for code that only needs to know which plugins exist).
pub fn write_plugin_names(dir: &str, out_file: &str) {
    println!(
        "cargo:rerun-if-changed={}",
        workspace_root().join(dir).display()
    );
    let names = plugin_names(dir);
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join(out_file);
    fs::write(out, format!("pub const NAMES: &[&str] = &{names:?};\n"))
        .expect("writing the plugin names");
}

/// The directory names of the crates in `root/dir/*`, sorted.
fn plugin_names(dir: &str) -> Vec<String> {
    let plugin_dir = workspace_root().join(dir);
    let mut names: Vec<String> = fs::read_dir(&plugin_dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", plugin_dir.display()))
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().join("Cargo.toml").is_file())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Builds the `(name, package)` crates of `plugins`, which live under `dir`
/// (watched for changes), and writes `$OUT_DIR/{out_file}` declaring
/// `pub const PLUGINS: &[(&str, &[u8])]`: each name with the bytes of its
/// package's component.
pub fn build_plugins(dir: &str, plugins: &[(String, String)], out_file: &str) {
    let root = workspace_root();
    for watched in [root.join(dir), root.join("sdk")] {
        println!("cargo:rerun-if-changed={}", watched.display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.lock").display()
    );

    ensure_target();
    let target_dir = root.join("target").join("wasm");
    let mut cargo = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo
        .current_dir(&root)
        .args([
            "build",
            "--profile",
            "plugin",
            "--target",
            TARGET,
            "--target-dir",
        ])
        .arg(&target_dir);
    for (_, package) in plugins {
        cargo.args(["-p", package]);
    }
    // Flags meant for the host build (coverage, sanitizers, a host target)
    // must not leak into the wasm build.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
    ] {
        cargo.env_remove(var);
    }
    let status = cargo
        .status()
        .expect("failed to run cargo for the wasm plugins");
    assert!(
        status.success(),
        "building the wasm plugins in {dir}/ failed (see above)"
    );

    let artifacts = target_dir.join(TARGET).join("plugin");
    let mut generated = String::from("pub const PLUGINS: &[(&str, &[u8])] = &[\n");
    for (name, package) in plugins {
        // A library crate yields `snake_name.wasm`, a binary `package-name.wasm`.
        let wasm = [package.replace('-', "_"), package.clone()]
            .iter()
            .map(|stem| artifacts.join(format!("{stem}.wasm")))
            .find(|path| path.is_file())
            .unwrap_or_else(|| panic!("no component produced for {package}"));
        // Rebuild when the artifact goes away (e.g. `target/wasm` was cleaned).
        println!("cargo:rerun-if-changed={}", wasm.display());
        generated.push_str(&format!(
            "    ({name:?}, include_bytes!({:?})),\n",
            wasm.display().to_string()
        ));
    }
    generated.push_str("];\n");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join(out_file);
    fs::write(out, generated).expect("writing the embedded plugin list");
}

/// The workspace root: the parent directory of the crate whose build script
/// is running (`host/` or `tests/`).
fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    manifest
        .parent()
        .expect("crate sits in the workspace")
        .to_path_buf()
}

/// Makes sure the standard library for `wasm32-wasip2` is installed: installs
/// it with rustup when missing, or stops with a one-line instruction.
fn ensure_target() {
    if sysroot_has_target() {
        return;
    }
    println!("cargo:warning=installing the {TARGET} target with rustup");
    let installed = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .map(|status| status.success())
        .unwrap_or(false);
    if !installed || !sysroot_has_target() {
        panic!("the {TARGET} Rust target is missing: run `rustup target add {TARGET}`");
    }
}

fn sysroot_has_target() -> bool {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(output) = Command::new(rustc).args(["--print", "sysroot"]).output() else {
        return false;
    };
    let sysroot = String::from_utf8_lossy(&output.stdout).trim().to_string();
    Path::new(&sysroot)
        .join("lib/rustlib")
        .join(TARGET)
        .join("lib")
        .is_dir()
}
