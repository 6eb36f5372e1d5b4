//! The phases only WebSocket handshakes go through: the strict handshake
//! check, the origin check, sending the handshake upstream, and on the
//! upstream's 101 the upgrade: a [`WebSocketSession`] takes both sockets
//! back from hyper and relays them, as a raw tunnel or, when the location
//! has filters, through the frame relay.

use super::ConnInfo;
use super::client_stream::ClientStream;
use super::context::{ChosenPeer, Refusal, RequestContext, UpstreamBody};
use super::response::{Body, empty};
use crate::access_log::{AccessEntry, WebSocketEnd};
use crate::cpu_bans::CpuBans;
use crate::filter_chain::{self, FilterChain};
use crate::limits::ConnectionSlot;
use crate::metrics::Metrics;
use crate::plugins::RequestHead;
use crate::relay::deflate::{self, Negotiated};
use crate::relay::endpoint::{Endpoint, Stream};
use crate::relay::frames::{self, FrameRelayConfig};
use crate::relay::tunnel::{self, TunnelConfig, TunnelStats};
use crate::shutdown::Shutdown;
use crate::site::LocationRuntime;
use crate::upstream::{PeerGuard, UpstreamStream};
use bytes::Bytes;
use http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_EXTENSIONS, UPGRADE};
use http::{HeaderMap, HeaderValue, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::either::Either;

/// Phase 5a, with `strict_websocket`: refuses (400) a handshake without a
/// valid `Sec-WebSocket-Key` and `Sec-WebSocket-Version: 13`.
pub fn check_handshake(ctx: &RequestContext<'_>) -> Result<(), Refusal> {
    if ctx.location.strict_websocket && !valid_handshake(&ctx.parts.headers) {
        tracing::info!(client = %ctx.conn.client, "WebSocket upgrade without a valid Sec-WebSocket-Key/Version 13 (strict_websocket)");
        return Err(Refusal::new(400, "invalid WebSocket handshake"));
    }
    Ok(())
}

/// Phase 5b, on a filtered location: an address banned for overrunning
/// filter deadlines (`crate::cpu_bans`) is refused (503) before any plugin
/// is asked about it.
pub fn check_ban(ctx: &RequestContext<'_>) -> Result<(), Refusal> {
    let client = ctx.conn.client.ip();
    if !ctx.location.filters.is_empty() && ctx.shared.cpu_bans.banned(client, Instant::now()) {
        tracing::info!(%client, "refusing a filtered WebSocket: this address's messages overran filter deadlines repeatedly (ban_after_overruns)");
        return Err(Refusal::new(503, "too many filter overruns"));
    }
    Ok(())
}

/// Phase 5c: the origin plugin may refuse the handshake (403); so does a
/// failing origin plugin.
pub fn check_origin(ctx: &RequestContext<'_>) -> Result<(), Refusal> {
    match ctx.site.origin.check(&ctx.head, ctx.location.config.id) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(reason)) => {
            let origin = ctx
                .parts
                .headers
                .get("origin")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::warn!(client = %ctx.conn.client, origin, %reason, "WebSocket handshake refused by the origin check");
            Err(Refusal::new(403, reason))
        }
        Err(error) => {
            tracing::error!(%error, "origin plugin failed; refusing the handshake");
            Err(Refusal::new(403, "origin check failed"))
        }
    }
}

/// Phase 5d, on a filtered location: every fail-closed filter needs an
/// instance on this thread. When none can be made (every slot of the
/// `instances` pool is in use, or the plugin fails to start), the handshake
/// is refused with 503 before anything reaches the upstream, rather than
/// accepted and then closed.
pub fn check_filters(ctx: &RequestContext<'_>) -> Result<(), Refusal> {
    match filter_chain::unavailable(&ctx.location.filters) {
        None => Ok(()),
        Some(filter) => {
            tracing::error!(client = %ctx.conn.client, filter, "no instance of the filter can be made; refusing the handshake with 503");
            Err(Refusal::new(503, "filter unavailable"))
        }
    }
}

/// Part of phase 6 for a handshake to a filtered location with
/// `websocket_deflate`: wasp's own permessage-deflate offer replaces the
/// client's (each leg is negotiated on its own, see `relay::deflate`).
pub fn deflate_offer(ctx: &RequestContext<'_>, headers: &mut HeaderMap) {
    if !ctx.location.filters.is_empty() && ctx.location.config.websocket_deflate {
        let offer = HeaderValue::from_static(deflate::upstream_offer());
        headers.insert(SEC_WEBSOCKET_EXTENSIONS, offer);
    }
}

/// On a filtered location, what each leg negotiated: the upstream's answer
/// to [`deflate_offer`] (an answer to an offer wasp did not make fails the
/// handshake), and wasp's answer to the client's offer, which replaces the
/// upstream's in `headers` (the 101 the client gets).
fn negotiate_deflate(
    ctx: &RequestContext<'_>,
    headers: &mut HeaderMap,
) -> Result<Negotiated, &'static str> {
    if ctx.location.filters.is_empty() {
        return Ok(Negotiated::default());
    }
    let values = |headers: &HeaderMap| -> Vec<String> {
        headers
            .get_all(SEC_WEBSOCKET_EXTENSIONS)
            .iter()
            .filter_map(|value| value.to_str().ok().map(str::to_owned))
            .collect()
    };
    let answer = values(headers);
    let upstream = deflate::upstream_answer(answer.iter().map(String::as_str))?;
    if upstream.is_some() && !ctx.location.config.websocket_deflate {
        return Err("the upstream accepted an extension wasp did not offer");
    }
    headers.remove(SEC_WEBSOCKET_EXTENSIONS);
    let mut client = None;
    if ctx.location.config.websocket_deflate {
        let offers = values(&ctx.parts.headers);
        if let Some((leg, answer)) = deflate::answer_client(offers.iter().map(String::as_str)) {
            let answer = HeaderValue::from_str(&answer).expect("made of header characters");
            headers.insert(SEC_WEBSOCKET_EXTENSIONS, answer);
            client = Some(leg);
        }
    }
    Ok(Negotiated { client, upstream })
}

/// Phase 8 for a handshake: sends it on a fresh connection, driving the
/// connection in this task instead of a spawned one: on 101 hyper hands the
/// socket to the upgrade and the connection ends at once, which saves a task
/// and the wake-ups between two tasks per handshake. Any other answer may
/// still have a body to stream, so its connection then moves to a task.
pub async fn send_handshake(
    io: TokioIo<UpstreamStream>,
    request: http::Request<UpstreamBody>,
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

/// Phase 9 on the upstream's 101: answers the client's handshake with it
/// and spawns the [`WebSocketSession`], which takes over both connections
/// once hyper lets go of them. A 101 to anything but a WebSocket handshake
/// is refused (502).
pub fn upgrade(
    mut ctx: RequestContext<'_>,
    location: u32,
    mut response: Response<Incoming>,
    peer: ChosenPeer<'_>,
) -> Response<Body> {
    let client_upgrade = ctx.parts.extensions.remove::<OnUpgrade>();
    let Some(client_upgrade) = client_upgrade.filter(|_| ctx.websocket) else {
        tracing::error!(upstream = %peer.upstream.name, "upstream switched protocols without a WebSocket handshake");
        ctx.count_handshake(502);
        return ctx.refuse(Refusal::new(502, ""));
    };
    let upstream_upgrade = hyper::upgrade::on(&mut response);
    let (mut response_parts, _) = response.into_parts();
    let deflate = match negotiate_deflate(&ctx, &mut response_parts.headers) {
        Ok(deflate) => deflate,
        Err(reason) => {
            tracing::error!(upstream = %peer.upstream.name, reason, "upstream's permessage-deflate answer refused");
            ctx.count_handshake(502);
            return ctx.refuse(Refusal::new(502, ""));
        }
    };
    ctx.count_handshake(101);
    // RFC 8441 streams are accepted with 200 (below): the access log says so.
    let status = if ctx.parts.version == Version::HTTP_2 {
        200
    } else {
        101
    };
    let shared = ctx.shared;
    let session = WebSocketSession {
        conn_id: shared.conn_id(),
        head: Some(ctx.head),
        entry: ctx.entry,
        guard: peer.guard,
        _slot: ctx.slot,
        location: ctx.site.locations[location as usize].clone(),
        conn: ctx.conn.clone(),
        metrics: shared.metrics.clone(),
        upstream: peer.upstream.name.clone(),
        shutdown: shared.close_websockets.clone(),
        cpu_bans: shared.cpu_bans.clone(),
        deflate,
        status,
    };
    shared
        .tasks
        .spawn(session.run(client_upgrade, upstream_upgrade));
    let mut response = Response::from_parts(response_parts, empty());
    if ctx.parts.version == Version::HTTP_2 {
        // RFC 8441 §5: an extended CONNECT is accepted with a 2xx; the
        // upgrade's headers belong to the upstream's HTTP/1.1 connection.
        *response.status_mut() = StatusCode::OK;
        let headers = response.headers_mut();
        for name in [UPGRADE, CONNECTION, SEC_WEBSOCKET_ACCEPT] {
            headers.remove(name);
        }
    }
    response
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

/// An upgraded connection: everything it needs once hyper lets go of the
/// request, kept until the WebSocket closes.
struct WebSocketSession {
    conn_id: u64,
    /// For the filter chain's `on-open` calls; a tunnel frees it.
    head: Option<RequestHead>,
    entry: AccessEntry,
    /// Counts the connection against its peer (least_conn) until it ends.
    guard: PeerGuard,
    /// The `limit_conn` slot: an open WebSocket counts until it closes.
    _slot: Option<ConnectionSlot>,
    /// The location the router chose. Only it: a WebSocket outlives
    /// reloads, and holding the whole site would keep its plugins'
    /// instances and compiled code for as long (the soak saw each backend
    /// restart's reconnected WebSockets pin one more generation).
    location: Arc<LocationRuntime>,
    /// The client connection (keeps its `max_connections` slot).
    conn: Arc<ConnInfo>,
    shutdown: Shutdown,
    /// Where the filter chain reports overruns of this client's messages.
    cpu_bans: Arc<CpuBans>,
    metrics: Arc<Metrics>,
    upstream: String,
    /// permessage-deflate as each leg negotiated it (filtered locations).
    deflate: Negotiated,
    /// The status the client got and the access log shows: 101, or 200 for
    /// an HTTP/2 stream (RFC 8441).
    status: u16,
}

impl WebSocketSession {
    // The methods below take `&mut self`: an async fn keeps a by-value
    // `self` in its future for its whole life, so passing the session down
    // by value stored it (472 bytes) once per level in every WebSocket's task.
    async fn run(mut self, client: OnUpgrade, upstream: OnUpgrade) {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(error) => {
                tracing::warn!(%error, "WebSocket upgrade did not complete");
                self.entry.log(self.status, 0, Some(&WebSocketEnd::Failed));
                return;
            }
        };
        let Some((upstream, upstream_prefix)) = into_upstream(upstream) else {
            tracing::error!("upgraded upstream connection is not one wasp made");
            return;
        };
        let filtered = !self.location.filters.is_empty();
        let (client, upstream) = match upstream {
            // Two plain sockets: the zero-copy-when-idle tunnel (it needs
            // both), or the frame relay over them.
            Either::Left(upstream) => match into_client(client) {
                Ok((ClientStream::Plain(client), prefix)) if filtered => {
                    return self.relay(client, prefix, upstream, upstream_prefix).await;
                }
                Ok((ClientStream::Plain(client), prefix)) => {
                    return self.tunnel(client, prefix, upstream, upstream_prefix).await;
                }
                client => (client, Either::Left(upstream)),
            },
            tls => (into_client(client), tls),
        };
        // Boxed: TLS streams held inline made this future 4.4 KiB, and a task
        // is sized by its largest branch, so every plain WebSocket paid for
        // them while idle.
        Box::pin(self.relay_any(client, upstream, upstream_prefix)).await;
    }

    /// Any other pair: a TLS client, a TLS upstream or an HTTP/2 stream.
    async fn relay_any(
        &mut self,
        client: Result<(ClientStream, Bytes), Upgraded>,
        upstream: UpstreamStream,
        upstream_prefix: Bytes,
    ) {
        match client {
            Ok((ClientStream::Plain(client), prefix)) => {
                self.relay(client, prefix, upstream, upstream_prefix).await;
            }
            Ok((ClientStream::Tls(client), prefix)) => {
                self.relay(client, prefix, upstream, upstream_prefix).await;
            }
            // An HTTP/2 stream (RFC 8441): hyper keeps the connection, whose
            // other streams go on; the stream starts with no bytes read.
            Err(stream) => {
                let stream = TokioIo::new(stream);
                self.relay(stream, Bytes::new(), upstream, upstream_prefix)
                    .await;
            }
        }
    }

    /// The raw tunnel: between two plain sockets, or any other two streams
    /// (each in a [`Stream`]).
    async fn tunnel(
        &mut self,
        client: impl Endpoint,
        client_prefix: Bytes,
        upstream: impl Endpoint,
        upstream_prefix: Bytes,
    ) {
        let location = &*self.location;
        let peer = &self.guard.peer().address;
        let _open = self
            .metrics
            .websocket_opened(&location.label, &self.upstream, peer);
        // A tunnel never looks at the request head again: free it rather
        // than hold it for the life of an idle WebSocket.
        self.head = None;
        let stats = tunnel::run(
            client,
            client_prefix,
            upstream,
            upstream_prefix,
            tunnel_config(location),
            &location.counters,
            self.shutdown.clone(),
        )
        .await;
        log_tunnel(&self.entry, self.status, &stats, peer);
    }

    /// Any other pair of streams: through the frame relay when the location
    /// has filters, else the streams' tunnel.
    async fn relay<C, U>(
        &mut self,
        client: C,
        client_prefix: Bytes,
        upstream: U,
        upstream_prefix: Bytes,
    ) where
        C: AsyncRead + AsyncWrite + Unpin + Send,
        U: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let location = &*self.location;
        if location.filters.is_empty() {
            // Boxed, as the frame relay below: inline, a tunnel's state
            // would size the plain filtered WebSocket's task too.
            let (client, upstream) = (Stream(client), Stream(upstream));
            return Box::pin(self.tunnel(client, client_prefix, upstream, upstream_prefix)).await;
        }
        let peer = &self.guard.peer().address;
        let _open = self
            .metrics
            .websocket_opened(&location.label, &self.upstream, peer);
        let config = FrameRelayConfig {
            max_message_size: location.config.max_message_size,
            idle_timeout: location.config.read_timeout,
            send_timeout: location.config.send_timeout,
            traffic: location.counters.clone(),
            read_buffer: location.config.buffer_size,
            deflate: self.deflate,
        };
        let head = self.head.take().expect("a session is relayed once");
        let chain = FilterChain::new(self.conn_id, head, &location.filters)
            .reporting_overruns(&self.cpu_bans, self.conn.client.ip());
        // Boxed: the frame relay's state is several times the tunnel's,
        // and inline it would size every tunnel's task the same.
        let stats = Box::pin(frames::run(
            client,
            client_prefix,
            upstream,
            upstream_prefix,
            chain,
            config,
            self.shutdown.clone(),
        ))
        .await;
        let [up, down] = stats.messages;
        let close = stats.close_code.unwrap_or(1006);
        let end = WebSocketEnd::Frames {
            up_bytes: stats.bytes[0],
            messages_up: up,
            messages_down: down,
            close,
            peer: peer.clone(),
        };
        self.entry.log(self.status, stats.bytes[1], Some(&end));
    }
}

fn tunnel_config(location: &LocationRuntime) -> TunnelConfig {
    TunnelConfig {
        idle: location.config.read_timeout,
        buffer: location.config.buffer_size,
        send_timeout: location.config.send_timeout,
    }
}

fn log_tunnel(entry: &AccessEntry, status: u16, stats: &TunnelStats, peer: &str) {
    let end = WebSocketEnd::Tunnel {
        up_bytes: stats.upstream_bytes,
        end: format!("{:?}", stats.end),
        peer: peer.to_owned(),
    };
    entry.log(status, stats.client_bytes, Some(&end));
}

/// The client's connection under an HTTP/1.1 upgrade, with the bytes hyper
/// had already read past the HTTP head; an HTTP/2 stream stays as it is.
fn into_client(upgraded: Upgraded) -> Result<(ClientStream, Bytes), Upgraded> {
    let parts = upgraded.downcast::<TokioIo<ClientStream>>()?;
    Ok((parts.io.into_inner(), parts.read_buf))
}

/// The upstream connection under an upgrade, likewise.
fn into_upstream(upgraded: Upgraded) -> Option<(UpstreamStream, Bytes)> {
    let parts = upgraded.downcast::<TokioIo<UpstreamStream>>().ok()?;
    Some((parts.io.into_inner(), parts.read_buf))
}
