//! [`export!`](crate::export!): implements the bindings generated for each role's world
//! over the plugin's types.

use crate::{LogLevel, host};

/// Sends panic messages to wasp's log (tagged with the plugin's name)
/// instead of stderr: the instance still traps, and the log says why.
/// Called by [`export!`] before `configure`; not public API.
#[doc(hidden)]
pub fn __log_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            host::log(LogLevel::Error, &format!("panic: {info}"))
        }));
    });
}

/// Exports plugin types as the roles they fill, e.g.
/// `wasp_sdk::export!(filter: MyFilter);` or
/// `wasp_sdk::export!(router: MyRouter, origin: MyOrigin);`.
///
/// Roles are `router`, `balancer`, `origin` and `filter`; each names a type
/// implementing the trait of the same name. Each role gets its own state,
/// built by its own `configure`; a filter's also holds the
/// [`Connection`](crate::Filter::Connection) state of each connection
/// between `on_open` and `on_close`.
///
/// The exports exist only when compiling for wasm: a native build (e.g. the
/// plugin's unit tests) cannot link the component ABI's symbol names, which
/// contain `:` and `@`.
#[macro_export]
macro_rules! export {
    ($($role:ident : $ty:ty),+ $(,)?) => {
        $(
            #[cfg(target_arch = "wasm32")]
            $crate::__export_role!($role $ty);
        )+
    };
}

/// Implements one role's generated `Guest` trait over a user type whose state
/// lives in a thread-local (a wasm instance has one thread). Not public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_role {
    (router $ty:ty) => {
        const _: () = {
            use $crate::router_world::exports::wasp::plugin::router::Guest;
            $crate::__state!($ty);
            struct Export;
            impl Guest for Export {
                fn configure(config: String) -> Result<(), String> {
                    $crate::__log_panics();
                    init(<$ty as $crate::Router>::configure(&config)?);
                    Ok(())
                }
                fn route(head: $crate::RequestHead) -> $crate::Decision {
                    with(|s| $crate::Router::route(s, &head))
                }
            }
    $crate::router_world::export!(Export with_types_in $crate::router_world);
        };
    };
    (balancer $ty:ty) => {
        const _: () = {
            use $crate::balancer_world::exports::wasp::plugin::balancer::Guest;
            $crate::__state!($ty);
            struct Export;
            impl Guest for Export {
                fn configure(config: String) -> Result<(), String> {
                    $crate::__log_panics();
                    init(<$ty as $crate::Balancer>::configure(&config)?);
                    Ok(())
                }
                fn pick(
                    head: $crate::RequestHead,
                    upstream: String,
                    peers: Vec<$crate::Peer>,
                    cursor: u64,
                    hash_key: String,
                ) -> Option<u32> {
                    with(|s| $crate::Balancer::pick(s, &head, &upstream, &peers, cursor, &hash_key))
                }
            }
    $crate::balancer_world::export!(Export with_types_in $crate::balancer_world);
        };
    };
    (origin $ty:ty) => {
        const _: () = {
            use $crate::origin_world::exports::wasp::plugin::origin::Guest;
            $crate::__state!($ty);
            struct Export;
            impl Guest for Export {
                fn configure(config: String) -> Result<(), String> {
                    $crate::__log_panics();
                    init(<$ty as $crate::Origin>::configure(&config)?);
                    Ok(())
                }
                fn check(head: $crate::RequestHead, location: u32) -> Result<(), String> {
                    with(|s| $crate::Origin::check(s, &head, location))
                }
            }
    $crate::origin_world::export!(Export with_types_in $crate::origin_world);
        };
    };
    (filter $ty:ty) => {
        const _: () = {
            use $crate::filter_world::exports::wasp::plugin::filter::Guest;
            // The filter and the state of each connection it serves.
            $crate::__state!($crate::__Connections<$ty>);
            struct Export;
            impl Guest for Export {
                fn configure(config: String) -> Result<(), String> {
                    $crate::__log_panics();
                    let filter = <$ty as $crate::Filter>::configure(&config)?;
                    init($crate::__Connections::new(filter));
                    Ok(())
                }
                fn on_open(conn: u64, head: $crate::RequestHead) {
                    with(|s| s.on_open(conn, &head))
                }
                fn on_message(
                    conn: u64,
                    dir: $crate::Direction,
                    msg: $crate::Message,
                ) -> $crate::Action {
                    with(|s| s.on_message(conn, dir, msg))
                }
                fn on_messages(
                    conn: u64,
                    dir: $crate::Direction,
                    packed: Vec<u8>,
                ) -> Vec<$crate::filter_world::exports::wasp::plugin::filter::Outcome> {
                    with(|s| s.on_messages(conn, dir, $crate::__unpack(&packed)))
                }
                fn on_close(conn: u64) {
                    with(|s| s.on_close(conn))
                }
                fn on_timer(conn: u64) -> Option<$crate::CloseFrame> {
                    with(|s| s.on_timer(conn))
                }
            }
    $crate::filter_world::export!(Export with_types_in $crate::filter_world);
        };
    };
    ($other:ident $ty:ty) => {
        compile_error!(concat!(
            "unknown wasp role `",
            stringify!($other),
            "`: expected router, balancer, origin or filter"
        ));
    };
}

/// The per-role state slot: `init` stores what `configure` built, `with`
/// lends it to a call. Not public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __state {
    ($ty:ty) => {
        ::std::thread_local! {
            static STATE: ::std::cell::RefCell<Option<$ty>> = const { ::std::cell::RefCell::new(None) };
        }
        fn init(state: $ty) {
            STATE.with(|slot| *slot.borrow_mut() = Some(state));
        }
        fn with<R>(f: impl FnOnce(&mut $ty) -> R) -> R {
            STATE.with(|slot| {
                let mut slot = slot.borrow_mut();
                // wasp always calls `configure` first on a new instance.
                f(slot.as_mut().expect("wasp called the plugin before configure"))
            })
        }
    };
}
