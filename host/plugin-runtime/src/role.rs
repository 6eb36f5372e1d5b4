//! The four things a plugin can decide, and the WIT interface of each.

use crate::contract::wit_version;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Router,
    Balancer,
    Origin,
    Filter,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Router, Role::Balancer, Role::Origin, Role::Filter];

    /// The exported interface that fills this role.
    pub fn interface(self) -> &'static str {
        match self {
            Role::Router => concat!("wasp:plugin/router@", wit_version!()),
            Role::Balancer => concat!("wasp:plugin/balancer@", wit_version!()),
            Role::Origin => concat!("wasp:plugin/origin@", wit_version!()),
            Role::Filter => concat!("wasp:plugin/filter@", wit_version!()),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Router => "router",
            Role::Balancer => "balancer",
            Role::Origin => "origin",
            Role::Filter => "filter",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
