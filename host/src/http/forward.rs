//! The phases that forward a request to an upstream: which upstream, the
//! headers it sees, the peer and the connection, sending, and streaming the
//! answer back. What only WebSocket handshakes need is in `websocket`.

use super::body_timeout::{self, TimedBody};
use super::context::{ChosenPeer, Refusal, RequestContext, UpstreamBody};
use super::headers::{strip_hop_by_hop, upstream_request};
use super::response::Body;
use super::websocket;
use crate::access_log::LoggedBody;
use crate::plugins::ProxyTo;
use crate::site::Site;
use crate::upstream::keepalive::{Lease, Pooled};
use crate::upstream::{Attempts, Connection, Dial, UpstreamGroup};
use crate::vars::RequestVars;
use http::{HeaderMap, Request, Response, Version};
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_io_timeout::TimeoutStream;

/// nginx's `$proxy_host` for `upstream` reached over TLS or not: its name
/// without the scheme's default port.
pub fn proxy_host<'s>(ctx: &RequestContext<'_>, upstream: &'s UpstreamGroup) -> &'s str {
    match ctx.location.upstream_tls {
        Some(_) => &upstream.tls_proxy_host,
        None => &upstream.proxy_host,
    }
}

/// Phase 4: the upstream group the router named.
pub fn upstream<'s>(site: &'s Site, target: &ProxyTo) -> Result<&'s UpstreamGroup, Refusal> {
    site.upstreams
        .get(&target.upstream)
        .map(|group| &**group)
        .ok_or_else(|| {
            tracing::error!(upstream = %target.upstream, "router chose an unknown upstream");
            Refusal::new(502, "")
        })
}

/// Phase 6: the headers the upstream gets: the client's end-to-end ones,
/// the location's `set_headers`, then the router's. A filtered WebSocket's
/// extensions are wasp's to negotiate (`websocket::deflate_offer`); with
/// `websocket_deflate = false` no WebSocket negotiates any. Towards an upstream with `keepalive`, a
/// plain request carries no `Connection: close` unless the location sets
/// `Connection` itself (nginx needs `proxy_set_header Connection ""` for
/// that; wasp's default `$connection_upgrade` would close every connection).
pub fn upstream_headers(
    ctx: &RequestContext<'_>,
    target: &ProxyTo,
    vars: &RequestVars<'_>,
    upstream: &UpstreamGroup,
) -> HeaderMap {
    let mut headers = upstream_request(
        &ctx.parts.headers,
        &ctx.location.set_headers,
        &target.set_headers,
        vars,
        !ctx.location.filters.is_empty() || !ctx.location.config.websocket_deflate,
    );
    if ctx.websocket {
        super::websocket::deflate_offer(ctx, &mut headers);
    }
    let sets_connection = || {
        ctx.location
            .config
            .set_headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("connection"))
    };
    if upstream.keepalive.is_some() && !ctx.websocket && !sets_connection() {
        headers.remove(http::header::CONNECTION);
    }
    headers
}

/// Phase 7: the balancer plugin picks a peer not in `attempts` and wasp
/// connects, moving on to another peer when a connect fails (502, or 504
/// after a timeout).
pub async fn connect<'s>(
    ctx: &RequestContext<'_>,
    upstream: &'s UpstreamGroup,
    vars: &RequestVars<'_>,
    attempts: &mut Attempts,
) -> Result<(Connection, ChosenPeer<'s>), Refusal> {
    let how = Dial {
        timeout: ctx.location.config.connect_timeout,
        tls: ctx.location.upstream_tls.as_ref(),
        // A WebSocket keeps its connection for itself: never a cached one.
        reuse: !ctx.websocket,
    };
    match upstream
        .connect(&ctx.head, vars, &ctx.site.balancer, how, attempts)
        .await
    {
        Ok((connection, guard)) => {
            let peer = ChosenPeer {
                upstream,
                guard,
                lease: None,
            };
            Ok((connection, peer))
        }
        Err(error) => {
            tracing::error!(upstream = %upstream.name, %error, "no upstream connection");
            Err(Refusal::new(error.status(), ""))
        }
    }
}

/// Phase 8: sends the request (the router's URI, `headers`, the body cut at
/// `client_max_body_size`; `None` for an empty one sent again to the next
/// peer) on `connection` (an idle one found closed before the request left
/// is replaced by a new one to the same peer), and returns the answer's head. An
/// HTTP request runs under the location's read and send timeouts, per read
/// and write of the socket; a WebSocket handshake must get its answer within
/// `read_timeout` (the relay then takes the raw socket back, and its idle
/// timeout replaces them). Either timeout answers 504, as nginx's
/// `proxy_read_timeout` does.
pub async fn send(
    ctx: &RequestContext<'_>,
    target: &ProxyTo,
    headers: HeaderMap,
    body: Option<Incoming>,
    connection: Connection,
    peer: &mut ChosenPeer<'_>,
) -> Result<Response<Incoming>, Refusal> {
    let Ok(uri) = target.uri.parse::<http::Uri>() else {
        tracing::error!(uri = %target.uri, "router produced an invalid upstream URI");
        return Err(Refusal::new(500, ""));
    };
    // Chunked bodies have no declared size: cut them at the limit (413).
    let body: UpstreamBody = match body {
        Some(body) => Limited::new(
            TimedBody::new(body, ctx.location.body_timeout),
            ctx.location.max_body as usize,
        )
        .boxed_unsync(),
        None => Empty::new().map_err(|never| match never {}).boxed_unsync(),
    };
    let mut request = Request::new(body);
    *request.method_mut() = ctx.parts.method.clone();
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;

    let config = &ctx.location.config;
    let stream = match connection {
        Connection::Fresh(stream) => stream,
        Connection::Idle(idle) => match send_reused(ctx, idle, request, peer).await {
            Reused::Sent(sent) => return answer(ctx, sent, peer),
            Reused::Closed(unsent) => {
                // The peer closed it while idle, before a byte of this
                // request left: a new connection to the same peer.
                request = unsent;
                let tls = ctx.location.upstream_tls.as_ref();
                let peer_state = peer.guard.peer().clone();
                match peer
                    .upstream
                    .reconnect(&peer_state, config.connect_timeout, tls)
                    .await
                {
                    Ok(stream) => stream,
                    Err(error) => {
                        tracing::error!(upstream = %peer.upstream.name, %error, "no upstream connection");
                        return Err(Refusal::new(error.status(), ""));
                    }
                }
            }
        },
    };
    if ctx.websocket {
        let handshake = websocket::send_handshake(TokioIo::new(stream), request);
        let sent = match tokio::time::timeout(config.read_timeout, handshake).await {
            Ok(sent) => sent,
            Err(_) => {
                let (upstream, peer) = (&peer.upstream.name, &peer.guard.peer().address);
                tracing::error!(%upstream, %peer, timeout = ?config.read_timeout, "upstream did not answer the WebSocket handshake within read_timeout");
                return Err(Refusal::new(504, ""));
            }
        };
        return answer(ctx, sent, peer);
    }
    let mut timed = TimeoutStream::new(stream);
    timed.set_read_timeout(Some(config.read_timeout));
    timed.set_write_timeout(Some(config.send_timeout));
    let (mut sender, connection) =
        match hyper::client::conn::http1::handshake(TokioIo::new(Box::pin(timed))).await {
            Ok(handshake) => handshake,
            Err(error) => return answer(ctx, Err(error), peer),
        };
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%error, "upstream connection ended with an error");
        }
    });
    let sent = sender.send_request(request).await;
    if sent.is_ok() {
        lend(ctx, peer, Pooled { sender, served: 1 });
    }
    answer(ctx, sent, peer)
}

/// What sending on a cached connection came to.
enum Reused {
    Sent(Result<Response<Incoming>, hyper::Error>),
    /// The connection was closed before the request could be sent.
    Closed(Request<UpstreamBody>),
}

async fn send_reused(
    ctx: &RequestContext<'_>,
    mut idle: Pooled,
    request: Request<UpstreamBody>,
    peer: &mut ChosenPeer<'_>,
) -> Reused {
    match idle.sender.try_send_request(request).await {
        Ok(response) => {
            idle.served += 1;
            lend(ctx, peer, idle);
            Reused::Sent(Ok(response))
        }
        Err(mut error) => match error.take_message() {
            Some(unsent) => Reused::Closed(unsent),
            None => Reused::Sent(Err(error.into_error())),
        },
    }
}

/// With `keepalive`, the connection goes back to the cache once the
/// answer was relayed (the lease is held by the response body).
fn lend(ctx: &RequestContext<'_>, peer: &mut ChosenPeer<'_>, connection: Pooled) {
    if let Some(settings) = &peer.upstream.keepalive {
        let tls = ctx.location.upstream_tls.as_ref();
        let key = peer.upstream.pool_key(peer.guard.peer(), tls);
        peer.lease = Some(Lease::new(key, connection, settings.clone()));
    }
}

/// The answer's head, or the refusal an upstream failure comes to.
fn answer(
    ctx: &RequestContext<'_>,
    sent: Result<Response<Incoming>, hyper::Error>,
    peer: &ChosenPeer<'_>,
) -> Result<Response<Incoming>, Refusal> {
    sent.map_err(|error| {
        if body_timeout::timed_out(&error) {
            tracing::info!(client = %ctx.conn.client, "the client sent no request body for client_body_timeout; answered 408");
            return Refusal::new(408, "request body timed out");
        }
        if body_too_large(&error) {
            tracing::info!(client = %ctx.conn.client, "request body larger than client_max_body_size");
            return Refusal::new(413, "request body too large");
        }
        if client_body_failed(&error) {
            tracing::info!(client = %ctx.conn.client, %error, "the client's request body is malformed or was cut; answered 400");
            return Refusal::new(400, "malformed request body");
        }
        let (upstream, peer) = (&peer.upstream.name, &peer.guard.peer().address);
        tracing::error!(%upstream, %peer, %error, "upstream request failed");
        Refusal::new(if timed_out(&error) { 504 } else { 502 }, "")
    })
}

/// Whether sending failed because reading the client's body failed (bad
/// chunked framing, the client gone): hyper's client reports a body that
/// failed to stream as a user error whose cause is the server side's own
/// hyper error. The client's fault, not the upstream's.
fn client_body_failed(error: &hyper::Error) -> bool {
    error.is_user()
        && std::iter::successors(std::error::Error::source(error), |cause| cause.source())
            .any(|cause| cause.is::<hyper::Error>())
}

/// Whether the upstream exchange failed on a timeout: hyper's own, or a
/// read or write of the socket past `read_timeout` / `send_timeout`.
fn timed_out(error: &hyper::Error) -> bool {
    error.is_timeout() || io_causes(error).any(|cause| cause.kind() == std::io::ErrorKind::TimedOut)
}

/// The I/O errors in `error`'s chain of causes.
fn io_causes(error: &hyper::Error) -> impl Iterator<Item = &std::io::Error> {
    std::iter::successors(std::error::Error::source(error), |cause| cause.source())
        .filter_map(|cause| cause.downcast_ref::<std::io::Error>())
}

/// Phase 9: streams the upstream's answer to the client. The access-log
/// line is written when it ends; until then the peer and the `limit_conn`
/// slot stay counted.
pub fn respond(
    ctx: RequestContext<'_>,
    mut response: Response<Incoming>,
    peer: ChosenPeer<'_>,
) -> Response<Body> {
    let code = response.status().as_u16();
    strip_hop_by_hop(response.headers_mut());
    let hold = (peer.guard, ctx.slot, peer.lease);
    response
        .map(|body| LoggedBody::new(body.map_err(Into::into), ctx.entry, code, hold).boxed_unsync())
}

/// Whether sending failed because the client's body passed the limit.
fn body_too_large(error: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if cause.is::<LengthLimitError>() {
            return true;
        }
        source = cause.source();
    }
    false
}
