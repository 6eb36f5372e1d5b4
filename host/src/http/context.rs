//! What the phases of a request share: the [`RequestContext`] they carry
//! it in, the [`Refusal`] that ends it early, and the [`ChosenPeer`] it was
//! forwarded to.

use super::response::{Body, status};
use super::{ConnInfo, Shared};
use crate::access_log::{AccessEntry, LoggedBody};
use crate::limits::ConnectionSlot;
use crate::plugins::RequestHead;
use crate::site::{LocationRuntime, Site};
use crate::upstream::keepalive::Lease;
use crate::upstream::{PeerGuard, UpstreamGroup};
use crate::vars::RequestVars;
use http::Response;
use http::request::Parts;
use http_body_util::BodyExt;
use std::borrow::Cow;
use std::sync::Arc;

/// What a request carries through its phases once routed.
pub struct RequestContext<'a> {
    pub conn: &'a Arc<ConnInfo>,
    pub shared: &'a Arc<Shared>,
    /// The site the request started with: a reload does not change it.
    pub site: &'a Arc<Site>,
    /// The location the router chose.
    pub location: &'a LocationRuntime,
    pub parts: Parts,
    /// The request as plugins see it.
    pub head: RequestHead,
    /// The access-log line, written when the response ends.
    pub entry: AccessEntry,
    /// Whether the request is a WebSocket opening handshake.
    pub websocket: bool,
    /// The `limit_conn` slot taken on admission, held until the response
    /// (or the WebSocket) ends.
    pub slot: Option<ConnectionSlot>,
}

impl RequestContext<'_> {
    /// The request's nginx variables; `proxy_host` is the upstream's
    /// (empty before one is chosen).
    pub fn vars<'v>(&'v self, proxy_host: &'v str) -> RequestVars<'v> {
        RequestVars {
            headers: &self.parts.headers,
            method: self.parts.method.as_str(),
            path: self.parts.uri.path(),
            query: self.parts.uri.query().unwrap_or(""),
            client: self.conn.client,
            local: self.conn.local,
            tls: self.conn.tls,
            proxy_host,
        }
    }

    /// Counts the answer to a WebSocket handshake in the metrics (nothing
    /// for other requests).
    pub fn count_handshake(&self, status: u16) {
        if self.websocket {
            self.shared.metrics.handshake(&self.location.label, status);
        }
    }

    /// Ends the request with wasp's own answer.
    pub fn refuse(self, refusal: Refusal) -> Response<Body> {
        logged(refusal.response(), self.entry)
    }
}

/// Why a phase ended the request: the status and the reason wasp's error
/// page gives (the phase logged the details).
#[derive(Debug)]
pub struct Refusal {
    pub status: u16,
    pub reason: Cow<'static, str>,
}

impl Refusal {
    pub fn new(status: u16, reason: impl Into<Cow<'static, str>>) -> Refusal {
        Refusal {
            status,
            reason: reason.into(),
        }
    }

    /// wasp's own answer: a short plain-text page.
    pub fn response(&self) -> Response<Body> {
        status(self.status, &self.reason)
    }
}

/// The peer a request went to. It counts against the peer (least_conn)
/// while this lives: as long as its answer or WebSocket is relayed.
pub struct ChosenPeer<'s> {
    pub upstream: &'s UpstreamGroup,
    pub guard: PeerGuard,
    /// With `keepalive`, the connection to return to the cache once the
    /// answer was relayed.
    pub lease: Option<Lease>,
}

/// The body of a request sent upstream: the client's, cut at
/// `client_max_body_size`, or an empty one sent again to the next peer.
pub type UpstreamBody = http_body_util::combinators::UnsyncBoxBody<
    bytes::Bytes,
    Box<dyn std::error::Error + Send + Sync>,
>;

/// Attaches the access-log line to a response wasp made itself.
pub fn logged(response: Response<Body>, entry: AccessEntry) -> Response<Body> {
    let code = response.status().as_u16();
    response.map(|body| LoggedBody::new(body, entry, code, ()).boxed_unsync())
}
