//! A compiled plugin: its name, content hash, the roles it exports, and a
//! pre-linked `InstancePre` from which instances are made in microseconds.

use crate::error::LoadError;
use crate::host_api::HostState;
use crate::role::Role;
use crate::sandbox::Sandbox;
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::InstancePre;

/// A compiled, linked plugin, ready to be instantiated.
pub struct Plugin {
    name: Arc<str>,
    sha256: String,
    roles: Vec<Role>,
    /// How long compiling (or fetching from the cache) and linking took.
    load_time: Duration,
    pub(crate) pre: InstancePre<HostState>,
    /// Where its instances run: the engine, limits and deadlines.
    pub(crate) sandbox: Arc<Sandbox>,
}

impl Plugin {
    pub(crate) fn new(
        sandbox: Arc<Sandbox>,
        name: &str,
        bytes: &[u8],
        pre: InstancePre<HostState>,
        load_time: Duration,
    ) -> Result<Arc<Self>, LoadError> {
        let component_type = pre.component().component_type();
        let exported: Vec<String> = component_type
            .exports(sandbox.engine())
            .map(|(export, _)| export.to_string())
            .collect();
        let roles: Vec<Role> = Role::ALL
            .into_iter()
            .filter(|role| exported.iter().any(|e| e == role.interface()))
            .collect();
        if roles.is_empty() {
            return Err(LoadError::NoRole);
        }
        Ok(Arc::new(Plugin {
            name: name.into(),
            sha256: format!("{:x}", Sha256::digest(bytes)),
            roles,
            load_time,
            pre,
            sandbox,
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

    /// How long compiling and linking it took.
    pub fn load_time(&self) -> Duration {
        self.load_time
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
