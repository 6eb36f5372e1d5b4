//! What a filter says on its own during a call (`host.send`,
//! `host.set-timer`, `host.cancel-timer`): collected in the store while the
//! call runs and handed back to the caller with its result, so that the
//! frame relay queues the messages on the connection and arms the timer.
//!
//! Filter instances are shared by a thread's connections, so what is said
//! belongs to the connection the running call is for; outside a filter call
//! for a connection (`configure`, the other roles) there is nobody to talk
//! to and sends are refused.
//!
//! Per message the empty case costs two swaps of this struct and no
//! allocation: `sent` allocates only when a filter sends.

use crate::bindings::{Direction, Message, SendError};

/// The longest timer a filter may ask for (a longer one waits this long):
/// the SDK's, so that its test host agrees.
pub use wasp_sdk::MAX_TIMER_MS;

/// How much a filter may send in one call, as the relay sees its peers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendLimits {
    /// Largest message: the location's `max_message_size`.
    pub max_message: usize,
    /// Payload bytes each peer may still be sent, indexed by direction of
    /// travel (0: to the upstream, 1: to the client).
    pub room: [usize; 2],
}

/// A message a filter sent: `dir` is the way it travels
/// (`UpstreamToClient`: to the client).
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub dir: Direction,
    pub message: Message,
}

/// What a filter asked of its timer in a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerRequest {
    /// Call `on-timer` this many milliseconds from now.
    After(u64),
    /// No timer.
    Cancel,
}

/// What the filters of one connection said during their calls.
#[derive(Debug, Default)]
pub struct Speech {
    /// A filter call for a connection runs (sends are accepted).
    active: bool,
    pub limits: SendLimits,
    /// Messages sent, in order.
    pub sent: Vec<Outgoing>,
    /// Payload bytes of `sent` per direction.
    used: [usize; 2],
    /// The last timer request of the call that ran; the caller takes it
    /// after each filter's call (a timer is per filter).
    pub timer: Option<TimerRequest>,
}

impl Speech {
    /// A connection's speech, with what its peers can take.
    pub fn new(limits: SendLimits) -> Self {
        Speech {
            limits,
            ..Speech::default()
        }
    }

    /// Messages sent since the last take.
    pub fn take_sent(&mut self) -> Vec<Outgoing> {
        self.used = [0; 2];
        std::mem::take(&mut self.sent)
    }

    /// Forgets the messages sent after the first `kept`.
    pub(crate) fn unsay(&mut self, kept: usize) {
        for Outgoing { dir, message } in self.sent.drain(kept..) {
            self.used[index(dir)] -= match message {
                Message::Text(text) => text.len(),
                Message::Binary(data) => data.len(),
            };
        }
    }

    pub(crate) fn set_active(&mut self, active: bool) {
        self.active = active;
    }

    /// `host.send`.
    pub(crate) fn send(&mut self, dir: Direction, message: Message) -> Result<(), SendError> {
        if !self.active {
            return Err(SendError::NoConnection);
        }
        let len = match &message {
            Message::Text(text) => text.len(),
            Message::Binary(data) => data.len(),
        };
        if len > self.limits.max_message {
            return Err(SendError::TooLarge(len.try_into().unwrap_or(u32::MAX)));
        }
        let way = index(dir);
        if self.used[way] + len > self.limits.room[way] {
            return Err(SendError::PeerBusy);
        }
        self.used[way] += len;
        self.sent.push(Outgoing { dir, message });
        Ok(())
    }

    /// `host.set-timer` / `host.cancel-timer`.
    pub(crate) fn timer(&mut self, request: TimerRequest) {
        if self.active {
            self.timer = Some(match request {
                TimerRequest::After(ms) => TimerRequest::After(ms.min(MAX_TIMER_MS)),
                cancel => cancel,
            });
        }
    }
}

fn index(dir: Direction) -> usize {
    match dir {
        Direction::ClientToUpstream => 0,
        Direction::UpstreamToClient => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(len: usize) -> Message {
        Message::Text("x".repeat(len))
    }

    #[test]
    fn sends_obey_the_message_size_and_each_peers_room() {
        let mut speech = Speech::new(SendLimits {
            max_message: 10,
            room: [10, 4],
        });
        let to_client = Direction::UpstreamToClient;
        assert_eq!(
            speech.send(to_client, text(1)),
            Err(SendError::NoConnection)
        );
        speech.set_active(true);
        assert_eq!(
            speech.send(to_client, text(11)),
            Err(SendError::TooLarge(11))
        );
        assert_eq!(speech.send(to_client, text(3)), Ok(()));
        assert_eq!(speech.send(to_client, text(2)), Err(SendError::PeerBusy));
        assert_eq!(speech.send(Direction::ClientToUpstream, text(10)), Ok(()));
        assert_eq!(speech.take_sent().len(), 2);
        // The room is the caller's to renew; what was sent counted against it.
        assert_eq!(speech.send(to_client, text(4)), Ok(()));
    }

    #[test]
    fn timers_are_cut_to_a_day_and_ignored_outside_a_call() {
        let mut speech = Speech::default();
        speech.timer(TimerRequest::After(5));
        assert_eq!(speech.timer, None);
        speech.set_active(true);
        speech.timer(TimerRequest::After(u64::MAX));
        assert_eq!(speech.timer, Some(TimerRequest::After(MAX_TIMER_MS)));
        speech.timer(TimerRequest::Cancel);
        assert_eq!(speech.timer, Some(TimerRequest::Cancel));
    }
}
