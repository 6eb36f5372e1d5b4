//! A filter that forwards every message unchanged: puts a location on the
//! frame relay (reassembly, re-framing, a filter call per message) without
//! changing what goes through. Used by the Autobahn run (`tests/autobahn.sh`)
//! and by the benchmarks (the wasp-filter row of `bench/run.sh`,
//! `wasp-plugin-bench`): with it they measure the frame relay and the plugin
//! call, nothing else.

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
