//! The HTTP/1.1 request head path with wasp's limits: the input is what a
//! client sends, served by hyper's HTTP/1.1 server built as wasp builds it
//! (`host/src/http/mod.rs`: `max_buf_size` and `header_read_timeout` from
//! the defaults), behind wasp's own checks (`host/src/http/head_limits.rs`,
//! compiled from source): a head over `max_header_size` gets 431, a bad
//! `Host` 400. Checks:
//! - nothing panics, and every answer is a well-formed HTTP/1.1 response;
//! - a request that passes the checks carries what the plugins are promised:
//!   one valid `Host` (HTTP/1.1), a head within the limit, a path and query
//!   without space or control characters, and header lines that cannot be
//!   confused in the `name: value\n` block plugins read (no CR or LF in a
//!   value, no `:` or whitespace in a name).
#![no_main]

use http::{Request, Response};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use libfuzzer_sys::fuzz_target;
use std::convert::Infallible;
use std::sync::LazyLock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[allow(dead_code)]
#[path = "../../host/src/http/head_limits.rs"]
mod head_limits;

/// `config::defaults::MAX_HEADER_SIZE` and `CLIENT_HEADER_TIMEOUT` (the
/// fuzz crate does not compile the config module for this target).
const MAX_HEADER_SIZE: usize = 32 << 10;
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // A timeout fires as soon as nothing else can run: no waiting.
        .start_paused(true)
        .build()
        .expect("runtime")
});

async fn serve(request: Request<Incoming>) -> Result<Response<Empty<Bytes>>, Infallible> {
    let status = if head_limits::head_size(&request) > MAX_HEADER_SIZE {
        431
    } else {
        let (parts, _) = request.into_parts();
        match head_limits::host_problem(&parts) {
            Some(_) => 400,
            None => {
                admitted(&parts);
                200
            }
        }
    };
    let mut response = Response::new(Empty::new());
    *response.status_mut() = http::StatusCode::from_u16(status).expect("status");
    Ok(response)
}

/// What a request that passed wasp's checks promises the plugins.
fn admitted(parts: &http::request::Parts) {
    let hosts: Vec<_> = parts.headers.get_all(http::header::HOST).iter().collect();
    assert!(hosts.len() <= 1);
    if parts.version == http::Version::HTTP_11 {
        assert_eq!(hosts.len(), 1, "HTTP/1.1 without Host admitted");
    }
    if let Some(host) = hosts.first() {
        assert!(head_limits::is_valid_host(host.as_bytes()));
    }
    let clean = |s: &str| s.bytes().all(|b| b > 0x20 && b != 0x7f);
    assert!(clean(parts.uri.path()), "path {:?}", parts.uri.path());
    assert!(clean(parts.uri.query().unwrap_or("")));
    for (name, value) in &parts.headers {
        let name = name.as_str();
        assert!(!name.is_empty() && name.bytes().all(|b| b > 0x20 && b != b':' && b != 0x7f));
        assert!(!value.as_bytes().iter().any(|b| *b == b'\r' || *b == b'\n'));
    }
}

fuzz_target!(|data: &[u8]| {
    RUNTIME.block_on(async {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let connection = tokio::spawn(async move {
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEADER_SIZE);
            let _ = builder
                .serve_connection(TokioIo::new(server), service_fn(serve))
                .with_upgrades()
                .await;
        });
        let (mut read, mut write) = tokio::io::split(&mut client);
        let sending = async {
            let _ = write.write_all(data).await;
            let _ = write.shutdown().await;
        };
        let mut answer = Vec::new();
        let receiving = read.read_to_end(&mut answer);
        let (_, received) = tokio::join!(sending, receiving);
        let _ = received;
        let _ = connection.await;
        check_answers(&answer);
    });
});

/// Every answer is a complete HTTP/1.1 response head (hyper's and ours).
fn check_answers(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(bytes) {
            Ok(httparse::Status::Complete(len)) => {
                let code = response.code.expect("status code");
                assert!((100..600).contains(&code));
                let body: usize = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                    .unwrap_or(0);
                bytes = &bytes[(len + body).min(bytes.len())..];
            }
            other => panic!("not a response: {other:?} in {:?}", String::from_utf8_lossy(bytes)),
        }
    }
}
