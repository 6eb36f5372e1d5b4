//! The `wasp` binary run as an operator runs it: its own process, its
//! output in a file, signals to steer it.

use super::eventually;
use std::path::Path;
use std::time::Duration;

/// Bound on the process stopping after SIGTERM.
const WAIT: Duration = Duration::from_secs(10);

/// The `wasp` binary of this build, built first if needed (this package
/// depends on the library only).
pub fn wasp_binary() -> &'static Path {
    static BINARY: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BINARY.get_or_init(|| workspace_binary("wasp", "wasp"))
}

/// The binary `bin` of the workspace's `package`, built for this test
/// binary's profile and target directory. Cargo takes its build lock, so
/// concurrent callers wait for one build.
pub fn workspace_binary(package: &str, bin: &str) -> std::path::PathBuf {
    // This test binary is TARGET/PROFILE/deps/e2e-HASH.
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(Path::parent).unwrap();
    let target = profile.parent().unwrap();
    let mut build = std::process::Command::new(env!("CARGO"));
    build
        .args([
            "build",
            "--quiet",
            "-p",
            package,
            "--bin",
            bin,
            "--target-dir",
        ])
        .arg(target)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile.ends_with("release") {
        build.arg("--release");
    }
    let status = build.status().expect("cargo runs");
    assert!(status.success(), "building {bin}: {status}");
    profile.join(bin)
}

/// A child process killed (and reaped) when dropped, so a failing test
/// leaves none behind.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The benchmarks' `wasp-echo` backend in a process of its own: a test
/// holding thousands of WebSockets keeps their backend side out of its own
/// descriptor limit.
pub struct EchoProcess {
    _child: Child,
    /// Kept open: wasp-echo must not write into a closed pipe.
    _stdout: std::io::BufReader<std::process::ChildStdout>,
    pub addr: std::net::SocketAddr,
}

impl EchoProcess {
    pub fn start() -> EchoProcess {
        use std::io::BufRead;
        let mut child = std::process::Command::new(workspace_binary("wasp-bench", "wasp-echo"))
            .args(["--listen", "127.0.0.1:0", "--threads", "1"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("wasp-echo starts");
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .rsplit(' ')
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("wasp-echo's first line: {line:?}"));
        EchoProcess {
            _child: Child(child),
            _stdout: stdout,
            addr,
        }
    }
}

/// A `wasp run` process, killed if the test ends without stopping it.
pub struct WaspProcess {
    child: Child,
    log: std::path::PathBuf,
}

impl WaspProcess {
    /// Runs `wasp run -c config`, its output (the log) going to `log`.
    pub fn start(config: &Path, log: std::path::PathBuf) -> WaspProcess {
        let file = std::fs::File::create(&log).unwrap();
        let child = std::process::Command::new(wasp_binary())
            .args(["run", "-c"])
            .arg(config)
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("wasp starts");
        WaspProcess {
            child: Child(child),
            log,
        }
    }

    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.0.id()).unwrap();
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// SIGTERM, then the exit status once it has stopped.
    pub async fn stop(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        eventually("wasp to stop", WAIT, async || {
            self.child.0.try_wait().unwrap()
        })
        .await
    }

    /// Its exit status if it has stopped.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.0.try_wait().unwrap()
    }

    /// What the process logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
