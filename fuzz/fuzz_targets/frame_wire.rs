//! The frame relay's frame finder (`host/src/relay/wire.rs`): arbitrary bytes
//! as a peer's stream, either side's masking rule, any size limit.
//! - `parse` never panics; a frame it finds lies inside the bytes, parses the
//!   same from exactly its own bytes, and any shorter prefix asks for more
//!   (`Ok(None)`), never a violation the whole frame did not have;
//! - a found frame re-encoded by `encode` parses back to the same opcode,
//!   finality and payload;
//! - `parse_close` accepts only a sendable code with a UTF-8 reason, and
//!   `close_payload` rebuilds exactly the payload it accepted;
//! - `apply_mask` is the byte-wise XOR of RFC 6455 §5.3, at every offset.
#![no_main]

use libfuzzer_sys::{arbitrary, fuzz_target};

// The module itself, compiled from source (the `wasp` crate cannot be built
// with nightly: README.md).
#[allow(dead_code)]
#[path = "../../host/src/relay/wire.rs"]
mod wire;

#[derive(Debug, arbitrary::Arbitrary)]
struct Input {
    masked: bool,
    /// Up to 16 MiB, or any `usize` when `huge_limit` (a limit past memory).
    limit: u32,
    huge_limit: bool,
    key: [u8; 4],
    bytes: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let limit = if input.huge_limit {
        usize::MAX - input.limit as usize
    } else {
        input.limit as usize % (16 << 20)
    };
    let bytes = &input.bytes;
    match wire::parse(bytes, input.masked, limit) {
        Ok(Some(frame)) => check_frame(bytes, &frame, input.masked, limit),
        Ok(None) => {}
        Err(_) => {}
    }

    let payload = bytes.get(..bytes.len().min(125)).unwrap_or_default();
    match wire::parse_close(payload) {
        Ok(Some((code, reason))) => {
            assert!(matches!(code, 1000..=1003 | 1007..=1013 | 3000..=4999), "code {code}");
            assert_eq!(wire::close_payload(Some((code, reason))), payload);
        }
        Ok(None) => assert!(payload.is_empty()),
        Err(_) => assert!(!payload.is_empty()),
    }

    let mut masked = bytes.clone();
    wire::apply_mask(&mut masked, input.key);
    for (i, (m, b)) in masked.iter().zip(bytes).enumerate() {
        assert_eq!(*m, b ^ input.key[i % 4], "byte {i}");
    }
    let offset = bytes.len().min(3);
    let mut tail = bytes[offset..].to_vec();
    wire::apply_mask(&mut tail, input.key);
    wire::apply_mask(&mut tail, input.key);
    assert_eq!(tail, bytes[offset..], "masking twice restores");
});

fn check_frame(bytes: &[u8], frame: &wire::Frame, masked: bool, limit: usize) {
    assert!(frame.head_len >= 2 && frame.head_len <= frame.len && frame.len <= bytes.len());
    assert!(frame.len - frame.head_len <= limit);
    assert_eq!(frame.header.mask.is_some(), masked);
    let own = &bytes[..frame.len];
    let again = wire::parse(own, masked, limit).expect("its own bytes").expect("whole");
    assert_eq!((again.head_len, again.len), (frame.head_len, frame.len));
    for cut in [0, 1, frame.head_len - 1, frame.head_len, frame.len - 1] {
        if cut < frame.len {
            assert!(
                matches!(wire::parse(&own[..cut], masked, limit), Ok(None)),
                "a prefix of {cut} of {} bytes",
                frame.len
            );
        }
    }
    let mut payload = Vec::new();
    frame.unmask_into(bytes, &mut payload);
    let mut encoded = Vec::new();
    wire::encode(&mut encoded, frame.header.opcode, &payload, masked);
    let back = wire::parse(&encoded, masked, limit).expect("encoded").expect("whole");
    assert_eq!(back.len, encoded.len());
    assert_eq!(back.header.opcode, frame.header.opcode);
    assert!(back.header.is_final);
    let mut round = Vec::new();
    back.unmask_into(&encoded, &mut round);
    assert_eq!(round, payload);
}
