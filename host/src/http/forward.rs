//! Relaying a request to an upstream: origin check for WebSocket
//! handshakes, headers per the location, peer choice and connect (with
//! retries), then either a streamed response or, on 101, the relay.

use super::headers::{is_websocket_upgrade, strip_hop_by_hop, upstream_request};
use super::response::{Body, status};
use super::{ConnInfo, Shared, upgrade};
use crate::access_log::{AccessEntry, LoggedBody};
use crate::limits::ConnectionSlot;
use crate::plugins::{ProxyTo, RequestHead};
use crate::site::Site;
use crate::vars::RequestVars;
use http::request::Parts;
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio_io_timeout::TimeoutStream;

/// A request the router sent upstream, with what came with it.
pub struct ProxyRequest {
    pub parts: Parts,
    pub body: Incoming,
    pub target: ProxyTo,
    pub head: RequestHead,
    pub entry: AccessEntry,
    /// The `limit_conn` slot, held until the response or WebSocket ends.
    pub slot: Option<ConnectionSlot>,
}

pub async fn forward(
    request: ProxyRequest,
    info: &Arc<ConnInfo>,
    site: &Arc<Site>,
    shared: &Arc<Shared>,
) -> Response<Body> {
    let ProxyRequest {
        mut parts,
        body,
        target,
        head,
        entry,
        slot,
    } = request;
    let websocket = is_websocket_upgrade(&parts.headers);
    let fail = |code: u16, reason: &str, entry: AccessEntry| {
        if websocket && let Some(location) = site.location(target.location) {
            shared.metrics.handshake(&location.label, code);
        }
        super::logged(status(code, reason), entry)
    };
    let Some(location) = site.location(target.location) else {
        tracing::error!(
            location = target.location,
            "router chose an unknown location"
        );
        return fail(500, "", entry);
    };
    let Some(group) = site.upstreams.get(&target.upstream) else {
        tracing::error!(upstream = %target.upstream, "router chose an unknown upstream");
        return fail(502, "", entry);
    };
    if websocket && location.strict_websocket && !valid_handshake(&parts.headers) {
        tracing::info!(client = %info.client, "WebSocket upgrade without a valid Sec-WebSocket-Key/Version 13 (strict_websocket)");
        return fail(400, "invalid WebSocket handshake", entry);
    }
    if websocket {
        match site.origin.check(&head, location.config.id) {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => {
                let origin = parts
                    .headers
                    .get("origin")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::warn!(client = %info.client, origin, %reason, "WebSocket handshake refused by the origin check");
                return fail(403, &reason, entry);
            }
            Err(error) => {
                tracing::error!(%error, "origin plugin failed; refusing the handshake");
                return fail(403, "origin check failed", entry);
            }
        }
    }

    let vars = RequestVars {
        headers: &parts.headers,
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        client: info.client,
        local: info.local,
        tls: info.tls,
        proxy_host: &group.proxy_host,
    };
    let headers = upstream_request(
        &parts.headers,
        &location.set_headers,
        &target.set_headers,
        &vars,
        !location.filters.is_empty(),
    );
    let config = &location.config;
    let (stream, guard) = match group
        .connect(&head, &vars, &site.balancer, config.connect_timeout)
        .await
    {
        Ok(connected) => connected,
        Err(error) => {
            tracing::error!(upstream = %group.name, %error, "no upstream connection");
            return fail(error.status(), "", entry);
        }
    };
    let Ok(uri) = target.uri.parse::<http::Uri>() else {
        tracing::error!(uri = %target.uri, "router produced an invalid upstream URI");
        return fail(500, "", entry);
    };
    let client_upgrade = parts.extensions.remove::<OnUpgrade>();
    // Chunked bodies have no declared size: cut them at the limit (413).
    let mut request = Request::new(Limited::new(body, location.max_body as usize));
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;

    let sent = if websocket {
        // The relay takes the raw socket back after 101; its idle timeout
        // replaces per-read timeouts.
        send_upgrade(TokioIo::new(stream), request).await
    } else {
        let mut timed = TimeoutStream::new(stream);
        timed.set_read_timeout(Some(config.read_timeout));
        timed.set_write_timeout(Some(config.send_timeout));
        send(TokioIo::new(Box::pin(timed)), request).await
    };
    let mut response = match sent {
        Ok(response) => response,
        Err(error) if body_too_large(&error) => {
            tracing::info!(client = %info.client, "request body larger than client_max_body_size");
            return fail(413, "request body too large", entry);
        }
        Err(error) => {
            tracing::error!(upstream = %group.name, peer = %guard.peer().address, %error, "upstream request failed");
            let code = if error.is_timeout() { 504 } else { 502 };
            return fail(code, "", entry);
        }
    };

    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade.filter(|_| websocket) else {
            tracing::error!(upstream = %group.name, "upstream switched protocols without a WebSocket handshake");
            return fail(502, "", entry);
        };
        shared.metrics.handshake(&location.label, 101);
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        let (response_parts, _) = response.into_parts();
        let relay = upgrade::Relay {
            conn_id: shared.conn_id(),
            head,
            entry,
            guard,
            _slot: slot,
            site: site.clone(),
            location: target.location,
            _conn: info.clone(),
            metrics: shared.metrics.clone(),
            upstream: group.name.clone(),
            shutdown: shared.close_websockets.clone(),
        };
        shared
            .tasks
            .spawn(relay.run(client_upgrade, upstream_upgrade));
        return Response::from_parts(response_parts, super::response::empty());
    }

    let code = response.status().as_u16();
    if websocket {
        shared.metrics.handshake(&location.label, code);
    }
    strip_hop_by_hop(response.headers_mut());
    response.map(|body| {
        LoggedBody::new(body.map_err(Into::into), entry, code, (guard, slot)).boxed_unsync()
    })
}

/// Sends `request` on a fresh HTTP/1.1 connection over `io`.
async fn send<I>(
    io: I,
    request: Request<Limited<Incoming>>,
) -> Result<Response<Incoming>, hyper::Error>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%error, "upstream connection ended with an error");
        }
    });
    sender.send_request(request).await
}

/// Sends a WebSocket handshake on a fresh connection, driving the connection
/// in this task instead of a spawned one: on 101 hyper hands the socket to
/// the upgrade and the connection ends at once, which saves a task and the
/// wake-ups between two tasks per handshake. Any other answer may still have
/// a body to stream, so its connection then moves to a task as in [`send`].
async fn send_upgrade(
    io: TokioIo<tokio::net::TcpStream>,
    request: Request<Limited<Incoming>>,
) -> Result<Response<Incoming>, hyper::Error> {
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    let mut connection = Box::pin(connection.with_upgrades());
    let sent = sender.send_request(request);
    tokio::pin!(sent);
    let response = tokio::select! {
        biased;
        response = &mut sent => response,
        ended = &mut connection => {
            // Ended before an answer: the request reports why.
            if let Err(error) = ended {
                tracing::debug!(%error, "upstream connection ended with an error");
            }
            return sent.await;
        }
    };
    match &response {
        Ok(answer) if answer.status() == StatusCode::SWITCHING_PROTOCOLS => {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "upstream connection failed to hand over the upgrade");
            }
        }
        _ => {
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "upstream connection ended with an error");
                }
            });
        }
    }
    response
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

/// RFC 6455 §4.1: a `Sec-WebSocket-Key` of 16 base64-encoded bytes and
/// `Sec-WebSocket-Version: 13`.
fn valid_handshake(headers: &http::HeaderMap) -> bool {
    let version_13 = headers
        .get("sec-websocket-version")
        .is_some_and(|v| v == "13");
    let key_ok = headers.get("sec-websocket-key").is_some_and(|key| {
        let key = key.as_bytes();
        // 16 bytes encode to 22 base64 characters plus "==".
        key.len() == 24
            && key.ends_with(b"==")
            && key[..22]
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
    });
    version_13 && key_ok
}
