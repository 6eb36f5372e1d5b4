//! Host-side bindings of `sdk/wit/wasp.wit` (the SDK's copy is the only
//! one), generated for the `full` world so that every role's export can be
//! looked up on its own: a component exports only the roles it fills, and
//! the host loads exactly those.

wasmtime::component::bindgen!({
    path: "../../sdk/wit",
    world: "wasp:plugin/full",
    additional_derives: [PartialEq],
});

pub use self::exports::wasp::plugin::{balancer, filter, origin, router};
pub use self::wasp::plugin::host::{KvError, KvScope, SendError};
pub use self::wasp::plugin::types::{
    Action, CloseFrame, Decision, Direction, LogLevel, Message, Peer, ProxyTo, RequestHead,
    Response, StaticFiles,
};
