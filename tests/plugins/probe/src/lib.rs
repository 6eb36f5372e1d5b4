//! A plugin filling every role with behaviour the tests can observe, plus
//! inputs that make it misbehave: `loop` spins forever, `oom` allocates
//! without bound, `trap` panics. `configure` fails when the config has `fail`.
//! As a router, a few paths use the host's shared store (see [`Probe::store`]).
//! As a filter, `say:WORDS` from the client is forwarded, followed by
//! `WORDS` sent on its own to the upstream and `TAG heard` sent to the client.

use wasp_sdk::{
    Action, Balancer, CloseFrame, Decision, Direction, Filter, Message, Origin, Peer, RequestHead,
    Response, Router, host,
};

/// The host counter that numbers probe instances, so that answers show which
/// instance served them.
const INSTANCES: &str = "probe:instances";

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct Config {
    /// Refuse to load with this message.
    fail: Option<String>,
    /// Tag added to answers, to tell plugin versions apart.
    tag: String,
}

fn load(config: &str) -> Result<Config, String> {
    let config: Config = wasp_sdk::parse_config(config)?;
    match config.fail {
        Some(message) => Err(message),
        None => Ok(config),
    }
}

/// Does what `word` asks: never returns for `loop`, `oom` or `trap`.
fn misbehave(word: &str) {
    match word {
        "loop" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "oom" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                // Reserve without touching: growing memory is what must fail.
                hoard.push(Vec::with_capacity(1 << 20));
                std::hint::black_box(&hoard);
            }
        }
        "trap" => panic!("trap requested"),
        _ => {}
    }
}

pub struct Probe {
    tag: String,
    /// This instance's number, taken from [`INSTANCES`] on first use of the
    /// store (in plugin memory: a new instance gets a new number).
    instance: Option<i64>,
}

impl Probe {
    fn new(config: &str) -> Result<Self, String> {
        Ok(Probe {
            tag: load(config)?.tag,
            instance: None,
        })
    }

    /// The router's paths on the host's store, answering `VALUE instance N`:
    /// `/kv/set/KEY/VALUE` stores, `/kv/get/KEY` reads (404 when unset),
    /// `/kv/delete/KEY` removes (404 when nothing was live),
    /// `/kv/cas/KEY/EXPECTED/NEW` compares and sets (`-` for none; 409 when
    /// the value differed), `/counter/KEY` adds 1; under `/shared/` instead
    /// of `/` the same on the shared namespace. A refused write answers 507
    /// with the host's error. `None` for any other path.
    fn store(&mut self, path: &str) -> Option<Response> {
        let (kv, path) = match path.strip_prefix("/shared") {
            Some(rest) => (host::shared_kv(), rest),
            None => (host::kv(), path),
        };
        let none_if_dash = |s: &str| (s != "-").then(|| s.to_owned());
        let (status, value) = if let Some(rest) = path.strip_prefix("/kv/set/") {
            let (key, value) = rest.split_once('/')?;
            match kv.set(key, value, None) {
                Ok(()) => (200, value.to_owned()),
                Err(error) => (507, error.to_string()),
            }
        } else if let Some(key) = path.strip_prefix("/kv/get/") {
            kv.get(key)
                .map_or((404, String::new()), |value| (200, value))
        } else if let Some(key) = path.strip_prefix("/kv/delete/") {
            if kv.delete(key) {
                (200, "deleted".into())
            } else {
                (404, String::new())
            }
        } else if let Some(rest) = path.strip_prefix("/kv/cas/") {
            let mut parts = rest.splitn(3, '/');
            let (key, expected, new) = (parts.next()?, parts.next()?, parts.next()?);
            let (expected, new) = (none_if_dash(expected), none_if_dash(new));
            match kv.compare_and_set(key, expected.as_deref(), new.as_deref(), None) {
                Ok(true) => (200, "swapped".into()),
                Ok(false) => (409, kv.get(key).unwrap_or_default()),
                Err(error) => (507, error.to_string()),
            }
        } else if let Some(key) = path.strip_prefix("/counter/") {
            match kv.counter_add(key, 1) {
                Ok(n) => (200, n.to_string()),
                Err(error) => (507, error.to_string()),
            }
        } else {
            return None;
        };
        let instance = *self
            .instance
            .get_or_insert_with(|| host::kv().counter_add(INSTANCES, 1).unwrap_or(-1));
        Some(Response {
            status,
            headers: vec![("x-tag".into(), self.tag.clone())],
            body: format!("{value} instance {instance}"),
        })
    }
}

impl Router for Probe {
    fn configure(config: &str) -> Result<Self, String> {
        Probe::new(config)
    }
    fn route(&mut self, head: &RequestHead) -> Decision {
        misbehave(head.path.trim_start_matches('/'));
        if let Some(answer) = self.store(&head.path) {
            return Decision::Respond(answer);
        }
        Decision::Respond(Response {
            status: 200,
            headers: vec![("x-tag".into(), self.tag.clone())],
            body: format!(
                "{} {} {}",
                head.method,
                head.path,
                head.header("x-probe").unwrap_or("")
            ),
        })
    }
}

impl Balancer for Probe {
    fn configure(config: &str) -> Result<Self, String> {
        Probe::new(config)
    }
    fn pick(
        &mut self,
        head: &RequestHead,
        _: &str,
        peers: &[Peer],
        cursor: u64,
        _: &str,
    ) -> Option<u32> {
        misbehave(head.path.trim_start_matches('/'));
        let usable: Vec<u32> = (0..peers.len() as u32)
            .filter(|&i| peers[i as usize].usable)
            .collect();
        (!usable.is_empty()).then(|| usable[(cursor % usable.len() as u64) as usize])
    }
}

impl Origin for Probe {
    fn configure(config: &str) -> Result<Self, String> {
        Probe::new(config)
    }
    fn check(&mut self, head: &RequestHead, location: u32) -> Result<(), String> {
        misbehave(head.path.trim_start_matches('/'));
        match head.header("origin") {
            Some("https://ok.example") => Ok(()),
            other => Err(format!("origin {other:?} refused at location {location}")),
        }
    }
}

impl Filter for Probe {
    /// The connection's messages on this instance since its `on_open`, to
    /// prove per-connection state (`count` answers it).
    type Connection = u32;

    fn configure(config: &str) -> Result<Self, String> {
        Probe::new(config)
    }
    fn on_open(&mut self, _conn: u64, _head: &RequestHead) -> u32 {
        0
    }
    fn on_message(&mut self, count: &mut u32, dir: Direction, msg: Message) -> Action {
        *count += 1;
        let Message::Text(text) = msg else {
            return Action::Forward;
        };
        misbehave(&text);
        if let Some(words) = text.strip_prefix("say:")
            && dir == Direction::ClientToUpstream
        {
            host::send_to_upstream(Message::Text(words.to_owned())).expect("room to send");
            host::send_to_client(Message::Text(format!("{} heard", self.tag)))
                .expect("room to send");
            return Action::Forward;
        }
        match text.as_str() {
            "drop" => Action::Drop,
            "close" => Action::Close(CloseFrame {
                code: 4000,
                reason: "closed by probe".into(),
            }),
            "count" => Action::Replace(Message::Text(format!("{}#{count}", self.tag))),
            _ => {
                let arrow = match dir {
                    Direction::ClientToUpstream => ">",
                    Direction::UpstreamToClient => "<",
                };
                Action::Replace(Message::Text(format!("{}{arrow}{text}", self.tag)))
            }
        }
    }
}

wasp_sdk::export!(router: Probe, balancer: Probe, origin: Probe, filter: Probe);
