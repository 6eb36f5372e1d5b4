//! The tunnel's frame cursor (`host/src/relay/tunnel.rs`, `FrameCursor`):
//! it reads only frame headers to know where a shutdown close frame may be
//! inserted. A stream of frames is built from the input (any opcode, flags,
//! mask, length in any of its three encodings, minimal or not), cut into
//! chunks at arbitrary points, and fed to the cursor: after each chunk it
//! must say "between frames" exactly when the bytes so far end on a frame
//! boundary. Arbitrary bytes (`junk`) must never make it panic.
#![no_main]

use libfuzzer_sys::{arbitrary, fuzz_target};

// The tunnel compiled from source (the `wasp` crate cannot be built with
// nightly: README.md), with the crate modules it names: the real clock,
// direction, shutdown and relay endpoint, and a counter that counts nothing.
#[allow(dead_code)]
#[path = "../../host/src/clock.rs"]
mod clock;
#[allow(dead_code)]
#[path = "../../host/src/direction.rs"]
mod direction;
#[allow(dead_code)]
#[path = "../../host/src/shutdown.rs"]
mod shutdown;
#[allow(dead_code)]
mod metrics {
    pub struct LocationCounters;
    impl LocationCounters {
        pub fn message(&self, _: crate::direction::Direction, _: usize) {}
        pub fn bytes(&self, _: crate::direction::Direction, _: u64) {}
        pub fn held(&self) -> Held {
            Held
        }
    }
    pub struct Held;
    impl Held {
        pub fn set(&mut self, _: usize) {}
    }
}
// At the top: a `#[path]` inside an inline `mod relay` is resolved through
// `fuzz_targets/relay/`, which does not exist, so `..` cannot climb out of it.
#[allow(dead_code)]
#[path = "../../host/src/relay/endpoint.rs"]
mod relay_endpoint;
#[allow(dead_code)]
#[path = "../../host/src/relay/tunnel.rs"]
mod relay_tunnel;
mod relay {
    pub(crate) use crate::relay_endpoint as endpoint;
    pub(crate) use crate::relay_tunnel as tunnel;
}
use relay::tunnel;

#[derive(Debug, arbitrary::Arbitrary)]
struct FrameSpec {
    first: u8,
    masked: bool,
    /// 0: 7-bit length, 1: 16-bit, 2: 64-bit (lengths over 125 always long).
    encoding: u8,
    payload: Vec<u8>,
}

#[derive(Debug, arbitrary::Arbitrary)]
struct Input {
    frames: Vec<FrameSpec>,
    /// Chunk lengths; the rest of the stream is the last chunk.
    cuts: Vec<u16>,
    junk: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let mut stream = Vec::new();
    let mut boundaries = vec![0];
    for frame in &input.frames {
        let len = frame.payload.len();
        stream.push(frame.first);
        let mask = if frame.masked { 0x80 } else { 0 };
        match frame.encoding % 3 {
            0 if len <= 125 => stream.push(mask | len as u8),
            0 | 1 if len <= 0xffff => {
                stream.push(mask | 126);
                stream.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                stream.push(mask | 127);
                stream.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        if frame.masked {
            stream.extend_from_slice(&[1, 2, 3, 4]);
        }
        stream.extend_from_slice(&frame.payload);
        boundaries.push(stream.len());
    }
    let mut chunks = Vec::new();
    let mut at = 0;
    for cut in &input.cuts {
        let end = (at + *cut as usize).min(stream.len());
        chunks.push(&stream[at..end]);
        at = end;
    }
    chunks.push(&stream[at..]);
    let answers = tunnel::boundaries_after(chunks.iter().copied());
    let mut offset = 0;
    for (chunk, between) in chunks.iter().zip(answers) {
        offset += chunk.len();
        assert_eq!(
            between,
            boundaries.binary_search(&offset).is_ok(),
            "after {offset} of {} bytes",
            stream.len()
        );
    }
    tunnel::boundaries_after(input.junk.chunks(7));
});
