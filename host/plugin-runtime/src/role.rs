//! The four things a plugin can decide, and the WIT interface of each.

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
            Role::Router => "wasp:plugin/router@0.1.0",
            Role::Balancer => "wasp:plugin/balancer@0.1.0",
            Role::Origin => "wasp:plugin/origin@0.1.0",
            Role::Filter => "wasp:plugin/filter@0.1.0",
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
