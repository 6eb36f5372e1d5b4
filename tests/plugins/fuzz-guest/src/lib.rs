//! A filter that does what each message tells it, for the `plugin_boundary`
//! fuzz target (`fuzz/fuzz_targets/plugin_boundary.rs`): the fuzzer writes
//! the message, so the host sees arbitrary actions, close codes and reasons,
//! oversized replacements, traps, endless loops, memory exhaustion, host
//! calls with arbitrary arguments, and decisions the canonical ABI must
//! refuse (a text replacement that is not UTF-8).
//!
//! A message is an opcode byte, then its operands; see [`Op`]. The fuzz
//! target encodes the same layout and checks the host's answer against it.

use wasp_sdk::{Action, CloseFrame, Direction, Filter, Message, RequestHead, host};

pub struct FuzzGuest;

/// The first byte of a message.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Op {
    Forward = 0,
    /// `len: u32 LE`, `fill: u8`: a text message of `len` × `fill` (as ASCII).
    ReplaceText = 1,
    /// `len: u32 LE`, `fill: u8`: a binary message of `len` bytes.
    ReplaceBinary = 2,
    Drop = 3,
    /// `code: u16 LE`, then the reason's bytes (lossily UTF-8).
    Close = 4,
    Panic = 5,
    Loop = 6,
    /// `mib: u16 LE`: allocates and touches that many MiB.
    Allocate = 7,
    /// The rest as a text replacement, UTF-8 or not.
    ReplaceUnchecked = 8,
    /// `key_len: u8`, key, then the value: every kv host call with them.
    Kv = 9,
}

const OPS: [Op; 10] = [
    Op::Forward,
    Op::ReplaceText,
    Op::ReplaceBinary,
    Op::Drop,
    Op::Close,
    Op::Panic,
    Op::Loop,
    Op::Allocate,
    Op::ReplaceUnchecked,
    Op::Kv,
];

impl Filter for FuzzGuest {
    type Connection = ();

    fn configure(_config: &str) -> Result<Self, String> {
        Ok(FuzzGuest)
    }

    fn on_open(&mut self, _conn: u64, _head: &RequestHead) {}

    fn on_message(&mut self, _: &mut (), _dir: Direction, msg: Message) -> Action {
        let bytes = match msg {
            Message::Text(text) => text.into_bytes(),
            Message::Binary(data) => data,
        };
        let Some((&op, rest)) = bytes.split_first() else {
            return Action::Forward;
        };
        let Some(op) = OPS.into_iter().find(|o| *o as u8 == op) else {
            return Action::Forward;
        };
        let u32_at = |i: usize| {
            let mut word = [0u8; 4];
            for (k, b) in rest.iter().skip(i).take(4).enumerate() {
                word[k] = *b;
            }
            u32::from_le_bytes(word)
        };
        let byte_at = |i: usize| rest.get(i).copied().unwrap_or(0);
        match op {
            Op::Forward => Action::Forward,
            Op::ReplaceText => {
                // Filled at once, as `ReplaceBinary` is: built a char at a
                // time, 4 MiB took most of the 10 ms budget.
                let ascii = vec![byte_at(4) & 0x7f; u32_at(0) as usize];
                Action::Replace(Message::Text(String::from_utf8(ascii).expect("ASCII")))
            }
            Op::ReplaceBinary => {
                Action::Replace(Message::Binary(vec![byte_at(4); u32_at(0) as usize]))
            }
            Op::Drop => Action::Drop,
            Op::Close => Action::Close(CloseFrame {
                code: u16::from_le_bytes([byte_at(0), byte_at(1)]),
                reason: String::from_utf8_lossy(rest.get(2..).unwrap_or_default()).into_owned(),
            }),
            Op::Panic => panic!("told to panic"),
            Op::Loop => {
                let mut n = 0u64;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            Op::Allocate => {
                // In u64: on wasm32 `mib << 20` wraps past 4 GiB (fuzzing
                // found 8194 MiB asked and 2 MiB allocated); past usize the
                // allocation fails, as a real one that large would.
                let bytes = u64::from(u16::from_le_bytes([byte_at(0), byte_at(1)])) << 20;
                let block = vec![1u8; usize::try_from(bytes).unwrap_or(usize::MAX)];
                std::hint::black_box(&block);
                Action::Drop
            }
            Op::ReplaceUnchecked => {
                // SAFETY: deliberately unsound: the host must refuse a string
                // that is not UTF-8 when it lifts the result, without trusting it.
                let text = unsafe { String::from_utf8_unchecked(rest.to_vec()) };
                Action::Replace(Message::Text(text))
            }
            Op::Kv => {
                let split = (byte_at(0) as usize + 1).min(rest.len());
                let key = String::from_utf8_lossy(&rest[1.min(rest.len())..split]).into_owned();
                let value = String::from_utf8_lossy(&rest[split..]).into_owned();
                for kv in [host::kv(), host::shared_kv()] {
                    let _ = kv.counter_add(&key, value.len() as i64);
                    let _ = kv.set(&key, &value, Some(u64::from(byte_at(0))));
                    let _ = kv.get(&key);
                    let _ = kv.compare_and_set(&key, Some(&value), Some(&key), None);
                    let _ = kv.delete(&key);
                }
                Action::Forward
            }
        }
    }
}

wasp_sdk::export!(filter: FuzzGuest);
