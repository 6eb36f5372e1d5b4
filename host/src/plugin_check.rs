//! `wasp plugin check FILE.wasm`: loads a component as wasp would (the
//! contract version, the roles it exports, the imports it needs), then runs
//! each role's `configure` with the given configuration, so a plugin author
//! sees load errors and the plugin's own refusal without writing a
//! `wasp.toml` first.

use crate::plugins::{
    BalancerPool, FilterPool, Limits, LoadError, OriginPool, Plugin, Role, RouterPool, Runtime,
};
use std::path::Path;
use std::sync::Arc;

/// What checking a component found.
pub struct Report {
    pub plugin: Arc<Plugin>,
    /// Each role the component fills, with what its `configure` said: the
    /// plugin's own message when it refused.
    pub configured: Vec<(Role, Result<(), String>)>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.configured.iter().all(|(_, result)| result.is_ok())
    }
}

/// Loads `path` and configures each role it fills with `config` (JSON).
pub fn check(path: &Path, config: &str) -> Result<Report, LoadError> {
    // A handful of instances: one per role at most.
    let limits = Limits {
        instances: 8,
        ..Limits::default()
    };
    let runtime = Runtime::new(limits, None, None)
        .map_err(|e| LoadError::Instantiate(format!("wasm engine: {e:#}")))?;
    let plugin = runtime.load_file(path)?;
    let configured = plugin
        .roles()
        .iter()
        .map(|&role| (role, configure(&plugin, role, config)))
        .collect();
    Ok(Report { plugin, configured })
}

fn configure(plugin: &Arc<Plugin>, role: Role, config: &str) -> Result<(), String> {
    let (plugin, config) = (plugin.clone(), config.to_owned());
    let result = match role {
        Role::Router => RouterPool::new(plugin, config).map(drop),
        Role::Balancer => BalancerPool::new(plugin, config).map(drop),
        Role::Origin => OriginPool::new(plugin, config).map(drop),
        Role::Filter => FilterPool::new(plugin, config).map(drop),
    };
    result.map_err(|error| match error {
        LoadError::Configure(message) => message,
        other => other.to_string(),
    })
}
