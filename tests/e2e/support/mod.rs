//! Helpers shared by the end-to-end tests.

pub mod backend;
pub mod config;
pub mod nginx;
pub mod pki;
pub mod process;
pub mod redis;
pub mod upstreams;
pub mod ws;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use wasp::config::Config;
use wasp::proxy::Proxy;

/// The test plugins compiled by `tests/build.rs`.
pub mod test_plugins {
    include!(concat!(env!("OUT_DIR"), "/test_plugins.rs"));

    pub fn get(name: &str) -> &'static [u8] {
        PLUGINS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, bytes)| *bytes)
            .unwrap_or_else(|| panic!("no test plugin {name}"))
    }
}

/// Starts wasp in-process from TOML text whose servers listen on
/// `127.0.0.1:0`; returns it with the address of the first listener.
pub async fn start_proxy(toml: &str) -> (Proxy, SocketAddr) {
    let config = Config::parse(toml, "test.toml").unwrap_or_else(|e| panic!("test config: {e}"));
    let listen = config.servers[0].listen[0].clone();
    let proxy = Proxy::start(config).await.expect("proxy starts");
    let addr = proxy.local_addr(&listen).await.expect("bound");
    (proxy, addr)
}

/// A guide configuration from `examples/nginx-guide/`, with its listen
/// address moved to an ephemeral port and its backends to `backends`
/// (in order of appearance of 127.0.0.1:8080, :8081, ...).
pub fn guide_config(name: &str, backends: &[SocketAddr]) -> String {
    let path = format!(
        "{}/../examples/nginx-guide/{name}.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text = text.replace("127.0.0.1:8000", "127.0.0.1:0");
    for (i, backend) in backends.iter().enumerate() {
        text = text.replace(&format!("127.0.0.1:{}", 8080 + i), &backend.to_string());
    }
    // `localhost:8080` in the chat example.
    if let Some(first) = backends.first() {
        text = text.replace("localhost:8080", &first.to_string());
    }
    text
}

/// A fresh, empty directory for one test's files, in [`run_dir`].
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = run_dir().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Where a test's file `name` goes, in [`run_dir`].
pub fn temp_path(name: &str) -> PathBuf {
    run_dir().join(name)
}

/// This test process's own directory, `$TMPDIR/wasp-e2e-PID`. libtest has no
/// teardown to remove it at exit, so the first test to ask for it removes
/// those of earlier runs whose process has ended: a run leaves at most its
/// own files behind, for a look after a failure.
fn run_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        const PREFIX: &str = "wasp-e2e-";
        let tmp = std::env::temp_dir();
        for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let ended = name
                .to_str()
                .and_then(|name| name.strip_prefix(PREFIX)?.parse::<u32>().ok())
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
            if ended {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let dir = tmp.join(format!("{PREFIX}{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

/// A loopback address with a free port (bound, then released), for
/// addresses the proxy does not report, such as `admin`.
pub fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// One HTTP/1.1 request with an empty body: the status and the body.
pub async fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    request_over(stream, method, path).await
}

/// [`request`] from the client address `source` (all of 127.0.0.0/8 is
/// local), for what is keyed by the client's address.
pub async fn request_from(
    source: std::net::Ipv4Addr,
    addr: SocketAddr,
    method: &str,
    path: &str,
) -> (u16, String) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((source, 0).into()).unwrap();
    request_over(socket.connect(addr).await.unwrap(), method, path).await
}

async fn request_over(
    mut stream: tokio::net::TcpStream,
    method: &str,
    path: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok());
    (status.unwrap_or(0), body.to_owned())
}

/// The value of `series` (name and labels exactly as exposed) in a metrics text.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// Polls `check` every 20 ms until it yields a value; fails the test after
/// `within`, naming what was awaited.
pub async fn eventually<T>(
    what: &str,
    within: std::time::Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Raises this process's soft limit on open files to the hard limit, which
/// must allow `needed`, for tests that hold thousands of sockets (tests of
/// this binary run in parallel and share the limit).
pub fn raise_fd_limit(needed: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    assert!(
        limit.rlim_max >= needed,
        "this test needs {needed} open files; the hard limit is {}",
        limit.rlim_max
    );
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: as above; raising the soft limit up to the hard one is allowed.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    }
}
