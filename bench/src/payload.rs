//! Messages that carry their own send time, so latency can be measured with several messages in flight on one
//! connection: the first 8 bytes are nanoseconds since a process-wide origin (little-endian), the rest filler.

use std::time::{Duration, Instant};

use tokio_tungstenite::tungstenite::Message;

/// Bytes taken by the timestamp at the start of every payload; the smallest message size.
pub const STAMP_LEN: usize = 8;

/// Stamps and reads message payloads against one origin instant.
#[derive(Debug, Clone)]
pub struct Clock {
    origin: Instant,
    filler: Vec<u8>,
}

impl Clock {
    /// A clock whose messages are `size` bytes long (at least [`STAMP_LEN`]).
    pub fn new(size: usize) -> Self {
        Self {
            origin: Instant::now(),
            filler: vec![b'w'; size.max(STAMP_LEN)],
        }
    }

    /// A binary message stamped with `at`, the time it is (or was scheduled to be) sent.
    pub fn message(&self, at: Instant) -> Message {
        let ns =
            u64::try_from(at.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX);
        let mut payload = self.filler.clone();
        payload[..STAMP_LEN].copy_from_slice(&ns.to_le_bytes());
        Message::binary(payload)
    }

    /// Time from the stamp in `payload` to `now`; `None` when the payload is too short to hold a stamp.
    pub fn latency(&self, payload: &[u8], now: Instant) -> Option<Duration> {
        let stamp = u64::from_le_bytes(payload.get(..STAMP_LEN)?.try_into().ok()?);
        let sent = self.origin + Duration::from_nanos(stamp);
        Some(now.saturating_duration_since(sent))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trips() {
        let clock = Clock::new(64);
        let sent = Instant::now();
        let Message::Binary(payload) = clock.message(sent) else {
            panic!("binary expected");
        };
        assert_eq!(payload.len(), 64);
        let later = sent + Duration::from_micros(250);
        let latency = clock.latency(&payload, later).unwrap();
        assert!(latency.abs_diff(Duration::from_micros(250)) < Duration::from_micros(1));
    }

    #[test]
    fn short_sizes_still_hold_a_stamp_and_short_payloads_are_rejected() {
        let clock = Clock::new(1);
        let Message::Binary(payload) = clock.message(Instant::now()) else {
            panic!("binary expected");
        };
        assert_eq!(payload.len(), STAMP_LEN);
        assert_eq!(clock.latency(b"short", Instant::now()), None);
    }
}
