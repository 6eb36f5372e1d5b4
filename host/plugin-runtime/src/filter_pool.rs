//! Filter instances shared by connections: one configured instance of a
//! filter per thread serves every WebSocket relayed on that thread (the
//! proxy-wasm model: a VM per worker, a context per stream, here keyed by
//! the connection id the WIT passes to every call).
//!
//! An instance per connection was tried first and measured: ≈ 0.5 MiB
//! resident per active connection (each instance's touched linear memory)
//! and a hard cap of `instances` connections. Sharing keeps both at the
//! number of threads.
//!
//! Failure stays per connection. A call that traps, overruns its deadline
//! or runs out of memory fails only the connection whose call it was; the
//! thread's instance is dropped, and the next call from any connection gets
//! a fresh one. Each connection remembers which instance it was opened on
//! ([`Opened`]): a connection meeting an instance it was never opened on
//! (after a failure, or when a reload moves it to a new pool) gets
//! `on-open` on it first, so its in-plugin state restarts there. Durable
//! state belongs in the host's key/value store.
//!
//! A filter may speak during its calls (`host.send`, `host.set-timer`):
//! the `_speaking` calls lend the connection's [`Speech`] to the instance's
//! store for the call and take it back after, with what was said.

use crate::bindings::{Action, CloseFrame, Direction, Message, RequestHead, filter};
use crate::error::{CallError, LoadError};
use crate::packed::Packed;
use crate::plugin::Plugin;
use crate::pool::{Live, Pool};
use crate::speech::Speech;
pub use filter::Outcome;
use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use thread_local::ThreadLocal;

/// Names every instance ever made, so a connection can tell whether the
/// instance in front of it is the one it was opened on.
static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(1);

/// One configured instance of a filter, with its name.
struct Current {
    id: u64,
    live: Live<filter::Guest>,
}

/// Which instance of a pool a connection was opened on (none yet, or since
/// it failed). One per connection and filter; starts empty.
#[derive(Debug, Default)]
pub struct Opened(Option<u64>);

/// A filter with its configuration: an instance per thread that uses it.
pub struct FilterPool {
    instances: Pool<filter::Guest>,
    /// The instance of each thread: `None` until first used, and after a
    /// failure until the next call. Only its own thread borrows it, and
    /// filter calls never re-enter the filter, so the borrow never fails.
    threads: ThreadLocal<RefCell<Option<Current>>>,
}

impl FilterPool {
    /// Prepares `plugin`'s filter with `config`, proving the configuration
    /// on a first instance.
    pub fn new(plugin: Arc<Plugin>, config: String) -> Result<Self, LoadError> {
        Ok(FilterPool {
            instances: Pool::new(plugin, config)?,
            threads: ThreadLocal::new(),
        })
    }

    pub fn plugin(&self) -> &Arc<Plugin> {
        self.instances.plugin()
    }

    /// The configuration every instance receives.
    pub fn config(&self) -> &str {
        self.instances.config()
    }

    /// Makes sure this thread has an instance, so a handshake can be refused
    /// (503) before the 101 when none can be made.
    pub fn ready(&self) -> Result<(), CallError> {
        let mut slot = self.thread().borrow_mut();
        self.current(&mut slot).map(|_| ())
    }

    /// Opens `conn` on this thread's instance (`on-open`); the filter
    /// cannot speak (its sends are refused).
    pub fn open(
        &self,
        opened: &mut Opened,
        conn: u64,
        head: &RequestHead,
    ) -> Result<(), CallError> {
        self.open_speaking(opened, conn, head, &mut Speech::default())
    }

    /// [`open`](Self::open), with what the filter says in `speech`.
    pub fn open_speaking(
        &self,
        opened: &mut Opened,
        conn: u64,
        head: &RequestHead,
        speech: &mut Speech,
    ) -> Result<(), CallError> {
        let mut slot = self.thread().borrow_mut();
        let current = self.current(&mut slot)?;
        let result = speaking(&mut current.live, speech, |live| {
            live.call(|guest, store| guest.call_on_open(store, conn, head))
        });
        settle(&mut slot, opened, result)
    }

    /// Runs `on-message` for `conn`, opening it first on an instance it was
    /// not opened on. A failure drops this thread's instance. The filter
    /// cannot speak (its sends are refused).
    pub fn on_message(
        &self,
        opened: &mut Opened,
        conn: u64,
        head: &RequestHead,
        dir: Direction,
        message: &Message,
    ) -> Result<Action, CallError> {
        let mut speech = Speech::default();
        self.on_message_speaking(opened, conn, head, dir, message, &mut speech)
    }

    /// [`on_message`](Self::on_message), with what the filter says (in
    /// `on-open` too, when it runs first) in `speech`.
    pub fn on_message_speaking(
        &self,
        opened: &mut Opened,
        conn: u64,
        head: &RequestHead,
        dir: Direction,
        message: &Message,
        speech: &mut Speech,
    ) -> Result<Action, CallError> {
        let mut slot = self.opened_on(opened, conn, head, speech)?;
        let Some(current) = slot.as_mut() else {
            unreachable!("opened_on keeps the instance of a successful call")
        };
        let result = speaking(&mut current.live, speech, |live| {
            live.call_sized(1, len(message), |guest, store| {
                guest.call_on_message(store, conn, dir, message)
            })
        });
        settle(&mut slot, opened, result)
    }

    /// `on-messages` for `conn`: the messages that arrived together in
    /// `dir`, in one call, opening `conn` first on an instance it was not
    /// opened on. One outcome per message, fewer only after a close; the
    /// first outcome's `sent` also counts what `on-open` sent. The call's
    /// CPU budget is one call's per message. Answers that break the
    /// contract (another number of outcomes, sends not all counted) fail
    /// the call as a trap would.
    pub fn on_messages_speaking(
        &self,
        opened: &mut Opened,
        conn: u64,
        head: &RequestHead,
        dir: Direction,
        batch: &Packed,
        speech: &mut Speech,
    ) -> Result<Vec<Outcome>, CallError> {
        let said = speech.sent.len();
        let mut slot = self.opened_on(opened, conn, head, speech)?;
        let opening = speech.sent.len() - said;
        let Some(current) = slot.as_mut() else {
            unreachable!("opened_on keeps the instance of a successful call")
        };
        let count = batch.len();
        let result = speaking(&mut current.live, speech, |live| {
            live.call_sized(count, batch.payload_bytes(), |guest, store| {
                let before = store.data().speech.sent.len();
                let packed = batch.as_bytes();
                let outcomes = guest.call_on_messages(&mut *store, conn, dir, packed)?;
                let sent = store.data().speech.sent.len() - before;
                check_outcomes(&outcomes, count, sent)?;
                Ok(outcomes)
            })
        });
        let mut outcomes = settle(&mut slot, opened, result)?;
        if let Some(first) = outcomes.first_mut() {
            first.sent += u32::try_from(opening).unwrap_or(u32::MAX);
        }
        Ok(outcomes)
    }

    /// Runs `on-timer` for `conn` (the timer it set is due), opening it
    /// first on an instance it was not opened on; `Some` closes the
    /// connection with that frame.
    pub fn on_timer(
        &self,
        opened: &mut Opened,
        conn: u64,
        head: &RequestHead,
        speech: &mut Speech,
    ) -> Result<Option<CloseFrame>, CallError> {
        let mut slot = self.opened_on(opened, conn, head, speech)?;
        let Some(current) = slot.as_mut() else {
            unreachable!("opened_on keeps the instance of a successful call")
        };
        let result = speaking(&mut current.live, speech, |live| {
            live.call(|guest, store| guest.call_on_timer(store, conn))
        });
        settle(&mut slot, opened, result)
    }

    /// This thread's instance, `conn` opened on it (`on-open` now if it
    /// was opened on another one, or none).
    fn opened_on(
        &self,
        opened: &mut Opened,
        conn: u64,
        head: &RequestHead,
        speech: &mut Speech,
    ) -> Result<std::cell::RefMut<'_, Option<Current>>, CallError> {
        let mut slot = self.thread().borrow_mut();
        let current = self.current(&mut slot)?;
        if opened.0 != Some(current.id) {
            opened.0 = None;
            let result = speaking(&mut current.live, speech, |live| {
                live.call(|guest, store| guest.call_on_open(store, conn, head))
            });
            settle(&mut slot, opened, result)?;
        }
        Ok(slot)
    }

    /// `conn` ended: `on-close` on the instance it was opened on, if that
    /// one still lives on this thread.
    pub fn close(&self, opened: &mut Opened, conn: u64) {
        let mut slot = self.thread().borrow_mut();
        let Some(current) = slot.as_mut().filter(|c| opened.0 == Some(c.id)) else {
            opened.0 = None;
            return;
        };
        let result = current
            .live
            .call(|guest, store| guest.call_on_close(store, conn));
        // The connection is gone either way; a failure only costs the instance.
        let _ = settle(&mut slot, opened, result);
        opened.0 = None;
    }

    fn thread(&self) -> &RefCell<Option<Current>> {
        self.threads.get_or(|| RefCell::new(None))
    }

    /// This thread's instance, made now when there is none.
    fn current<'a>(&self, slot: &'a mut Option<Current>) -> Result<&'a mut Current, CallError> {
        if slot.is_none() {
            let live = self.instances.take()?;
            *slot = Some(Current {
                id: NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed),
                live,
            });
        }
        Ok(slot.as_mut().expect("just made"))
    }
}

fn len(message: &Message) -> usize {
    match message {
        Message::Text(text) => text.len(),
        Message::Binary(data) => data.len(),
    }
}

/// `on-messages` answered one outcome per message (fewer only when the
/// last closes) and counted every send it made.
fn check_outcomes(outcomes: &[Outcome], messages: usize, sent: usize) -> wasmtime::Result<()> {
    let closed = matches!(
        outcomes.last(),
        Some(Outcome {
            action: Action::Close(_),
            ..
        })
    );
    if outcomes.len() > messages || (outcomes.len() < messages && !closed) {
        wasmtime::bail!(
            "on-messages broke the contract: {} outcomes for {messages} messages",
            outcomes.len()
        );
    }
    let counted: u64 = outcomes.iter().map(|o| u64::from(o.sent)).sum();
    if counted != sent as u64 {
        wasmtime::bail!(
            "on-messages broke the contract: it counted {counted} sends, but made {sent}"
        );
    }
    Ok(())
}

/// Runs `call` on `live` with `speech` lent to its store: the filter's
/// sends and timer land in `speech`. A call that fails says nothing: what
/// it sent or asked before failing is forgotten.
fn speaking<R>(
    live: &mut Live<filter::Guest>,
    speech: &mut Speech,
    call: impl FnOnce(&mut Live<filter::Guest>) -> Result<R, CallError>,
) -> Result<R, CallError> {
    let (said, timer) = (speech.sent.len(), speech.timer);
    speech.set_active(true);
    std::mem::swap(&mut live.host_state().speech, speech);
    let result = call(live);
    std::mem::swap(&mut live.host_state().speech, speech);
    speech.set_active(false);
    if result.is_err() {
        speech.unsay(said);
        speech.timer = timer;
    }
    result
}

/// After a call on `slot`'s instance: a success marks `opened` as opened on
/// it; a failure drops the instance (it must not be entered again).
fn settle<R>(
    slot: &mut Option<Current>,
    opened: &mut Opened,
    result: Result<R, CallError>,
) -> Result<R, CallError> {
    match &result {
        Ok(_) => opened.0 = slot.as_ref().map(|c| c.id),
        Err(_) => {
            *slot = None;
            opened.0 = None;
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(action: Action, sent: u32) -> Outcome {
        Outcome { action, sent }
    }

    #[test]
    fn on_messages_must_answer_each_message_and_count_every_send() {
        let close = Action::Close(CloseFrame {
            code: 1000,
            reason: String::new(),
        });
        let two = [outcome(Action::Forward, 1), outcome(Action::Drop, 0)];
        assert!(check_outcomes(&two, 2, 1).is_ok());
        // Fewer outcomes only when the last closes.
        assert!(check_outcomes(&two, 3, 1).is_err());
        assert!(check_outcomes(&[outcome(close, 0)], 3, 0).is_ok());
        // More outcomes than messages, or sends left uncounted.
        assert!(check_outcomes(&two, 1, 1).is_err());
        let breach = check_outcomes(&two, 2, 2).unwrap_err().to_string();
        assert!(breach.contains("counted 1 sends, but made 2"), "{breach}");
    }
}
