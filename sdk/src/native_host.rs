//! The in-memory host behind [`host`](crate::host) in a native build with
//! the `testing` feature: the state a plugin's host calls act on (the store,
//! the clock, the log, what filters sent and their timers), one per thread.
//! [`testing`](crate::testing) drives filters and reads this state for the
//! tests; it sits apart so that `host` depends on it and not on the harness.

use crate::kv_store::Store;
use crate::router_world::wasp::plugin::host::SendError;
use crate::{Direction, KvScope, LogLevel, Message};
use std::cell::RefCell;
use std::collections::BTreeMap;

/// The clock's reading when a [`TestHost`](crate::testing::TestHost) starts: 2023-11-14T22:13:20Z.
pub const START_MS: u64 = 1_700_000_000_000;

/// One line a plugin wrote with [`host::log`](crate::host::log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: LogLevel,
    pub message: String,
}

/// A message a filter sent with [`host::send`](crate::host::send).
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    /// The connection whose call sent it.
    pub conn: u64,
    /// The way it travels: `UpstreamToClient` goes to the client.
    pub dir: Direction,
    pub message: Message,
}

/// wasp's default `max_message_size`, the test host's limit on a send.
pub const MAX_MESSAGE: usize = 1 << 20;

pub(crate) struct State {
    pub(crate) store: Store,
    pub(crate) now_ms: u64,
    pub(crate) logs: Vec<LogLine>,
    /// Whose namespace [`KvScope::Plugin`] is.
    pub(crate) plugin: String,
    /// The connection whose filter call runs: sends and timers act on it.
    pub(crate) speaking: Option<u64>,
    pub(crate) sent: Vec<Sent>,
    /// Payload bytes sent each way in the running call.
    pub(crate) used: [usize; 2],
    /// Largest message, and what each peer can take per call.
    pub(crate) max_message: usize,
    pub(crate) room: usize,
    /// When each connection's timer is due, by the clock.
    pub(crate) timers: BTreeMap<u64, u64>,
}

impl State {
    pub(crate) fn new() -> Self {
        State {
            store: Store::default(),
            now_ms: START_MS,
            logs: Vec::new(),
            plugin: "plugin".into(),
            speaking: None,
            sent: Vec::new(),
            used: [0; 2],
            max_message: MAX_MESSAGE,
            room: MAX_MESSAGE,
            timers: BTreeMap::new(),
        }
    }
}

thread_local! {
    static HOST: RefCell<State> = RefCell::new(State::new());
}

pub(crate) fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    HOST.with(|state| f(&mut state.borrow_mut()))
}

/// The host functions of a native build (see [`crate::host`]).
pub(crate) mod imports {
    use super::*;
    use crate::kv_store::{KvError, Scope};

    fn namespace<R>(
        scope: KvScope,
        f: impl FnOnce(&mut crate::kv_store::Namespace, u64) -> R,
    ) -> R {
        with(|state| {
            let now = state.now_ms;
            let scope = match scope {
                KvScope::Plugin => Scope::Plugin(&state.plugin),
                KvScope::Shared => Scope::Shared,
            };
            f(state.store.namespace(scope), now)
        })
    }

    pub fn log(level: LogLevel, message: &str) {
        let line = LogLine {
            level,
            message: message.to_owned(),
        };
        with(|state| state.logs.push(line));
    }

    pub fn now_ms() -> u64 {
        with(|state| state.now_ms)
    }

    pub fn counter_add(scope: KvScope, key: &str, delta: i64) -> Result<i64, KvError> {
        namespace(scope, |ns, _| ns.counter_add(key, delta))
    }

    pub fn kv_get(scope: KvScope, key: &str) -> Option<String> {
        namespace(scope, |ns, now| ns.get(key, now).map(str::to_owned))
    }

    pub fn kv_set(scope: KvScope, key: &str, value: &str, ttl: Option<u64>) -> Result<(), KvError> {
        namespace(scope, |ns, now| ns.set(key, value, ttl, now))
    }

    pub fn kv_delete(scope: KvScope, key: &str) -> bool {
        namespace(scope, |ns, now| ns.delete(key, now))
    }

    pub fn kv_compare_and_set(
        scope: KvScope,
        key: &str,
        expected: Option<&str>,
        value: Option<&str>,
        ttl: Option<u64>,
    ) -> Result<bool, KvError> {
        namespace(scope, |ns, now| {
            ns.compare_and_set(key, expected, value, ttl, now)
        })
    }

    /// wasp's rules (`Speech` in its runtime): a running filter call for a
    /// connection, a message within `max_message`, each peer's room.
    pub fn send(dir: Direction, msg: &Message) -> Result<(), SendError> {
        with(|state| {
            let conn = state.speaking.ok_or(SendError::NoConnection)?;
            let len = match msg {
                Message::Text(text) => text.len(),
                Message::Binary(data) => data.len(),
            };
            if len > state.max_message {
                return Err(SendError::TooLarge(len.try_into().unwrap_or(u32::MAX)));
            }
            let way = match dir {
                Direction::ClientToUpstream => 0,
                Direction::UpstreamToClient => 1,
            };
            if state.used[way] + len > state.room {
                return Err(SendError::PeerBusy);
            }
            state.used[way] += len;
            state.sent.push(Sent {
                conn,
                dir,
                message: msg.clone(),
            });
            Ok(())
        })
    }

    pub fn set_timer(after_ms: u64) {
        with(|state| {
            if let Some(conn) = state.speaking {
                let due = state.now_ms + after_ms.min(crate::MAX_TIMER_MS);
                state.timers.insert(conn, due);
            }
        });
    }

    pub fn cancel_timer() {
        with(|state| {
            if let Some(conn) = state.speaking {
                state.timers.remove(&conn);
            }
        });
    }
}
