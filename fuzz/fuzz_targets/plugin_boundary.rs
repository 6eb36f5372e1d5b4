//! The plugin boundary: a filter (`tests/plugins/fuzz-guest`, built by
//! `fuzz/run.sh` with the pinned toolchain) returns whatever the input tells
//! it: any action, close code and reason, replacements up to and past its
//! memory cap, a trap, an endless loop, an allocation past the cap, a text
//! replacement that is not UTF-8, kv calls with any key and value. The host
//! side (`wasp_plugin_runtime::FilterPool`, wasmtime lifting the result)
//! must never panic, must answer exactly what the guest decided or the right
//! `CallError`, and must serve the connection again after a failure (a fresh
//! instance, the connection re-opened on it).
//!
//! Each input goes through `on-message` alone, then first of two messages
//! through `on-messages` (the packed batch).
//!
//! Input: byte 0 picks text (even) or binary (odd); the rest is the message,
//! whose first byte is the guest's opcode (see the guest's `Op`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;
use std::time::Duration;
use wasp_plugin_runtime::{
    Action, CallError, FilterPool, Limits, Message, Opened, Packed, RequestHead, Runtime, Speech,
};

const MEMORY_LIMIT: usize = 32 << 20;
/// Replacements and allocations up to this size must succeed (well under the
/// cap, whatever the guest's allocator keeps besides).
const SURELY_FITS: usize = 4 << 20;

const GUEST: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../target/wasm/wasm32-wasip2/plugin/wasp_test_fuzz_guest.wasm"
);

static POOL: LazyLock<FilterPool> = LazyLock::new(|| {
    let limits = Limits {
        // Generous, so that only the endless loop meets it: the deadline
        // runs on wall time, and under load (a machine running several
        // fuzzers) 10 ms cut a 3.7 MiB replacement short.
        call_timeout: Duration::from_millis(100),
        call_timeout_per_mib: Duration::from_millis(10),
        memory_limit: MEMORY_LIMIT,
        instances: 16,
    };
    let runtime = Runtime::new(limits, None, None).expect("runtime");
    let plugin = runtime
        .load_file(std::path::Path::new(GUEST))
        .unwrap_or_else(|e| panic!("{GUEST}: {e} (build it with fuzz/run.sh)"));
    FilterPool::new(plugin, String::new()).expect("filter pool")
});

fn head() -> RequestHead {
    RequestHead {
        method: "GET".into(),
        path: "/fuzz".into(),
        query: String::new(),
        headers: "host: fuzz\nupgrade: websocket\n".into(),
        client_ip: "127.0.0.1".into(),
        client_port: 50_000,
        listener: "127.0.0.1:1".into(),
        tls: false,
        sni: None,
    }
}

/// What the guest must have answered to `body` (its opcode and operands).
enum Expected {
    Exactly(Action),
    /// A replacement of this many bytes, or the memory cap when large.
    Replacement { len: usize, text: bool, fill: u8 },
    Trap,
    Timeout,
    /// Fits (`Drop`) when small, the memory cap when over it, either between.
    Allocation(usize),
    /// Not UTF-8: lifting the result must fail.
    Refused,
}

fn expected(body: &[u8]) -> Expected {
    let Some((&op, rest)) = body.split_first() else {
        return Expected::Exactly(Action::Forward);
    };
    let at = |i: usize| rest.get(i).copied().unwrap_or(0);
    let len = u32::from_le_bytes([at(0), at(1), at(2), at(3)]) as usize;
    match op {
        1 => Expected::Replacement { len, text: true, fill: at(4) & 0x7f },
        2 => Expected::Replacement { len, text: false, fill: at(4) },
        3 => Expected::Exactly(Action::Drop),
        4 => Expected::Exactly(Action::Close(wasp_plugin_runtime::CloseFrame {
            code: u16::from_le_bytes([at(0), at(1)]),
            reason: String::from_utf8_lossy(rest.get(2..).unwrap_or_default()).into_owned(),
        })),
        5 => Expected::Trap,
        6 => Expected::Timeout,
        7 => Expected::Allocation((u16::from_le_bytes([at(0), at(1)]) as usize) << 20),
        8 => match std::str::from_utf8(rest) {
            Ok(text) => Expected::Exactly(Action::Replace(Message::Text(text.to_owned()))),
            Err(_) => Expected::Refused,
        },
        _ => Expected::Exactly(Action::Forward),
    }
}

fn same(a: &Action, b: &Action) -> bool {
    match (a, b) {
        (Action::Forward, Action::Forward) | (Action::Drop, Action::Drop) => true,
        (Action::Replace(Message::Text(x)), Action::Replace(Message::Text(y))) => x == y,
        (Action::Replace(Message::Binary(x)), Action::Replace(Message::Binary(y))) => x == y,
        (Action::Close(x), Action::Close(y)) => x.code == y.code && x.reason == y.reason,
        _ => false,
    }
}

fn check(body: &[u8], got: &Result<Action, CallError>) {
    let fail = || -> ! { panic!("opcode {:?}: got {got:?}", body.first()) };
    match (expected(body), got) {
        (Expected::Exactly(want), Ok(action)) if same(&want, action) => {}
        (Expected::Replacement { len, text, fill }, Ok(Action::Replace(message))) => {
            let bytes = match message {
                Message::Text(s) if text => s.as_bytes(),
                Message::Binary(b) if !text => b.as_slice(),
                _ => fail(),
            };
            assert!(bytes.len() == len && bytes.iter().all(|b| *b == fill), "replacement");
        }
        // A large replacement may also take longer than the budget of the
        // (small) message that asked for it: the budget grows with what the
        // call is handed, not with what the guest makes (fuzzing found a
        // 6.25 MiB one timing out).
        (
            Expected::Replacement { len, .. },
            Err(CallError::OutOfMemory | CallError::Trap(_) | CallError::Timeout),
        ) if len > SURELY_FITS => {}
        (Expected::Trap, Err(CallError::Trap(_))) => {}
        (Expected::Timeout, Err(CallError::Timeout)) => {}
        (Expected::Allocation(n), Ok(Action::Drop)) if n < MEMORY_LIMIT => {}
        (Expected::Allocation(n), Err(CallError::OutOfMemory | CallError::Trap(_)))
            if n > SURELY_FITS => {}
        (Expected::Refused, Err(CallError::Trap(_))) => {}
        _ => fail(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    let message = match std::str::from_utf8(body) {
        Ok(text) if kind % 2 == 0 => Message::Text(text.to_owned()),
        _ => Message::Binary(body.to_vec()),
    };
    let pool = &*POOL;
    let head = head();
    let mut opened = Opened::default();
    let dir = wasp_plugin_runtime::Direction::ClientToUpstream;
    pool.open(&mut opened, 1, &head).expect("on-open");
    let got = pool.on_message(&mut opened, 1, &head, dir, &message);
    check(body, &got);
    // After any outcome the connection is served again (on a new instance
    // after a failure, re-opened first).
    let next = pool.on_message(&mut opened, 1, &head, dir, &Message::Binary(vec![0]));
    assert!(matches!(next, Ok(Action::Forward)), "after {got:?}: {next:?}");

    // The same message first of two that arrived together (`on-messages`,
    // packed): the same outcome for it, a failure failing the whole call,
    // and the second answered unless the first closed.
    let mut batch = Packed::default();
    batch.push_message(&message);
    batch.push(false, &[0]);
    let mut speech = Speech::default();
    let got = pool.on_messages_speaking(&mut opened, 1, &head, dir, &batch, &mut speech);
    match got {
        Ok(outcomes) => {
            let mut outcomes = outcomes.into_iter();
            let first = outcomes.next().map(|o| o.action).expect("an outcome");
            let closed = matches!(first, Action::Close(_));
            check(body, &Ok(first));
            let second = outcomes.next().map(|o| o.action);
            match second {
                None => assert!(closed, "the second message unanswered"),
                Some(action) => assert!(!closed && matches!(action, Action::Forward), "{action:?}"),
            }
            assert!(outcomes.next().is_none(), "more outcomes than messages");
        }
        Err(error) => check(body, &Err(error)),
    }
    pool.close(&mut opened, 1);
});
