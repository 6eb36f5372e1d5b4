//! One request, phase by phase, in the order the phases run (as in
//! Pingora's `ProxyHttp`). Each phase is a function of that name, and any
//! of them may end the request early with wasp's own answer, a [`Refusal`]:
//!
//! 0. [`check_head`]: what HTTP forbids and hyper lets through (400); an
//!    HTTP/2 request put in its HTTP/1.1 form ([`http2::as_http1`]: an
//!    extended CONNECT becomes a WebSocket handshake).
//! 1. [`route`]: the router plugin decides; the location it names is looked
//!    up, once, into the [`RequestContext`]. A direct answer
//!    ([`respond_directly`]) ends here.
//! 2. [`admit`]: the location's body size, `limit_req` and `limit_conn`;
//!    with `[cluster]`, `cluster_admit::admit_cluster`: the same limits
//!    across the processes.
//! 3. [`serve_files`] for a static location; [`proxy_pass`] for the others:
//! 4. [`forward::upstream`]: the upstream group the router named.
//! 5. WebSocket handshakes only: [`websocket::check_handshake`]
//!    (`strict_websocket`), [`websocket::check_ban`] (addresses banned for
//!    filter overruns), [`websocket::check_origin`] (origin plugin), then
//!    [`websocket::check_filters`] (an instance of each filter).
//! 6. [`forward::upstream_headers`]: what the upstream sees (nginx's
//!    `proxy_set_header`).
//! 7. [`forward::connect`]: the balancer plugin picks a peer; connect,
//!    moving on to the next peer on failure.
//! 8. [`forward::send`]: the request to the peer, the answer's head back.
//!    After an error or a timeout, an idempotent request without a body
//!    goes to the next peer (7 again), as nginx's `proxy_next_upstream`.
//! 9. [`forward::respond`] streams the answer to the client, or on 101
//!    [`websocket::upgrade`] hands both connections to a WebSocket session.
//!
//! Each request writes one access-log line when its response body ends (a
//! WebSocket when its session ends).

use super::context::{ChosenPeer, Refusal, RequestContext, logged};
use super::head::request_head;
use super::headers::is_websocket_upgrade;
use super::response::{Body, full, status};
use super::{ConnInfo, Shared, forward, head_limits, http2, static_files, websocket};
use crate::access_log::{AccessEntry, LoggedBody};
use crate::config::LocationAction;
use crate::plugins::{self, Decision, ProxyTo, RequestHead, StaticFiles};
use crate::site::{LocationRuntime, Site};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use std::sync::Arc;
use std::time::Instant;

/// Carries one request through its phases (see the module docs).
pub async fn handle(
    request: Request<Incoming>,
    conn: &Arc<ConnInfo>,
    shared: &Arc<Shared>,
) -> Response<Body> {
    let site = shared.site.load_full();
    let (mut parts, body) = request.into_parts();
    let mut entry = AccessEntry::new(
        &parts,
        conn.client.ip(),
        shared.metrics.clone(),
        site.access_log(&conn.listener),
    );
    if let Err(refusal) = http2::as_http1(&mut parts).and_then(|()| check_head(&parts, conn)) {
        return logged(refusal.response(), entry);
    }
    let head = request_head(&parts, conn);
    let (location, target) = match route(&site, &head) {
        Ok(Route::Respond(answer)) => return logged(respond_directly(answer), entry),
        Ok(Route::Location(location, target)) => {
            entry.log_to(&location.access_log);
            (location, target)
        }
        Err(refusal) => return logged(refusal.response(), entry),
    };
    let mut ctx = RequestContext {
        conn,
        shared,
        site: &site,
        location,
        websocket: is_websocket_upgrade(&parts.headers),
        parts,
        head,
        entry,
        slot: None,
    };
    if let Err(refusal) = admit(&mut ctx) {
        return ctx.refuse(refusal);
    }
    if let Err(refusal) = super::cluster_admit::admit_cluster(&mut ctx).await {
        return ctx.refuse(refusal);
    }
    match target {
        Target::StaticFiles(files) => serve_files(ctx, files).await,
        Target::Proxy(target) => proxy_pass(ctx, body, target).await,
    }
}

/// The router's decision, with the location it names looked up.
enum Route<'s> {
    /// Answer at once: no location applies.
    Respond(plugins::Response),
    /// Serve it under this location.
    Location(&'s LocationRuntime, Target),
}

/// What serves a request under its location.
enum Target {
    StaticFiles(StaticFiles),
    Proxy(ProxyTo),
}

/// Phase 0: what hyper lets through but HTTP forbids in the `Host` header
/// ([`head_limits::host_problem`]), refused with 400 as nginx does.
fn check_head(parts: &http::request::Parts, conn: &ConnInfo) -> Result<(), Refusal> {
    match head_limits::host_problem(parts) {
        Some(problem) => {
            tracing::info!(client = %conn.client, "request with a {problem}; answered 400");
            Err(Refusal::new(400, problem))
        }
        None => Ok(()),
    }
}

/// Phase 1: asks the router plugin where the request goes.
fn route<'s>(site: &'s Site, head: &RequestHead) -> Result<Route<'s>, Refusal> {
    let (id, target) = match site.router.route(head) {
        Ok(Decision::Respond(answer)) => return Ok(Route::Respond(answer)),
        Ok(Decision::StaticFiles(files)) => (files.location, Target::StaticFiles(files)),
        Ok(Decision::Proxy(to)) => (to.location, Target::Proxy(to)),
        Err(error) => {
            tracing::error!(%error, "router plugin failed; answering 500");
            return Err(Refusal::new(500, "routing failed"));
        }
    };
    match site.location(id) {
        Some(location) => Ok(Route::Location(location, target)),
        None => {
            tracing::error!(location = id, "router chose an unknown location");
            Err(Refusal::new(500, ""))
        }
    }
}

/// Phase 2: the location's admission rules: body size (413), `limit_req`
/// and `limit_conn` (503 or `limit_conn_status`). A connection slot, when
/// limited, is held until the response (or the WebSocket) ends.
fn admit(ctx: &mut RequestContext<'_>) -> Result<(), Refusal> {
    let location = ctx.location;
    let declared = ctx
        .parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let client = ctx.conn.client;
    if declared.is_some_and(|length| length > location.max_body) {
        tracing::info!(%client, "request body larger than client_max_body_size");
        return Err(Refusal::new(413, "request body too large"));
    }
    let vars = ctx.vars("");
    let config = &location.config;
    if let (Some(limit), Some(key)) = (&config.limit_req, &location.limit_req_key) {
        let key = format!("{}\0{}", location.label, key.expand(&vars));
        if !ctx
            .shared
            .rate_limits
            .allow(&key, limit.rate_per_sec, limit.burst, Instant::now())
        {
            tracing::warn!(%client, location = %location.label, "limiting requests (limit_req)");
            return Err(Refusal::new(503, "too many requests"));
        }
    }
    let Some(limit) = config.limit_conn else {
        return Ok(());
    };
    let key = format!(
        "{}\0{}",
        location.label,
        location.limit_conn_key.expand(&vars)
    );
    match ctx.shared.connection_limits.acquire(key, limit) {
        Some(slot) => {
            ctx.slot = Some(slot);
            Ok(())
        }
        None => {
            tracing::warn!(%client, location = %location.label, limit, "limiting connections (limit_conn)");
            Err(Refusal::new(
                config.limit_conn_status,
                "too many connections",
            ))
        }
    }
}

/// Phase 3: a file from the location's `root`.
async fn serve_files(ctx: RequestContext<'_>, files: StaticFiles) -> Response<Body> {
    let response = match &ctx.location.config.action {
        LocationAction::Static {
            root,
            index,
            try_files,
        } => static_files::serve(ctx.parts, &files.path, root, index, try_files).await,
        _ => {
            tracing::error!(
                location = files.location,
                "router chose static files on a location without root"
            );
            status(500, "")
        }
    };
    let code = response.status().as_u16();
    response.map(|body| LoggedBody::new(body, ctx.entry, code, ctx.slot).boxed_unsync())
}

/// Phases 4 to 9 (nginx's `proxy_pass`): forwards the request to the
/// upstream, then streams its answer back or, on 101, hands over to the
/// WebSocket session.
async fn proxy_pass(ctx: RequestContext<'_>, body: Incoming, target: ProxyTo) -> Response<Body> {
    let (response, peer) = match exchange(&ctx, body, &target).await {
        Ok(answered) => answered,
        Err(refusal) => {
            ctx.count_handshake(refusal.status);
            return ctx.refuse(refusal);
        }
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        return websocket::upgrade(ctx, target.location, response, peer);
    }
    ctx.count_handshake(response.status().as_u16());
    forward::respond(ctx, response, peer)
}

/// Phases 4 to 8: the upstream's answer, and the peer that gave it. A peer
/// that fails after the connect (an error or a timeout before the answer's
/// head, 502 or 504) is counted as failed, and the next one is tried, as
/// nginx's default `proxy_next_upstream error timeout` does, when the
/// request can be sent again: an idempotent method with no body (wasp
/// streams bodies and keeps no copy to replay).
async fn exchange<'s>(
    ctx: &RequestContext<'s>,
    body: Incoming,
    target: &ProxyTo,
) -> Result<(Response<Incoming>, ChosenPeer<'s>), Refusal> {
    let upstream = forward::upstream(ctx.site, target)?;
    if ctx.websocket {
        websocket::check_handshake(ctx)?;
        websocket::check_ban(ctx)?;
        websocket::check_origin(ctx)?;
        websocket::check_filters(ctx)?;
    }
    let vars = ctx.vars(forward::proxy_host(ctx, upstream));
    let headers = forward::upstream_headers(ctx, target, &vars, upstream);
    let replayable = ctx.parts.method.is_idempotent() && body.is_end_stream();
    let mut attempts = upstream.attempts();
    let mut body = Some(body);
    loop {
        // Each attempt may take an idle keepalive connection to its peer
        // or open a new one (over TLS for `proxy_pass https://`).
        let (connection, mut peer) = forward::connect(ctx, upstream, &vars, &mut attempts).await?;
        match forward::send(
            ctx,
            target,
            headers.clone(),
            body.take(),
            connection,
            &mut peer,
        )
        .await
        {
            Ok(response) => return Ok((response, peer)),
            // 502 and 504 from `send` are the peer's error or timeout.
            Err(refusal) if matches!(refusal.status, 502 | 504) => {
                upstream.failed(peer.guard.peer());
                if !(replayable && upstream.may_retry(&attempts)) {
                    return Err(refusal);
                }
                tracing::warn!(upstream = %upstream.name, peer = %peer.guard.peer().address, "trying the next peer");
            }
            Err(refusal) => return Err(refusal),
        }
    }
}

/// The router's direct answer.
fn respond_directly(answer: plugins::Response) -> Response<Body> {
    let mut response = Response::new(full(answer.body));
    *response.status_mut() =
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
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
