//! The `wasp` binary run as an operator runs it: its own process, its
//! output in a file, signals to steer it.

use super::eventually;
use std::path::Path;
use std::time::Duration;

/// Bound on the process stopping after SIGTERM.
const WAIT: Duration = Duration::from_secs(10);

/// The `wasp` binary of this build, built first if needed (this package
/// depends on the library only). Cargo takes its build lock, so concurrent
/// callers wait for one build.
pub fn wasp_binary() -> &'static Path {
    static BINARY: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BINARY.get_or_init(|| {
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
                "wasp",
                "--bin",
                "wasp",
                "--target-dir",
            ])
            .arg(target)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile.ends_with("release") {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "building the wasp binary: {status}");
        profile.join("wasp")
    })
}

/// A `wasp run` process, killed if the test ends without stopping it.
pub struct WaspProcess {
    child: std::process::Child,
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
        WaspProcess { child, log }
    }

    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// SIGTERM, then the exit status once it has stopped.
    pub async fn stop(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        eventually("wasp to stop", WAIT, async || {
            self.child.try_wait().unwrap()
        })
        .await
    }

    /// Its exit status if it has stopped.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// What the process logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for WaspProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
