//! A loaded configuration: the validated config plus everything built from
//! it once — plugin pools, upstream groups with resolved addresses, compiled
//! header templates. Requests hold an `Arc<Site>` for their whole life, so a
//! reload never changes what an in-flight request sees.

use crate::access_log::{Destination, LogFiles};
use crate::config::{Config, Location, LocationAction};
use crate::filter_chain::FilterSlot;
use crate::metrics::{LocationCounters, Metrics};
use crate::plugins::{
    BalancerPool, FilterPool, LoadError, OriginPool, Plugin, RouterPool, Runtime, embedded,
};
use crate::tls::{TlsError, UpstreamConnector};
use crate::upstream::{HealthObserver, UpstreamGroup, resolve, spawn_health_checks};
use crate::vars::Template;
use http::HeaderName;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::watch;

mod access_logs;
mod registry;
use access_logs::AccessLogs;
pub use registry::Registry;
use registry::Swap;

/// Why a configuration could not be put in service.
#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error("plugin {name}: {error}")]
    Plugin { name: String, error: LoadError },
    #[error("location {location}: TLS to the upstream: {error}")]
    UpstreamTls { location: String, error: TlsError },
    #[error("upstream {upstream}: cannot resolve {address}: {error}")]
    Resolve {
        upstream: String,
        address: String,
        error: std::io::Error,
    },
    #[error("access_log {}: {error}", path.display())]
    AccessLog {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
}

/// A location with what it needs at request time.
pub struct LocationRuntime {
    pub config: Location,
    /// The path as written (`= /exact`, `/ws/`), naming the location in
    /// metrics.
    pub label: String,
    /// Its message and byte counters.
    pub counters: LocationCounters,
    /// Headers set upstream: nginx's defaults overridden by `set_headers`.
    pub set_headers: Vec<(HeaderName, Template)>,
    /// Keys of `limit_conn` and `limit_req`.
    pub limit_conn_key: Template,
    pub limit_req_key: Option<Template>,
    /// From the location's server: `client_max_body_size` and `strict_websocket`.
    pub max_body: u64,
    pub strict_websocket: bool,
    /// From the location's server: `client_body_timeout`.
    pub body_timeout: std::time::Duration,
    /// The filter chain; each pool sits behind an `ArcSwap` so a plugin
    /// reload reaches open connections at their next message.
    pub filters: Vec<FilterSlot>,
    /// Where its server logs requests.
    pub access_log: Destination,
    /// TLS towards the upstream, for `proxy_pass https://`.
    pub upstream_tls: Option<UpstreamConnector>,
}

pub struct Site {
    pub config: Arc<Config>,
    pub router: RouterPool,
    pub balancer: BalancerPool,
    pub origin: OriginPool,
    /// Shared with the WebSockets opened on them, which keep only their
    /// location, not the whole site (its plugins' instances and code), for
    /// their life.
    pub locations: Vec<Arc<LocationRuntime>>,
    pub upstreams: HashMap<String, Arc<UpstreamGroup>>,
    /// Every plugin this site uses, for status and reload checks.
    pub plugins: Vec<Arc<Plugin>>,
    /// Each server's access log, and each listen address's default one.
    access_logs: AccessLogs,
    /// New filter versions for slots open connections already use.
    swaps: Vec<Swap>,
    /// Stops this site's active health checks.
    health_stop: watch::Sender<bool>,
}

impl Site {
    /// Builds everything a configuration needs. Blocking (compiles plugins,
    /// resolves names): run it off the async workers.
    pub fn load(
        config: Arc<Config>,
        runtime: &Arc<Runtime>,
        registry: &Registry,
        metrics: &Arc<Metrics>,
        log_files: &LogFiles,
    ) -> Result<Site, SiteError> {
        let access_logs = AccessLogs::open(&config, log_files)?;
        let mut loader = PluginLoader {
            runtime,
            loaded: HashMap::new(),
        };
        let plugins = &config.plugins;
        let router = loader.pool(plugins.router.as_deref(), "router", config.router_json())?;
        let balancer = loader.pool(
            plugins.balancer.as_deref(),
            "balancer",
            config.balancer_json(),
        )?;
        let origin = loader.pool(plugins.origin.as_deref(), "origin", config.origin_json())?;

        let mut locations = Vec::new();
        let mut swaps = Vec::new();
        let located = config
            .servers
            .iter()
            .zip(&access_logs.servers)
            .flat_map(|(server, log)| server.locations.iter().map(move |l| (server, log, l)));
        for (server, access_log, location) in located {
            let mut filters = Vec::new();
            for spec in &location.filters {
                let (path, builtin) = filter_source(&spec.plugin);
                let filter_config = spec.config.to_string();
                let pool = loader.filter_pool(path, &builtin, filter_config.clone())?;
                let (slot, swap) =
                    registry.filter_slot(&spec.plugin, &filter_config, Arc::new(pool));
                swaps.extend(swap);
                filters.push(FilterSlot {
                    name: spec.plugin.as_str().into(),
                    pool: slot,
                    fail_open: spec.fail_open,
                });
            }
            let label = format!("{} {}", location.kind.modifier(), location.pattern)
                .trim()
                .to_string();
            let upstream_tls = match &location.action {
                LocationAction::Proxy { tls: Some(tls), .. } => Some(
                    UpstreamConnector::new(tls).map_err(|error| SiteError::UpstreamTls {
                        location: label.clone(),
                        error,
                    })?,
                ),
                _ => None,
            };
            locations.push(Arc::new(LocationRuntime {
                upstream_tls,
                counters: metrics.location(&label),
                label,
                set_headers: upstream_headers(location),
                limit_conn_key: Template::from_config(&location.limit_conn_key),
                limit_req_key: location
                    .limit_req
                    .as_ref()
                    .map(|limit| Template::from_config(&limit.key)),
                max_body: server.client_max_body_size,
                strict_websocket: server.strict_websocket,
                body_timeout: server.client_body_timeout,
                config: location.clone(),
                filters,
                access_log: access_log.clone(),
            }));
        }

        let mut upstreams = HashMap::new();
        for (name, upstream) in &config.upstreams {
            let mut peers = Vec::new();
            for server in &upstream.servers {
                let addrs = resolve(&server.address).map_err(|error| SiteError::Resolve {
                    upstream: name.clone(),
                    address: server.address.clone(),
                    error,
                })?;
                peers.push(registry.peer(name, server, addrs));
            }
            let cursor = registry.cursor(name);
            let group = UpstreamGroup::new(name, upstream, peers, cursor, metrics.clone());
            upstreams.insert(name.clone(), Arc::new(group));
        }

        Ok(Site {
            config,
            router,
            balancer,
            origin,
            locations,
            upstreams,
            plugins: loader.loaded.into_values().collect(),
            access_logs,
            swaps,
            health_stop: watch::channel(false).0,
        })
    }

    /// Puts this site's filter versions in service for open connections too,
    /// and lets the registry forget what this site no longer uses. Call it
    /// right before the site replaces the one in service.
    pub fn activate(&mut self, registry: &Registry, metrics: &Arc<Metrics>) {
        for swap in self.swaps.drain(..) {
            swap.apply();
        }
        for (name, group) in &self.upstreams {
            match &self.config.upstreams[name].health {
                Some(check) => {
                    let metrics = metrics.clone();
                    let observer: HealthObserver = Arc::new(move |upstream, peer, healthy| {
                        metrics.health_change(upstream, peer, healthy)
                    });
                    let stop = self.health_stop.subscribe().into();
                    spawn_health_checks(group.clone(), check.clone(), observer, stop);
                }
                // Checks removed by a reload must not leave a peer marked down.
                None => group.peers.iter().for_each(|peer| peer.set_healthy(true)),
            }
        }
        let peers: Vec<(String, String)> = self
            .upstreams
            .values()
            .flat_map(|group| {
                group
                    .peers
                    .iter()
                    .map(|peer| (group.name.clone(), peer.address.clone()))
            })
            .collect();
        let filters: Vec<(String, String)> = self
            .config
            .locations()
            .flat_map(|location| {
                location
                    .filters
                    .iter()
                    .map(|spec| (spec.plugin.clone(), spec.config.to_string()))
            })
            .collect();
        registry.retain(&peers, &filters);
    }

    pub fn location(&self, id: u32) -> Option<&Arc<LocationRuntime>> {
        self.locations.get(id as usize)
    }

    /// The access log of the default server of listen address `listen`
    /// (as written): where a request's line goes until it is routed.
    pub fn access_log(&self, listen: &str) -> Destination {
        let logs = &self.access_logs;
        logs.listeners.get(listen).unwrap_or(&logs.stderr).clone()
    }
}

impl Site {
    /// Called when a newer site took over: its health checks stop (requests
    /// still holding this site finish with it).
    pub fn retire(&self) {
        let _ = self.health_stop.send(true);
    }
}

/// Headers sent upstream, nginx's defaults first: `Host: $proxy_host`, and
/// the `$connection_upgrade` map for `Upgrade`/`Connection` so WebSockets
/// work with no configuration; a location's `set_headers` override them.
fn upstream_headers(location: &Location) -> Vec<(HeaderName, Template)> {
    let mut headers: Vec<(HeaderName, Template)> = [
        ("host", "$proxy_host"),
        ("upgrade", "$http_upgrade"),
        ("connection", "$connection_upgrade"),
    ]
    .into_iter()
    .map(|(name, value)| (HeaderName::from_static(name), Template::from_config(value)))
    .collect();
    if !matches!(location.action, LocationAction::Proxy { .. }) {
        return Vec::new();
    }
    for (name, value) in &location.set_headers {
        let name = HeaderName::try_from(name.as_str()).expect("config validated header names");
        headers.retain(|(existing, _)| *existing != name);
        headers.push((name, Template::from_config(value)));
    }
    headers
}

/// A filter name is a built-in (`json` is embedded as `filter-json`) or a
/// path to a `.wasm` file.
fn filter_source(name: &str) -> (Option<&Path>, String) {
    if name.ends_with(".wasm") {
        (Some(Path::new(name)), name.to_string())
    } else {
        (None, format!("filter-{name}"))
    }
}

/// Compiles each plugin once per load, even when several roles or
/// locations use it.
struct PluginLoader<'a> {
    runtime: &'a Arc<Runtime>,
    loaded: HashMap<String, Arc<Plugin>>,
}

impl PluginLoader<'_> {
    fn plugin(&mut self, path: Option<&Path>, builtin: &str) -> Result<Arc<Plugin>, SiteError> {
        let key = path.map_or_else(|| builtin.to_string(), |p| p.display().to_string());
        if let Some(plugin) = self.loaded.get(&key) {
            return Ok(plugin.clone());
        }
        let plugin = match path {
            Some(path) => self.runtime.load_file(path),
            None => {
                let bytes = embedded::get(builtin).expect("config validated built-in plugin names");
                self.runtime.load(builtin, bytes)
            }
        }
        .map_err(|error| SiteError::Plugin {
            name: key.clone(),
            error,
        })?;
        self.loaded.insert(key, plugin.clone());
        Ok(plugin)
    }

    fn pool<G: crate::plugins::RoleExport>(
        &mut self,
        path: Option<&Path>,
        builtin: &str,
        config: String,
    ) -> Result<crate::plugins::Pool<G>, SiteError> {
        let plugin = self.plugin(path, builtin)?;
        let name = plugin.name().to_string();
        crate::plugins::Pool::new(plugin, config).map_err(|error| SiteError::Plugin { name, error })
    }

    fn filter_pool(
        &mut self,
        path: Option<&Path>,
        builtin: &str,
        config: String,
    ) -> Result<FilterPool, SiteError> {
        let plugin = self.plugin(path, builtin)?;
        let name = plugin.name().to_string();
        FilterPool::new(plugin, config).map_err(|error| SiteError::Plugin { name, error })
    }
}
