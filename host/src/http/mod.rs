//! The HTTP/1.1 server side: one hyper connection per client, each request
//! routed by the router plugin, then served from files, answered directly,
//! or proxied (with WebSocket upgrades handed to the relay).

pub mod client_stream;
mod head;
pub mod headers;
mod proxy;
pub mod response;
mod upgrade;

use crate::access_log::{AccessEntry, LoggedBody};
use crate::limits::{ConnectionLimits, ConnectionSlot, RateLimits};
use crate::metrics::{ConnectionGuard, Metrics};
use crate::plugins::Decision;
use crate::site::{LocationRuntime, Site};
use crate::static_files;
use crate::vars::RequestVars;
use arc_swap::ArcSwap;
use client_stream::ClientStream;
use http::{HeaderName, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use response::{Body, full, status};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use std::time::Instant;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

/// Facts about a client connection that requests need.
pub struct ConnInfo {
    pub client: SocketAddr,
    pub local: SocketAddr,
    /// The listen address as written in the configuration.
    pub listener: Arc<str>,
    pub tls: bool,
    pub sni: Option<String>,
    /// Counts the connection against `max_connections` while it (or the
    /// WebSocket it became) lives.
    pub _permit: tokio::sync::OwnedSemaphorePermit,
    /// Counts it in the open-connections gauge likewise.
    pub _gauge: ConnectionGuard,
}

/// What every connection shares: the site in service (swapped on reload),
/// the shutdown signals and the tracker of every connection task.
pub struct Shared {
    pub site: ArcSwap<Site>,
    /// Stop accepting; finish in-flight requests, keep no connection alive.
    pub drain: watch::Receiver<bool>,
    /// Close open WebSockets (with 1001) now.
    pub close_websockets: watch::Receiver<bool>,
    pub tasks: TaskTracker,
    pub metrics: Arc<Metrics>,
    /// `limit_conn` and `limit_req` state: per process, kept across reloads.
    pub connection_limits: Arc<ConnectionLimits>,
    pub rate_limits: RateLimits,
    next_conn_id: AtomicU64,
}

impl Shared {
    pub fn new(
        site: Arc<Site>,
        drain: watch::Receiver<bool>,
        close_websockets: watch::Receiver<bool>,
        metrics: Arc<Metrics>,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            site: ArcSwap::new(site),
            drain,
            close_websockets,
            tasks: TaskTracker::new(),
            metrics,
            connection_limits: Arc::default(),
            rate_limits: RateLimits::default(),
            next_conn_id: AtomicU64::new(1),
        })
    }

    /// A connection id unique for the life of the process (filters key
    /// their per-connection state by it).
    pub fn conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// Per-connection protocol settings, from the listener's default server.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub header_timeout: Duration,
    pub max_header_size: usize,
    /// Answer everything with a 301 to `https://`.
    pub redirect_https: bool,
}

/// Serves one client connection until it closes or shutdown drains it.
pub async fn serve_connection(
    stream: ClientStream,
    info: ConnInfo,
    limits: ConnLimits,
    shared: Arc<Shared>,
) {
    let info = Arc::new(info);
    let service = {
        let (info, shared) = (info.clone(), shared.clone());
        service_fn(move |request| {
            let (info, shared) = (info.clone(), shared.clone());
            async move {
                if limits.redirect_https {
                    return Ok::<_, Infallible>(redirect_to_https(&request));
                }
                Ok(handle(request, &info, &shared).await)
            }
        })
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_size.max(8192));
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => log_connection_end(result, &info),
        () = signalled(shared.drain.clone()) => {
            // Finish the request in flight, then close instead of keeping alive.
            connection.as_mut().graceful_shutdown();
            log_connection_end(connection.await, &info);
        }
    }
}

/// Resolves once `signal` turns true (or its sender is gone).
pub async fn signalled(mut signal: watch::Receiver<bool>) {
    let _ = signal.wait_for(|on| *on).await;
}

fn log_connection_end(result: Result<(), hyper::Error>, info: &ConnInfo) {
    if let Err(error) = result {
        if error.is_timeout() {
            tracing::info!(client = %info.client, "client sent no complete request head in time; closed");
        } else if error.is_parse() || error.is_parse_too_large() {
            tracing::info!(client = %info.client, %error, "malformed request; answered 400/431");
        } else {
            tracing::debug!(client = %info.client, %error, "client connection ended with an error");
        }
    }
}

/// Routes one request and carries out the decision.
async fn handle(
    request: Request<Incoming>,
    info: &Arc<ConnInfo>,
    shared: &Arc<Shared>,
) -> Response<Body> {
    let site = shared.site.load_full();
    let (parts, body) = request.into_parts();
    let entry = AccessEntry::new(&parts, info.client.ip(), shared.metrics.clone());
    let head = head::request_head(&parts, info);
    let decision = match site.router.route(&head) {
        Ok(decision) => decision,
        Err(error) => {
            tracing::error!(%error, "router plugin failed; answering 500");
            return logged(status(500, "routing failed"), entry);
        }
    };
    let location = match &decision {
        Decision::Proxy(target) => site.location(target.location),
        Decision::StaticFiles(files) => site.location(files.location),
        Decision::Respond(_) => None,
    };
    let slot = match location.map(|location| admit(location, &parts, info, shared)) {
        Some(Ok(slot)) => slot,
        Some(Err((code, reason))) => return logged(status(code, reason), entry),
        None => None,
    };
    match decision {
        Decision::Respond(answer) => logged(respond(answer), entry),
        Decision::StaticFiles(files) => {
            let response = match site.location(files.location).map(|l| &l.config.action) {
                Some(crate::config::LocationAction::Static {
                    root,
                    index,
                    try_files,
                }) => static_files::serve(parts, &files.path, root, index, try_files).await,
                _ => {
                    tracing::error!(
                        location = files.location,
                        "router chose static files on a location without root"
                    );
                    status(500, "")
                }
            };
            let code = response.status().as_u16();
            response.map(|body| LoggedBody::new(body, entry, code, slot).boxed_unsync())
        }
        Decision::Proxy(target) => {
            let request = proxy::ProxyRequest {
                parts,
                body,
                target,
                head,
                entry,
                slot,
            };
            proxy::forward(request, info, &site, shared).await
        }
    }
}

/// The location's admission rules: body size (413), `limit_req` and
/// `limit_conn` (503 or `limit_conn_status`). A connection slot, when
/// limited, is held until the response (or the WebSocket) ends.
fn admit(
    location: &LocationRuntime,
    parts: &http::request::Parts,
    info: &ConnInfo,
    shared: &Shared,
) -> Result<Option<ConnectionSlot>, (u16, &'static str)> {
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > location.max_body) {
        tracing::info!(client = %info.client, "request body larger than client_max_body_size");
        return Err((413, "request body too large"));
    }
    let vars = RequestVars {
        headers: &parts.headers,
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        client: info.client,
        local: info.local,
        tls: info.tls,
        proxy_host: "",
    };
    let config = &location.config;
    if let (Some(limit), Some(key)) = (&config.limit_req, &location.limit_req_key) {
        let key = format!("{}\0{}", location.label, key.expand(&vars));
        if !shared
            .rate_limits
            .allow(&key, limit.rate_per_sec, limit.burst, Instant::now())
        {
            tracing::warn!(client = %info.client, location = %location.label, "limiting requests (limit_req)");
            return Err((503, "too many requests"));
        }
    }
    let Some(limit) = config.limit_conn else {
        return Ok(None);
    };
    let key = format!(
        "{}\0{}",
        location.label,
        location.limit_conn_key.expand(&vars)
    );
    match shared.connection_limits.acquire(key, limit) {
        Some(slot) => Ok(Some(slot)),
        None => {
            tracing::warn!(client = %info.client, location = %location.label, limit, "limiting connections (limit_conn)");
            Err((config.limit_conn_status, "too many connections"))
        }
    }
}

/// `redirect_http`: the same URL over https (nginx's `return 301 https://$host$request_uri`).
fn redirect_to_https(request: &Request<Incoming>) -> Response<Body> {
    let host = request
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let host = host
        .rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(name, _)| name);
    let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let mut response = status(301, "");
    if let Ok(location) = HeaderValue::from_str(&format!("https://{host}{target}")) {
        response
            .headers_mut()
            .insert(http::header::LOCATION, location);
    }
    response
}

fn respond(answer: crate::plugins::Response) -> Response<Body> {
    let mut response = Response::new(full(answer.body));
    *response.status_mut() = http::StatusCode::from_u16(answer.status)
        .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in answer.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

/// Attaches the access-log line to a response wasp made itself.
fn logged(response: Response<Body>, entry: AccessEntry) -> Response<Body> {
    let code = response.status().as_u16();
    response.map(|body| LoggedBody::new(body, entry, code, ()).boxed_unsync())
}
