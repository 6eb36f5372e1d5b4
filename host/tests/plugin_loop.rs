//! The plugin developer's loop, from scratch, through the real `wasp`
//! binary and the commands of the tutorial (examples/custom-router/README.md
//! and the README the crate gets): `wasp plugin new` a filter crate in a
//! directory outside this repository, on the SDK as `cargo package` ships
//! it, `cargo test` it natively, build it for
//! wasm32-wasip2, `wasp plugin check` it, `wasp run` its own wasp.toml, send
//! a WebSocket message through it, edit the source, build again, and see the
//! new behaviour on the connection that stayed open, without restarting
//! wasp. The log must show one `plugin loaded` line per (re)load with the
//! plugin's name and the SHA-256 of the file, and a panic's message and
//! location.

use futures_util::{SinkExt, StreamExt};
use sha2::{Digest, Sha256};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// The repository (this crate is `host/`).
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn wasp() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wasp"))
}

/// Runs `command` and fails the test with its output unless it succeeds;
/// returns its stdout.
fn run(mut command: Command, what: &str) -> String {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn cargo(dir: &Path, args: &[&str]) -> Command {
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo.current_dir(dir).args(args);
    // This test's own build settings must not leak into the plugin's.
    for var in ["CARGO_TARGET_DIR", "RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS"] {
        cargo.env_remove(var);
    }
    cargo
}

/// A port nothing listens on now (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A WebSocket backend that echoes every text message, on its own thread.
fn echo_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    while let Some(Ok(message)) = ws.next().await {
                        if message.is_text() && ws.send(message).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
    });
    addr
}

/// Kills wasp when the test ends, passed or failed.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sha256_of(path: &Path) -> String {
    format!("{:x}", Sha256::digest(std::fs::read(path).unwrap()))
}

/// Waits for `check` to hold, polling; fails after `within`, naming what
/// was awaited (a cap for a broken build, not a measure of speed).
fn wait_for(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_new_filter_crate_is_built_run_edited_and_reloaded_on_an_open_connection() {
    // Outside the repository, as a plugin author's crate would be.
    let work = std::env::temp_dir().join(format!("wasp-plugin-loop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    // The SDK as published: `cargo package`'s archive, unpacked here, so
    // that the plugin builds with no other file of this repository.
    let mut package = cargo(
        &repo(),
        &["package", "-p", "wasp-sdk", "--allow-dirty", "--no-verify"],
    );
    package.arg("--target-dir").arg(work.join("package"));
    run(package, "cargo package -p wasp-sdk");
    let archive = std::fs::read_dir(work.join("package/package"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.extension().is_some_and(|ext| ext == "crate"))
        .expect("a .crate archive");
    let mut untar = Command::new("tar");
    untar.arg("-xzf").arg(&archive).arg("-C").arg(&work);
    run(untar, "unpacking the wasp-sdk archive");
    let sdk = work.join(archive.file_stem().unwrap());
    assert!(
        sdk.join("wit/wasp.wit").is_file(),
        "the contract ships with the SDK"
    );

    let mut new = wasp();
    new.current_dir(&work)
        .args(["plugin", "new", "greeter", "--role", "filter", "--sdk"])
        .arg(&sdk);
    let created = run(new, "wasp plugin new");
    assert!(
        created.contains("cargo build --target wasm32-wasip2 --release"),
        "{created}"
    );
    let krate = work.join("greeter");
    // The crate's dependencies (wit-bindgen, serde) are compiled once per
    // checkout, not once per run: its target directory is kept in this
    // repository's. The crate itself is new each time.
    let cache = repo().join("target").join("plugin-loop");
    std::fs::create_dir_all(&cache).unwrap();
    std::os::unix::fs::symlink(&cache, krate.join("target")).unwrap();

    run(cargo(&krate, &["test"]), "cargo test (the native test)");
    let build = ["build", "--target", "wasm32-wasip2", "--release"];
    run(cargo(&krate, &build), "cargo build --target wasm32-wasip2");
    let wasm = krate.join("target/wasm32-wasip2/release/greeter.wasm");
    let first_sha = sha256_of(&wasm);

    let mut check = wasp();
    check.arg("plugin").arg("check").arg(&wasm);
    let checked = run(check, "wasp plugin check");
    assert!(checked.contains("filter: configure ok"), "{checked}");
    assert!(checked.contains(&first_sha), "{checked}");

    // Its own wasp.toml, pointed at a free port and the echo backend.
    let backend = echo_backend();
    let port = free_port();
    let config = std::fs::read_to_string(krate.join("wasp.toml"))
        .unwrap()
        .replace("127.0.0.1:8000", &format!("127.0.0.1:{port}"))
        .replace("127.0.0.1:8080", &backend.to_string());
    std::fs::write(krate.join("wasp.toml"), config).unwrap();
    let log_path = work.join("wasp.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut wasp_run = wasp();
    wasp_run
        .current_dir(&krate)
        .args(["run", "-c", "wasp.toml"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::from(log));
    let _wasp = Running(wasp_run.spawn().unwrap());
    let read_log = || std::fs::read_to_string(&log_path).unwrap();
    wait_for("wasp to listen", Duration::from_secs(60), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = format!("ws://127.0.0.1:{port}/ws/chat");
    let (mut ws, _) = runtime
        .block_on(tokio_tungstenite::connect_async(&url))
        .unwrap_or_else(|e| panic!("WebSocket through wasp: {e}\n{}", read_log()));
    let mut ask = |text: &str| {
        runtime.block_on(async {
            ws.send(Message::text(text)).await.unwrap();
            ws.next().await.expect("an answer").expect("a message")
        })
    };
    assert_eq!(ask("hello"), Message::text("hello"));

    // Edit: shout, and panic on "boom".
    let lib = krate.join("src/lib.rs");
    let source = std::fs::read_to_string(&lib).unwrap();
    let template = "Action::Replace(Message::Text(text))";
    assert!(source.contains(template), "the template changed:\n{source}");
    let edited = source.replace(
        template,
        "if text == \"boom\" {\n                    panic!(\"boom requested\");\n                }\n                Action::Replace(Message::Text(text.to_uppercase()))",
    );
    std::fs::write(&lib, &edited).unwrap();
    let (line, column) = edited
        .lines()
        .enumerate()
        .find_map(|(i, l)| l.find("panic!(\"boom").map(|c| (i + 1, c + 1)))
        .unwrap();
    run(cargo(&krate, &build), "cargo build after the edit");
    let second_sha = sha256_of(&wasm);
    assert_ne!(first_sha, second_sha);

    // The same connection: its next message after the reload meets the new
    // version.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match ask("again") {
            answer if answer == Message::text("AGAIN") => break,
            answer => assert_eq!(answer, Message::text("again")),
        }
        assert!(Instant::now() < deadline, "no reload seen:\n{}", read_log());
        std::thread::sleep(Duration::from_millis(100));
    }

    // A panic closes this connection with 1011, and the log says why and where.
    match ask("boom") {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1011),
        other => panic!("expected a close, got {other:?}"),
    }
    let location = format!("panicked at src/lib.rs:{line}:{column}");
    wait_for("the panic in the log", Duration::from_secs(10), || {
        read_log().contains(&location)
    });
    let log = read_log();
    assert!(log.contains("boom requested"), "{log}");

    // One `plugin loaded` line per load, naming the file and its hash.
    let loaded: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("plugin loaded") && line.contains("greeter.wasm"))
        .collect();
    assert_eq!(loaded.len(), 2, "{log}");
    assert!(loaded[0].contains(&format!("sha256={first_sha}")), "{log}");
    assert!(loaded[1].contains(&format!("sha256={second_sha}")), "{log}");
    assert!(loaded.iter().all(|line| line.contains("load_ms=")), "{log}");
    std::fs::remove_dir_all(&work).unwrap();
}

/// The crates `wasp plugin new` writes for the other roles pass their own
/// native tests, build to a component with the README's one command, and
/// load in wasp (the router configured with a routing table: it refuses
/// one without a proxy location, with its own message).
#[test]
fn the_router_balancer_and_origin_crates_test_build_and_load() {
    let work = std::env::temp_dir().join(format!("wasp-plugin-roles-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let cache = repo().join("target").join("plugin-loop");
    std::fs::create_dir_all(&cache).unwrap();
    let table = r#"{"servers": [{"listen": ["127.0.0.1:8000"], "server_names": [],
        "locations": [{"id": 0, "kind": "prefix", "pattern": "/", "action": "proxy",
                       "upstream": "127.0.0.1:8080"}]}]}"#;
    for (role, config) in [("router", table), ("balancer", "{}"), ("origin", "{}")] {
        let name = format!("new-{role}");
        let mut new = wasp();
        new.current_dir(&work)
            .args(["plugin", "new", &name, "--role", role, "--sdk"])
            .arg(repo().join("sdk"));
        run(new, "wasp plugin new");
        let krate = work.join(&name);
        std::os::unix::fs::symlink(&cache, krate.join("target")).unwrap();
        run(
            cargo(&krate, &["test"]),
            &format!("cargo test of the {role}"),
        );
        let build = ["build", "--target", "wasm32-wasip2", "--release"];
        run(cargo(&krate, &build), &format!("cargo build of the {role}"));
        let wasm = krate.join(format!("target/wasm32-wasip2/release/new_{role}.wasm"));
        let mut check = wasp();
        check
            .arg("plugin")
            .arg("check")
            .arg(&wasm)
            .args(["--config", config]);
        let checked = run(check, "wasp plugin check");
        assert!(
            checked.contains(&format!("{role}: configure ok")),
            "{checked}"
        );
    }
    std::fs::remove_dir_all(&work).unwrap();
}
