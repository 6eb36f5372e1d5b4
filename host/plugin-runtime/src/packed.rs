//! Messages packed for a filter's `on-messages`: one buffer, each message a
//! 4-byte little-endian header (`length << 1`, plus 1 for text) and its
//! bytes. The canonical ABI makes the guest allocate once per list or
//! string a call hands over: a `list<message>` cost ≈ 0.4 µs per message
//! in `wasp-plugin-bench`, one buffer costs one allocation per call.

use crate::bindings::Message;

/// Messages that arrived together, packed; reused from batch to batch.
#[derive(Debug, Default, Clone)]
pub struct Packed {
    buffer: Vec<u8>,
    count: usize,
}

impl Packed {
    /// Room for `messages` messages of `bytes` payload bytes in all.
    pub fn with_capacity(messages: usize, bytes: usize) -> Self {
        Packed {
            buffer: Vec::with_capacity(4 * messages + bytes),
            count: 0,
        }
    }

    /// Appends a message (`text`: valid UTF-8, as the relay checked).
    /// Messages are at most 2 GiB: the relay's `max_message_size` is far
    /// below it.
    pub fn push(&mut self, text: bool, payload: &[u8]) {
        let len = u32::try_from(payload.len()).expect("a message under 2 GiB");
        let header = len << 1 | u32::from(text);
        self.buffer.extend_from_slice(&header.to_le_bytes());
        self.buffer.extend_from_slice(payload);
        self.count += 1;
    }

    /// Appends `message`.
    pub fn push_message(&mut self, message: &Message) {
        match message {
            Message::Text(text) => self.push(true, text.as_bytes()),
            Message::Binary(data) => self.push(false, data),
        }
    }

    pub fn clear(&mut self) {
        self.buffer.clear();
        self.count = 0;
    }

    /// How many messages.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The buffer `on-messages` is handed.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buffer
    }

    /// The messages' payload bytes, headers left out.
    pub fn payload_bytes(&self) -> usize {
        self.buffer.len() - 4 * self.count
    }

    /// The messages in order: whether text, and the payload.
    pub fn iter(&self) -> impl Iterator<Item = (bool, &[u8])> {
        let mut rest = &self.buffer[..];
        std::iter::from_fn(move || {
            let (header, tail) = rest.split_first_chunk::<4>()?;
            let header = u32::from_le_bytes(*header);
            let (payload, tail) = tail.split_at((header >> 1) as usize);
            rest = tail;
            Some((header & 1 == 1, payload))
        })
    }

    /// Message `index` as a WIT message.
    pub fn message(&self, index: usize) -> Message {
        let (text, payload) = self.iter().nth(index).expect("index within the batch");
        if text {
            let text = std::str::from_utf8(payload).expect("text is pushed as UTF-8");
            Message::Text(text.to_owned())
        } else {
            Message::Binary(payload.to_vec())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_come_back_as_they_were_packed() {
        let mut packed = Packed::default();
        packed.push(true, "héllo".as_bytes());
        packed.push(false, &[0, 255]);
        packed.push_message(&Message::Text(String::new()));
        assert_eq!(packed.len(), 3);
        assert_eq!(packed.payload_bytes(), 8);
        let all: Vec<_> = packed.iter().collect();
        assert_eq!(
            all,
            [
                (true, "héllo".as_bytes()),
                (false, &[0, 255][..]),
                (true, &[][..])
            ]
        );
        assert_eq!(packed.message(1), Message::Binary(vec![0, 255]));
        // The SDK reads the same layout: length << 1 | text, little-endian.
        assert_eq!(&packed.as_bytes()[..4], &[13, 0, 0, 0]);
        packed.clear();
        assert!(packed.is_empty() && packed.as_bytes().is_empty());
    }
}
