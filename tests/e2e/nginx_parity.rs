//! The differential suite: every configuration of the nginx guide run side
//! by side by real nginx (from `examples/nginx-guide/NAME.conf`) and by wasp,
//! twice: from the hand-written translation `NAME.toml` and from what
//! `wasp import-nginx` makes of `NAME.conf`. All three get the same backends,
//! requests, handshakes, messages, misbehaving upstreams and bad input, and
//! each test asserts that wasp's outcome is nginx's: status codes, headers
//! the upstream saw, close codes, which backend served, and which timeout
//! fired when (the two within half a second of each other).
//!
//! Starting the sides asserts that the `.conf` imports with no difference
//! reported. Where wasp deliberately differs, the test says so and why, and asserts
//! both answers. Timeouts are shortened to 1 s in all three (`3600s` → `1s`),
//! and each side runs its probes concurrently, so the module takes seconds.

use crate::support::backend::Backend;
use crate::support::nginx::Nginx;
use crate::support::upstreams::{Fault, blackhole, faulty};
use crate::support::{free_addr, temp_dir};
use futures_util::future::join_all;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::fmt::Debug;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto::ring};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{WebSocketStream, client_async};
use wasp::config::Config;
use wasp::proxy::Proxy;

/// The key every handshake of the suite sends, so what the upstream sees
/// is the same byte for byte on every side.
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// How close in time two sides' timeouts must fire.
const SAME_TIME: Duration = Duration::from_millis(500);

fn guide_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../examples/nginx-guide/{name}"))
}

/// One side of the comparison: nginx, or wasp from one of the translations.
struct Side {
    name: &'static str,
    /// The guide's `127.0.0.1:8000`.
    plain: SocketAddr,
    /// The guide's `127.0.0.1:8443`.
    tls: SocketAddr,
    _running: Running,
}

enum Running {
    Nginx(#[allow(dead_code)] Nginx),
    Wasp(#[allow(dead_code)] Proxy),
}

/// Files a guide names that the tests provide: its certificate and key
/// (for example.com, self-signed) and the static root.
struct Files {
    dir: PathBuf,
    cert: CertificateDer<'static>,
}

impl Files {
    fn new(name: &str) -> Files {
        let dir = temp_dir(&format!("parity-{name}"));
        let certified =
            rcgen::generate_simple_self_signed(vec!["example.com".to_string()]).unwrap();
        std::fs::write(dir.join("cert.pem"), certified.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), certified.signing_key.serialize_pem()).unwrap();
        Files {
            dir,
            cert: certified.cert.der().clone(),
        }
    }

    fn connector(&self) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.clone()).unwrap();
        let mut config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsConnector::from(Arc::new(config))
    }
}

/// A guide's text with its addresses and files made this test's: the
/// listen addresses `fronts`, the backends (127.0.0.1:8080, the chat's
/// localhost:8080, or the balanced 127.0.0.1:8081 to :8083) `backends`, the
/// certificate, the static root.
fn localize(
    text: &str,
    fronts: (SocketAddr, SocketAddr),
    backends: &[SocketAddr],
    files: &Files,
) -> String {
    let public = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/chat-app/public");
    let public = public.canonicalize().unwrap().display().to_string();
    // Through placeholders, so no replacement rewrites another's result.
    let mut pairs: Vec<(String, String)> = vec![
        ("127.0.0.1:8000".into(), fronts.0.to_string()),
        ("127.0.0.1:8443".into(), fronts.1.to_string()),
        ("localhost:8080".into(), backends[0].to_string()),
        (
            "/path/to/cert.pem".into(),
            files.dir.join("cert.pem").display().to_string(),
        ),
        (
            "/path/to/key.pem".into(),
            files.dir.join("key.pem").display().to_string(),
        ),
        ("/var/www/html".into(), public.clone()),
        ("examples/chat-app/public".into(), public),
    ];
    // The guide's backends are 127.0.0.1:8080, or :8081 to :8083 when it balances.
    let first = if text.contains("127.0.0.1:8081") {
        8081
    } else {
        8080
    };
    for (i, backend) in backends.iter().enumerate() {
        pairs.push((format!("127.0.0.1:{}", first + i), backend.to_string()));
    }
    let mut text = text.to_owned();
    for (i, (from, _)) in pairs.iter().enumerate() {
        text = text.replace(from.as_str(), &format!("\u{0}{i}\u{0}"));
    }
    for (i, (_, to)) in pairs.iter().enumerate() {
        text = text.replace(&format!("\u{0}{i}\u{0}"), to);
    }
    text
}

/// The guide `name` as nginx runs it and as wasp runs both translations,
/// with `edit` applied to all three texts first (e.g. shorter timeouts).
async fn sides(
    name: &str,
    backends: &[SocketAddr],
    files: &Files,
    edit: impl Fn(&str) -> String,
) -> Vec<Side> {
    let conf = edit(&std::fs::read_to_string(guide_file(&format!("{name}.conf"))).unwrap());
    let toml = edit(&std::fs::read_to_string(guide_file(&format!("{name}.toml"))).unwrap());
    let imported = wasp::import_nginx::import_text(&conf, &format!("{name}.conf"), &guide_file(""))
        .unwrap_or_else(|e| panic!("importing {name}.conf: {e}"));
    assert!(
        !imported.differs(),
        "{name}.conf imports with differences: {:#?}\n{}",
        imported.notes,
        imported.toml
    );
    let nginx_fronts = (free_addr(), free_addr());
    let nginx_site = localize(&conf, nginx_fronts, backends, files);
    let listening = [nginx_fronts.0, nginx_fronts.1];
    let nginx = Nginx::start(name, &nginx_site, &listening[..listeners(&conf)]);
    let wasp = |label: &'static str, text: String| async move {
        let fronts = (free_addr(), free_addr());
        let text = localize(&text, fronts, backends, files);
        let config = Config::parse(&text, label).unwrap_or_else(|e| panic!("{label}: {e}\n{text}"));
        let proxy = Proxy::start(config).await.expect("wasp starts");
        Side {
            name: label,
            plain: fronts.0,
            tls: fronts.1,
            _running: Running::Wasp(proxy),
        }
    };
    let (nginx, hand, import) = tokio::join!(
        nginx,
        wasp("wasp (.toml)", toml),
        wasp("wasp (import-nginx)", imported.toml)
    );
    vec![
        Side {
            name: "nginx",
            plain: nginx_fronts.0,
            tls: nginx_fronts.1,
            _running: Running::Nginx(nginx),
        },
        hand,
        import,
    ]
}

/// How many of the guide's two listen addresses `conf` uses.
fn listeners(conf: &str) -> usize {
    if conf.contains("127.0.0.1:8443") {
        2
    } else {
        1
    }
}

fn shorter_timeouts(text: &str) -> String {
    text.replace("3600s", "1s")
}

/// Runs `probe` on every side at once; returns each side's name and outcome.
async fn on_every_side<'a, T, F, Fut>(sides: &'a [Side], probe: F) -> Vec<(&'static str, T)>
where
    F: Fn(&'a Side) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    join_all(sides.iter().map(|side| {
        let outcome = probe(side);
        async move { (side.name, outcome.await) }
    }))
    .await
}

/// Asserts that every side's outcome is nginx's (the first).
fn assert_same<T: PartialEq + Debug>(what: &str, outcomes: &[(&str, T)]) {
    let (_, expected) = &outcomes[0];
    for (name, outcome) in &outcomes[1..] {
        assert_eq!(outcome, expected, "{what}: {name} differs from nginx");
    }
}

/// Asserts that every side's duration is within [`SAME_TIME`] of nginx's.
fn assert_same_time(what: &str, outcomes: &[(&str, Duration)]) {
    let (_, nginx) = outcomes[0];
    for (name, took) in &outcomes[1..] {
        assert!(
            took.abs_diff(nginx) < SAME_TIME,
            "{what}: {name} took {took:?}, nginx {nginx:?}"
        );
    }
}

/// What came back for one raw request: the status (0: the connection
/// closed with no answer), the named headers, the body.
#[derive(Debug, Clone, PartialEq)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }

    /// The backend's report of the request it received, made comparable.
    fn report(&self) -> Value {
        normalized(serde_json::from_str(&self.body).unwrap_or(Value::Null))
    }
}

/// A backend report with its headers sorted by name (nginx and wasp order
/// them differently; HTTP gives the order of differently named fields no
/// meaning).
fn normalized(mut report: Value) -> Value {
    if let Some(headers) = report["headers"].as_array_mut() {
        headers.sort_by_key(|pair| pair[0].as_str().unwrap_or("").to_owned());
    }
    report
}

/// Sends `request` as is over `stream` and reads the answer until the
/// server closes.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, request: &[u8]) -> Answer {
    let _ = stream.write_all(request).await;
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    // Until the server closes, or the answer is complete by its
    // Content-Length (a kept-alive connection stays open after it).
    let complete = |raw: &[u8]| {
        let text = String::from_utf8_lossy(raw);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            return false;
        };
        let length = head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        });
        length.is_some_and(|length| body.len() >= length)
    };
    let reading = async {
        while !complete(&raw) {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(20), reading).await;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Answer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

async fn send(addr: SocketAddr, request: &[u8]) -> Answer {
    exchange(TcpStream::connect(addr).await.unwrap(), request).await
}

/// `GET path` with `Host: host` and `Connection: close`.
fn get(path: &str, host: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nX-Forwarded-For: 203.0.113.7\r\nConnection: close\r\n\r\n").into_bytes()
}

/// A WebSocket handshake for `path` as raw bytes, with the suite's fixed key.
fn handshake(path: &str, host: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n"
    )
    .into_bytes()
}

/// A WebSocket client over any stream.
type Ws<S> = WebSocketStream<S>;

/// Opens a WebSocket on `stream`; the status (101 or the refusal's), and
/// the socket with the backend's report of the handshake when it opened.
async fn open<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    path: &str,
    host: &str,
) -> (u16, Option<(Ws<S>, Value)>) {
    let mut request = format!("ws://{host}{path}").into_client_request().unwrap();
    let headers = request.headers_mut();
    headers.insert("sec-websocket-key", WS_KEY.parse().unwrap());
    headers.insert("x-forwarded-for", "203.0.113.7".parse().unwrap());
    match client_async(request, stream).await {
        Ok((mut ws, response)) => {
            let report = match ws.next().await {
                Some(Ok(Message::Text(text))) => normalized(serde_json::from_str(&text).unwrap()),
                other => panic!("expected the backend's report, got {other:?}"),
            };
            (response.status().as_u16(), Some((ws, report)))
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            (response.status().as_u16(), None)
        }
        Err(error) => panic!("handshake failed: {error}"),
    }
}

/// How a WebSocket ended for the client.
#[derive(Debug, PartialEq)]
enum Ending {
    /// A close frame with this code.
    Close(u16),
    /// The connection closed with no close frame.
    Dropped,
}

async fn ending<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut Ws<S>) -> Ending {
    loop {
        match ws.next().await {
            Some(Ok(Message::Close(frame))) => {
                return Ending::Close(frame.map_or(1005, |f| u16::from(f.code)));
            }
            Some(Ok(_)) => continue,
            None | Some(Err(_)) => return Ending::Dropped,
        }
    }
}

/// Messages both ways, then close codes both ways: the backend's (sent on
/// `close:4001`) and the client's (echoed by the backend).
async fn conversation<S: AsyncRead + AsyncWrite + Unpin>(
    mut ws: Ws<S>,
    mut second: Ws<S>,
) -> (Vec<Message>, Ending, Ending) {
    let big: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
    let mut echoed = Vec::new();
    for message in [
        Message::text("hello"),
        Message::binary(vec![0u8, 1, 2, 255]),
        Message::binary(big),
    ] {
        ws.send(message).await.unwrap();
        echoed.push(ws.next().await.unwrap().unwrap());
    }
    ws.send(Message::text("close:4001")).await.unwrap();
    let backend_close = ending(&mut ws).await;
    second
        .close(Some(CloseFrame {
            code: CloseCode::from(4002),
            reason: "bye".into(),
        }))
        .await
        .unwrap();
    let client_close = ending(&mut second).await;
    (echoed, backend_close, client_close)
}

#[tokio::test]
async fn requests_and_websockets_reach_the_upstream_as_through_nginx() {
    let backend = Backend::start("b1").await;
    let files = Files::new("headers");
    for (name, path, host) in [
        ("basic", "/socket/", "example.com"),
        ("timeouts", "/socket/", "example.com"),
        ("complete", "/socket/", "example.com"),
        ("chat", "/ws/chat", "chat.example.com"),
        ("load-balancing", "/ws/", "example.com"),
        ("limit-conn", "/ws/", "example.com"),
    ] {
        let sides = sides(name, &[backend.addr; 3], &files, str::to_owned).await;
        // A plain request, query string included.
        let plain = on_every_side(&sides, |side| async move {
            let answer = send(side.plain, &get(&format!("{path}info?x=1"), host)).await;
            (answer.status, answer.report())
        })
        .await;
        assert_same(&format!("{name}: GET"), &plain);
        assert_eq!(plain[0].1.0, 200, "{name}");
        // A WebSocket: the handshake upstream, messages and close codes.
        let ws = on_every_side(&sides, |side| async move {
            let (status, opened) =
                open(TcpStream::connect(side.plain).await.unwrap(), path, host).await;
            let (ws, report) = opened.expect("101");
            let (_, second) = open(TcpStream::connect(side.plain).await.unwrap(), path, host).await;
            let (second, _) = second.expect("101");
            (status, report, conversation(ws, second).await)
        })
        .await;
        assert_same(&format!("{name}: WebSocket"), &ws);
        assert_eq!(ws[0].1.2.1, Ending::Close(4001), "{name}");
        assert_eq!(ws[0].1.2.2, Ending::Close(4002), "{name}");
        // No location: 404 from both.
        let missing = on_every_side(&sides, |side| async move {
            send(side.plain, &get("/elsewhere", host)).await.status
        })
        .await;
        if name != "chat" {
            assert_same(&format!("{name}: no location"), &missing);
        }
    }
}

/// Sends `request` on every side: the status and how long it took.
async fn timed(sides: &[Side], request: Vec<u8>) -> Vec<(&'static str, (u16, Duration))> {
    on_every_side(sides, |side| {
        let request = request.clone();
        async move {
            let start = Instant::now();
            let answer = send(side.plain, &request).await;
            (answer.status, start.elapsed())
        }
    })
    .await
}

#[tokio::test]
async fn timeouts_fire_when_nginxs_do() {
    let files = Files::new("timeouts");
    let backend = Backend::start("b1").await;
    let (silent, _silent) = faulty(Fault::Silent).await;
    let (late, _late) = faulty(Fault::Late(Duration::from_millis(300))).await;
    let (_hole, _fillers, hole) = blackhole();
    let upstreams = [[silent], [late], [hole], [backend.addr]];
    let (silent_sides, late_sides, hole_sides, idle_sides) = tokio::join!(
        sides("timeouts", &upstreams[0], &files, shorter_timeouts),
        sides("timeouts", &upstreams[1], &files, shorter_timeouts),
        sides("timeouts", &upstreams[2], &files, shorter_timeouts),
        sides("timeouts", &upstreams[3], &files, shorter_timeouts),
    );
    let (read, read_ws, late_answer, connect) = tokio::join!(
        // proxy_read_timeout: 504 for a request and for a handshake.
        timed(&silent_sides, get("/socket/", "example.com")),
        timed(&silent_sides, handshake("/socket/", "example.com")),
        // An answer within the timeout is an answer.
        timed(&late_sides, get("/socket/", "example.com")),
        // proxy_connect_timeout: 504.
        timed(&hole_sides, get("/socket/", "example.com")),
    );
    // An idle WebSocket is cut after proxy_read_timeout.
    let idle = on_every_side(&idle_sides, |side| async move {
        let (_, opened) = open(
            TcpStream::connect(side.plain).await.unwrap(),
            "/socket/",
            "example.com",
        )
        .await;
        let (mut ws, _) = opened.expect("101");
        let start = Instant::now();
        let ending = ending(&mut ws).await;
        (ending, start.elapsed())
    })
    .await;
    for (what, outcomes, status) in [
        ("read timeout, request", read, 504),
        ("read timeout, handshake", read_ws, 504),
        ("late answer", late_answer, 200),
        ("connect timeout", connect, 504),
    ] {
        let statuses: Vec<_> = outcomes.iter().map(|(n, (s, _))| (*n, *s)).collect();
        assert_same(what, &statuses);
        assert_eq!(statuses[0].1, status, "{what}");
        let times: Vec<_> = outcomes.iter().map(|(n, (_, t))| (*n, *t)).collect();
        assert_same_time(what, &times);
    }
    let endings: Vec<_> = idle
        .iter()
        .map(|(n, (e, _))| (*n, format!("{e:?}")))
        .collect();
    assert_same("idle WebSocket", &endings);
    let times: Vec<_> = idle.iter().map(|(n, (_, t))| (*n, *t)).collect();
    assert_same_time("idle WebSocket", &times);
}

#[tokio::test]
async fn dying_upstreams_get_what_nginx_gives() {
    let files = Files::new("dying");
    let refused = free_addr();
    let (hang_up, _h) = faulty(Fault::HangUp).await;
    let (half, _f) = faulty(Fault::HalfHead).await;
    let upstreams = [[refused], [hang_up], [half]];
    let (refused_sides, hang_up_sides, half_sides) = tokio::join!(
        sides("complete", &upstreams[0], &files, str::to_owned),
        sides("complete", &upstreams[1], &files, str::to_owned),
        sides("complete", &upstreams[2], &files, str::to_owned),
    );
    for (what, sides) in [
        ("refused", &refused_sides),
        ("hangs up", &hang_up_sides),
        ("half a head", &half_sides),
    ] {
        for request in [
            get("/socket/", "example.com"),
            handshake("/socket/", "example.com"),
        ] {
            let statuses = on_every_side(sides, |side| {
                let request = request.clone();
                async move { send(side.plain, &request).await.status }
            })
            .await;
            assert_same(what, &statuses);
            assert_eq!(statuses[0].1, 502, "{what}");
        }
    }
    // A backend that dies under open WebSockets: each client's connection
    // ends, with no close frame (nobody sent one).
    let backend = Backend::start("dies").await;
    let sides = sides("complete", &[backend.addr], &files, str::to_owned).await;
    let mut open_sockets = Vec::new();
    for side in &sides {
        let (_, opened) = open(
            TcpStream::connect(side.plain).await.unwrap(),
            "/socket/",
            "example.com",
        )
        .await;
        open_sockets.push((side.name, opened.expect("101").0));
    }
    backend.stop().await;
    let mut endings = Vec::new();
    for (name, mut ws) in open_sockets {
        endings.push((name, ending(&mut ws).await));
    }
    assert_same("backend died", &endings);
    assert_eq!(endings[0].1, Ending::Dropped);
}

/// A request to `/socket/` of the basic configuration, written by hand.
struct Probe {
    what: &'static str,
    request: Vec<u8>,
    /// `None`: wasp answers as nginx does. `Some((nginx, wasp, why))`: a
    /// deliberate difference.
    differs: Option<(u16, u16, &'static str)>,
}

fn probes() -> Vec<Probe> {
    let probe = |what, request: String| Probe {
        what,
        request: request.into_bytes(),
        differs: None,
    };
    let big = "a".repeat(40 * 1024);
    vec![
        probe(
            "two Host headers",
            "GET /socket/ HTTP/1.1\r\nHost: example.com\r\nHost: other\r\nConnection: close\r\n\r\n".into(),
        ),
        probe(
            "malformed chunked body",
            "POST /socket/ HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nhello\r\n0\r\n\r\n".into(),
        ),
        probe(
            "a body over client_max_body_size",
            "POST /socket/ HTTP/1.1\r\nHost: example.com\r\nContent-Length: 2000000\r\nConnection: close\r\n\r\n".into(),
        ),
        probe(
            "an invalid Content-Length",
            "POST /socket/ HTTP/1.1\r\nHost: example.com\r\nContent-Length: ten\r\nConnection: close\r\n\r\n".into(),
        ),
        probe(
            "no Host in HTTP/1.1",
            "GET /socket/ HTTP/1.1\r\nConnection: close\r\n\r\n".into(),
        ),
        probe(
            "two Content-Lengths",
            "POST /socket/ HTTP/1.1\r\nHost: example.com\r\nContent-Length: 1\r\nContent-Length: 2\r\nConnection: close\r\n\r\nab".into(),
        ),
        probe("a request line that is not HTTP", "GARBAGE\r\n\r\n".into()),
        probe(
            "a path above the root",
            "GET /../etc/passwd HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n".into(),
        ),
        Probe {
            what: "HTTP/2.0 in an HTTP/1 request line",
            request: b"GET /socket/ HTTP/2.0\r\nHost: example.com\r\n\r\n".to_vec(),
            differs: Some((505, 400, "hyper's parser refuses a version it does not speak as a malformed request, before wasp sees it")),
        },
        Probe {
            what: "an unknown Transfer-Encoding",
            request: b"POST /socket/ HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\n".to_vec(),
            differs: Some((501, 400, "hyper's parser refuses a body it cannot frame as a malformed request, before wasp sees it")),
        },
        probe(
            "a space in a header name",
            "GET /socket/ HTTP/1.1\r\nHost: example.com\r\nBad Header: x\r\nConnection: close\r\n\r\n".into(),
        ),
        probe(
            "a space in Host",
            "GET /socket/ HTTP/1.1\r\nHost: exa mple.com\r\nConnection: close\r\n\r\n".into(),
        ),
        probe(
            "lines ending in LF alone",
            "GET /socket/ HTTP/1.1\nHost: example.com\nConnection: close\n\n".into(),
        ),
        Probe {
            what: "Content-Length and Transfer-Encoding together",
            request: b"POST /socket/ HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n".to_vec(),
            // RFC 9112 §6.3 lets a server either refuse it or read the body as
            // chunked and close the connection after the answer; wasp does the
            // latter (nothing can be smuggled behind the body), nginx the former.
            differs: Some((400, 200, "read as chunked, Content-Length dropped, connection closed after (RFC 9112 §6.3)")),
        },
        probe(
            "a handshake without Sec-WebSocket-Key (passed on, the backend decides)",
            "GET /socket/ HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n".into(),
        ),
        Probe {
            what: "a header over the head size limit",
            request: format!("GET /socket/ HTTP/1.1\r\nHost: example.com\r\nX-Big: {big}\r\nConnection: close\r\n\r\n").into_bytes(),
            // nginx predates RFC 6585: its "Request Header Or Cookie Too
            // Large" page has status 400. wasp answers 431, the status HTTP
            // defines for it, so a client can tell the cause.
            differs: Some((400, 431, "431 Request Header Fields Too Large (RFC 6585) names the cause")),
        },
    ]
}

#[tokio::test]
async fn malformed_and_oversized_requests_get_nginxs_status() {
    let backend = Backend::start("b1").await;
    let files = Files::new("malformed");
    let sides = sides("basic", &[backend.addr], &files, str::to_owned).await;
    let all = probes();
    let outcomes = join_all(all.iter().map(|probe| {
        on_every_side(&sides, |side| {
            let request = probe.request.clone();
            async move { send(side.plain, &request).await.status }
        })
    }))
    .await;
    for (probe, statuses) in all.iter().zip(outcomes) {
        match probe.differs {
            None => assert_same(probe.what, &statuses),
            Some((nginx, wasp, why)) => {
                assert_eq!(statuses[0].1, nginx, "{}: nginx", probe.what);
                for (name, status) in &statuses[1..] {
                    assert_eq!(
                        *status, wasp,
                        "{}: {name} (deliberately not nginx's {nginx}: {why})",
                        probe.what
                    );
                }
            }
        }
    }
}

/// Which backend served a plain request from each of `clients`, in order.
async fn served(sides: &[Side], clients: &[Ipv4Addr]) -> Vec<(&'static str, Vec<Option<String>>)> {
    on_every_side(sides, |side| async move {
        let mut served = Vec::new();
        for &client in clients {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind((client, 0).into()).unwrap();
            let stream = socket.connect(side.plain).await.unwrap();
            let answer = exchange(stream, &get("/ws/", "example.com")).await;
            served.push(answer.report()["backend"].as_str().map(str::to_owned));
        }
        served
    })
    .await
}

#[tokio::test]
async fn ip_hash_picks_the_backend_nginx_picks() {
    let files = Files::new("ip-hash");
    let backends = [
        Backend::start("b1").await,
        Backend::start("b2").await,
        Backend::start("b3").await,
    ];
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let sides = sides("load-balancing", &addrs, &files, str::to_owned).await;
    // ip_hash keys IPv4 clients by their first three octets: one client per /24.
    let clients: Vec<Ipv4Addr> = (1..=12).map(|i| Ipv4Addr::new(127, 0, i, 1)).collect();
    let before = served(&sides, &clients).await;
    assert_same("backend per client", &before);
    let distinct: std::collections::BTreeSet<_> = before[0].1.iter().collect();
    assert!(
        distinct.len() > 1,
        "the clients all hashed to one backend: {before:?}"
    );
    // b2 dies: its clients move, to the backend nginx moves them to.
    let [b1, b2, b3] = backends;
    b2.stop().await;
    let after = served(&sides, &clients).await;
    assert_same("backend per client with b2 down", &after);
    drop((b1, b3));
}

/// `request` from `client` to `addr`.
async fn send_from(client: Ipv4Addr, addr: SocketAddr, request: &[u8]) -> Answer {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((client, 0).into()).unwrap();
    exchange(socket.connect(addr).await.unwrap(), request).await
}

#[tokio::test]
async fn a_failing_peer_passes_idempotent_requests_to_the_next_as_nginx_does() {
    // nginx's default `proxy_next_upstream error timeout`: after a timeout
    // or an error before the answer's head, a request that can be sent
    // again goes to the next peer; a POST with a body does not.
    let files = Files::new("next-upstream");
    let (b2, b3) = (Backend::start("b2").await, Backend::start("b3").await);
    let (silent, _silent) = faulty(Fault::Silent).await;
    let (hang_up, _hang_up) = faulty(Fault::HangUp).await;
    let upstreams = [[silent, b2.addr, b3.addr], [hang_up, b2.addr, b3.addr]];
    let (silent_sides, hang_up_sides) = tokio::join!(
        sides("load-balancing", &upstreams[0], &files, shorter_timeouts),
        sides("load-balancing", &upstreams[1], &files, shorter_timeouts),
    );
    let clients: Vec<Ipv4Addr> = (1..=16).map(|i| Ipv4Addr::new(127, 0, i, 1)).collect();
    let post = b"POST /ws/ HTTP/1.1\r\nHost: example.com\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi";
    for (what, sides, failed) in [
        ("a silent peer", &silent_sides, 504),
        ("a peer that hangs up", &hang_up_sides, 502),
    ] {
        let outcomes = on_every_side(sides, |side| {
            let clients = clients.clone();
            async move {
                let mut answers = Vec::new();
                for &client in &clients {
                    // The POST first: once the failing peer failed, nginx
                    // and wasp leave it out for fail_timeout.
                    let start = Instant::now();
                    let posted = send_from(client, side.plain, post).await;
                    let got = send_from(client, side.plain, &get("/ws/", "example.com")).await;
                    let took = start.elapsed();
                    let backend = got.report()["backend"].as_str().map(str::to_owned);
                    answers.push(((got.status, backend, posted.status), took));
                }
                answers
            }
        })
        .await;
        let answers: Vec<_> = outcomes
            .iter()
            .map(|(name, answers)| {
                (
                    *name,
                    answers.iter().map(|(a, _)| a.clone()).collect::<Vec<_>>(),
                )
            })
            .collect();
        assert_same(what, &answers);
        for (client, answer) in answers[0].1.iter().enumerate() {
            assert_eq!(answer.0, 200, "{what}: GET from client {client}");
        }
        assert!(
            answers[0].1.iter().any(|(_, _, posted)| *posted == failed),
            "{what}: no client hashed to the failing peer: {answers:?}"
        );
        for i in 0..clients.len() {
            let times: Vec<_> = outcomes
                .iter()
                .map(|(name, answers)| (*name, answers[i].1))
                .collect();
            assert_same_time(&format!("{what}: client {i}"), &times);
        }
    }
}

#[tokio::test]
async fn limit_conn_refuses_the_eleventh_websocket_as_nginx_does() {
    let backend = Backend::start("b1").await;
    let files = Files::new("limit-conn");
    let sides = sides("limit-conn", &[backend.addr], &files, str::to_owned).await;
    let outcomes = on_every_side(&sides, |side| async move {
        let mut statuses = Vec::new();
        let mut held = Vec::new();
        for _ in 0..11 {
            let (status, opened) = open(
                TcpStream::connect(side.plain).await.unwrap(),
                "/ws/",
                "example.com",
            )
            .await;
            statuses.push(status);
            held.extend(opened);
        }
        // One closes; its slot is free once both its connections ended.
        let (mut first, _) = held.remove(0);
        first.close(None).await.unwrap();
        let ended = ending(&mut first).await;
        let again = crate::support::eventually(
            "a free limit_conn slot",
            Duration::from_secs(10),
            async || {
                let (status, opened) = open(
                    TcpStream::connect(side.plain).await.unwrap(),
                    "/ws/",
                    "example.com",
                )
                .await;
                (status == 101).then_some(opened.map(|_| status))
            },
        )
        .await;
        (statuses, ended, again)
    })
    .await;
    assert_same("limit_conn 10", &outcomes);
    let (statuses, _, _) = &outcomes[0].1;
    assert_eq!(statuses[..10], [101; 10]);
    assert_eq!(statuses[10], 503);
}

#[tokio::test]
async fn tls_and_the_https_redirect_behave_as_nginx() {
    let backend = Backend::start("b1").await;
    let files = Files::new("tls");
    let sides = sides("tls", &[backend.addr], &files, str::to_owned).await;
    let connector = files.connector();
    let outcomes = on_every_side(&sides, |side| {
        let connector = connector.clone();
        async move {
            let tls = |connector: TlsConnector| async move {
                let tcp = TcpStream::connect(side.tls).await.unwrap();
                connector
                    .connect(ServerName::try_from("example.com").unwrap(), tcp)
                    .await
                    .expect("TLS handshake")
            };
            let (status, opened) =
                open(tls(connector.clone()).await, "/ws/chat", "example.com").await;
            let (ws, report) = opened.expect("101");
            let (_, second) = open(tls(connector.clone()).await, "/ws/chat", "example.com").await;
            let talk = conversation(ws, second.expect("101").0).await;
            let redirect = send(side.plain, &get("/ws/chat?room=1", "example.com:8000")).await;
            (
                status,
                report,
                talk,
                redirect.status,
                redirect.header("location"),
            )
        }
    })
    .await;
    assert_same("wss and redirect", &outcomes);
    assert_eq!(outcomes[0].1.3, 301);
    assert_eq!(
        outcomes[0].1.4.as_deref(),
        Some("https://example.com/ws/chat?room=1")
    );
}

#[tokio::test]
async fn static_files_and_try_files_match_nginx() {
    let backend = Backend::start("b1").await;
    let files = Files::new("chat");
    let sides = sides("chat", &[backend.addr], &files, str::to_owned).await;
    for path in [
        "/",
        "/index.html",
        "/style.css",
        "/app.js",
        "/no/such/page",
        "/ws",
        "/%2e%2e/Cargo.toml",
    ] {
        let answers = on_every_side(&sides, |side| async move {
            let answer = send(side.plain, &get(path, "chat.example.com")).await;
            // Error pages differ by design (nginx's HTML, wasp's text), so
            // their bodies and types are not compared; a
            // redirect's target is compared by its path (nginx makes it
            // absolute with its own port).
            let body = if answer.status == 200 {
                answer.body.clone()
            } else {
                String::new()
            };
            let location = answer
                .header("location")
                .map(|l| match l.split_once("://") {
                    Some((_, rest)) => rest[rest.find('/').unwrap_or(rest.len())..].to_owned(),
                    None => l,
                });
            let content_type = answer
                .header("content-type")
                .filter(|_| answer.status == 200);
            ((answer.status, body, location), content_type)
        })
        .await;
        let (status_and_body, types): (Vec<_>, Vec<_>) = answers
            .into_iter()
            .map(|(name, (answer, content_type))| ((name, answer), (name, content_type)))
            .unzip();
        assert_same(&format!("GET {path}"), &status_and_body);
        if path.ends_with(".js") {
            // Debian's nginx 1.22 mime.types still says application/javascript;
            // wasp says text/javascript, the type RFC 9239 registers for it.
            assert_eq!(types[0].1.as_deref(), Some("application/javascript"));
            for (name, content_type) in &types[1..] {
                assert_eq!(content_type.as_deref(), Some("text/javascript"), "{name}");
            }
        } else {
            assert_same(&format!("GET {path}: Content-Type"), &types);
        }
    }
}
