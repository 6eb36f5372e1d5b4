//! One access-log line's fields and their two renderings: nginx's
//! `combined` format plus the request time and the WebSocket fields (text),
//! or one JSON object with the same fields named (json). The names are
//! nginx's variables where nginx has one.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// The fields of one line.
pub struct Record<'a> {
    pub remote_addr: IpAddr,
    pub time: SystemTime,
    /// `$request`: `GET /path HTTP/1.1`.
    pub request: &'a str,
    pub status: u16,
    pub body_bytes_sent: u64,
    pub http_referer: &'a str,
    pub http_user_agent: &'a str,
    /// `$request_time` in seconds (for a WebSocket: until it closed).
    pub request_time: f64,
    pub websocket: Option<&'a WebSocketEnd>,
}

/// How a WebSocket ended, for its line.
#[derive(Debug, Clone, PartialEq)]
pub enum WebSocketEnd {
    /// The upgrade did not complete.
    Failed,
    /// Relayed message by message through filters.
    Frames {
        /// Bytes the client sent (the line's `body_bytes_sent` is the other way).
        up_bytes: u64,
        messages_up: u64,
        messages_down: u64,
        /// The close code (1006 when none was received).
        close: u16,
        peer: String,
    },
    /// Relayed as raw bytes.
    Tunnel {
        up_bytes: u64,
        /// How the tunnel ended.
        end: String,
        peer: String,
    },
}

impl Record<'_> {
    /// `127.0.0.1 - - [21/Nov/2026:06:21:07 +0000] "GET / HTTP/1.1" 200 2 "-" "curl/8" rt=0.001`
    /// and, for a WebSocket, its fields after that.
    pub fn text(&self) -> String {
        let mut line = format!(
            "{} - - [{}] \"{}\" {} {} \"{}\" \"{}\" rt={:.3}",
            self.remote_addr,
            time_local(self.time),
            self.request,
            self.status,
            self.body_bytes_sent,
            self.http_referer,
            self.http_user_agent,
            self.request_time,
        );
        match self.websocket {
            None => {}
            Some(WebSocketEnd::Failed) => line.push_str(" ws=failed"),
            Some(WebSocketEnd::Frames {
                up_bytes,
                messages_up,
                messages_down,
                close,
                peer,
            }) => line.push_str(&format!(
                " ws_up={up_bytes} ws_msgs={messages_up}/{messages_down} ws_close={close} peer={peer}"
            )),
            Some(WebSocketEnd::Tunnel {
                up_bytes,
                end,
                peer,
            }) => line.push_str(&format!(" ws_up={up_bytes} ws_end={end} peer={peer}")),
        }
        line
    }

    /// The same fields as one JSON object.
    pub fn json(&self) -> String {
        let mut object = serde_json::json!({
            "remote_addr": self.remote_addr.to_string(),
            "time_local": time_local(self.time),
            "request": self.request,
            "status": self.status,
            "body_bytes_sent": self.body_bytes_sent,
            "http_referer": self.http_referer,
            "http_user_agent": self.http_user_agent,
            "request_time": self.request_time_ms(),
        });
        let fields = object.as_object_mut().expect("an object");
        let mut put = |name: &str, value: serde_json::Value| {
            fields.insert(name.to_owned(), value);
        };
        match self.websocket {
            None => {}
            Some(WebSocketEnd::Failed) => put("ws", "failed".into()),
            Some(WebSocketEnd::Frames {
                up_bytes,
                messages_up,
                messages_down,
                close,
                peer,
            }) => {
                put("ws_up", (*up_bytes).into());
                put("ws_msgs_up", (*messages_up).into());
                put("ws_msgs_down", (*messages_down).into());
                put("ws_close", (*close).into());
                put("peer", peer.as_str().into());
            }
            Some(WebSocketEnd::Tunnel {
                up_bytes,
                end,
                peer,
            }) => {
                put("ws_up", (*up_bytes).into());
                put("ws_end", end.as_str().into());
                put("peer", peer.as_str().into());
            }
        }
        object.to_string()
    }

    /// Written to stderr through tracing (target `access`): the text line as
    /// the message, or with `json` the fields named, as [`Record::json`] names them.
    pub fn trace(&self, json: bool) {
        if !json {
            tracing::info!(target: "access", "{}", self.text());
            return;
        }
        let (mut ws, mut up, mut msgs_up, mut msgs_down, mut close, mut end, mut peer) =
            (None, None, None, None, None, None, None);
        match self.websocket {
            None => {}
            Some(WebSocketEnd::Failed) => ws = Some("failed"),
            Some(WebSocketEnd::Frames {
                up_bytes,
                messages_up,
                messages_down,
                close: code,
                peer: to,
            }) => {
                (up, msgs_up, msgs_down) =
                    (Some(*up_bytes), Some(*messages_up), Some(*messages_down));
                close = Some(*code);
                peer = Some(to.as_str());
            }
            Some(WebSocketEnd::Tunnel {
                up_bytes,
                end: how,
                peer: to,
            }) => {
                up = Some(*up_bytes);
                end = Some(how.as_str());
                peer = Some(to.as_str());
            }
        }
        // An `Option` field is recorded only when it is `Some`.
        tracing::info!(
            target: "access",
            remote_addr = %self.remote_addr,
            time_local = %time_local(self.time),
            request = self.request,
            status = self.status,
            body_bytes_sent = self.body_bytes_sent,
            http_referer = self.http_referer,
            http_user_agent = self.http_user_agent,
            request_time = self.request_time_ms(),
            ws,
            ws_up = up,
            ws_msgs_up = msgs_up,
            ws_msgs_down = msgs_down,
            ws_close = close,
            ws_end = end,
            peer,
        );
    }

    /// Seconds with millisecond resolution, as nginx writes `$request_time`.
    fn request_time_ms(&self) -> f64 {
        (self.request_time * 1000.0).round() / 1000.0
    }
}

/// `$time_local` in UTC: `21/Nov/2026:06:21:07 +0000`.
fn time_local(time: SystemTime) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn time_local_format() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_242_067);
        assert_eq!(time_local(t), "21/Nov/2026:06:21:07 +0000");
        assert_eq!(time_local(UNIX_EPOCH), "01/Jan/1970:00:00:00 +0000");
    }

    #[test]
    fn text_and_json_carry_the_same_fields() {
        let end = WebSocketEnd::Frames {
            up_bytes: 10,
            messages_up: 2,
            messages_down: 3,
            close: 1000,
            peer: "127.0.0.1:8081".into(),
        };
        let record = Record {
            remote_addr: "127.0.0.1".parse().unwrap(),
            time: UNIX_EPOCH + Duration::from_secs(1_795_242_067),
            request: "GET /ws/ HTTP/1.1",
            status: 101,
            body_bytes_sent: 20,
            http_referer: "-",
            http_user_agent: "test",
            request_time: 1.23456,
            websocket: Some(&end),
        };
        assert_eq!(
            record.text(),
            "127.0.0.1 - - [21/Nov/2026:06:21:07 +0000] \"GET /ws/ HTTP/1.1\" 101 20 \"-\" \"test\" \
             rt=1.235 ws_up=10 ws_msgs=2/3 ws_close=1000 peer=127.0.0.1:8081"
        );
        let json: serde_json::Value = serde_json::from_str(&record.json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "remote_addr": "127.0.0.1",
                "time_local": "21/Nov/2026:06:21:07 +0000",
                "request": "GET /ws/ HTTP/1.1",
                "status": 101,
                "body_bytes_sent": 20,
                "http_referer": "-",
                "http_user_agent": "test",
                "request_time": 1.235,
                "ws_up": 10,
                "ws_msgs_up": 2,
                "ws_msgs_down": 3,
                "ws_close": 1000,
                "peer": "127.0.0.1:8081",
            })
        );
    }
}
