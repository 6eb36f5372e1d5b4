//! The `wasp` command line: `wasp check` validates like `nginx -t`.

use std::process::Command;

fn check(name: &str, text: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_wasp"))
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (
        output.status.code().unwrap(),
        stdout,
        stderr.replace(&path.display().to_string(), "FILE"),
    )
}

const GOOD: &str = r#"
[upstreams.chat]
servers = ["127.0.0.1:8081", "127.0.0.1:8082"]
balance = "ip_hash"

[[server]]
listen = "127.0.0.1:8000"

[[server.location]]
path = "/ws/"
proxy_pass = "http://chat"
read_timeout = "1h"
"#;

#[test]
fn a_valid_configuration_is_printed_resolved() {
    let (code, stdout, stderr) = check("good", GOOD);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("syntax is ok"), "{stderr}");
    // Defaults are filled in and units normalised.
    assert!(stdout.contains("read_timeout = \"3600s\""), "{stdout}");
    assert!(stdout.contains("connect_timeout = \"60s\""), "{stdout}");
    assert!(stdout.contains("balance = \"ip_hash\""), "{stdout}");
}

#[test]
fn errors_name_the_line_and_fail() {
    let unknown_key = GOOD.replace(
        "read_timeout = \"1h\"",
        "read_timeout = \"1h\"\nproxy_buffering = false",
    );
    let (code, _, stderr) = check("unknown", &unknown_key);
    assert_eq!(code, 1);
    assert!(stderr.contains("FILE:13:"), "{stderr}");
    assert!(stderr.contains("proxy_buffering"), "{stderr}");
    assert!(stderr.contains("test failed"), "{stderr}");

    let (code, _, stderr) = check("duration", &GOOD.replace("\"1h\"", "\"1 hour\""));
    assert_eq!(code, 1);
    assert!(stderr.contains("FILE:12:"), "{stderr}");

    let (code, _, stderr) = check("upstream", &GOOD.replace("http://chat", "http://chat2"));
    assert_eq!(code, 1);
    assert!(stderr.contains("FILE:11:"), "{stderr}");
    assert!(stderr.contains("unknown upstream `chat2`"), "{stderr}");
}

#[test]
fn a_missing_file_is_an_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_wasp"))
        .args(["check", "-c", "/nonexistent/wasp.toml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/wasp.toml"));
}

/// `wasp import-nginx FILE`: exit code, stdout, stderr.
fn import_nginx(path: &std::path::Path) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_wasp"))
        .arg("import-nginx")
        .arg(path)
        .output()
        .unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn every_guide_configuration_imports_and_the_result_passes_wasp_check() {
    let guide = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/nginx-guide");
    let mut imported = 0;
    for entry in std::fs::read_dir(&guide).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|ext| ext != "conf") {
            continue;
        }
        let (code, toml, stderr) = import_nginx(&path);
        assert_eq!(code, 0, "{}: {stderr}", path.display());
        assert!(stderr.contains("wasp behaves as nginx does"), "{stderr}");
        let (code, _, stderr) = check(&format!("imported-{imported}"), &toml);
        assert_eq!(code, 0, "{}:\n{toml}\n{stderr}", path.display());
        imported += 1;
    }
    assert_eq!(imported, 7, "the guide has seven configurations");
}

#[test]
fn an_nginx_configuration_wasp_cannot_follow_exits_1_naming_each_place() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("sites")).unwrap();
    std::fs::write(
        dir.join("nginx.conf"),
        "worker_processes 2;\nevents { worker_connections 512; }\nhttp {\n    include sites/*.conf;\n}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("sites/app.conf"),
        "server {\n    listen 8080;\n    location / {\n        proxy_pass http://127.0.0.1:9000;\n        proxy_http_version 1.1;\n        add_header X-Frame-Options DENY;\n    }\n}\n",
    )
    .unwrap();
    let (code, toml, stderr) = import_nginx(&dir.join("nginx.conf"));
    assert_eq!(code, 1, "{stderr}");
    let site = dir.join("sites/app.conf").display().to_string();
    assert!(
        stderr.contains(&format!("{site}:6:9: `add_header X-Frame-Options DENY`")),
        "{stderr}"
    );
    assert!(toml.contains("workers = 2"), "{toml}");
    assert!(
        toml.contains("# NOT TRANSLATED: add_header X-Frame-Options DENY"),
        "{toml}"
    );
    // What was translated still passes `wasp check`.
    let (code, _, stderr) = check("imported-partial", &toml);
    assert_eq!(code, 0, "{toml}\n{stderr}");

    std::fs::write(dir.join("broken.conf"), "server {\n    listen 80;\n").unwrap();
    let (code, toml, stderr) = import_nginx(&dir.join("broken.conf"));
    assert_eq!((code, toml.as_str()), (2, ""), "{stderr}");
    assert!(stderr.contains("broken.conf:"), "{stderr}");
}

/// Three mistakes: a misspelt key, an upstream nobody declared, and a log
/// file in a directory that does not exist.
const THREE_MISTAKES: &str = r#"
[upstreams.chat]
servers = ["127.0.0.1:8081"]

[[server]]
listen = "127.0.0.1:8000"
access_log = "/nonexistent-dir/access.log"

[[server.location]]
path = "/ws/"
proxy_pass = "http://chat2"
read_timout = "1h"
"#;

#[test]
fn every_mistake_is_reported_in_one_run_with_its_position() {
    let (code, stdout, stderr) = check("three", THREE_MISTAKES);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stdout, "", "nothing printed for a refused configuration");
    let diagnostics: Vec<&str> = stderr.lines().filter(|l| l.starts_with("FILE:")).collect();
    assert_eq!(
        diagnostics,
        [
            "FILE:7:14: access_log: directory `/nonexistent-dir` does not exist (nor does the file, then)",
            "FILE:11:14: proxy_pass refers to unknown upstream `chat2` (declare [upstreams.chat2] or write chat2:PORT)",
            "FILE:12:1: unknown field `read_timout`: did you mean `read_timeout`?",
        ],
        "{stderr}"
    );
    assert!(stderr.contains("test failed"), "{stderr}");
}

#[test]
fn values_of_the_wrong_type_are_all_reported_too() {
    let text = GOOD
        .replace("balance = \"ip_hash\"", "balance = \"ip_hsah\"")
        .replace(
            "read_timeout = \"1h\"",
            "read_timeout = \"an hour\"\nlimit_conn = \"ten\"",
        );
    let (code, _, stderr) = check("types", &text);
    assert_eq!(code, 1, "{stderr}");
    let diagnostics: Vec<&str> = stderr.lines().filter(|l| l.starts_with("FILE:")).collect();
    assert_eq!(diagnostics.len(), 3, "{stderr}");
    assert!(
        diagnostics[0].starts_with("FILE:4:11: unknown variant `ip_hsah`"),
        "{stderr}"
    );
    assert!(
        diagnostics[1].starts_with("FILE:12:16: invalid duration `an hour`"),
        "{stderr}"
    );
    assert!(
        diagnostics[2].starts_with("FILE:13:14: invalid type"),
        "{stderr}"
    );
}

#[test]
fn wasp_run_prints_every_mistake_and_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.toml");
    std::fs::write(&path, THREE_MISTAKES).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_wasp"))
        .args(["run", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let file = path.display().to_string();
    for position in [":7:14: ", ":11:14: ", ":12:1: "] {
        assert!(stderr.contains(&format!("{file}{position}")), "{stderr}");
    }
}

/// A default plugin as built by host/build.rs (the same bytes wasp embeds).
fn default_plugin(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/wasm/wasm32-wasip2/plugin")
        .join(format!("wasp_plugin_{}.wasm", name.replace('-', "_")))
}

fn wasp(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_wasp"))
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn plugin_check_names_the_roles_and_runs_configure() {
    let filter = default_plugin("filter-max-size");
    let filter = filter.to_str().unwrap();
    let (code, stdout, stderr) = wasp(&["plugin", "check", filter]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("wasp:plugin@0.3.0 component, sha256 "),
        "{stdout}"
    );
    assert_eq!(
        stdout.lines().skip(1).collect::<Vec<_>>(),
        ["filter: configure ok"]
    );

    // The plugin's own message, not a generic one.
    let (code, stdout, _) = wasp(&["plugin", "check", filter, "--config", r#"{"max": "lots"}"#]);
    assert_eq!(code, 1);
    assert!(
        stdout.contains("filter: configure refused: invalid configuration: invalid size `lots`"),
        "{stdout}"
    );

    // The default router needs a routing table.
    let router = default_plugin("router");
    let (code, stdout, _) = wasp(&["plugin", "check", router.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stdout.contains("router: configure refused: "), "{stdout}");
    assert!(stdout.contains("servers"), "{stdout}");
}

#[test]
fn plugin_check_refuses_what_is_not_a_component() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junk.wasm");
    std::fs::write(&path, b"not wasm").unwrap();
    let (code, stdout, stderr) = wasp(&["plugin", "check", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stderr.contains("not a valid wasm component"), "{stderr}");
    let (code, _, stderr) = wasp(&["plugin", "check", "/nonexistent.wasm"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("cannot read /nonexistent.wasm"), "{stderr}");
}

#[test]
fn plugin_new_writes_a_crate_for_each_role_and_refuses_to_overwrite() {
    let dir = std::env::temp_dir().join(format!("wasp-cli-{}-new", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sdk = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
    let sdk = sdk.canonicalize().unwrap();
    for role in ["filter", "router", "balancer", "origin"] {
        let name = format!("my-{role}");
        let output = Command::new(env!("CARGO_BIN_EXE_wasp"))
            .current_dir(&dir)
            .args(["plugin", "new", &name, "--role", role])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let krate = dir.join(&name);
        let manifest = std::fs::read_to_string(krate.join("Cargo.toml")).unwrap();
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "{manifest}"
        );
        assert!(
            manifest.contains(&format!("wasp-sdk = {{ path = \"{}\" }}", sdk.display())),
            "{manifest}"
        );
        let lib = std::fs::read_to_string(krate.join("src/lib.rs")).unwrap();
        let ty = format!("My{}{}", role[..1].to_uppercase(), &role[1..]);
        assert!(
            lib.contains(&format!("wasp_sdk::export!({role}: {ty});")),
            "{lib}"
        );
        assert!(lib.contains("#[test]"), "{lib}");
        let config = std::fs::read_to_string(krate.join("wasp.toml")).unwrap();
        assert!(config.contains(&format!("target/wasm32-wasip2/release/my_{role}.wasm")));
        // The configuration it writes is one wasp accepts.
        let checked = Command::new(env!("CARGO_BIN_EXE_wasp"))
            .current_dir(&krate)
            .args(["check", "-c", "wasp.toml"])
            .output()
            .unwrap();
        assert!(checked.status.success(), "{checked:?}");
        let readme = std::fs::read_to_string(krate.join("README.md")).unwrap();
        assert!(readme.contains("cargo build --target wasm32-wasip2 --release"));
    }
    let again = Command::new(env!("CARGO_BIN_EXE_wasp"))
        .current_dir(&dir)
        .args(["plugin", "new", "my-filter", "--role", "filter"])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let bad = Command::new(env!("CARGO_BIN_EXE_wasp"))
        .current_dir(&dir)
        .args([
            "plugin",
            "new",
            "x",
            "--role",
            "filter",
            "--sdk",
            "/nonexistent",
        ])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("pass --sdk PATH"));
    std::fs::remove_dir_all(&dir).unwrap();
}
