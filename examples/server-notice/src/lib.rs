//! `server-notice`: an operator's notice ("maintenance at 22:00") delivered
//! to every open WebSocket of the locations using this filter, without
//! the upstream's help.
//!
//! Two kinds of locations use it, with the same `channel`:
//! - an admin location (`"admin": true`, e.g. on a server that listens on
//!   loopback only): each text message a client sends there sets the
//!   notice (an empty one clears it); the message goes no further, and the
//!   sender gets `notice N set` back;
//! - the locations whose clients get the notice: each connection checks
//!   for a new notice every `poll_ms` on a timer of its own and sends it to
//!   its client (and, with `"to": "both"` or `"upstream"`, to its
//!   upstream too). A connection gets every notice set while it is open,
//!   once, at most about `poll_ms` after it was set.
//!
//! The notice lives in the host's key/value store, in this plugin's own
//! namespace (shared by every instance of the plugin, on every worker
//! thread, and kept across reloads), as one value `VERSION\nTEXT` under
//! the channel's name, the version counted by a host counter. Instances
//! read it at most once per `poll_ms / 2`, however many connections they
//! serve.
//!
//! Configuration (all optional): `{ "channel": "notice", "admin": false,
//! "poll_ms": 1000, "to": "client" }`.

use wasp_sdk::{Action, Direction, Filter, LogLevel, Message, RequestHead, host};

/// Who gets a notice.
#[derive(serde::Deserialize, Clone, Copy, Default, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
enum To {
    #[default]
    Client,
    Upstream,
    Both,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    channel: String,
    admin: bool,
    poll_ms: u64,
    to: To,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            channel: "notice".into(),
            admin: false,
            poll_ms: 1000,
            to: To::Client,
        }
    }
}

/// A notice as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Notice {
    version: i64,
    text: String,
}

impl Notice {
    fn parse(stored: &str) -> Option<Notice> {
        let (version, text) = stored.split_once('\n')?;
        Some(Notice {
            version: version.parse().ok()?,
            text: text.to_owned(),
        })
    }
}

/// The filter: its settings, and the notice last read from the store.
pub struct ServerNotice {
    config: Config,
    /// The notice and when it was read (host clock, ms).
    read: Option<(u64, Notice)>,
}

/// One connection: the version of the last notice it got (or that was
/// current when it opened).
pub struct Seen(i64);

impl ServerNotice {
    /// The current notice, read again when the last read is `poll_ms / 2` old.
    fn current(&mut self) -> Notice {
        let now = host::now_ms();
        match &self.read {
            Some((at, notice)) if now.saturating_sub(*at) < self.config.poll_ms / 2 => {
                notice.clone()
            }
            _ => {
                let stored = host::kv().get(&self.config.channel);
                let notice = stored
                    .as_deref()
                    .and_then(Notice::parse)
                    .unwrap_or_default();
                self.read = Some((now, notice.clone()));
                notice
            }
        }
    }

    /// Sets the notice (admin locations).
    fn set(&mut self, text: &str) -> Result<i64, String> {
        let kv = host::kv();
        let version = kv
            .counter_add(&format!("{}/version", self.config.channel), 1)
            .map_err(|e| e.to_string())?;
        kv.set(&self.config.channel, &format!("{version}\n{text}"), None)
            .map_err(|e| e.to_string())?;
        self.read = None;
        Ok(version)
    }
}

impl Filter for ServerNotice {
    type Connection = Seen;

    fn configure(config: &str) -> Result<Self, String> {
        let config: Config = wasp_sdk::parse_config(config)?;
        if config.poll_ms == 0 {
            return Err("poll_ms must be at least 1".into());
        }
        if config.channel.is_empty() {
            return Err("channel must not be empty".into());
        }
        Ok(ServerNotice { config, read: None })
    }

    fn on_open(&mut self, _conn: u64, _head: &RequestHead) -> Seen {
        if self.config.admin {
            return Seen(0);
        }
        host::set_timer(self.config.poll_ms);
        Seen(self.current().version)
    }

    fn on_message(&mut self, _seen: &mut Seen, dir: Direction, msg: Message) -> Action {
        if !self.config.admin || dir != Direction::ClientToUpstream {
            return Action::Forward;
        }
        let Message::Text(text) = msg else {
            return Action::Forward;
        };
        let answer = match self.set(&text) {
            Ok(version) => format!("notice {version} set"),
            Err(error) => format!("notice refused: {error}"),
        };
        if let Err(error) = host::send_to_client(Message::Text(answer)) {
            host::log(
                LogLevel::Warn,
                &format!("notice answer not sent: {error:?}"),
            );
        }
        Action::Drop
    }

    fn on_timer(&mut self, seen: &mut Seen) -> Option<wasp_sdk::CloseFrame> {
        host::set_timer(self.config.poll_ms);
        let notice = self.current();
        if notice.version <= seen.0 {
            return None;
        }
        if !notice.text.is_empty() {
            let to = match self.config.to {
                To::Client => &[Direction::UpstreamToClient][..],
                To::Upstream => &[Direction::ClientToUpstream],
                To::Both => &[Direction::UpstreamToClient, Direction::ClientToUpstream],
            };
            for &dir in to {
                // A peer that is owed too much already (`peer-busy`) gets
                // it at a later tick: the notice stays new for it.
                if host::send(dir, Message::Text(notice.text.clone())).is_err() {
                    return None;
                }
            }
        }
        seen.0 = notice.version;
        None
    }
}

wasp_sdk::export!(filter: ServerNotice);

#[cfg(test)]
mod tests {
    use super::*;
    use wasp_sdk::testing::{Sent, TestFilter, TestHost, head};

    fn to_client(conn: u64, text: &str) -> Sent {
        Sent {
            conn,
            dir: Direction::UpstreamToClient,
            message: Message::Text(text.into()),
        }
    }

    #[test]
    fn a_notice_set_on_the_admin_location_reaches_every_open_connection_once() {
        let host = TestHost::new();
        let mut admin = TestFilter::<ServerNotice>::configure(r#"{"admin": true}"#).unwrap();
        let mut public = TestFilter::<ServerNotice>::configure(r#"{"poll_ms": 100}"#).unwrap();
        let (a, b) = (public.open(&head("/ws")), public.open(&head("/ws")));
        let operator = admin.open(&head("/admin"));
        assert!(public.advance(100).is_empty());
        assert!(host.take_sent().is_empty());

        assert_eq!(
            admin.client_text(operator, "maintenance at 22:00"),
            Action::Drop
        );
        assert_eq!(host.take_sent(), [to_client(operator, "notice 1 set")]);
        public.advance(100);
        assert_eq!(
            host.take_sent(),
            [
                to_client(a, "maintenance at 22:00"),
                to_client(b, "maintenance at 22:00")
            ]
        );
        // Once: later ticks find nothing new.
        public.advance(1000);
        assert!(host.take_sent().is_empty());
        // A connection opened after it does not get it; the next one it does.
        let c = public.open(&head("/ws"));
        admin.client_text(operator, "done");
        host.take_sent();
        public.advance(100);
        let sent = host.take_sent();
        assert_eq!(
            sent,
            [
                to_client(a, "done"),
                to_client(b, "done"),
                to_client(c, "done")
            ]
        );
    }

    #[test]
    fn an_empty_notice_clears_it_and_a_busy_client_gets_it_later() {
        let host = TestHost::new();
        let mut admin = TestFilter::<ServerNotice>::configure(r#"{"admin": true}"#).unwrap();
        let mut public =
            TestFilter::<ServerNotice>::configure(r#"{"poll_ms": 100, "to": "both"}"#).unwrap();
        let conn = public.open(&head("/ws"));
        let operator = admin.open(&head("/admin"));
        admin.client_text(operator, "");
        host.take_sent();
        public.advance(100);
        assert!(host.take_sent().is_empty());

        admin.client_text(operator, "long notice");
        host.take_sent();
        host.limit_sends(1 << 20, 4);
        public.advance(100);
        assert!(host.take_sent().is_empty());
        host.limit_sends(1 << 20, 1 << 20);
        public.advance(100);
        let sent = host.take_sent();
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0], to_client(conn, "long notice"));
        assert_eq!(sent[1].dir, Direction::ClientToUpstream);
    }

    #[test]
    fn channels_are_apart_and_bad_settings_are_refused() {
        let host = TestHost::new();
        let mut admin =
            TestFilter::<ServerNotice>::configure(r#"{"admin": true, "channel": "a"}"#).unwrap();
        let mut other =
            TestFilter::<ServerNotice>::configure(r#"{"channel": "b", "poll_ms": 10}"#).unwrap();
        let conn = other.open(&head("/ws"));
        let operator = admin.open(&head("/admin"));
        admin.client_text(operator, "for a only");
        host.take_sent();
        other.advance(100);
        assert!(host.take_sent().is_empty());
        assert_eq!(other.client_text(conn, "hi"), Action::Forward);
        for bad in [
            r#"{"poll_ms": 0}"#,
            r#"{"channel": ""}"#,
            r#"{"to": "everyone"}"#,
        ] {
            assert!(TestFilter::<ServerNotice>::configure(bad).is_err(), "{bad}");
        }
    }
}
