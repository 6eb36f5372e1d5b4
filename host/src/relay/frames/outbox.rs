//! Messages an [`Inspector`] sends on its own (a filter's `host.send`),
//! and its wake-ups (a filter's `host.set-timer`), carried out by the frame
//! relay.
//!
//! A message sent goes out as a frame of its own (unmasked to the client,
//! masked to the upstream, §5.1), queued with what the peer is owed:
//! - sent while a message travelling the same way is handled: right after
//!   that message's frames (or in its place when it was dropped), in the
//!   same write;
//! - any other (the other way, from `open` or from a wake-up): appended to
//!   what that peer is owed, which the relay writes before it reads on
//!   from the other peer (backpressure, as for relayed bytes).
//!
//! Whole frames only are ever queued, and a fragmented message is held
//! until whole, so a frame sent never lands inside another message.
//!
//! Limits: the same as relayed messages'. A message may be at most
//! `max_message_size` bytes, and the inspector is told before each call
//! how many bytes each peer can still be sent ([`Room`]): what the peer
//! is owed, relayed or sent, may not pass `max_message_size`, so a slow
//! peer holds at most that much for sends; a filter's `send` is refused
//! past it (`peer-busy`) rather than buffering without bound. A peer that
//! takes nothing for `send_timeout` is closed with 1001 as for relayed
//! bytes. Sends are not activity: `idle_timeout` counts the peers' frames.

use super::{CLIENT, Flow, Inspector, Relay, Replacement};
use crate::direction::Direction;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// How much an inspector may send before it is asked again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Room {
    /// Largest message: the location's `max_message_size`.
    pub max_message: usize,
    /// Payload bytes each peer may still be sent, by [`Direction::index`]
    /// of the way they travel.
    pub room: [usize; 2],
}

/// A message an inspector sends on its own, travelling `dir`.
pub struct Sent {
    pub dir: Direction,
    pub message: Replacement,
    /// Which message of the batch being inspected it was sent while
    /// handling (its index; 0 outside `inspect`): it leaves after that one.
    pub after: usize,
}

impl<I: Inspector> Relay<I> {
    /// What each peer can still be sent while a message travelling `dir`
    /// is handled, `out` being the bytes already bound for its receiver in
    /// this write.
    pub(super) fn room(&self, dir: Direction, out: usize) -> Room {
        let owed = |way: Direction| {
            let flow: &Flow = &self.flows[way.index()];
            flow.out.len() + if way == dir { out } else { 0 }
        };
        Room {
            max_message: self.max_message,
            room: Direction::ALL.map(|way| self.max_message.saturating_sub(owed(way))),
        }
    }

    /// Queues what the inspector sent during its last calls: messages
    /// travelling `same.0` onto `same.1` (this write), the others onto what
    /// their peer is owed.
    pub(super) fn queue_sent(&mut self, same: Option<(Direction, &mut Vec<u8>)>) {
        let sent = self.inspector.take_sent();
        self.queue(sent, same);
    }

    /// Queues `sent` as [`queue_sent`](Self::queue_sent) does.
    pub(super) fn queue(
        &mut self,
        sent: impl IntoIterator<Item = Sent>,
        same: Option<(Direction, &mut Vec<u8>)>,
    ) {
        let (same_dir, mut same_out) = match same {
            Some((dir, out)) => (Some(dir), Some(out)),
            None => (None, None),
        };
        for Sent { dir, message, .. } in sent {
            if Some(dir) == same_dir
                && let Some(out) = same_out.as_deref_mut()
            {
                encode(out, dir, &message);
                continue;
            }
            let flow = &mut self.flows[dir.index()];
            encode(&mut flow.out, dir, &message);
            if flow.stalled.is_none() {
                flow.note_progress();
                self.stall_began = true;
            }
        }
    }

    /// Runs the inspector's wake-up if it is due, queueing what it sent;
    /// `Err` when it closes the connection.
    pub(super) fn wake_if_due(&mut self) -> Result<(), super::End> {
        if self
            .inspector
            .wake_at()
            .is_none_or(|at| at > Instant::now())
        {
            return Ok(());
        }
        let room = self.room(CLIENT, 0);
        self.inspector.allow_sends(room);
        let woken = self.inspector.wake();
        self.queue_sent(None);
        woken.map_err(|frame| super::sendable_close(&frame))
    }

    /// `at`, or the inspector's wake-up when that comes first.
    pub(super) fn wake_before(&self, at: Instant) -> Instant {
        self.inspector.wake_at().map_or(at, |wake| wake.min(at))
    }
}

/// Appends `message` as one frame travelling `dir`.
fn encode(out: &mut Vec<u8>, dir: Direction, message: &Replacement) {
    let (opcode, payload) = match message {
        Replacement::Text(text) => (OpCode::Data(Data::Text), text.as_bytes()),
        Replacement::Binary(data) => (OpCode::Data(Data::Binary), data.as_slice()),
    };
    super::wire::encode(out, opcode, payload, dir == CLIENT);
}
