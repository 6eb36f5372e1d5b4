//! A running wasp: the site in service, its listeners, and reloading both
//! without dropping a connection.
//!
//! Reload semantics: a new configuration and new plugin versions are
//! prepared completely off the request path (parsed, validated, compiled,
//! configured); if anything fails, nothing changes and the cause is logged
//! in one line. Otherwise the new site replaces the old one atomically: new
//! requests and handshakes use it at once, requests in flight finish with
//! the site they started with, open tunnels are untouched, and filtered
//! WebSockets switch to a new filter version at their next message (the new
//! instance first gets `on-open` for the connection).

use crate::access_log::LogFiles;
use crate::admin::{self, AdminHooks};
use crate::config::{Config, LogFormat};
use crate::digest::sha256_hex;
use crate::file_watch::{FileWatcher, watch_files};
use crate::http::Shared;
use crate::listener::Listeners;
use crate::metrics::Metrics;
use crate::plugins::{CallObserver, Limits, Runtime};
use crate::site::{Registry, Site};
use crate::workers::Workers;
use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::watch;

/// Why and what to reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadCause {
    /// A watched file changed.
    FileChanged,
    /// SIGHUP or the admin endpoint.
    Requested,
}

/// A running proxy. Cheap to share: reloads hold a reference.
pub struct Proxy {
    inner: Arc<Inner>,
    drain: watch::Sender<bool>,
    close_websockets: watch::Sender<bool>,
}

struct Inner {
    shared: Arc<Shared>,
    runtime: Arc<Runtime>,
    registry: Arc<Registry>,
    /// Access-log files and their writer thread.
    log_files: Arc<LogFiles>,
    config_path: Option<PathBuf>,
    listeners: tokio::sync::Mutex<Listeners>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    watcher: Mutex<Option<FileWatcher>>,
    grace: Duration,
}

impl Proxy {
    /// Starts from `config`, read from file `path`, which is then watched
    /// and reloaded.
    pub async fn start_file(config: Config, path: PathBuf) -> anyhow::Result<Proxy> {
        Proxy::start_with(config, Some(path)).await
    }

    /// Starts from a configuration in memory (the embedded default, tests).
    /// Plugin files it names are still watched.
    pub async fn start(config: Config) -> anyhow::Result<Proxy> {
        Proxy::start_with(config, None).await
    }

    async fn start_with(config: Config, config_path: Option<PathBuf>) -> anyhow::Result<Proxy> {
        let settings = &config.plugins;
        let limits = Limits {
            call_timeout: settings.call_timeout,
            call_timeout_per_mib: settings.call_timeout_per_mib,
            memory_limit: settings.memory_limit,
            instances: settings.instances,
        };
        let instance = config.cluster.as_ref().map(|cluster| {
            cluster
                .instance
                .clone()
                .unwrap_or_else(crate::cluster::default_instance)
        });
        let metrics = Metrics::for_instance(instance.as_deref());
        let observer: Arc<dyn CallObserver> = metrics.clone();
        let runtime = Runtime::new(limits, settings.cache_dir.as_deref(), Some(observer))
            .map_err(|e| anyhow::anyhow!("cannot start the plugin runtime: {e:#}"))?;
        let registry = Arc::new(Registry::default());
        let log_files = LogFiles::new(
            config.log_format == LogFormat::Json,
            metrics.access_log_dropped(),
        )
        .context("cannot start the access-log writer")?;
        let log_files = Arc::new(log_files);
        let config = Arc::new(config);
        let mut site = load_site(config.clone(), &runtime, &registry, &metrics, &log_files).await?;
        site.activate(&registry, &metrics);
        log_loaded(&site);
        let read = plugin_files(&site);

        let (drain, drain_rx) = watch::channel(false);
        let (close_websockets, close_rx) = watch::channel(false);
        let shared = Shared::new(Arc::new(site), drain_rx.into(), close_rx.into(), metrics);
        if let (Some(settings), Some(instance)) = (&config.cluster, instance) {
            let settings = crate::cluster::Settings {
                redis: settings.redis.clone(),
                instance,
                timeout: settings.timeout,
                retry: settings.retry,
            };
            // It outlives the drain: the WebSockets still open give their
            // connection slots back to the cluster as they close.
            let cluster = crate::cluster::Cluster::start(
                settings,
                runtime.kv().clone(),
                shared.metrics.cluster_connected(),
                close_websockets.subscribe().into(),
            )?;
            let _ = shared.cluster.set(cluster);
        }
        let workers = config.workers.unwrap_or_else(Workers::default_count);
        let workers = Arc::new(Workers::start(workers).context("cannot start the worker threads")?);
        let mut listeners = Listeners::new(shared.clone(), workers, config.max_connections);
        listeners.apply(&config).await?;
        let inner = Arc::new(Inner {
            shared,
            runtime,
            registry,
            log_files,
            config_path,
            listeners: tokio::sync::Mutex::new(listeners),
            reloading: tokio::sync::Mutex::new(()),
            watcher: Mutex::new(None),
            grace: config.shutdown_grace,
        });
        inner.watch_files(&config);
        inner.loaded(read);
        if let Some(address) = config.admin {
            let socket = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("admin listener {address}"))?;
            tracing::info!(%address, "admin listener: /metrics /status /reload");
            let hooks: Arc<dyn AdminHooks> = Arc::new(Admin(Arc::downgrade(&inner)));
            inner
                .shared
                .tasks
                .spawn(admin::serve(socket, hooks, drain.subscribe().into()));
        }
        Ok(Proxy {
            inner,
            drain,
            close_websockets,
        })
    }

    /// Re-reads the configuration file (if any) and every plugin file, and
    /// puts them in service; on error nothing changes. Returns a summary.
    pub async fn reload(&self) -> Result<String, String> {
        self.inner.reload(ReloadCause::Requested).await
    }

    /// Opens every access-log file again by its path (SIGUSR1, after log
    /// rotation moved the files away); returns how many.
    pub async fn reopen_logs(&self) -> Result<usize, String> {
        let files = self.inner.log_files.clone();
        let reopened = tokio::task::spawn_blocking(move || files.reopen())
            .await
            .map_err(|e| e.to_string())?;
        match &reopened {
            Ok(count) => tracing::info!(files = count, "access logs reopened"),
            Err(error) => tracing::error!(
                "cannot reopen access logs, still writing to the old files: {error}"
            ),
        }
        reopened
    }

    /// The address a configured `listen` string is bound to (useful with port 0).
    pub async fn local_addr(&self, listen: &str) -> Option<SocketAddr> {
        self.inner.listeners.lock().await.local_addr(listen)
    }

    /// What every connection shares (the site in service).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// Stops accepting, lets in-flight requests finish, then after the grace
    /// period closes the remaining WebSockets with 1001.
    pub async fn shutdown(self) {
        self.inner.watcher.lock().unwrap().take();
        let _ = self.drain.send(true);
        let tasks = &self.inner.shared.tasks;
        tasks.close();
        if tokio::time::timeout(self.inner.grace, tasks.wait())
            .await
            .is_err()
        {
            tracing::info!("grace period over; closing the remaining WebSockets");
            let _ = self.close_websockets.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await;
        }
        // The last requests' lines, written before the process exits.
        let files = self.inner.log_files.clone();
        let synced = tokio::task::spawn_blocking(move || files.sync(Duration::from_secs(5))).await;
        if !matches!(synced, Ok(true)) {
            tracing::warn!(
                "the access-log writer did not finish in 5 s; its last lines may be lost"
            );
        }
    }
}

/// Builds a site off the async workers (compiling plugins is CPU-bound).
/// It is not active yet: see [`Site::activate`].
async fn load_site(
    config: Arc<Config>,
    runtime: &Arc<Runtime>,
    registry: &Arc<Registry>,
    metrics: &Arc<Metrics>,
    log_files: &Arc<LogFiles>,
) -> anyhow::Result<Site> {
    let (runtime, registry, metrics) = (runtime.clone(), registry.clone(), metrics.clone());
    let log_files = log_files.clone();
    Ok(tokio::task::spawn_blocking(move || {
        Site::load(config, &runtime, &registry, &metrics, &log_files)
    })
    .await??)
}

impl Inner {
    async fn reload(self: &Arc<Self>, cause: ReloadCause) -> Result<String, String> {
        let _one_at_a_time = self.reloading.lock().await;
        let result = self.try_reload().await;
        self.shared.metrics.reload(
            if self.config_path.is_some() {
                "config"
            } else {
                "plugin"
            },
            result.is_ok(),
        );
        match &result {
            Ok(summary) => tracing::info!(?cause, "reloaded: {summary}"),
            Err(error) => tracing::error!(
                ?cause,
                "reload refused, the previous configuration keeps serving: {error}"
            ),
        }
        result
    }

    async fn try_reload(self: &Arc<Self>) -> Result<String, String> {
        let mut read = Vec::new();
        let config = match &self.config_path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                read.push((path.clone(), sha256_hex(text.as_bytes())));
                Config::parse(&text, &path.display().to_string()).map_err(|e| e.to_string())?
            }
            None => (*self.shared.site.load().config).clone(),
        };
        if config.plugins.call_timeout != self.runtime.limits().call_timeout
            || config.plugins.call_timeout_per_mib != self.runtime.limits().call_timeout_per_mib
            || (config.plugins.ban_after_overruns, config.plugins.ban_time)
                != self.shared.cpu_bans.settings()
            || config.plugins.memory_limit != self.runtime.limits().memory_limit
            || config.plugins.instances != self.runtime.limits().instances
        {
            tracing::warn!("plugin limits changed: they apply after a restart");
        }
        if config.workers != self.shared.site.load().config.workers {
            tracing::warn!("workers changed: it applies after a restart");
        }
        if config.cluster != self.shared.site.load().config.cluster {
            tracing::warn!("[cluster] changed: it applies after a restart");
        }
        if config.log_format != self.shared.site.load().config.log_format {
            tracing::warn!("log_format changed: it applies after a restart (access-log files too)");
        }
        let config = Arc::new(config);
        let mut site = load_site(
            config.clone(),
            &self.runtime,
            &self.registry,
            &self.shared.metrics,
            &self.log_files,
        )
        .await
        .map_err(|e| format!("{e:#}"))?;
        self.listeners
            .lock()
            .await
            .apply(&config)
            .await
            .map_err(|e| format!("{e:#}"))?;
        site.activate(&self.registry, &self.shared.metrics);
        let summary = site
            .plugins
            .iter()
            .map(|plugin| format!("{} {}", plugin.name(), &plugin.sha256()[..12]))
            .collect::<Vec<_>>()
            .join(", ");
        read.extend(plugin_files(&site));
        log_loaded(&site);
        self.shared.site.swap(Arc::new(site)).retire();
        self.watch_files(&config);
        self.loaded(read);
        Ok(format!("plugins: {summary}"))
    }

    /// Tells the watcher which file contents are in service now: any file
    /// changed since it was read is reloaded (see [`FileWatcher::loaded`]).
    fn loaded(&self, read: Vec<(PathBuf, String)>) {
        if let Some(watcher) = &*self.watcher.lock().unwrap() {
            watcher.loaded(read);
        }
    }

    /// Watches the configuration file and every plugin file it names.
    fn watch_files(self: &Arc<Self>, config: &Config) {
        let mut files: Vec<PathBuf> = self.config_path.iter().cloned().collect();
        let plugins = &config.plugins;
        files.extend(
            [&plugins.router, &plugins.balancer, &plugins.origin]
                .into_iter()
                .flatten()
                .cloned(),
        );
        for location in config.locations() {
            files.extend(
                location
                    .filters
                    .iter()
                    .filter(|f| f.plugin.ends_with(".wasm"))
                    .map(|f| PathBuf::from(&f.plugin)),
            );
        }
        if files.is_empty() {
            return;
        }
        // A weak reference: the watcher must not keep a stopped proxy alive.
        let weak: Weak<Inner> = Arc::downgrade(self);
        let watcher = watch_files(files, move |changed| {
            let Some(inner) = weak.upgrade() else { return };
            tracing::info!(files = ?changed, "file changed; reloading");
            tokio::spawn(async move {
                let _ = inner.reload(ReloadCause::FileChanged).await;
            });
        });
        match watcher {
            Ok(watcher) => *self.watcher.lock().unwrap() = Some(watcher),
            Err(error) => {
                tracing::warn!(%error, "cannot watch the configuration and plugin files; reload with SIGHUP")
            }
        }
    }
}

/// One line per plugin of a site going into service: its name, the SHA-256
/// of its bytes and how long compiling and linking took, so that a plugin
/// author sees which build is serving.
fn log_loaded(site: &Site) {
    for plugin in &site.plugins {
        tracing::info!(
            plugin = %plugin.name(),
            sha256 = %plugin.sha256(),
            load_ms = plugin.load_time().as_millis() as u64,
            "plugin loaded"
        );
    }
}

/// The plugins of `site` and the hashes of the bytes they were compiled
/// from; a plugin loaded from a file is named after its path.
fn plugin_files(site: &Site) -> Vec<(PathBuf, String)> {
    site.plugins
        .iter()
        .map(|plugin| (PathBuf::from(&**plugin.name()), plugin.sha256().to_owned()))
        .collect()
}

/// What the admin listener asks of the proxy. Weak: the admin task must not
/// keep a stopped proxy alive.
struct Admin(Weak<Inner>);

impl AdminHooks for Admin {
    fn metrics(&self) -> String {
        self.0
            .upgrade()
            .map(|inner| inner.shared.metrics.encode())
            .unwrap_or_default()
    }

    fn status(&self) -> serde_json::Value {
        let Some(inner) = self.0.upgrade() else {
            return serde_json::Value::Null;
        };
        let site = inner.shared.site.load();
        let now = std::time::Instant::now();
        let plugins: Vec<serde_json::Value> = site
            .plugins
            .iter()
            .map(|p| serde_json::json!({ "name": &**p.name(), "sha256": p.sha256(), "roles": p.roles().iter().map(|r| r.as_str()).collect::<Vec<_>>() }))
            .collect();
        let upstreams: serde_json::Map<String, serde_json::Value> = site
            .upstreams
            .iter()
            .map(|(name, group)| {
                let peers: Vec<serde_json::Value> = group
                    .peers
                    .iter()
                    .map(|peer| {
                        serde_json::json!({
                            "address": peer.address,
                            "active": peer.active(),
                            "healthy": peer.healthy(),
                            "available": peer.available(now),
                            "weight": peer.weight,
                            "backup": peer.backup,
                        })
                    })
                    .collect();
                (name.clone(), serde_json::json!({ "peers": peers }))
            })
            .collect();
        serde_json::json!({ "plugins": plugins, "upstreams": upstreams })
    }

    fn reload(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send>> {
        let inner = self.0.upgrade();
        Box::pin(async move {
            match inner {
                Some(inner) => inner.reload(ReloadCause::Requested).await,
                None => Err("wasp is shutting down".to_string()),
            }
        })
    }
}
