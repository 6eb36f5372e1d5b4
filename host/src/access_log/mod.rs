//! One access-log line per request, in nginx's `combined` format plus the
//! request time; for WebSockets one line when the connection ends, with the
//! bytes relayed and its duration. Where it goes is the server's
//! `access_log`: nowhere, stderr through tracing (target `access`), or a
//! file written by a thread of its own (`files.rs`); how it reads is
//! `line.rs`.

mod files;
mod line;

pub use files::{LogFile, LogFiles, QUEUE_LINES};
pub use line::WebSocketEnd;

use crate::metrics::Metrics;
use bytes::Bytes;
use http::request::Parts;
use hyper::body::{Body, Frame, SizeHint};
use line::Record;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

/// Where a server's access-log lines go.
#[derive(Clone)]
pub enum Destination {
    Off,
    /// Through tracing; `json`: with the fields named rather than as one message.
    Stderr {
        json: bool,
    },
    File(Arc<LogFile>),
}

/// What the log line says about a request, captured when it arrives.
pub struct AccessEntry {
    client: IpAddr,
    request_line: String,
    referer: String,
    user_agent: String,
    started: Instant,
    time: SystemTime,
    metrics: Arc<Metrics>,
    destination: Destination,
}

impl AccessEntry {
    /// `destination`: the listener's default server's, until the request
    /// is routed to a location ([`AccessEntry::log_to`]).
    pub fn new(
        parts: &Parts,
        client: IpAddr,
        metrics: Arc<Metrics>,
        destination: Destination,
    ) -> AccessEntry {
        let header = |name: http::HeaderName| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string()
        };
        let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        AccessEntry {
            client,
            request_line: format!("{} {} {:?}", parts.method, target, parts.version),
            referer: header(http::header::REFERER),
            user_agent: header(http::header::USER_AGENT),
            started: Instant::now(),
            time: SystemTime::now(),
            metrics,
            destination,
        }
    }

    /// The line goes where the server that took the request sends its own.
    pub fn log_to(&mut self, destination: &Destination) {
        self.destination = destination.clone();
    }

    /// Counts the request by status class and writes its line (`websocket`:
    /// how its WebSocket ended).
    pub fn log(&self, status: u16, bytes: u64, websocket: Option<&WebSocketEnd>) {
        self.metrics.request(status);
        let record = Record {
            remote_addr: self.client,
            time: self.time,
            request: &self.request_line,
            status,
            body_bytes_sent: bytes,
            http_referer: &self.referer,
            http_user_agent: &self.user_agent,
            request_time: self.started.elapsed().as_secs_f64(),
            websocket,
        };
        match &self.destination {
            Destination::Off => {}
            Destination::Stderr { json } => record.trace(*json),
            Destination::File(file) if file.json() => file.write(record.json()),
            Destination::File(file) => file.write(record.text()),
        }
    }
}

/// A response body that counts what it sends and writes the access line
/// when it is done (or dropped mid-way, e.g. the client went away). It also
/// keeps `hold` (the upstream peer's connection count) alive until then.
pub struct LoggedBody<B, H> {
    inner: B,
    entry: Option<AccessEntry>,
    status: u16,
    bytes: u64,
    _hold: H,
}

impl<B, H> LoggedBody<B, H> {
    pub fn new(inner: B, entry: AccessEntry, status: u16, hold: H) -> Self {
        LoggedBody {
            inner,
            entry: Some(entry),
            status,
            bytes: 0,
            _hold: hold,
        }
    }
}

impl<B, H> Drop for LoggedBody<B, H> {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            entry.log(self.status, self.bytes, None);
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin, H: Unpin> Body for LoggedBody<B, H> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.bytes += data.len() as u64;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
