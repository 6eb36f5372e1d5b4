//! `heartbeat`: a filter that pings idle clients and closes the dead ones.
//!
//! When a client has sent nothing for `interval_ms`, the filter sends it
//! the `ping` text message and waits `timeout_ms` for any message from it;
//! a client that stays silent is closed with 1001 (going away, both peers
//! get the frame). A client answering with the `pong` text has its answer
//! swallowed (the upstream never sees the heartbeat); any other message
//! proves it alive too and passes on. A chatty client is never pinged.
//!
//! Why an application message rather than a WebSocket ping frame: a
//! filter sees data messages only (control frames pass straight through
//! the relay and are answered by the far peer), so it could never see the
//! pong; and a ping frame is answered by the browser's WebSocket stack
//! even when the page behind it is frozen, whereas an application message
//! is answered by the application itself.
//!
//! Configuration (all optional): `{ "interval_ms": 30000, "timeout_ms":
//! 10000, "ping": "{\"type\":\"ping\"}", "pong": "{\"type\":\"pong\"}" }`.
//!
//! State: per connection, when the client was last heard from and whether
//! a ping waits for its answer; a timer per connection does the rest. A
//! connection moved to a new instance (a reload, a failed instance) starts
//! afresh there, as heard from at that moment.

use wasp_sdk::{Action, CloseFrame, Direction, Filter, LogLevel, Message, RequestHead, host};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    interval_ms: u64,
    timeout_ms: u64,
    ping: String,
    pong: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            interval_ms: 30_000,
            timeout_ms: 10_000,
            ping: r#"{"type":"ping"}"#.into(),
            pong: r#"{"type":"pong"}"#.into(),
        }
    }
}

/// The heartbeat's settings, shared by every connection of the instance.
pub struct Heartbeat {
    config: Config,
}

/// One connection's heartbeat.
pub struct Beat {
    /// When the client last sent a message (the host clock, ms).
    heard: u64,
    /// A ping went out and nothing came back yet.
    waiting: bool,
}

impl Filter for Heartbeat {
    type Connection = Beat;

    fn configure(config: &str) -> Result<Self, String> {
        let config: Config = wasp_sdk::parse_config(config)?;
        if config.interval_ms == 0 || config.timeout_ms == 0 {
            return Err("interval_ms and timeout_ms must be at least 1".into());
        }
        Ok(Heartbeat { config })
    }

    fn on_open(&mut self, _conn: u64, _head: &RequestHead) -> Beat {
        host::set_timer(self.config.interval_ms);
        Beat {
            heard: host::now_ms(),
            waiting: false,
        }
    }

    fn on_message(&mut self, beat: &mut Beat, dir: Direction, msg: Message) -> Action {
        if dir == Direction::UpstreamToClient {
            return Action::Forward;
        }
        beat.heard = host::now_ms();
        beat.waiting = false;
        match msg {
            Message::Text(text) if text == self.config.pong => Action::Drop,
            _ => Action::Forward,
        }
    }

    fn on_timer(&mut self, beat: &mut Beat) -> Option<CloseFrame> {
        if beat.waiting {
            return Some(CloseFrame {
                code: 1001,
                reason: "no answer to the heartbeat".into(),
            });
        }
        let quiet = host::now_ms().saturating_sub(beat.heard);
        if quiet < self.config.interval_ms {
            host::set_timer(self.config.interval_ms - quiet);
            return None;
        }
        // A client that does not even take the ping (`peer-busy`) gets the
        // same timeout as one that does not answer it.
        if let Err(error) = host::send_to_client(Message::Text(self.config.ping.clone())) {
            host::log(LogLevel::Debug, &format!("heartbeat not sent: {error:?}"));
        }
        beat.waiting = true;
        host::set_timer(self.config.timeout_ms);
        None
    }
}

wasp_sdk::export!(filter: Heartbeat);

#[cfg(test)]
mod tests {
    use super::*;
    use wasp_sdk::testing::{Sent, TestFilter, TestHost, head};

    const CONFIG: &str =
        r#"{"interval_ms": 1000, "timeout_ms": 300, "ping": "ping", "pong": "pong"}"#;

    fn ping(conn: u64) -> Sent {
        Sent {
            conn,
            dir: Direction::UpstreamToClient,
            message: Message::Text("ping".into()),
        }
    }

    #[test]
    fn an_idle_client_is_pinged_and_closed_with_1001_when_it_does_not_answer() {
        let host = TestHost::new();
        let mut filter = TestFilter::<Heartbeat>::configure(CONFIG).unwrap();
        let conn = filter.open(&head("/ws"));
        assert!(filter.advance(999).is_empty());
        assert!(host.take_sent().is_empty());
        assert!(filter.advance(1).is_empty());
        assert_eq!(host.take_sent(), [ping(conn)]);
        assert!(filter.advance(299).is_empty());
        let closed = filter.advance(1);
        assert_eq!(closed.len(), 1);
        assert_eq!((closed[0].0, closed[0].1.code), (conn, 1001));
        assert_eq!(host.timer(conn), None);
    }

    #[test]
    fn a_client_that_answers_stays_open_and_its_pongs_reach_no_upstream() {
        let host = TestHost::new();
        let mut filter = TestFilter::<Heartbeat>::configure(CONFIG).unwrap();
        let conn = filter.open(&head("/ws"));
        assert!(filter.advance(1000).is_empty());
        assert_eq!(host.take_sent(), [ping(conn)]);
        for _ in 0..5 {
            host.advance(100);
            assert_eq!(filter.client_text(conn, "pong"), Action::Drop);
            // The answer's wait ends quietly; the next ping comes an
            // interval after the answer.
            assert!(filter.advance(900).is_empty());
            assert!(host.take_sent().is_empty());
            assert!(filter.advance(100).is_empty());
            assert_eq!(host.take_sent(), [ping(conn)]);
        }
        assert_eq!(filter.client_text(conn, "hello"), Action::Forward);
    }

    #[test]
    fn a_chatty_client_is_never_pinged() {
        let host = TestHost::new();
        let mut filter = TestFilter::<Heartbeat>::configure(CONFIG).unwrap();
        let conn = filter.open(&head("/ws"));
        for _ in 0..20 {
            assert!(filter.advance(600).is_empty());
            assert_eq!(filter.client_text(conn, "hello"), Action::Forward);
        }
        assert!(host.take_sent().is_empty());
        // The upstream talking is no sign of the client's life.
        assert_eq!(filter.upstream_text(conn, "news"), Action::Forward);
        assert!(filter.advance(1000).is_empty());
        assert_eq!(host.take_sent(), [ping(conn)]);
    }

    #[test]
    fn a_zero_interval_is_refused() {
        let error = TestFilter::<Heartbeat>::configure(r#"{"interval_ms": 0}"#).err();
        assert_eq!(
            error.as_deref(),
            Some("interval_ms and timeout_ms must be at least 1")
        );
        assert!(TestFilter::<Heartbeat>::configure(r#"{"interval": 5}"#).is_err());
        assert!(TestFilter::<Heartbeat>::configure("").is_ok());
    }
}
