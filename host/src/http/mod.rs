//! The HTTP server side: one hyper connection per client (this module),
//! HTTP/1.1 or HTTP/2 as `negotiate` tells, each request carried through its
//! phases by `request`: routed by the router plugin, then served from
//! files, answered directly, or forwarded upstream (a WebSocket handshake,
//! HTTP/1.1 upgrade or HTTP/2 extended CONNECT, becoming a session on the
//! relay).

mod body_timeout;
pub mod client_stream;
mod cluster_admit;
mod context;
mod forward;
mod head;
mod head_limits;
pub mod headers;
mod http2;
mod negotiate;
mod request;
pub mod response;
mod static_files;
mod websocket;

use crate::cpu_bans::CpuBans;
use crate::limits::{ConnectionLimits, RateLimits};
use crate::metrics::{ConnectionGuard, Metrics};
use crate::shutdown::Shutdown;
use crate::site::Site;
use arc_swap::ArcSwap;
use client_stream::ClientStream;
use head_limits::head_size;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2 as h2_server};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use negotiate::{Protocol, negotiate};
use response::{Body, status};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
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
    pub drain: Shutdown,
    /// Close open WebSockets (with 1001) now.
    pub close_websockets: Shutdown,
    pub tasks: TaskTracker,
    pub metrics: Arc<Metrics>,
    /// `limit_conn` and `limit_req` state: per process, kept across reloads.
    pub connection_limits: Arc<ConnectionLimits>,
    pub rate_limits: RateLimits,
    /// With `[cluster]`: the limits counted across processes (set at start).
    pub cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
    /// Addresses refused after their messages overran filter deadlines:
    /// per process, kept across reloads.
    pub cpu_bans: Arc<CpuBans>,
    next_conn_id: AtomicU64,
}

impl Shared {
    pub fn new(
        site: Arc<Site>,
        drain: Shutdown,
        close_websockets: Shutdown,
        metrics: Arc<Metrics>,
    ) -> Arc<Shared> {
        let settings = &site.config.plugins;
        let cpu_bans = Arc::new(CpuBans::new(
            settings.ban_after_overruns,
            settings.ban_time,
            metrics.cpu_bans(),
        ));
        Arc::new(Shared {
            site: ArcSwap::new(site),
            drain,
            close_websockets,
            tasks: TaskTracker::new(),
            metrics,
            connection_limits: Arc::default(),
            rate_limits: RateLimits::default(),
            cluster: std::sync::OnceLock::new(),
            cpu_bans,
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
pub struct ConnectionSettings {
    pub header_timeout: Duration,
    pub max_header_size: usize,
    /// Answer everything with a 301 to `https://`.
    pub redirect_https: bool,
    /// Speak HTTP/2: `h2` by ALPN on TLS, h2c by prior knowledge on plain TCP.
    pub http2: bool,
}

/// Serves one client connection until it closes or shutdown drains it.
pub async fn serve_connection(
    stream: ClientStream,
    info: ConnInfo,
    settings: ConnectionSettings,
    shared: Arc<Shared>,
) {
    let Some(protocol) = negotiate(&stream, settings.http2, settings.header_timeout).await else {
        tracing::debug!(client = %info.client, "client sent nothing in time; closed");
        return;
    };
    shared
        .metrics
        .client_protocol(&info.listener, protocol.label());
    let info = Arc::new(info);
    let service = {
        let (info, shared) = (info.clone(), shared.clone());
        service_fn(move |request| {
            let (info, shared) = (info.clone(), shared.clone());
            async move {
                if head_size(&request) > settings.max_header_size {
                    tracing::info!(client = %info.client, "request head over max_header_size; answered 431");
                    return Ok::<_, Infallible>(status(431, "request header fields too large"));
                }
                if settings.redirect_https {
                    return Ok(redirect_to_https(&request));
                }
                Ok(request::handle(request, &info, &shared).await)
            }
        })
    };
    let io = TokioIo::new(stream);
    let mut drain = shared.drain.clone();
    match protocol {
        Protocol::Http1 => {
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(settings.header_timeout)
                .max_buf_size(settings.max_header_size);
            let connection = builder.serve_connection(io, service).with_upgrades();
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => log_connection_end(result, &info),
                () = drain.signalled() => {
                    // Finish the request in flight, then close instead of keeping alive.
                    connection.as_mut().graceful_shutdown();
                    log_connection_end(connection.await, &info);
                }
            }
        }
        Protocol::Http2 => {
            // Streams run as tasks of their own (hyper's executor), on this
            // worker's runtime like every task of the connection.
            let mut builder = h2_server::Builder::new(TokioExecutor::new());
            builder
                .timer(TokioTimer::new())
                .max_header_list_size(u32::try_from(settings.max_header_size).unwrap_or(u32::MAX))
                // RFC 8441: WebSockets as streams of this connection.
                .enable_connect_protocol();
            let connection = builder.serve_connection(io, service);
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => log_connection_end(result, &info),
                () = drain.signalled() => {
                    // GOAWAY: streams in flight finish, no new ones start.
                    connection.as_mut().graceful_shutdown();
                    log_connection_end(connection.await, &info);
                }
            }
        }
    }
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
