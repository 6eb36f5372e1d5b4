//! A location's filter chain, run on every message of a filtered WebSocket:
//! the [`Inspector`] the frame relay asks.
//!
//! The chain runs in its configured order in both directions. A filter's
//! action decides what the next filter (and in the end the other peer)
//! sees: `forward` it, `replace` it, `drop` it, or `close` the connection,
//! where both peers get the filter's close frame. `drop` and `close` stop the
//! chain.
//!
//! Instances: each filter's instances are shared by the connections of a
//! thread (see `wasp_plugin_runtime::FilterPool`). A call that fails (trap,
//! deadline, memory cap) costs only this connection: a fail-closed filter
//! closes it with 1011, a fail-open one lets the message through as it got
//! it. Either way the thread's instance is replaced, and every other
//! connection it served is opened on the new one (`on-open`) before its next
//! message. If no instance can be made at all, a fail-open filter is skipped
//! until it is reloaded.
//!
//! Overruns: a call that overran its CPU deadline is reported, with the
//! client's address, to [`CpuBans`], which refuses an address whose messages
//! keep doing that.
//!
//! Reloads: a filter's pool sits behind an `ArcSwap` in its [`FilterSlot`].
//! When a reload swaps it, the connection moves to the new version at its
//! next message: `on-close` on the old version, `on-open` on the new one,
//! then the message. Every filter gets `on-close` when relaying ends.
//!
//! Speaking: what the filters send during their calls (`host.send`) is
//! collected in the connection's `Speech` and handed to the relay, which
//! queues it (`relay/frames/outbox.rs`); the relay tells the chain how much
//! each peer can take before each call. Each filter has one timer per
//! connection (`host.set-timer`); the chain's wake-up is the earliest, and
//! at it every filter whose timer is due gets `on-timer` (a failure there
//! is handled as for a message). A timer outlives a move to a new version
//! or instance: it fires there, after `on-open`.

use crate::cpu_bans::CpuBans;
use crate::direction::Direction;
use crate::plugins::{
    self, Action, CallError, FilterPool, Message, Opened, Outgoing, RequestHead, SendLimits,
    Speech, TimerRequest,
};
use crate::relay::frames::{CloseFrame, Inspector, Payload, Replacement, Room, Sent, Verdict};
use arc_swap::ArcSwap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One filter of a location's chain: the pool currently serving it (swapped
/// on reload) and its failure policy.
#[derive(Clone)]
pub struct FilterSlot {
    pub name: Arc<str>,
    pub pool: Arc<ArcSwap<FilterPool>>,
    /// On failure, forward the message unchanged instead of closing with 1011.
    pub fail_open: bool,
}

/// Makes sure every fail-closed filter of `slots` has an instance on this
/// thread; the name of the first that cannot get one. A handshake asks this
/// before the 101, so running out of instances refuses it (503) instead of
/// accepting it and closing it at once.
pub fn unavailable(slots: &[FilterSlot]) -> Option<&str> {
    slots
        .iter()
        .filter(|slot| !slot.fail_open)
        .find(|slot| slot.pool.load().ready().is_err())
        .map(|slot| &*slot.name)
}

/// The chain of one connection.
pub struct FilterChain<'a> {
    conn: u64,
    /// Kept for `on-open` on instances this connection meets later.
    head: RequestHead,
    links: Vec<Link<'a>>,
    /// Where overruns are reported, with the client's address.
    overruns: Option<(&'a CpuBans, IpAddr)>,
    /// What the filters sent and asked during their calls.
    speech: Speech,
    /// The earliest timer of the links.
    wake_at: Option<tokio::time::Instant>,
}

impl<'a> FilterChain<'a> {
    pub fn new(conn: u64, head: RequestHead, slots: &'a [FilterSlot]) -> Self {
        FilterChain {
            conn,
            head,
            links: slots.iter().map(Link::new).collect(),
            overruns: None,
            speech: Speech::default(),
            wake_at: None,
        }
    }

    /// Reports every call that overran its CPU deadline on a message of this
    /// connection to `bans`, as `client`'s.
    pub fn reporting_overruns(mut self, bans: &'a CpuBans, client: IpAddr) -> Self {
        self.overruns = Some((bans, client));
        self
    }

    /// Runs the chain on a message; `Replace` carries the final message.
    fn run(&mut self, dir: plugins::Direction, mut message: Message) -> Action {
        let mut replaced = false;
        let mut timers = false;
        let mut action = None;
        for link in &mut self.links {
            let result = link.on_message(self.conn, &self.head, dir, &message, &mut self.speech);
            timers |= link.take_timer(&mut self.speech);
            let failed = match result {
                Ok(Action::Forward) => continue,
                Ok(Action::Replace(replacement)) => {
                    message = replacement;
                    replaced = true;
                    continue;
                }
                Ok(stop @ (Action::Drop | Action::Close(_))) => {
                    action = Some(stop);
                    break;
                }
                Err(error) => error,
            };
            if let (Some(CallError::Timeout), Some((bans, client))) = (&failed, self.overruns) {
                bans.overran(client, Instant::now());
            }
            if !link.slot.fail_open {
                action = Some(Action::Close(filter_failed(self.conn, link.slot)));
                break;
            }
            tracing::warn!(
                conn = self.conn,
                filter = &*link.slot.name,
                "filter failed (fail-open): message forwarded unchanged"
            );
        }
        if timers {
            self.rearm();
        }
        match action {
            Some(stop) => stop,
            None if replaced => Action::Replace(message),
            None => Action::Forward,
        }
    }

    /// The wake-up is the earliest timer of the links.
    fn rearm(&mut self) {
        self.wake_at = self.links.iter().filter_map(|link| link.timer).min();
    }

    /// `on-timer` on every filter whose timer is due; a close frame to end
    /// the connection with.
    fn timers(&mut self) -> Result<(), plugins::CloseFrame> {
        let now = tokio::time::Instant::now();
        let mut result = Ok(());
        for link in &mut self.links {
            if link.timer.is_none_or(|at| at > now) {
                continue;
            }
            link.timer = None;
            let fired = link.on_timer(self.conn, &self.head, &mut self.speech);
            link.take_timer(&mut self.speech);
            let failed = match fired {
                Ok(None) => continue,
                Ok(Some(frame)) => {
                    result = Err(frame);
                    break;
                }
                Err(error) => error,
            };
            if let (Some(CallError::Timeout), Some((bans, client))) = (&failed, self.overruns) {
                bans.overran(client, Instant::now());
            }
            if !link.slot.fail_open {
                result = Err(filter_failed(self.conn, link.slot));
                break;
            }
            tracing::warn!(
                conn = self.conn,
                filter = &*link.slot.name,
                "filter failed in on-timer (fail-open): connection kept"
            );
        }
        self.rearm();
        result
    }
}

impl Inspector for FilterChain<'_> {
    /// `on-open` on every filter; a fail-closed filter that cannot open
    /// refuses the connection.
    fn open(&mut self) -> Result<(), CloseFrame> {
        for link in &mut self.links {
            let opened = link.open(self.conn, &self.head, &mut self.speech);
            link.take_timer(&mut self.speech);
            if !opened && !link.slot.fail_open {
                let frame = filter_failed(self.conn, link.slot);
                return Err(CloseFrame {
                    code: frame.code,
                    reason: frame.reason,
                });
            }
        }
        self.rearm();
        Ok(())
    }

    fn inspect(&mut self, dir: Direction, message: Payload<'_>) -> Verdict {
        let input = match message {
            Payload::Text(text) => Message::Text(text.to_owned()),
            Payload::Binary(data) => Message::Binary(data.to_vec()),
        };
        match self.run(wit_direction(dir), input) {
            Action::Forward => Verdict::Forward,
            Action::Replace(Message::Text(text)) => Verdict::Replace(Replacement::Text(text)),
            Action::Replace(Message::Binary(data)) => Verdict::Replace(Replacement::Binary(data)),
            Action::Drop => Verdict::Drop,
            Action::Close(frame) => Verdict::Close(CloseFrame {
                code: frame.code,
                reason: frame.reason,
            }),
        }
    }

    fn close(&mut self) {
        for link in &mut self.links {
            link.close(self.conn);
        }
    }

    fn allow_sends(&mut self, room: Room) {
        self.speech.limits = SendLimits {
            max_message: room.max_message,
            room: room.room,
        };
    }

    fn take_sent(&mut self) -> Vec<Sent> {
        if self.speech.sent.is_empty() {
            return Vec::new();
        }
        let sent = self.speech.take_sent().into_iter();
        sent.map(|Outgoing { dir, message }| Sent {
            dir: match dir {
                plugins::Direction::ClientToUpstream => Direction::ClientToUpstream,
                plugins::Direction::UpstreamToClient => Direction::UpstreamToClient,
            },
            message: match message {
                Message::Text(text) => Replacement::Text(text),
                Message::Binary(data) => Replacement::Binary(data),
            },
        })
        .collect()
    }

    fn wake_at(&self) -> Option<tokio::time::Instant> {
        self.wake_at
    }

    fn wake(&mut self) -> Result<(), CloseFrame> {
        self.timers().map_err(|frame| CloseFrame {
            code: frame.code,
            reason: frame.reason,
        })
    }
}

fn wit_direction(dir: Direction) -> plugins::Direction {
    match dir {
        Direction::ClientToUpstream => plugins::Direction::ClientToUpstream,
        Direction::UpstreamToClient => plugins::Direction::UpstreamToClient,
    }
}

/// The close of a fail-closed filter that failed.
fn filter_failed(conn: u64, slot: &FilterSlot) -> plugins::CloseFrame {
    tracing::warn!(
        conn,
        filter = &*slot.name,
        "filter failed (fail-closed): closing with 1011"
    );
    plugins::CloseFrame {
        code: 1011,
        reason: format!("filter {} failed", slot.name),
    }
}

/// One filter of the chain, for one connection.
struct Link<'a> {
    slot: &'a FilterSlot,
    /// The pool this connection uses; the slot holding another one means a
    /// reload.
    pool: Arc<FilterPool>,
    /// Which of the pool's instances this connection was opened on.
    opened: Opened,
    /// No instance could be made: the filter is skipped until it is reloaded.
    unavailable: bool,
    /// When this filter's `on-timer` is due for this connection.
    timer: Option<tokio::time::Instant>,
}

impl<'a> Link<'a> {
    fn new(slot: &'a FilterSlot) -> Self {
        Link {
            slot,
            pool: slot.pool.load_full(),
            opened: Opened::default(),
            unavailable: false,
            timer: None,
        }
    }

    /// `on-open`; false when it failed.
    fn open(&mut self, conn: u64, head: &RequestHead, speech: &mut Speech) -> bool {
        let result = self
            .pool
            .open_speaking(&mut self.opened, conn, head, speech);
        self.note(result).is_ok()
    }

    /// Takes the timer request of this filter's last call; true when there
    /// was one.
    fn take_timer(&mut self, speech: &mut Speech) -> bool {
        let Some(request) = speech.timer.take() else {
            return false;
        };
        self.timer = match request {
            TimerRequest::After(ms) => {
                Some(tokio::time::Instant::now() + Duration::from_millis(ms))
            }
            TimerRequest::Cancel => None,
        };
        true
    }

    fn close(&mut self, conn: u64) {
        self.pool.close(&mut self.opened, conn);
    }

    /// The filter's action; `Err(None)` when it has no instance.
    fn on_message(
        &mut self,
        conn: u64,
        head: &RequestHead,
        dir: plugins::Direction,
        message: &Message,
        speech: &mut Speech,
    ) -> Result<Action, Option<CallError>> {
        if !self.follow_reload(conn) {
            return Err(None);
        }
        let result =
            self.pool
                .on_message_speaking(&mut self.opened, conn, head, dir, message, speech);
        self.note(result)
    }

    /// The filter's `on-timer`; `Err(None)` when it has no instance.
    fn on_timer(
        &mut self,
        conn: u64,
        head: &RequestHead,
        speech: &mut Speech,
    ) -> Result<Option<plugins::CloseFrame>, Option<CallError>> {
        if !self.follow_reload(conn) {
            return Err(None);
        }
        let result = self.pool.on_timer(&mut self.opened, conn, head, speech);
        self.note(result)
    }

    /// Moves to the slot's pool when a reload swapped it (`on-close` on the
    /// old one); false when the filter has no instance to call.
    fn follow_reload(&mut self, conn: u64) -> bool {
        let current = self.slot.pool.load();
        if !Arc::ptr_eq(&current, &self.pool) {
            self.close(conn);
            self.pool = arc_swap::Guard::into_inner(current);
            self.unavailable = false;
        }
        !self.unavailable
    }

    /// Notes a failure to make an instance: the filter is skipped from now.
    fn note<R>(&mut self, result: Result<R, CallError>) -> Result<R, Option<CallError>> {
        if let Err(CallError::Unavailable(_)) = &result {
            self.unavailable = true;
        }
        result.map_err(Some)
    }
}
