//! One access-log line per request, in nginx's `combined` format plus the
//! request time; for WebSockets one line when the connection ends, with the
//! bytes relayed and its duration. Written through tracing (target `access`).

use crate::metrics::Metrics;
use bytes::Bytes;
use http::request::Parts;
use hyper::body::{Body, Frame, SizeHint};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// What the log line says about a request, captured when it arrives.
pub struct AccessEntry {
    client: IpAddr,
    request_line: String,
    referer: String,
    user_agent: String,
    started: Instant,
    time: SystemTime,
    metrics: Arc<Metrics>,
}

impl AccessEntry {
    pub fn new(parts: &Parts, client: IpAddr, metrics: Arc<Metrics>) -> AccessEntry {
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
        }
    }

    /// Writes the line (`extra` is appended, e.g. WebSocket traffic) and
    /// counts the request by status class.
    pub fn log(&self, status: u16, bytes: u64, extra: &str) {
        self.metrics.request(status);
        tracing::info!(
            target: "access",
            "{} - - [{}] \"{}\" {} {} \"{}\" \"{}\" rt={:.3}{}",
            self.client,
            nginx_time(self.time),
            self.request_line,
            status,
            bytes,
            self.referer,
            self.user_agent,
            self.started.elapsed().as_secs_f64(),
            extra,
        );
    }
}

/// `$time_local` in UTC: `21/Nov/2026:06:21:07 +0000`.
fn nginx_time(time: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000",
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
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
            entry.log(self.status, self.bytes, "");
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn time_local_format() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_242_067);
        assert_eq!(nginx_time(t), "21/Nov/2026:06:21:07 +0000");
        assert_eq!(nginx_time(UNIX_EPOCH), "01/Jan/1970:00:00:00 +0000");
    }
}
