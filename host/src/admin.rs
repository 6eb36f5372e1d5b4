//! The admin listener (off unless configured, e.g. `admin = "127.0.0.1:9900"`):
//!
//! * `GET /metrics`: the Prometheus scrape, as OpenMetrics 1.0 text. That is
//!   what prometheus-client writes (`# EOF` trailer, `# UNIT` lines), and the
//!   format Prometheus asks for first in its default `Accept` header
//!   (`scrape_protocols` starts with `OpenMetricsText1.0.0`), so it is served
//!   with that content type rather than mislabelled as `text/plain; version=0.0.4`.
//! * `GET /status`: JSON (plugins, upstream peers...) from the proxy.
//! * `POST /reload`: reloads and answers JSON `{"ok":true,"message":..}` (200)
//!   or `{"ok":false,"error":..}` (500).
//!
//! `GET` routes also answer `HEAD`; other methods get 405 with `Allow`, other
//! paths 404. There is no authentication: bind it to loopback or a private
//! interface.

use crate::shutdown::Shutdown;
use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// The content type of `GET /metrics` (see the module docs for why).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A client must send its request head within this time, so an idle or
/// stuck admin connection cannot live forever.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the admin routes ask of the running proxy.
pub trait AdminHooks: Send + Sync + 'static {
    /// The `GET /metrics` body (normally `Metrics::encode`).
    fn metrics(&self) -> String;
    /// The `GET /status` body.
    fn status(&self) -> serde_json::Value;
    /// Carries out `POST /reload`: `Ok(summary)` or `Err(reason)`. Two
    /// requests may call it concurrently; serializing reloads is up to the
    /// implementation (which also serves other triggers such as SIGHUP).
    fn reload(&self) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;
}

/// Serves the admin routes on `listener` until `shutdown` is signalled; then
/// stops accepting and returns. Connections already open finish the request
/// in flight and close; `serve` does not wait for them.
pub async fn serve(listener: TcpListener, admin: Arc<dyn AdminHooks>, mut shutdown: Shutdown) {
    loop {
        let stream = tokio::select! {
            () = shutdown.signalled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    tracing::warn!(%error, "admin listener cannot accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        tokio::spawn(serve_connection(stream, admin.clone(), shutdown.clone()));
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    admin: Arc<dyn AdminHooks>,
    mut shutdown: Shutdown,
) {
    let service = service_fn(move |request| {
        let admin = admin.clone();
        async move { Ok::<_, Infallible>(route(&request, &*admin).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.signalled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "admin connection ended with an error");
    }
}

async fn route(request: &Request<Incoming>, admin: &dyn AdminHooks) -> Response<Full<Bytes>> {
    let method = request.method();
    match request.uri().path() {
        "/metrics" | "/status" if !matches!(*method, Method::GET | Method::HEAD) => {
            method_not_allowed("GET, HEAD")
        }
        "/metrics" => respond(StatusCode::OK, METRICS_CONTENT_TYPE, admin.metrics()),
        "/status" => json(StatusCode::OK, &admin.status()),
        "/reload" if method != Method::POST => method_not_allowed("POST"),
        "/reload" => match admin.reload().await {
            Ok(message) => json(
                StatusCode::OK,
                &serde_json::json!({ "ok": true, "message": message }),
            ),
            // 500 rather than 422: the request itself (no body) cannot be
            // wrong; what failed is loading the server's own files.
            Err(error) => json(
                StatusCode::INTERNAL_SERVER_ERROR,
                &serde_json::json!({ "ok": false, "error": error }),
            ),
        },
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found\n",
        ),
    }
}

fn method_not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = respond(
        StatusCode::METHOD_NOT_ALLOWED,
        "text/plain; charset=utf-8",
        "method not allowed\n",
    );
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_vec_pretty(value).expect("a JSON value always serializes");
    body.push(b'\n');
    respond(status, "application/json", body)
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty};
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::net::TcpStream;
    use tokio::sync::watch;

    /// Reloads succeed on odd calls and fail on even ones.
    struct TestHooks {
        reloads: AtomicUsize,
    }

    impl AdminHooks for TestHooks {
        fn metrics(&self) -> String {
            "# TYPE up gauge\nup 1\n# EOF\n".to_owned()
        }

        fn status(&self) -> serde_json::Value {
            serde_json::json!({ "plugins": [{ "name": "router", "sha256": "abc" }] })
        }

        fn reload(&self) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>> {
            let n = self.reloads.fetch_add(1, Ordering::SeqCst) + 1;
            Box::pin(async move {
                if n % 2 == 1 {
                    Ok(format!("reload {n} done"))
                } else {
                    Err(format!("reload {n}: bad config"))
                }
            })
        }
    }

    struct Server {
        addr: SocketAddr,
        stop: watch::Sender<bool>,
        task: tokio::task::JoinHandle<()>,
    }

    async fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, shutdown) = watch::channel(false);
        let hooks = Arc::new(TestHooks {
            reloads: AtomicUsize::new(0),
        });
        let task = tokio::spawn(serve(listener, hooks, shutdown.into()));
        Server { addr, stop, task }
    }

    struct Answer {
        status: StatusCode,
        headers: http::HeaderMap,
        body: String,
    }

    impl Answer {
        fn header(&self, name: http::header::HeaderName) -> &str {
            self.headers
                .get(name)
                .expect("header present")
                .to_str()
                .unwrap()
        }

        fn json(&self) -> serde_json::Value {
            serde_json::from_str(&self.body).expect("JSON body")
        }
    }

    async fn call(addr: SocketAddr, method: Method, path: &str) -> Answer {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "admin")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8(body.to_vec()).unwrap(),
        }
    }

    #[tokio::test]
    async fn metrics_and_status() {
        let server = start().await;
        let metrics = call(server.addr, Method::GET, "/metrics").await;
        assert_eq!(metrics.status, StatusCode::OK);
        assert_eq!(metrics.header(CONTENT_TYPE), METRICS_CONTENT_TYPE);
        assert_eq!(metrics.body, "# TYPE up gauge\nup 1\n# EOF\n");

        let head = call(server.addr, Method::HEAD, "/metrics").await;
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.body, "");

        let status = call(server.addr, Method::GET, "/status?verbose=1").await;
        assert_eq!(status.status, StatusCode::OK);
        assert_eq!(status.header(CONTENT_TYPE), "application/json");
        assert_eq!(status.json()["plugins"][0]["sha256"], "abc");
    }

    #[tokio::test]
    async fn reload_success_and_failure() {
        let server = start().await;
        let ok = call(server.addr, Method::POST, "/reload").await;
        assert_eq!(ok.status, StatusCode::OK);
        assert_eq!(ok.header(CONTENT_TYPE), "application/json");
        assert_eq!(
            ok.json(),
            serde_json::json!({ "ok": true, "message": "reload 1 done" })
        );

        let failed = call(server.addr, Method::POST, "/reload").await;
        assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            failed.json(),
            serde_json::json!({ "ok": false, "error": "reload 2: bad config" })
        );
    }

    #[tokio::test]
    async fn unknown_paths_and_wrong_methods() {
        let server = start().await;
        for path in ["/", "/metricsx", "/reload/now", "/status/"] {
            assert_eq!(
                call(server.addr, Method::GET, path).await.status,
                StatusCode::NOT_FOUND,
                "{path}"
            );
        }
        for (method, path, allow) in [
            (Method::POST, "/metrics", "GET, HEAD"),
            (Method::DELETE, "/status", "GET, HEAD"),
            (Method::GET, "/reload", "POST"),
            (Method::PUT, "/reload", "POST"),
        ] {
            let answer = call(server.addr, method.clone(), path).await;
            assert_eq!(
                answer.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
            assert_eq!(answer.header(ALLOW), allow, "{method} {path}");
        }
    }

    #[tokio::test]
    async fn shutdown_stops_accepting_and_closes_idle_connections() {
        let server = start().await;
        // A kept-alive connection, idle after one request.
        let stream = TcpStream::connect(server.addr).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        let idle = tokio::spawn(connection);
        let request = Request::get("/metrics")
            .header("host", "admin")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.into_body().collect().await.unwrap();

        server.stop.send(true).unwrap();
        let within = Duration::from_secs(5);
        tokio::time::timeout(within, server.task)
            .await
            .expect("serve returns on shutdown")
            .unwrap();
        assert!(
            TcpStream::connect(server.addr).await.is_err(),
            "listener closed"
        );
        let closed = tokio::time::timeout(within, idle)
            .await
            .expect("idle connection closed");
        closed.unwrap().unwrap();
    }
}
