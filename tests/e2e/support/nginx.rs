//! Real nginx (Debian's package) for the differential suite: started with
//! an http-context configuration file included in a main configuration that
//! keeps its pid, logs and temporary files in a directory of the test's
//! own, in the foreground, so the test owns the process and stops it.
//!
//! nginx missing is a failure, never a skip: `tests/run.sh` installs it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running nginx; stopped (and waited for) when dropped.
pub struct Nginx {
    child: Child,
    pub dir: PathBuf,
}

/// The nginx binary: `$NGINX`, else `nginx` on `PATH`, else Debian's `/usr/sbin/nginx`.
fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NGINX") {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join("nginx"))
        .chain([PathBuf::from("/usr/sbin/nginx")])
        .find(|path| path.is_file());
    on_path.unwrap_or_else(|| {
        panic!(
            "nginx is not installed: the differential suite compares wasp with real nginx \
             (`apt-get install nginx`; tests/run.sh installs it), or set NGINX to its binary"
        )
    })
}

impl Nginx {
    /// Starts nginx with `site` (http-context directives) and waits until
    /// each of `listening` accepts connections.
    pub async fn start(name: &str, site: &str, listening: &[SocketAddr]) -> Nginx {
        // One directory per instance (its pid file and logs): tests run
        // the same guide at once, each on its own port.
        let dir = super::temp_dir(&format!("nginx-{name}-{}", listening[0].port()));
        std::fs::write(dir.join("site.conf"), site).unwrap();
        let d = dir.display();
        // Workers switch to `user` only when the master runs as root; the
        // test's files are the test user's.
        // SAFETY: geteuid has no preconditions.
        let user = if unsafe { libc::geteuid() } == 0 {
            "user root root;"
        } else {
            ""
        };
        let mime = if Path::new("/etc/nginx/mime.types").is_file() {
            "include /etc/nginx/mime.types;"
        } else {
            ""
        };
        let main = format!(
            "daemon off;\n{user}\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log info;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  {mime}\n  access_log {d}/access.log;\n\
               client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               include {d}/site.conf;\n}}\n"
        );
        std::fs::write(dir.join("nginx.conf"), main).unwrap();
        let child = Command::new(binary())
            .arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting nginx: {e}"));
        let mut nginx = Nginx { child, dir };
        for addr in listening {
            nginx.wait_listening(*addr).await;
        }
        nginx
    }

    async fn wait_listening(&mut self, addr: SocketAddr) {
        // Generous: nginx starts in milliseconds, but the machine may be busy.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "nginx exited ({status}) before listening on {addr}:\n{}",
                    self.error_log()
                );
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "nginx is not listening on {addr} after 30 s:\n{}",
            self.error_log()
        );
    }

    /// nginx's error log so far.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: the master stops its worker before exiting.
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}
