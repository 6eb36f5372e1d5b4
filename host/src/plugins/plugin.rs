//! A compiled plugin: its name, content hash, the roles it exports, and a
//! pre-linked `InstancePre` from which instances are made in microseconds.

use super::error::LoadError;
use super::host_api::HostState;
use super::runtime::Runtime;
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::Arc;
use wasmtime::component::InstancePre;

/// The four things a plugin can decide.
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
}

impl Role {
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

/// A compiled, linked plugin, ready to be instantiated.
pub struct Plugin {
    name: Arc<str>,
    sha256: String,
    roles: Vec<Role>,
    pub(super) pre: InstancePre<HostState>,
    pub(super) runtime: Arc<Runtime>,
}

impl Plugin {
    pub(super) fn new(
        runtime: Arc<Runtime>,
        name: &str,
        bytes: &[u8],
        pre: InstancePre<HostState>,
    ) -> Result<Arc<Self>, LoadError> {
        let component_type = pre.component().component_type();
        let exported: Vec<String> = component_type
            .exports(runtime.engine())
            .map(|(export, _)| export.to_string())
            .collect();
        let roles: Vec<Role> = Role::ALL
            .into_iter()
            .filter(|role| exported.iter().any(|e| e == role.interface()))
            .collect();
        if roles.is_empty() {
            return Err(LoadError::NoRole);
        }
        let sha256 = Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Arc::new(Plugin {
            name: name.into(),
            sha256,
            roles,
            pre,
            runtime,
        }))
    }

    /// The name used in logs: a default plugin's name or the file's path.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// SHA-256 of the component's bytes, hex-encoded.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The roles this plugin exports.
    pub fn roles(&self) -> &[Role] {
        &self.roles
    }
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("sha256", &self.sha256)
            .field("roles", &self.roles)
            .finish()
    }
}
