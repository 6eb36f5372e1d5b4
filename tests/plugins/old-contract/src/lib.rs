//! A router built against the previous contract, `wasp:plugin@0.1.0`
//! (`wit/wasp.wit` here is that version, as a plugin built with an older
//! wasp-sdk carries it): wasp must refuse it at load, naming both versions.

wit_bindgen::generate!({
    path: "wit",
    world: "wasp:plugin/router-plugin",
});

use exports::wasp::plugin::router::Guest;
use wasp::plugin::types::{Decision, RequestHead, Response};

struct Old;

impl Guest for Old {
    fn configure(_config: String) -> Result<(), String> {
        Ok(())
    }
    fn route(_head: RequestHead) -> Decision {
        Decision::Respond(Response {
            status: 200,
            headers: Vec::new(),
            body: "built against 0.1.0".into(),
        })
    }
}

export!(Old);
