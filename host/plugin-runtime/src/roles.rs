//! Typed entry points of each role, on top of the generic pool.

use crate::bindings::{Decision, Peer, RequestHead};
use crate::bindings::{balancer, filter, origin, router};
use crate::error::CallError;
use crate::host_api::HostState;
use crate::pool::{Pool, RoleExport};
use crate::role::Role;
use wasmtime::Store;
use wasmtime::component::{Instance, InstancePre};

macro_rules! role_export {
    ($module:ident, $role:expr) => {
        impl RoleExport for $module::Guest {
            const ROLE: Role = $role;
            type Indices = $module::GuestIndices;

            fn indices(pre: &InstancePre<HostState>) -> wasmtime::Result<Self::Indices> {
                $module::GuestIndices::new(pre)
            }

            fn load(
                indices: &Self::Indices,
                store: &mut Store<HostState>,
                instance: &Instance,
            ) -> wasmtime::Result<Self> {
                indices.load(store, instance)
            }

            fn configure(
                &self,
                store: &mut Store<HostState>,
                config: &str,
            ) -> wasmtime::Result<Result<(), String>> {
                self.call_configure(store, config)
            }
        }
    };
}

role_export!(router, Role::Router);
role_export!(balancer, Role::Balancer);
role_export!(origin, Role::Origin);
role_export!(filter, Role::Filter);

pub type RouterPool = Pool<router::Guest>;
pub type BalancerPool = Pool<balancer::Guest>;
pub type OriginPool = Pool<origin::Guest>;
impl RouterPool {
    /// Where should this request go?
    pub fn route(&self, head: &RequestHead) -> Result<Decision, CallError> {
        self.call(|guest, store| guest.call_route(store, head))
    }
}

impl BalancerPool {
    /// Which peer of `upstream` gets this request (index into `peers`)?
    pub fn pick(
        &self,
        head: &RequestHead,
        upstream: &str,
        peers: &[Peer],
        cursor: u64,
        hash_key: &str,
    ) -> Result<Option<u32>, CallError> {
        self.call(|guest, store| guest.call_pick(store, head, upstream, peers, cursor, hash_key))
    }
}

impl OriginPool {
    /// May this WebSocket handshake proceed on `location`?
    pub fn check(
        &self,
        head: &RequestHead,
        location: u32,
    ) -> Result<Result<(), String>, CallError> {
        self.call(|guest, store| guest.call_check(store, head, location))
    }
}
