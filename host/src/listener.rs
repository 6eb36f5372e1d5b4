//! Binding the configured addresses, accepting clients under the global
//! connection cap, and shutting down gracefully.

use crate::config::Config;
use crate::http::{ConnInfo, ConnLimits, Shared, serve_connection, signalled};
use crate::plugins::{Limits, Runtime};
use crate::site::Site;
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_util::task::TaskTracker;

/// A running proxy.
pub struct Proxy {
    shared: Arc<Shared>,
    bound: Vec<(String, SocketAddr)>,
    drain: watch::Sender<bool>,
    close_websockets: watch::Sender<bool>,
    tasks: TaskTracker,
    grace: Duration,
}

impl Proxy {
    /// Loads the plugins, binds every listen address and starts serving.
    pub async fn start(config: Config) -> anyhow::Result<Proxy> {
        let settings = &config.plugins;
        let limits = Limits {
            call_timeout: settings.call_timeout,
            memory_limit: settings.memory_limit,
            instances: settings.instances,
        };
        let runtime = Runtime::new(limits, settings.cache_dir.as_deref())
            .map_err(|e| anyhow::anyhow!("cannot start the plugin runtime: {e:#}"))?;
        let grace = config.shutdown_grace;
        let max_connections = config.max_connections;
        let config = Arc::new(config);
        let site = {
            let config = config.clone();
            tokio::task::spawn_blocking(move || Site::load(config, &runtime)).await??
        };

        let (drain, drain_rx) = watch::channel(false);
        let (close_websockets, close_rx) = watch::channel(false);
        let shared = Shared::new(Arc::new(site), drain_rx, close_rx);
        let connections = Arc::new(Semaphore::new(max_connections));
        let tasks = shared.tasks.clone();
        let mut bound = Vec::new();
        for (listen, limits) in listeners(&config) {
            let listener = TcpListener::bind(&listen).await.with_context(|| format!("cannot listen on {listen}"))?;
            let local = listener.local_addr()?;
            tracing::info!(listen = %listen, address = %local, "listening");
            bound.push((listen.clone(), local));
            tasks.spawn(accept_loop(listener, listen.into(), limits, shared.clone(), connections.clone()));
        }
        Ok(Proxy { shared, bound, drain, close_websockets, tasks, grace })
    }

    /// The address a configured `listen` string was bound to (useful with port 0).
    pub fn local_addr(&self, listen: &str) -> Option<SocketAddr> {
        self.bound.iter().find(|(l, _)| l == listen).map(|(_, addr)| *addr)
    }

    /// What every connection shares (the site in service).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stops accepting, lets in-flight requests finish, then after the grace
    /// period closes the remaining WebSockets with 1001.
    pub async fn shutdown(self) {
        let _ = self.drain.send(true);
        self.tasks.close();
        if tokio::time::timeout(self.grace, self.tasks.wait()).await.is_err() {
            tracing::info!("grace period over; closing the remaining WebSockets");
            let _ = self.close_websockets.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(5), self.tasks.wait()).await;
        }
    }
}

/// Each distinct listen address with the protocol limits of its default
/// (first) server.
fn listeners(config: &Config) -> Vec<(String, ConnLimits)> {
    let mut out: Vec<(String, ConnLimits)> = Vec::new();
    for server in &config.servers {
        for listen in &server.listen {
            if !out.iter().any(|(l, _)| l == listen) {
                let limits = ConnLimits {
                    header_timeout: server.client_header_timeout,
                    max_header_size: server.max_header_size,
                };
                out.push((listen.clone(), limits));
            }
        }
    }
    out
}

async fn accept_loop(
    listener: TcpListener,
    listen: Arc<str>,
    limits: ConnLimits,
    shared: Arc<Shared>,
    connections: Arc<Semaphore>,
) {
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = signalled(shared.drain.clone()) => return,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(%client, "max_connections reached; connection closed");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let info = ConnInfo { client, local, listener: listen.clone(), tls: false, sni: None, _permit: permit };
        shared.tasks.spawn(serve_connection(stream, info, limits, shared.clone()));
    }
}
