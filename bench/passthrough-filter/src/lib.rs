//! `passthrough`: a filter that forwards every message unchanged, so that
//! benchmarks measure the frame relay and the plugin call, nothing else.
//!
//! Build: `cargo build --target wasm32-wasip2 --release -p filter-passthrough`.

use wasp_sdk::{Action, Direction, Filter, Message};

pub struct Passthrough;

impl Filter for Passthrough {
    fn configure(_config: &str) -> Result<Self, String> {
        Ok(Passthrough)
    }

    fn on_message(&mut self, _conn: u64, _dir: Direction, _msg: Message) -> Action {
        Action::Forward
    }
}

wasp_sdk::export!(filter: Passthrough);
