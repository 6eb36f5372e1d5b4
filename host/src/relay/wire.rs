//! The WebSocket wire format (RFC 6455 §5) as the frame relay reads and
//! writes it: whole frames found in a byte slice without copying, payload
//! masking, close payloads, and encoding a frame the relay makes itself.
//!
//! Headers are parsed and formatted by tungstenite's `FrameHeader`; what is
//! written here is what tungstenite keeps private or does only on its own
//! buffers: finding a frame in bytes the relay owns, so a forwarded frame
//! leaves exactly as it came (its original bytes, mask and fragmentation),
//! and masking (tungstenite's `apply_mask` is not public).

use std::io::Cursor;
use tokio_tungstenite::tungstenite::error::{Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};

/// Largest payload of a control frame (§5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// A whole frame found at the start of a byte slice.
#[derive(Debug)]
pub struct Frame {
    pub header: FrameHeader,
    /// Bytes of the header (payload starts here).
    pub head_len: usize,
    /// Bytes of header and payload.
    pub len: usize,
}

impl Frame {
    /// The payload as it came (still masked, if it was).
    pub fn payload<'a>(&self, bytes: &'a [u8]) -> &'a [u8] {
        &bytes[self.head_len..self.len]
    }

    /// Appends the unmasked payload to `out`.
    pub fn unmask_into(&self, bytes: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(self.payload(bytes));
        if let Some(key) = self.header.mask {
            apply_mask(&mut out[start..], key);
        }
    }

    pub fn is_close(&self) -> bool {
        self.header.opcode == OpCode::Control(Control::Close)
    }
}

/// Why bytes from a peer are not a frame the relay may pass on.
#[derive(Debug, PartialEq, Eq)]
pub enum Violation {
    /// Against RFC 6455 (bad opcode, reserved bits, masking, control frame
    /// rules): close with 1002.
    Protocol(&'static str),
    /// Over the size limit: close with 1009.
    TooBig,
    /// A text message or close reason that is not UTF-8: close with 1007.
    Utf8,
}

/// The first frame of `bytes` if all of it is there (`None`: read more).
/// `masked`: whether frames from this peer must be masked (a client's
/// must, a server's must not, §5.1). A payload over `max_payload` is refused
/// as soon as its header arrives.
pub fn parse(bytes: &[u8], masked: bool, max_payload: usize) -> Result<Option<Frame>, Violation> {
    parse_rsv1(bytes, masked, max_payload, false)
}

/// [`parse`], with RSV1 (permessage-deflate's "compressed", RFC 7692 §6)
/// allowed on the first frame of a data message when `rsv1` (the peer
/// negotiated compression).
pub fn parse_rsv1(
    bytes: &[u8],
    masked: bool,
    max_payload: usize,
    rsv1: bool,
) -> Result<Option<Frame>, Violation> {
    let mut cursor = Cursor::new(bytes);
    let (header, length) = match FrameHeader::parse(&mut cursor) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => return Ok(None),
        Err(WsError::Protocol(ProtocolError::InvalidOpcode(_))) => {
            return Err(Violation::Protocol("unknown opcode"));
        }
        Err(_) => return Err(Violation::Protocol("malformed frame header")),
    };
    let first_data = matches!(header.opcode, OpCode::Data(Data::Text | Data::Binary));
    if (header.rsv1 && !(rsv1 && first_data)) || header.rsv2 || header.rsv3 {
        return Err(Violation::Protocol("reserved bits set"));
    }
    if header.mask.is_some() != masked {
        return Err(Violation::Protocol(if masked {
            "unmasked frame from a client"
        } else {
            "masked frame from a server"
        }));
    }
    if let OpCode::Control(_) = header.opcode {
        if !header.is_final {
            return Err(Violation::Protocol("fragmented control frame"));
        }
        if length > MAX_CONTROL_PAYLOAD as u64 {
            return Err(Violation::Protocol("control frame payload over 125 bytes"));
        }
    }
    if length > max_payload as u64 {
        return Err(Violation::TooBig);
    }
    let head_len = cursor.position() as usize;
    // Checked: with a limit near `usize::MAX` a 64-bit length overflowed the
    // sum (found by the `frame_wire` fuzz target); no such frame can be held.
    let len = usize::try_from(length)
        .ok()
        .and_then(|length| length.checked_add(head_len))
        .ok_or(Violation::TooBig)?;
    if bytes.len() < len {
        return Ok(None);
    }
    Ok(Some(Frame {
        header,
        head_len,
        len,
    }))
}

/// The code and reason of an unmasked close payload (`None`: no code).
pub fn parse_close(payload: &[u8]) -> Result<Option<(u16, &str)>, Violation> {
    match payload {
        [] => Ok(None),
        [_] => Err(Violation::Protocol("close payload of one byte")),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            if !CloseCode::from(code).is_allowed() {
                return Err(Violation::Protocol("close code that may not be sent"));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| Violation::Utf8)?;
            Ok(Some((code, reason)))
        }
    }
}

/// A close payload: the code, then the reason (the caller keeps it short).
pub fn close_payload(close: Option<(u16, &str)>) -> Vec<u8> {
    let Some((code, reason)) = close else {
        return Vec::new();
    };
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    payload
}

/// Appends one final frame of `opcode` carrying `payload` to `out`, masked
/// with a fresh random key when it goes to a server (§5.3).
pub fn encode(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8], masked: bool) {
    let header = FrameHeader {
        opcode,
        mask: masked.then(rand::random::<[u8; 4]>),
        ..FrameHeader::default()
    };
    header
        .format(payload.len() as u64, out)
        .expect("writing to a Vec cannot fail");
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = header.mask {
        apply_mask(&mut out[start..], key);
    }
}

/// [`encode`] for a payload compressed by permessage-deflate: RSV1 set.
pub fn encode_compressed(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8], masked: bool) {
    let start = out.len();
    encode(out, opcode, payload, masked);
    out[start] |= 0x40;
}

/// XORs `bytes` with the repeated 4-byte `key` (§5.3), eight bytes at a
/// time (the compiler vectorizes it further).
pub fn apply_mask(bytes: &mut [u8], key: [u8; 4]) {
    let [a, b, c, d] = key;
    let wide = u64::from_ne_bytes([a, b, c, d, a, b, c, d]);
    let mut words = bytes.chunks_exact_mut(8);
    for word in &mut words {
        let masked = u64::from_ne_bytes((&*word).try_into().expect("8 bytes")) ^ wide;
        word.copy_from_slice(&masked.to_ne_bytes());
    }
    // Each chunk was a multiple of 4 bytes, so the key starts over here.
    for (i, byte) in words.into_remainder().iter_mut().enumerate() {
        *byte ^= key[i % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_twice_restores_the_bytes_at_every_length_and_offset() {
        let key = [0x12, 0x34, 0x56, 0x78];
        for len in 0..40 {
            let original: Vec<u8> = (0..len as u8).collect();
            let mut bytes = original.clone();
            apply_mask(&mut bytes, key);
            for (i, (masked, plain)) in bytes.iter().zip(&original).enumerate() {
                assert_eq!(*masked, plain ^ key[i % 4], "len {len} byte {i}");
            }
            apply_mask(&mut bytes, key);
            assert_eq!(bytes, original);
        }
    }

    #[test]
    fn a_frame_is_found_only_when_whole_and_encoding_round_trips() {
        let mut bytes = Vec::new();
        encode(&mut bytes, OpCode::Data(Data::Text), b"hello", true);
        for cut in 0..bytes.len() {
            assert!(
                parse(&bytes[..cut], true, 100).unwrap().is_none(),
                "cut {cut}"
            );
        }
        let frame = parse(&bytes, true, 100).unwrap().unwrap();
        assert_eq!(frame.len, bytes.len());
        let mut payload = Vec::new();
        frame.unmask_into(&bytes, &mut payload);
        assert_eq!(payload, b"hello");
    }

    #[test]
    fn a_length_past_the_address_space_is_too_big_whatever_the_limit() {
        // A masked binary frame claiming 2^64 - 1 bytes (RFC 6455 wants the
        // top bit clear; the header parser takes it), under no limit at all.
        let mut header = vec![0x82, 0x80 | 127];
        header.extend_from_slice(&u64::MAX.to_be_bytes());
        header.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(
            parse(&header, true, usize::MAX).unwrap_err(),
            Violation::TooBig
        );
    }

    #[test]
    fn violations_are_named() {
        let mut text = Vec::new();
        encode(&mut text, OpCode::Data(Data::Text), b"hi", false);
        assert_eq!(
            parse(&text, true, 100).unwrap_err(),
            Violation::Protocol("unmasked frame from a client")
        );
        assert_eq!(parse(&text, false, 1).unwrap_err(), Violation::TooBig);
        let mut rsv = text.clone();
        rsv[0] |= 0x40;
        assert_eq!(
            parse(&rsv, false, 100).unwrap_err(),
            Violation::Protocol("reserved bits set")
        );
        let fragmented_ping = [0x09, 0x00];
        assert_eq!(
            parse(&fragmented_ping, false, 100).unwrap_err(),
            Violation::Protocol("fragmented control frame")
        );
        assert_eq!(
            parse(&[0x83, 0x00], false, 100).unwrap_err(),
            Violation::Protocol("unknown opcode")
        );
    }

    #[test]
    fn close_payloads_are_checked() {
        assert_eq!(parse_close(b""), Ok(None));
        assert_eq!(
            parse_close(&close_payload(Some((4000, "bye")))),
            Ok(Some((4000, "bye")))
        );
        assert!(matches!(parse_close(&[3]), Err(Violation::Protocol(_))));
        assert!(matches!(
            parse_close(&1005u16.to_be_bytes()),
            Err(Violation::Protocol(_))
        ));
        assert_eq!(parse_close(&[0x03, 0xe8, 0xff]), Err(Violation::Utf8));
    }
}
