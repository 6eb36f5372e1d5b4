//! Binding the configured addresses, accepting clients under the global
//! connection cap, and shutting down gracefully.

use crate::config::Config;
use crate::http::client_stream::ClientStream;
use crate::http::{ConnInfo, ConnLimits, Shared, serve_connection, signalled};
use crate::plugins::{Limits, Runtime};
use crate::site::Site;
use crate::tls::{CertWatcher, TlsTerminator};
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
    /// Reload certificates when their files change, while the proxy runs.
    _cert_watchers: Vec<CertWatcher>,
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
        let mut cert_watchers = Vec::new();
        for listener in listeners(&config) {
            let tls = match listener.tls {
                Some(sites) => {
                    let terminator = TlsTerminator::new(sites)
                        .with_context(|| format!("TLS on {}", listener.listen))?;
                    cert_watchers.push(terminator.watch()?);
                    Some(terminator)
                }
                None => None,
            };
            let listen = listener.listen;
            let socket = TcpListener::bind(&listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            let local = socket.local_addr()?;
            tracing::info!(listen = %listen, address = %local, tls = tls.is_some(), "listening");
            bound.push((listen.clone(), local));
            let accept = Accept {
                listen: listen.into(),
                limits: listener.limits,
                tls,
                shared: shared.clone(),
                connections: connections.clone(),
            };
            tasks.spawn(accept.run(socket));
        }
        Ok(Proxy {
            shared,
            bound,
            drain,
            close_websockets,
            tasks,
            grace,
            _cert_watchers: cert_watchers,
        })
    }

    /// The address a configured `listen` string was bound to (useful with port 0).
    pub fn local_addr(&self, listen: &str) -> Option<SocketAddr> {
        self.bound
            .iter()
            .find(|(l, _)| l == listen)
            .map(|(_, addr)| *addr)
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
        if tokio::time::timeout(self.grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::info!("grace period over; closing the remaining WebSockets");
            let _ = self.close_websockets.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(5), self.tasks.wait()).await;
        }
    }
}

/// One listen address: its protocol settings (from its default, first,
/// server) and, when its servers have certificates, TLS by SNI.
struct ListenerPlan {
    listen: String,
    limits: ConnLimits,
    tls: Option<Vec<(Vec<String>, crate::config::TlsFiles)>>,
}

fn listeners(config: &Config) -> Vec<ListenerPlan> {
    let mut plans: Vec<ListenerPlan> = Vec::new();
    for server in &config.servers {
        for listen in &server.listen {
            let index = match plans.iter().position(|p| &p.listen == listen) {
                Some(index) => index,
                None => {
                    let limits = ConnLimits {
                        header_timeout: server.client_header_timeout,
                        max_header_size: server.max_header_size,
                        redirect_https: server.redirect_http,
                    };
                    plans.push(ListenerPlan {
                        listen: listen.clone(),
                        limits,
                        tls: None,
                    });
                    plans.len() - 1
                }
            };
            if let Some(files) = &server.tls {
                plans[index]
                    .tls
                    .get_or_insert_with(Vec::new)
                    .push((server.server_names.clone(), files.clone()));
            }
        }
    }
    plans
}

/// Accepts the clients of one listen address.
struct Accept {
    listen: Arc<str>,
    limits: ConnLimits,
    tls: Option<Arc<TlsTerminator>>,
    shared: Arc<Shared>,
    connections: Arc<Semaphore>,
}

impl Accept {
    async fn run(self, socket: TcpListener) {
        let this = Arc::new(self);
        loop {
            let (stream, client) = tokio::select! {
                accepted = socket.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = signalled(this.shared.drain.clone()) => return,
            };
            let Ok(permit) = this.connections.clone().try_acquire_owned() else {
                tracing::warn!(%client, "max_connections reached; connection closed");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let this = this.clone();
            this.shared.tasks.clone().spawn(async move {
                let local = stream
                    .local_addr()
                    .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                let (stream, sni) = match &this.tls {
                    None => (ClientStream::Plain(stream), None),
                    Some(tls) => {
                        match tokio::time::timeout(this.limits.header_timeout, tls.accept(stream))
                            .await
                        {
                            Ok(Ok((stream, sni))) => (ClientStream::Tls(Box::new(stream)), sni),
                            Ok(Err(error)) => {
                                tracing::info!(%client, %error, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::info!(%client, "TLS handshake timed out");
                                return;
                            }
                        }
                    }
                };
                let tls = matches!(stream, ClientStream::Tls(_));
                let info = ConnInfo {
                    client,
                    local,
                    listener: this.listen.clone(),
                    tls,
                    sni,
                    _permit: permit,
                };
                serve_connection(stream, info, this.limits, this.shared.clone()).await;
            });
        }
    }
}
