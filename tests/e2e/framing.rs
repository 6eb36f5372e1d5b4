//! A property test of the frame relay's framing, over real sockets on
//! loopback: random sequences of messages (text with multi-byte characters
//! and binary, in up to four fragments, with pings and pongs between and
//! inside the fragments, sizes on both sides of `max_message_size`) are
//! written in random chunks by one peer, through the relay with a
//! recording pass-through inspector and a random read size, to the other
//! peer. Both directions. The frames and the close the far peer gets, and
//! the messages the inspector saw, must be exactly what RFC 6455 and the
//! relay's rules say. Frames are parsed here by hand, independently of the
//! relay's own parser.

use bytes::Bytes;
use proptest::prelude::*;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::timeout;
use wasp::direction::Direction;
use wasp::relay::frames::{self, CloseFrame, FrameRelayConfig, Inspector, Payload, Verdict};

const MAX_MESSAGE: usize = 300;
const WAIT: Duration = Duration::from_secs(10);

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xa;

/// One thing a peer sends.
#[derive(Debug, Clone)]
enum Item {
    /// A data message in fragments; `controls[i]` (a ping or pong) is sent
    /// after fragment `i`, before the next one.
    Message {
        text: bool,
        fragments: Vec<Vec<u8>>,
        controls: Vec<Option<(u8, Vec<u8>)>>,
    },
    Control(u8, Vec<u8>),
}

/// A frame as the receiving peer sees it (unmasked).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    fin: bool,
    opcode: u8,
    payload: Vec<u8>,
}

fn control() -> impl Strategy<Value = (u8, Vec<u8>)> {
    (
        prop_oneof![Just(PING), Just(PONG)],
        prop::collection::vec(any::<u8>(), 0..=125),
    )
}

fn message() -> impl Strategy<Value = Item> {
    let payload = prop_oneof![
        // Text with one- to three-byte characters, so fragments and reads
        // split characters.
        "[a-zé€ ]{0,160}".prop_map(|s| (true, s.into_bytes())),
        prop::collection::vec(any::<u8>(), 0..400).prop_map(|b| (false, b)),
    ];
    (
        payload,
        1usize..=4,
        prop::collection::vec(prop::option::of(control()), 3),
    )
        .prop_flat_map(|((text, bytes), parts, controls)| {
            let len = bytes.len();
            (
                Just(text),
                Just(bytes),
                prop::collection::vec(0..=len, parts - 1),
                Just(controls),
            )
        })
        .prop_map(|(text, bytes, mut cuts, controls)| {
            cuts.sort_unstable();
            let mut fragments = Vec::new();
            let mut start = 0;
            for cut in cuts {
                fragments.push(bytes[start..cut].to_vec());
                start = cut;
            }
            fragments.push(bytes[start..].to_vec());
            let controls = controls.into_iter().take(fragments.len() - 1).collect();
            Item::Message {
                text,
                fragments,
                controls,
            }
        })
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        4 => message(),
        1 => control().prop_map(|(op, payload)| Item::Control(op, payload)),
    ]
}

/// Encodes a frame as a peer sends it (masked when it goes to a server).
fn encode(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut frame = vec![opcode | if fin { 0x80 } else { 0 }];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => frame.push(n as u8 | mask_bit),
        n if n <= 0xffff => {
            frame.push(126 | mask_bit);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(127 | mask_bit);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => frame.extend_from_slice(payload),
    }
    frame
}

/// Reads frames until a close (included) or the end of the stream.
async fn read_frames(stream: &mut TcpStream) -> Vec<Seen> {
    let mut bytes = Vec::new();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        while let Some((frame, len)) = parse(&bytes) {
            bytes.drain(..len);
            let closed = frame.opcode == CLOSE;
            seen.push(frame);
            if closed {
                return seen;
            }
        }
        match timeout(WAIT, stream.read(&mut buf))
            .await
            .expect("timed out")
        {
            Ok(0) | Err(_) => return seen,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    }
}

fn parse(bytes: &[u8]) -> Option<(Seen, usize)> {
    if bytes.len() < 2 {
        return None;
    }
    let (fin, opcode, masked) = (bytes[0] & 0x80 != 0, bytes[0] & 0x0f, bytes[1] & 0x80 != 0);
    let (len, mut at) = match bytes[1] & 0x7f {
        126 if bytes.len() >= 4 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
        127 if bytes.len() >= 10 => (
            u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize,
            10,
        ),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    let key = if masked {
        let key: [u8; 4] = bytes.get(at..at + 4)?.try_into().unwrap();
        at += 4;
        Some(key)
    } else {
        None
    };
    let payload = bytes.get(at..at + len)?;
    let payload = match key {
        Some(key) => payload
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i % 4])
            .collect(),
        None => payload.to_vec(),
    };
    Some((
        Seen {
            fin,
            opcode,
            payload,
        },
        at + len,
    ))
}

fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    payload
}

/// What the sender writes, what the far peer must see, the messages the
/// inspector must see, and the close the sender must get back.
struct Script {
    wire: Vec<u8>,
    far: Vec<Seen>,
    inspected: Inspected,
    back: Seen,
}

fn script(items: &[Item], masked: bool, sender: &str) -> Script {
    let mask = masked.then_some([0x37, 0xfa, 0x21, 0x3d]);
    let mut script = Script {
        wire: Vec::new(),
        far: Vec::new(),
        inspected: Vec::new(),
        back: Seen {
            fin: true,
            opcode: CLOSE,
            payload: close_payload(1000, "done"),
        },
    };
    let too_big = Seen {
        fin: true,
        opcode: CLOSE,
        payload: close_payload(1009, &format!("message too big from {sender}")),
    };
    for item in items {
        match item {
            Item::Control(opcode, payload) => {
                script.wire.extend(encode(true, *opcode, payload, mask));
                script.far.push(Seen {
                    fin: true,
                    opcode: *opcode,
                    payload: payload.clone(),
                });
            }
            Item::Message {
                text,
                fragments,
                controls,
            } => {
                let mut frames = Vec::new();
                let mut size = 0;
                for (i, fragment) in fragments.iter().enumerate() {
                    let fin = i + 1 == fragments.len();
                    let opcode = match (i, text) {
                        (0, true) => TEXT,
                        (0, false) => BINARY,
                        _ => 0,
                    };
                    script.wire.extend(encode(fin, opcode, fragment, mask));
                    size += fragment.len();
                    if size > MAX_MESSAGE {
                        // Refused at the frame that passes the limit; both
                        // peers get the 1009.
                        script.far.push(too_big.clone());
                        script.back = too_big;
                        return script;
                    }
                    frames.push(Seen {
                        fin,
                        opcode,
                        payload: fragment.clone(),
                    });
                    if let Some(Some((opcode, payload))) = controls.get(i) {
                        script.wire.extend(encode(true, *opcode, payload, mask));
                        // Relayed at once, ahead of the message it interrupts.
                        script.far.push(Seen {
                            fin: true,
                            opcode: *opcode,
                            payload: payload.clone(),
                        });
                    }
                }
                script.far.extend(frames);
                script.inspected.push((*text, fragments.concat()));
            }
        }
    }
    let done = close_payload(1000, "done");
    script.wire.extend(encode(true, CLOSE, &done, mask));
    script.far.push(Seen {
        fin: true,
        opcode: CLOSE,
        payload: done,
    });
    script
}

/// A message as the inspector saw it: whether text, and its bytes.
type Inspected = Vec<(bool, Vec<u8>)>;

/// Forwards everything; records what it saw.
struct Recorder(Arc<Mutex<Inspected>>);

impl Inspector for Recorder {
    fn open(&mut self) -> Result<(), CloseFrame> {
        Ok(())
    }

    fn inspect(&mut self, _: Direction, messages: &[Payload<'_>], verdicts: &mut Vec<Verdict>) {
        for message in messages {
            let seen = match message {
                Payload::Text(text) => (true, text.as_bytes().to_vec()),
                Payload::Binary(data) => (false, data.to_vec()),
            };
            self.0.lock().unwrap().push(seen);
            verdicts.push(Verdict::Forward);
        }
    }

    fn close(&mut self) {}
}

async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let outer = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (inner, _) = listener.accept().await.unwrap();
    (outer, inner)
}

async fn check(items: Vec<Item>, from_client: bool, chunks: Vec<usize>, read_buffer: usize) {
    let (mut client, relay_client) = pair().await;
    let (mut upstream, relay_upstream) = pair().await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (_shutdown, signal) = watch::channel(false);
    let config = FrameRelayConfig {
        max_message_size: MAX_MESSAGE,
        deflate: Default::default(),
        idle_timeout: Duration::from_secs(60),
        send_timeout: Duration::from_secs(60),
        traffic: wasp::metrics::Metrics::new().location("framing"),
        read_buffer,
    };
    let relay = tokio::spawn(frames::run(
        relay_client,
        Bytes::new(),
        relay_upstream,
        Bytes::new(),
        Recorder(seen.clone()),
        config,
        signal.into(),
    ));
    let (sender, receiver, name) = if from_client {
        (&mut client, &mut upstream, "client")
    } else {
        (&mut upstream, &mut client, "upstream")
    };
    let script = script(&items, from_client, name);
    // Written in the chunks drawn, each its own write.
    let mut rest = &script.wire[..];
    for chunk in chunks.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (now, later) = rest.split_at((*chunk).min(rest.len()));
        if sender.write_all(now).await.is_err() {
            break;
        }
        tokio::task::yield_now().await;
        rest = later;
    }
    let far = read_frames(receiver).await;
    assert_eq!(far, script.far, "what the far peer got");
    // The far peer answers the close (as a peer sends: masked if a client).
    let last = far.last().unwrap().payload.clone();
    let _ = receiver
        .write_all(&encode(
            true,
            CLOSE,
            &last,
            (!from_client).then_some([1, 2, 3, 4]),
        ))
        .await;
    let back = read_frames(sender).await;
    assert_eq!(
        back,
        [script.back],
        "what the sender got back: its close answered, or the 1009"
    );
    // Peers that are done close their sockets.
    drop((client, upstream));
    timeout(WAIT, relay).await.expect("relay ended").unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        script.inspected,
        "what the inspector saw"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn frames_are_relayed_exactly_as_rfc_6455_and_the_limits_say(
        items in prop::collection::vec(item(), 0..8),
        from_client in any::<bool>(),
        chunks in prop::collection::vec(1usize..200, 1..6),
        read_buffer in prop_oneof![Just(1usize), Just(7), Just(64), Just(4096)],
    ) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(check(items, from_client, chunks, read_buffer));
    }
}
