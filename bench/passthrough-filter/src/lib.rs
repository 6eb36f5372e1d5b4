//! `passthrough`: a filter that forwards every message unchanged, so that
//! benchmarks measure the frame relay and the plugin call, nothing else.
//!
//! Build: `cargo build --target wasm32-wasip2 --release -p filter-passthrough`.

use wasp_sdk::{Action, Direction, Filter, Message, RequestHead};

pub struct Passthrough;

impl Filter for Passthrough {
    type Connection = ();

    fn configure(_config: &str) -> Result<Self, String> {
        Ok(Passthrough)
    }

    fn on_open(&mut self, _conn: u64, _head: &RequestHead) {}

    fn on_message(&mut self, _: &mut (), _dir: Direction, _msg: Message) -> Action {
        Action::Forward
    }
}

wasp_sdk::export!(filter: Passthrough);
