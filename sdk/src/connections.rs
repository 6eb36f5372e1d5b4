//! The per-connection state of a filter instance: what [`export!`] keeps
//! between `on-open` and `on-close` so that a [`Filter`] gets its
//! connection's state instead of an id to look up.
//!
//! [`export!`]: crate::export!

use std::collections::HashMap;

use crate::filter_world::exports::wasp::plugin::filter::Outcome;
use crate::{Action, CloseFrame, Direction, Filter, LogLevel, Message, RequestHead, host};

/// The close of a message on a connection never opened on this instance.
fn unopened(conn: u64) -> Action {
    host::log(
        LogLevel::Warn,
        &format!("message on connection {conn}, never opened on this instance: closing it"),
    );
    Action::Close(CloseFrame {
        code: 1011,
        reason: "filter has no state for this connection".into(),
    })
}

/// The messages packed for `on-messages` as the filter gets them: each a
/// 4-byte little-endian header, `length << 1 | text`, then its bytes.
/// wasp hands only valid UTF-8 as text and whole messages; anything else
/// (a host bug) is made valid or cut short, never trusted. Used by
/// [`export!`](crate::export!); not public API.
#[doc(hidden)]
pub fn unpack(mut packed: &[u8]) -> impl Iterator<Item = Message> + '_ {
    std::iter::from_fn(move || {
        let (header, rest) = packed.split_first_chunk::<4>()?;
        let header = u32::from_le_bytes(*header);
        let len = ((header >> 1) as usize).min(rest.len());
        let (payload, rest) = rest.split_at(len);
        packed = rest;
        Some(if header & 1 == 1 {
            // `from_utf8` checks ASCII a word at a time; `from_utf8_lossy`
            // a byte at a time (a sixth of a call's CPU in a profile).
            let text = String::from_utf8(payload.to_vec());
            Message::Text(
                text.unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            )
        } else {
            Message::Binary(payload.to_vec())
        })
    })
}

/// A configured filter and the state of every connection it serves, by
/// connection id. Used by [`export!`](crate::export!); not public API.
#[doc(hidden)]
pub struct Connections<F: Filter> {
    filter: F,
    open: HashMap<u64, F::Connection>,
}

impl<F: Filter> Connections<F> {
    /// The filter `configure` built, serving no connection yet.
    pub fn new(filter: F) -> Self {
        Connections {
            filter,
            open: HashMap::new(),
        }
    }

    /// The filter, for the native test harness (`testing::TestFilter`).
    #[cfg(all(feature = "testing", not(target_arch = "wasm32")))]
    pub fn filter_mut(&mut self) -> &mut F {
        &mut self.filter
    }

    /// `on-open`: creates `conn`'s state. An id already open here (the host
    /// never does that) is closed first, so that every state `on_open`
    /// made reaches `on_close` once.
    pub fn on_open(&mut self, conn: u64, head: &RequestHead) {
        self.on_close(conn);
        let connection = self.filter.on_open(conn, head);
        self.open.insert(conn, connection);
    }

    /// `on-message`, with `conn`'s state. A connection never opened on this
    /// instance breaks the host's promise (`on-open` before the first
    /// message on an instance): with no state to filter it, the message is
    /// refused rather than let through unfiltered, and the connection is
    /// closed with 1011, as a failed fail-closed filter would be. Only that
    /// connection pays: trapping instead would restart every connection
    /// this instance serves.
    pub fn on_message(&mut self, conn: u64, dir: Direction, msg: Message) -> Action {
        self.message(conn, dir, msg)
            .unwrap_or_else(|| unopened(conn))
    }

    /// `on-messages`: [`on_message`](Self::on_message) on each message in
    /// turn, with the number of sends each made; none after a close (the
    /// connection ends there).
    pub fn on_messages(
        &mut self,
        conn: u64,
        dir: Direction,
        msgs: impl Iterator<Item = Message>,
    ) -> Vec<Outcome> {
        let mut outcomes = Vec::with_capacity(msgs.size_hint().0);
        let Some(connection) = self.open.get_mut(&conn) else {
            let action = unopened(conn);
            return vec![Outcome { action, sent: 0 }];
        };
        for msg in msgs {
            let before = host::sends_so_far();
            let action = self.filter.on_message(connection, dir, msg);
            let closes = matches!(action, Action::Close(_));
            let sent = host::sends_so_far().wrapping_sub(before);
            outcomes.push(Outcome { action, sent });
            if closes {
                break;
            }
        }
        outcomes
    }

    /// `on-timer`, with `conn`'s state. A connection never opened here is
    /// closed with 1011, as in [`on_message`](Self::on_message).
    pub fn on_timer(&mut self, conn: u64) -> Option<CloseFrame> {
        let Some(connection) = self.open.get_mut(&conn) else {
            host::log(
                LogLevel::Warn,
                &format!("timer of connection {conn}, never opened on this instance: closing it"),
            );
            return Some(CloseFrame {
                code: 1011,
                reason: "filter has no state for this connection".into(),
            });
        };
        self.filter.on_timer(connection)
    }

    /// The filter's action, or `None` when `conn` is not open here.
    fn message(&mut self, conn: u64, dir: Direction, msg: Message) -> Option<Action> {
        let connection = self.open.get_mut(&conn)?;
        Some(self.filter.on_message(connection, dir, msg))
    }

    /// `on-close`: hands `conn`'s state back to the filter. A connection
    /// not open here (it opened on an instance since replaced) has nothing
    /// to close.
    pub fn on_close(&mut self, conn: u64) {
        if let Some(connection) = self.open.remove(&conn) {
            self.filter.on_close(connection);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the calls it gets; its per-connection state is the id and
    /// the number of messages seen.
    #[derive(Default)]
    struct Recorder {
        calls: Vec<String>,
    }

    impl Filter for Recorder {
        type Connection = (u64, u32);

        fn configure(_config: &str) -> Result<Self, String> {
            Ok(Recorder::default())
        }
        fn on_open(&mut self, conn: u64, head: &RequestHead) -> (u64, u32) {
            self.calls.push(format!("open {conn} {}", head.path));
            (conn, 0)
        }
        /// Drops every message; closes on the text `bye`.
        fn on_message(&mut self, state: &mut (u64, u32), _: Direction, msg: Message) -> Action {
            state.1 += 1;
            self.calls.push(format!("message {} #{}", state.0, state.1));
            match msg {
                Message::Text(text) if text == "bye" => Action::Close(CloseFrame {
                    code: 1000,
                    reason: String::new(),
                }),
                _ => Action::Drop,
            }
        }
        fn on_close(&mut self, (conn, seen): (u64, u32)) {
            self.calls.push(format!("close {conn} after {seen}"));
        }
    }

    fn head(path: &str) -> RequestHead {
        RequestHead {
            method: "GET".into(),
            path: path.into(),
            query: String::new(),
            headers: String::new(),
            client_ip: "127.0.0.1".into(),
            client_port: 1,
            listener: "127.0.0.1:80".into(),
            tls: false,
            sni: None,
        }
    }

    fn message(connections: &mut Connections<Recorder>, conn: u64) -> Option<Action> {
        let msg = Message::Text("hi".into());
        connections.message(conn, Direction::ClientToUpstream, msg)
    }

    #[test]
    fn each_connection_keeps_its_own_state_from_open_to_close() {
        let mut connections = Connections::new(Recorder::default());
        connections.on_open(1, &head("/a"));
        connections.on_open(2, &head("/b"));
        assert!(matches!(message(&mut connections, 1), Some(Action::Drop)));
        assert!(message(&mut connections, 2).is_some());
        assert!(message(&mut connections, 1).is_some());
        connections.on_close(1);
        assert!(connections.open.contains_key(&2));
        assert!(!connections.open.contains_key(&1));
        assert_eq!(
            connections.filter.calls,
            [
                "open 1 /a",
                "open 2 /b",
                "message 1 #1",
                "message 2 #1",
                "message 1 #2",
                "close 1 after 2",
            ]
        );
    }

    #[test]
    fn messages_and_closes_of_unopened_connections_reach_no_filter() {
        let mut connections = Connections::new(Recorder::default());
        assert!(message(&mut connections, 9).is_none());
        connections.on_close(9);
        // A closed connection is unopened again.
        connections.on_open(3, &head("/"));
        connections.on_close(3);
        assert!(message(&mut connections, 3).is_none());
        assert_eq!(connections.filter.calls, ["open 3 /", "close 3 after 0"]);
    }

    #[test]
    fn a_batch_is_each_message_in_turn_and_stops_at_a_close() {
        let mut connections = Connections::new(Recorder::default());
        connections.on_open(5, &head("/"));
        let mut packed = Vec::new();
        for (text, payload) in [(1, &b"a"[..]), (0, b"\xff"), (1, b"bye"), (1, b"never")] {
            let header = (payload.len() as u32) << 1 | text;
            packed.extend_from_slice(&header.to_le_bytes());
            packed.extend_from_slice(payload);
        }
        let batch = unpack(&packed);
        let outcomes = connections.on_messages(5, Direction::ClientToUpstream, batch);
        let actions: Vec<_> = outcomes.iter().map(|o| (&o.action, o.sent)).collect();
        let bye = Action::Close(CloseFrame {
            code: 1000,
            reason: String::new(),
        });
        assert_eq!(actions, [(&Action::Drop, 0), (&Action::Drop, 0), (&bye, 0)]);
        assert_eq!(
            connections.filter.calls,
            ["open 5 /", "message 5 #1", "message 5 #2", "message 5 #3"]
        );
    }

    #[test]
    fn opening_an_open_connection_again_closes_its_old_state_first() {
        let mut connections = Connections::new(Recorder::default());
        connections.on_open(4, &head("/old"));
        assert!(message(&mut connections, 4).is_some());
        connections.on_open(4, &head("/new"));
        assert!(message(&mut connections, 4).is_some());
        assert_eq!(
            connections.filter.calls,
            [
                "open 4 /old",
                "message 4 #1",
                "close 4 after 1",
                "open 4 /new",
                "message 4 #1",
            ]
        );
    }
}
