//! permessage-deflate (RFC 7692) on the frame relay: what each leg
//! negotiated ([`Negotiated`], made by `offer.rs` from the handshake
//! headers), inflating a compressed message before the filters and
//! deflating one the relay re-encodes after them.
//!
//! Memory: wasp asks both peers for no context takeover on what they send
//! it (`client_no_context_takeover` in its answer to the client,
//! `server_no_context_takeover` in its offer to the upstream) and never
//! takes its own context over, so every message is (de)compressed on its
//! own. The deflate and inflate streams are then per worker thread and
//! reset per message: an open connection, idle or busy, holds no zlib state
//! (with takeover each direction would keep a 32 KiB window and the zlib
//! state, about 300 KiB per connection, for its whole life).
//!
//! Forwarding a compressed message as it came (no re-deflate) is correct
//! when the receiver can inflate it alone: the sender reset its context
//! for this message (no context takeover, required above), so the bytes
//! refer to nothing before them whatever the receiver's window holds; and
//! the sender's window is no larger than the receiver accepts for that
//! direction. [`Negotiated::forward`] checks exactly that.
//!
//! The codec is zlib's raw deflate (flate2 on the zlib-rs backend, whose
//! window bits are settable; miniz_oxide's are not). zlib refuses a raw
//! deflate window of 8 bits (it would use 9: a 512-byte distance a peer
//! with a 256-byte window rejects), so towards a peer that allows only 8
//! bits the relay sends stored (uncompressed) deflate blocks.

mod offer;

pub use offer::{answer_client, upstream_answer, upstream_offer};

use super::wire::{self, Violation};
use crate::direction::Direction;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use std::cell::RefCell;
use tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode;

/// What RFC 7692 §7.2.1 removes from the end of every compressed message.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// How much an inflated message grows at a time.
const GROW: usize = 16 << 10;

/// A per-thread buffer that grew past this is given back after use.
const KEEP_CAPACITY: usize = 256 << 10;

/// permessage-deflate as one leg negotiated it, with no context takeover
/// either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegDeflate {
    /// The largest window (bits, 8..=15) the peer compresses with.
    pub peer_window: u8,
    /// The largest window the peer accepts from the relay.
    pub relay_window: u8,
}

/// What each leg of a relayed WebSocket negotiated (`None`: no compression).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Negotiated {
    pub client: Option<LegDeflate>,
    pub upstream: Option<LegDeflate>,
}

impl Negotiated {
    /// The leg a message travelling `dir` comes from.
    fn from(&self, dir: Direction) -> Option<LegDeflate> {
        match dir {
            Direction::ClientToUpstream => self.client,
            Direction::UpstreamToClient => self.upstream,
        }
    }

    /// The leg a message travelling `dir` goes to.
    fn to(&self, dir: Direction) -> Option<LegDeflate> {
        self.from(dir.reverse())
    }

    /// Whether a frame travelling `dir` may have RSV1 set.
    pub fn compressed_from(&self, dir: Direction) -> bool {
        self.from(dir).is_some()
    }

    /// The message `compressed` (a whole message's payload, unmasked)
    /// inflated; over `max` bytes is [`Violation::TooBig`] (a zip bomb ends
    /// there, having allocated at most `max` bytes).
    pub fn inflate(&self, compressed: &[u8], max: usize) -> Result<Vec<u8>, Violation> {
        INFLATE.with_borrow_mut(|inflater| {
            inflater.reset(false);
            let mut out =
                Vec::with_capacity(compressed.len().saturating_mul(2).max(64).min(max + 1));
            for input in [compressed, &TAIL[..]] {
                if inflate_into(inflater, input, &mut out, max)? == Status::StreamEnd {
                    break;
                }
            }
            Ok(out)
        })
    }

    /// Appends a message travelling `dir` that arrived compressed and that
    /// every filter forwarded (`frames`: as it came, `plain`: inflated):
    /// its own frames when the receiving peer can inflate them (see the
    /// module comment), else re-encoded for that peer.
    pub fn forward(
        &self,
        dir: Direction,
        opcode: OpCode,
        plain: &[u8],
        frames: &[u8],
        out: &mut Vec<u8>,
    ) {
        match (self.from(dir), self.to(dir)) {
            (Some(from), Some(to)) if from.peer_window <= to.relay_window => {
                out.extend_from_slice(frames);
            }
            _ => self.encode(dir, opcode, plain, out),
        }
    }

    /// Appends one frame carrying `payload` travelling `dir`: compressed
    /// when the receiving leg negotiated deflate, masked towards a server.
    pub fn encode(&self, dir: Direction, opcode: OpCode, payload: &[u8], out: &mut Vec<u8>) {
        let masked = dir == Direction::ClientToUpstream;
        let Some(to) = self.to(dir) else {
            wire::encode(out, opcode, payload, masked);
            return;
        };
        DEFLATE.with_borrow_mut(|deflate| {
            let compressed = deflate.compress(payload, to.relay_window);
            wire::encode_compressed(out, opcode, compressed, masked);
            if deflate.out.capacity() > KEEP_CAPACITY {
                deflate.out = Vec::new();
            }
        });
    }
}

/// Feeds all of `input` to `inflater`, appending to `out` (at most `max`).
fn inflate_into(
    inflater: &mut Decompress,
    mut input: &[u8],
    out: &mut Vec<u8>,
    max: usize,
) -> Result<Status, Violation> {
    loop {
        if out.len() == out.capacity() {
            if out.len() > max {
                return Err(Violation::TooBig);
            }
            // One byte past `max` tells a message over it.
            out.reserve((max + 1 - out.len()).min(GROW));
        }
        let (before_in, before_out) = (inflater.total_in(), out.len());
        let status = inflater
            .decompress_vec(input, out, FlushDecompress::Sync)
            .map_err(|_| Violation::Protocol("invalid deflate data"))?;
        if out.len() > max {
            return Err(Violation::TooBig);
        }
        input = &input[(inflater.total_in() - before_in) as usize..];
        let stalled = out.len() == before_out && inflater.total_in() == before_in;
        match status {
            Status::StreamEnd => return Ok(status),
            // All in, and room left that zlib did not fill: all out.
            _ if input.is_empty() && out.len() < out.capacity() => return Ok(status),
            _ if stalled && out.len() < out.capacity() => {
                return Err(Violation::Protocol("invalid deflate data"));
            }
            _ => {}
        }
    }
}

/// One worker thread's deflate streams, one per window size in use
/// (index: bits - 8; 8 bits is stored blocks, see the module comment).
struct Deflater {
    streams: [Option<Compress>; 8],
    /// The last compressed message.
    out: Vec<u8>,
}

impl Deflater {
    /// `payload` compressed on its own with at most `window` bits, without
    /// the final `TAIL`.
    fn compress(&mut self, payload: &[u8], window: u8) -> &[u8] {
        let window = window.clamp(8, 15);
        let stream = self.streams[usize::from(window - 8)].get_or_insert_with(|| {
            if window == 8 {
                Compress::new(Compression::none(), false)
            } else {
                Compress::new_with_window_bits(Compression::fast(), false, window)
            }
        });
        stream.reset();
        self.out.clear();
        self.out.reserve(payload.len() / 2 + 64);
        let mut input = payload;
        loop {
            let before = stream.total_in();
            stream
                .compress_vec(input, &mut self.out, FlushCompress::Sync)
                .expect("deflating into a Vec with room cannot fail");
            input = &input[(stream.total_in() - before) as usize..];
            // A sync flush ends with the empty stored block `TAIL`; room
            // left after it means zlib had nothing more to write.
            if input.is_empty() && self.out.len() < self.out.capacity() {
                break;
            }
            self.out.reserve(self.out.capacity().max(64));
        }
        debug_assert!(self.out.ends_with(&TAIL));
        let len = self.out.len().saturating_sub(TAIL.len());
        &self.out[..len]
    }
}

thread_local! {
    /// Reset per message: a 15-bit window inflates what any smaller one made.
    static INFLATE: RefCell<Decompress> = RefCell::new(Decompress::new_with_window_bits(false, 15));
    static DEFLATE: RefCell<Deflater> = RefCell::new(Deflater {
        streams: Default::default(),
        out: Vec::new(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::Data;

    const BOTH: Negotiated = Negotiated {
        client: Some(LegDeflate {
            peer_window: 15,
            relay_window: 15,
        }),
        upstream: Some(LegDeflate {
            peer_window: 15,
            relay_window: 15,
        }),
    };

    fn deflate(payload: &[u8], window: u8) -> Vec<u8> {
        DEFLATE.with_borrow_mut(|d| d.compress(payload, window).to_vec())
    }

    #[test]
    fn what_is_deflated_inflates_back_at_every_window() {
        let text = "hello hello hello, permessage-deflate ".repeat(200);
        for window in 8..=15 {
            let compressed = deflate(text.as_bytes(), window);
            assert!(!compressed.ends_with(&TAIL), "window {window}");
            if window > 8 {
                assert!(compressed.len() < text.len() / 4, "window {window}");
            }
            assert_eq!(BOTH.inflate(&compressed, 1 << 20).unwrap(), text.as_bytes());
        }
        assert_eq!(BOTH.inflate(&deflate(b"", 15), 10).unwrap(), b"");
    }

    #[test]
    fn rfc_7692_examples_inflate() {
        // §7.2.3.1 and §7.2.3.3: "Hello" compressed, and in stored blocks.
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(BOTH.inflate(&hello, 5).unwrap(), b"Hello");
        let stored = [
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ];
        assert_eq!(BOTH.inflate(&stored, 100).unwrap(), b"Hello");
        // §7.2.3.4: a final block; what follows it is not read.
        let bfinal = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(BOTH.inflate(&bfinal, 100).unwrap(), b"Hello");
    }

    #[test]
    fn a_zip_bomb_stops_at_the_limit() {
        let bomb = deflate(&vec![0u8; 10 << 20], 15);
        assert!(bomb.len() < 100 << 10, "{}", bomb.len());
        assert_eq!(BOTH.inflate(&bomb, 1 << 20), Err(Violation::TooBig));
        assert_eq!(BOTH.inflate(&bomb, 10 << 20).unwrap().len(), 10 << 20);
        assert_eq!(
            BOTH.inflate(&[0xff, 0xff, 0xff], 100),
            Err(Violation::Protocol("invalid deflate data"))
        );
    }

    #[test]
    fn compressed_frames_pass_as_they_came_only_into_a_window_as_large() {
        let text = OpCode::Data(Data::Text);
        let small = LegDeflate {
            peer_window: 10,
            relay_window: 10,
        };
        let mut out = Vec::new();
        BOTH.forward(
            Direction::UpstreamToClient,
            text,
            b"hi",
            b"FRAMES",
            &mut out,
        );
        assert_eq!(out, b"FRAMES");
        let narrow_client = Negotiated {
            client: Some(small),
            ..BOTH
        };
        out.clear();
        narrow_client.forward(
            Direction::ClientToUpstream,
            text,
            b"hi",
            b"FRAMES",
            &mut out,
        );
        assert_eq!(out, b"FRAMES", "10 bits into 15");
        out.clear();
        narrow_client.forward(
            Direction::UpstreamToClient,
            text,
            b"hi",
            b"FRAMES",
            &mut out,
        );
        assert_ne!(out, b"FRAMES", "15 bits into 10");
        let frame = wire::parse(&out, false, 100).unwrap_err();
        assert_eq!(frame, Violation::Protocol("reserved bits set"));
        let plain_client = Negotiated {
            client: None,
            ..BOTH
        };
        out.clear();
        plain_client.forward(
            Direction::UpstreamToClient,
            text,
            b"hi",
            b"FRAMES",
            &mut out,
        );
        assert_eq!(out, [0x81, 2, b'h', b'i']);
    }
}
