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
    self, Action, CallError, FilterPool, Message, Opened, Outcome, Outgoing, Packed, RequestHead,
    SendLimits, Speech, TimerRequest,
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
    /// For each message of `speech.sent`, which message of the batch being
    /// run it was sent while handling.
    sent_after: Vec<usize>,
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
            sent_after: Vec::new(),
            wake_at: None,
        }
    }

    /// Reports every call that overran its CPU deadline on a message of this
    /// connection to `bans`, as `client`'s.
    pub fn reporting_overruns(mut self, bans: &'a CpuBans, client: IpAddr) -> Self {
        self.overruns = Some((bans, client));
        self
    }

    /// Runs the chain on the messages that arrived together (`batch`): an
    /// action per message (`Replace` carrying the final message), up to
    /// the first that closes the connection.
    ///
    /// Each filter gets the messages the filters before it passed on, in
    /// one call, as `on-messages` (`on-message` when there is one): the
    /// actions are those of running the chain on each message in turn.
    fn run(&mut self, dir: plugins::Direction, batch: Packed) -> Vec<Action> {
        let count = batch.len();
        let mut actions: Vec<Action> = (0..count).map(|_| Action::Forward).collect();
        // Allocated at the first replacement.
        let mut replacements: Vec<Option<Message>> = Vec::new();
        let mut closed = count;
        let mut flight = Flight {
            indices: (0..count).collect(),
            batch,
        };
        let mut timers = false;
        for link in 0..self.links.len() {
            if flight.batch.is_empty() {
                break;
            }
            let (decided, set_timer) = self.link_actions(link, dir, &flight);
            timers |= set_timer;
            if decided.len() == flight.indices.len()
                && decided.iter().all(|a| matches!(a, Action::Forward))
            {
                continue;
            }
            let mut next = Flight::default();
            let passed = flight.indices.iter().zip(flight.batch.iter());
            for ((&index, (text, payload)), action) in passed.zip(decided) {
                match action {
                    Action::Forward => next.push(index, text, payload),
                    Action::Replace(replacement) => {
                        next.indices.push(index);
                        next.batch.push_message(&replacement);
                        replacements.resize_with(count, || None);
                        replacements[index] = Some(replacement);
                    }
                    Action::Drop => actions[index] = Action::Drop,
                    close @ Action::Close(_) => {
                        actions[index] = close;
                        closed = index + 1;
                        break;
                    }
                }
            }
            flight = next;
        }
        if timers {
            self.rearm();
        }
        if !replacements.is_empty() {
            for index in flight.indices {
                if let Some(message) = replacements[index].take() {
                    actions[index] = Action::Replace(message);
                }
            }
        }
        actions.truncate(closed);
        actions
    }

    /// What filter `link` does with the messages in `flight`: an action
    /// each, up to a close (a failed call becomes the filter's failure
    /// policy: forward, or close with 1011); true when it set its timer.
    fn link_actions(
        &mut self,
        link: usize,
        dir: plugins::Direction,
        flight: &Flight,
    ) -> (Vec<Action>, bool) {
        let conn = self.conn;
        let link_ = &mut self.links[link];
        let result = link_.on_messages(conn, &self.head, dir, &flight.batch, &mut self.speech);
        let mut timers = link_.take_timer(&mut self.speech);
        let first = flight.indices[0];
        let failed = match result {
            Ok(outcomes) => {
                for (outcome, &index) in outcomes.iter().zip(&flight.indices) {
                    let sent = outcome.sent as usize;
                    self.sent_after.extend(std::iter::repeat_n(index, sent));
                }
                self.attribute_rest(first);
                let actions = outcomes.into_iter().map(|outcome| outcome.action);
                return (actions.collect(), timers);
            }
            Err(failed) => failed,
        };
        self.attribute_rest(first);
        let replay = flight.batch.len() > 1
            && matches!(&failed, Some(error) if !matches!(error, CallError::Unavailable(_)));
        if !replay {
            let actions = match self.failed(link, failed.as_ref()) {
                close @ Action::Close(_) => vec![close],
                _ => flight.indices.iter().map(|_| Action::Forward).collect(),
            };
            return (actions, timers);
        }
        // Which message failed the call is unknown: each goes again on its
        // own (on a fresh instance), so the failure falls on its message.
        let mut actions = Vec::with_capacity(flight.batch.len());
        for (position, &index) in flight.indices.iter().enumerate() {
            let message = flight.batch.message(position);
            let link_ = &mut self.links[link];
            let result = link_.on_message(conn, &self.head, dir, &message, &mut self.speech);
            timers |= link_.take_timer(&mut self.speech);
            self.attribute_rest(index);
            let action = result.unwrap_or_else(|failed| self.failed(link, failed.as_ref()));
            let closes = matches!(action, Action::Close(_));
            actions.push(action);
            if closes {
                break;
            }
        }
        (actions, timers)
    }

    /// The action for a message whose call to filter `link` failed
    /// (`None`: it has no instance): forwarded when the filter fails open,
    /// else a 1011 close. An overrun is reported.
    fn failed(&mut self, link: usize, error: Option<&CallError>) -> Action {
        if let (Some(CallError::Timeout), Some((bans, client))) = (error, self.overruns) {
            bans.overran(client, Instant::now());
        }
        let slot = self.links[link].slot;
        if !slot.fail_open {
            return Action::Close(filter_failed(self.conn, slot));
        }
        tracing::warn!(
            conn = self.conn,
            filter = &*slot.name,
            "filter failed (fail-open): message forwarded unchanged"
        );
        Action::Forward
    }

    /// What the filters sent and has no message yet went out while
    /// handling message `index`.
    fn attribute_rest(&mut self, index: usize) {
        let unattributed = self.speech.sent.len().saturating_sub(self.sent_after.len());
        self.sent_after
            .extend(std::iter::repeat_n(index, unattributed));
        self.sent_after.truncate(self.speech.sent.len());
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

    fn inspect(&mut self, dir: Direction, messages: &[Payload<'_>], verdicts: &mut Vec<Verdict>) {
        let bytes = messages.iter().map(|m| match m {
            Payload::Text(text) => text.len(),
            Payload::Binary(data) => data.len(),
        });
        let mut batch = Packed::with_capacity(messages.len(), bytes.sum());
        for message in messages {
            match message {
                Payload::Text(text) => batch.push(true, text.as_bytes()),
                Payload::Binary(data) => batch.push(false, data),
            }
        }
        let actions = self.run(wit_direction(dir), batch);
        verdicts.extend(actions.into_iter().map(|action| match action {
            Action::Forward => Verdict::Forward,
            Action::Replace(Message::Text(text)) => Verdict::Replace(Replacement::Text(text)),
            Action::Replace(Message::Binary(data)) => Verdict::Replace(Replacement::Binary(data)),
            Action::Drop => Verdict::Drop,
            Action::Close(frame) => Verdict::Close(CloseFrame {
                code: frame.code,
                reason: frame.reason,
            }),
        }));
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
        // Sends made outside a batch (`on-open`, `on-timer`) have no message.
        self.attribute_rest(0);
        let after = std::mem::take(&mut self.sent_after);
        let mut sent: Vec<_> = after.into_iter().zip(self.speech.take_sent()).collect();
        // Stable: per message, each filter's sends in chain order.
        sent.sort_by_key(|(after, _)| *after);
        sent.into_iter()
            .map(|(after, Outgoing { dir, message })| Sent {
                after,
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

/// The messages of a batch still travelling down the chain, with their
/// indices in the batch.
#[derive(Default)]
struct Flight {
    indices: Vec<usize>,
    batch: Packed,
}

impl Flight {
    fn push(&mut self, index: usize, text: bool, payload: &[u8]) {
        self.indices.push(index);
        self.batch.push(text, payload);
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

    /// The filter's outcomes for `batch` (`on-message` when it holds one
    /// message, `on-messages` otherwise: a list call costs more than a
    /// plain one until it carries two, in `wasp-plugin-bench`);
    /// `Err(None)` when it has no instance.
    fn on_messages(
        &mut self,
        conn: u64,
        head: &RequestHead,
        dir: plugins::Direction,
        batch: &Packed,
        speech: &mut Speech,
    ) -> Result<Vec<Outcome>, Option<CallError>> {
        if batch.len() == 1 {
            let said = speech.sent.len();
            let action = self.on_message(conn, head, dir, &batch.message(0), speech)?;
            let sent = u32::try_from(speech.sent.len() - said).unwrap_or(u32::MAX);
            return Ok(vec![Outcome { action, sent }]);
        }
        if !self.follow_reload(conn) {
            return Err(None);
        }
        let result =
            self.pool
                .on_messages_speaking(&mut self.opened, conn, head, dir, batch, speech);
        self.note(result)
    }

    /// The filter's action on one message; `Err(None)` when it has no
    /// instance.
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
