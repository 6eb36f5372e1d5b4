//! Native tests of a plugin, without wasm or wasp (feature `testing`).
//!
//! In a native build, [`host`](crate::host) calls land in an in-memory host
//! that behaves like wasp's: the same counters and key/value store (the
//! same code, limits and errors, a namespace per plugin and a shared one), a
//! clock that moves only when the test says so, and the log lines the
//! plugin wrote, kept for the test to read. Each thread has its own, and
//! each `#[test]` runs on a thread of its own, so tests do not see each
//! other's state.
//!
//! Filters that speak are tested the same way: what they
//! [`send`](crate::host::send) is kept ([`TestHost::take_sent`]), with
//! wasp's limits ([`TestHost::limit_sends`]), and their timers fire when
//! the test moves the clock with [`TestFilter::advance`].
//!
//! ```
//! use wasp_sdk::testing::{TestFilter, TestHost, head};
//! use wasp_sdk::{Action, Direction, Filter, Message, RequestHead, host};
//!
//! /// Numbers each connection's messages, counting them in the host's kv.
//! struct Count;
//!
//! impl Filter for Count {
//!     type Connection = ();
//!     fn configure(_: &str) -> Result<Self, String> {
//!         Ok(Count)
//!     }
//!     fn on_open(&mut self, _: u64, _: &RequestHead) {}
//!     fn on_message(&mut self, _: &mut (), _: Direction, msg: Message) -> Action {
//!         let n = host::kv().counter_add("messages", 1).unwrap();
//!         match msg {
//!             Message::Text(text) => Action::Replace(Message::Text(format!("{n} {text}"))),
//!             Message::Binary(_) => Action::Forward,
//!         }
//!     }
//! }
//!
//! let host = TestHost::new();
//! let mut filter = TestFilter::<Count>::configure("{}").unwrap();
//! let conn = filter.open(&head("/ws"));
//! assert_eq!(filter.client_text(conn, "hi"), Action::Replace(Message::Text("1 hi".into())));
//! assert_eq!(host.counter("messages"), 1);
//! ```

pub use crate::native_host::{LogLine, MAX_MESSAGE, START_MS, Sent};
use crate::native_host::{State, imports, with};
use crate::{Action, CloseFrame, Direction, Filter, KvScope, Message, RequestHead};

/// The in-memory host of this thread, as the test sees it.
#[derive(Debug)]
pub struct TestHost(());

impl TestHost {
    /// Starts this thread's host afresh: empty store, no log lines, the
    /// clock at [`START_MS`], the plugin named `plugin`.
    #[allow(clippy::new_without_default)]
    pub fn new() -> TestHost {
        with(|state| *state = State::new());
        TestHost(())
    }

    /// Calls made from now on are the plugin `name`'s: its own namespace
    /// (as two plugins, or a plugin reloaded under the same name, see it).
    pub fn act_as(&self, name: &str) {
        with(|state| state.plugin = name.to_owned());
    }

    /// The clock, in milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        with(|state| state.now_ms)
    }

    /// Sets the clock.
    pub fn set_clock(&self, ms: u64) {
        with(|state| state.now_ms = ms);
    }

    /// Moves the clock forward.
    pub fn advance(&self, ms: u64) {
        with(|state| state.now_ms += ms);
    }

    /// The lines logged so far, oldest first.
    pub fn logs(&self) -> Vec<LogLine> {
        with(|state| state.logs.clone())
    }

    /// The lines logged so far, forgetting them.
    pub fn take_logs(&self) -> Vec<LogLine> {
        with(|state| std::mem::take(&mut state.logs))
    }

    /// The plugin's counter `key` (0 when never added to).
    pub fn counter(&self, key: &str) -> i64 {
        imports::counter_add(KvScope::Plugin, key, 0).unwrap_or(0)
    }

    /// The messages filters sent so far, oldest first, forgetting them.
    pub fn take_sent(&self) -> Vec<Sent> {
        with(|state| std::mem::take(&mut state.sent))
    }

    /// In how many milliseconds `conn`'s timer is due (0: overdue); none
    /// when it has none.
    pub fn timer(&self, conn: u64) -> Option<u64> {
        with(|state| {
            let due = *state.timers.get(&conn)?;
            Some(due.saturating_sub(state.now_ms))
        })
    }

    /// Limits sends as wasp does: a message of at most `max_message`
    /// bytes (wasp: the location's `max_message_size`, by default
    /// [`MAX_MESSAGE`]), and at most `room` bytes to each peer per call
    /// (wasp: what a slow peer can still be owed). Over them `send` fails
    /// with `TooLarge` or `PeerBusy`.
    pub fn limit_sends(&self, max_message: usize, room: usize) {
        with(|state| {
            state.max_message = max_message;
            state.room = room;
        });
    }
}

/// A filter driven the way wasp drives it: `configure`, then `on_open`,
/// `on_message` and `on_close` per connection, with each connection's
/// [`Filter::Connection`] state kept between calls as
/// [`export!`](crate::export!) keeps it in wasm.
pub struct TestFilter<F: Filter> {
    connections: crate::connections::Connections<F>,
    next_conn: u64,
}

impl<F: Filter> TestFilter<F> {
    /// Configures the filter with `config` (JSON): the plugin's own error
    /// when it refuses.
    pub fn configure(config: &str) -> Result<Self, String> {
        Ok(TestFilter {
            connections: crate::connections::Connections::new(F::configure(config)?),
            next_conn: 1,
        })
    }

    /// Opens a connection whose handshake was `head`; returns its id.
    pub fn open(&mut self, head: &RequestHead) -> u64 {
        let conn = self.next_conn;
        self.next_conn += 1;
        let connections = &mut self.connections;
        speaking(conn, || connections.on_open(conn, head));
        conn
    }

    /// Passes `msg`, travelling in direction `dir` on `conn`, through the
    /// filter. A connection never opened is closed with 1011, as in wasp.
    pub fn message(&mut self, conn: u64, dir: Direction, msg: Message) -> Action {
        let connections = &mut self.connections;
        speaking(conn, || connections.on_message(conn, dir, msg))
    }

    /// Moves the clock `ms` forward, calling `on_timer` for each timer that
    /// falls due on the way, in the order they fall due (the clock reads
    /// each one's time when it fires, so a timer set again from `on_timer`
    /// fires again if it falls due in the window). A connection `on_timer`
    /// closes is closed (`on_close`); returns those, with their frames.
    pub fn advance(&mut self, ms: u64) -> Vec<(u64, CloseFrame)> {
        let end = with(|state| state.now_ms) + ms;
        let mut closed = Vec::new();
        loop {
            let due = with(|state| {
                let (conn, due) = state
                    .timers
                    .iter()
                    .map(|(&conn, &due)| (conn, due))
                    .filter(|&(_, due)| due <= end)
                    .min_by_key(|&(conn, due)| (due, conn))?;
                state.timers.remove(&conn);
                state.now_ms = state.now_ms.max(due);
                Some(conn)
            });
            let Some(conn) = due else { break };
            let connections = &mut self.connections;
            if let Some(frame) = speaking(conn, || connections.on_timer(conn)) {
                self.close(conn);
                closed.push((conn, frame));
            }
        }
        with(|state| state.now_ms = end);
        closed
    }

    /// A text message from the client on `conn`.
    pub fn client_text(&mut self, conn: u64, text: &str) -> Action {
        self.message(
            conn,
            Direction::ClientToUpstream,
            Message::Text(text.into()),
        )
    }

    /// A text message from the upstream on `conn`.
    pub fn upstream_text(&mut self, conn: u64, text: &str) -> Action {
        self.message(
            conn,
            Direction::UpstreamToClient,
            Message::Text(text.into()),
        )
    }

    /// Closes `conn`: the filter's `on_close` gets its state, and its
    /// timer goes.
    pub fn close(&mut self, conn: u64) {
        let connections = &mut self.connections;
        speaking(conn, || connections.on_close(conn));
        with(|state| state.timers.remove(&conn));
    }

    /// The filter itself, to inspect what it shares between connections.
    pub fn filter(&mut self) -> &mut F {
        self.connections.filter_mut()
    }
}

/// Runs `call` as a filter call for `conn`: sends and timers act on it.
fn speaking<R>(conn: u64, call: impl FnOnce() -> R) -> R {
    with(|state| {
        state.speaking = Some(conn);
        state.used = [0; 2];
    });
    let result = call();
    with(|state| state.speaking = None);
    result
}

/// A handshake request for `target` (a path with an optional `?query`):
/// `GET`, header `host: test`, from 127.0.0.1:40000 to a listener on
/// 127.0.0.1:8000, no TLS. Add headers with [`RequestHead::with_header`].
pub fn head(target: &str) -> RequestHead {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    RequestHead {
        method: "GET".into(),
        path: path.into(),
        query: query.into(),
        headers: "host: test".into(),
        client_ip: "127.0.0.1".into(),
        client_port: 40000,
        listener: "127.0.0.1:8000".into(),
        tls: false,
        sni: None,
    }
}

impl RequestHead {
    /// This head with header `name` set to `value`, replacing any of that
    /// name (the name lower-cased, as wasp sends it).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        let name = name.to_ascii_lowercase();
        let kept: Vec<&str> = self
            .headers
            .lines()
            .filter(|line| line.split(':').next() != Some(name.as_str()))
            .collect();
        self.headers = kept.join("\n");
        if !self.headers.is_empty() {
            self.headers.push('\n');
        }
        self.headers.push_str(&name);
        self.headers.push_str(": ");
        self.headers.push_str(value);
        self
    }

    /// This head as sent by `ip`.
    pub fn with_client(mut self, ip: &str) -> Self {
        self.client_ip = ip.into();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LogLevel;
    use crate::host::{self, KvError, SendError};

    #[test]
    fn the_clock_moves_only_when_told() {
        let test = TestHost::new();
        assert_eq!(host::now_ms(), START_MS);
        test.advance(1_500);
        assert_eq!(host::now_ms(), START_MS + 1_500);
        test.set_clock(7);
        assert_eq!(host::now_ms(), 7);
    }

    #[test]
    fn values_expire_on_the_test_clock() {
        let test = TestHost::new();
        host::kv().set("k", "v", Some(100)).unwrap();
        test.advance(99);
        assert_eq!(host::kv().get("k").as_deref(), Some("v"));
        test.advance(1);
        assert_eq!(host::kv().get("k"), None);
    }

    #[test]
    fn plugins_see_their_own_namespace_and_the_shared_one() {
        let test = TestHost::new();
        test.act_as("a");
        host::kv().set("k", "a's", None).unwrap();
        host::shared_kv().set("k", "everyone's", None).unwrap();
        test.act_as("b");
        assert_eq!(host::kv().get("k"), None);
        assert_eq!(host::shared_kv().get("k").as_deref(), Some("everyone's"));
        let long = "k".repeat(257);
        let error = host::kv().set(&long, "v", None).unwrap_err();
        assert_eq!(error, KvError::KeyTooLong(257));
        assert_eq!(error.to_string(), "key of 257 bytes (at most 256)");
    }

    #[test]
    fn log_lines_are_kept_in_order() {
        let test = TestHost::new();
        host::log(LogLevel::Info, "one");
        host::log(LogLevel::Warn, "two");
        let logs = test.take_logs();
        assert_eq!(logs.len(), 2);
        assert_eq!(logs[1].level, LogLevel::Warn);
        assert_eq!(logs[1].message, "two");
        assert!(test.logs().is_empty());
    }

    /// Says hello on open, echoes to the upstream, ticks every 100 ms and
    /// closes on the third tick.
    struct Ticker;

    impl Filter for Ticker {
        type Connection = u32;
        fn configure(_: &str) -> Result<Self, String> {
            Ok(Ticker)
        }
        fn on_open(&mut self, _: u64, _: &RequestHead) -> u32 {
            host::send_to_client(Message::Text("hello".into())).unwrap();
            host::set_timer(100);
            0
        }
        fn on_message(&mut self, _: &mut u32, _: Direction, msg: Message) -> Action {
            host::send_to_upstream(msg).map_or(Action::Forward, |()| Action::Drop)
        }
        fn on_timer(&mut self, ticks: &mut u32) -> Option<CloseFrame> {
            *ticks += 1;
            if *ticks == 3 {
                return Some(CloseFrame {
                    code: 1001,
                    reason: "bye".into(),
                });
            }
            host::send_to_client(Message::Text(format!("tick {ticks}"))).unwrap();
            host::set_timer(100);
            None
        }
    }

    #[test]
    fn sends_and_timers_act_on_the_connection_whose_call_runs() {
        let test = TestHost::new();
        assert_eq!(
            host::send_to_client(Message::Text("x".into())),
            Err(SendError::NoConnection)
        );
        let mut filter = TestFilter::<Ticker>::configure("{}").unwrap();
        let a = filter.open(&head("/"));
        test.advance(50);
        let b = filter.open(&head("/"));
        let text = |conn, text: &str| Sent {
            conn,
            dir: Direction::UpstreamToClient,
            message: Message::Text(text.into()),
        };
        assert_eq!(test.take_sent(), [text(a, "hello"), text(b, "hello")]);
        assert_eq!((test.timer(a), test.timer(b)), (Some(50), Some(100)));

        assert!(filter.advance(150).is_empty());
        assert_eq!(
            test.take_sent(),
            [text(a, "tick 1"), text(b, "tick 1"), text(a, "tick 2")]
        );
        let closed = filter.advance(100);
        assert_eq!(closed.len(), 1);
        assert_eq!((closed[0].0, closed[0].1.code), (a, 1001));
        assert_eq!(test.timer(a), None);
        assert_eq!(test.take_sent(), [text(b, "tick 2")]);

        test.limit_sends(4, 4);
        assert_eq!(filter.client_text(b, "four"), Action::Drop);
        assert_eq!(filter.client_text(b, "five!"), Action::Forward);
        let sent = test.take_sent();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].dir, Direction::ClientToUpstream);
    }

    #[test]
    fn heads_carry_the_query_and_added_headers() {
        let head = head("/ws/chat?room=1").with_header("Origin", "https://a.example");
        assert_eq!(head.path, "/ws/chat");
        assert_eq!(head.query_param("room"), Some("1"));
        assert_eq!(head.header("origin"), Some("https://a.example"));
        assert_eq!(head.host().as_deref(), Some("test"));
        let moved = head.with_header("Host", "chat.example.com");
        assert_eq!(moved.host().as_deref(), Some("chat.example.com"));
        assert_eq!(moved.headers().count(), 2);
    }
}
