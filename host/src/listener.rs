//! The listening sockets: one per configured address, each accepting
//! clients under the global connection cap with its current settings
//! (protocol limits, TLS certificates), which a reload may replace. A reload
//! also opens new addresses and closes removed ones; connections already
//! accepted are never touched.

use crate::config::{Config, TlsFiles};
use crate::http::client_stream::ClientStream;
use crate::http::{ConnInfo, ConnectionSettings, Shared, serve_connection};
use crate::shutdown::Shutdown;
use crate::tls::{CertWatcher, TlsTerminator};
use crate::workers::Workers;
use anyhow::Context;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// What an address accepts with; swapped whole on reload.
struct Settings {
    connection: ConnectionSettings,
    tls: Option<Arc<TlsTerminator>>,
    /// Reloads the certificates when their files change.
    _cert_watcher: Option<CertWatcher>,
}

/// An address being listened on.
struct BoundListener {
    local: SocketAddr,
    reuse_port: bool,
    settings: Arc<ArcSwap<Settings>>,
    stop: watch::Sender<bool>,
}

/// Every address wasp listens on. Every worker accepts on every address.
pub struct Listeners {
    shared: Arc<Shared>,
    workers: Arc<Workers>,
    connections: Arc<Semaphore>,
    bound: HashMap<String, BoundListener>,
}

impl Listeners {
    pub fn new(shared: Arc<Shared>, workers: Arc<Workers>, max_connections: usize) -> Listeners {
        Listeners {
            shared,
            workers,
            connections: Arc::new(Semaphore::new(max_connections)),
            bound: HashMap::new(),
        }
    }

    /// Makes the listening sockets match `config`. Everything is prepared
    /// (certificates loaded, new addresses bound) before anything changes,
    /// so an error leaves the current listeners as they were.
    pub async fn apply(&mut self, config: &Config) -> anyhow::Result<()> {
        let mut prepared = Vec::new();
        for plan in plans(config) {
            let tls = match plan.tls {
                Some(sites) => {
                    let terminator = TlsTerminator::new(sites, plan.connection.http2)
                        .with_context(|| format!("TLS on {}", plan.listen))?;
                    let watcher = terminator.watch()?;
                    Some((terminator, watcher))
                }
                None => None,
            };
            let socket = match self.bound.get(&plan.listen) {
                Some(bound) => {
                    if bound.reuse_port != plan.reuse_port {
                        tracing::warn!(listen = %plan.listen, "reuse_port changed: it applies after a restart");
                    }
                    None
                }
                None => Some(
                    bind(&plan.listen, plan.reuse_port)
                        .await
                        .with_context(|| format!("cannot listen on {}", plan.listen))?,
                ),
            };
            prepared.push((plan.listen, plan.reuse_port, plan.connection, tls, socket));
        }
        let wanted: Vec<String> = prepared.iter().map(|(listen, ..)| listen.clone()).collect();
        for (listen, reuse_port, connection, tls, socket) in prepared {
            let (tls, watcher) = tls.map_or((None, None), |(t, w)| (Some(t), Some(w)));
            let settings = Settings {
                connection,
                tls,
                _cert_watcher: watcher,
            };
            match socket {
                None => self.bound[&listen].settings.store(Arc::new(settings)),
                Some(socket) => {
                    let local = socket.local_addr()?;
                    tracing::info!(listen = %listen, address = %local, tls = settings.tls.is_some(), reuse_port, "listening");
                    if reuse_port {
                        warn_unless_requests_migrate();
                    }
                    let settings = Arc::new(ArcSwap::from_pointee(settings));
                    let (stop, stopped) = watch::channel(false);
                    let accept = Arc::new(Accept {
                        listen: listen.as_str().into(),
                        settings: settings.clone(),
                        shared: self.shared.clone(),
                        connections: self.connections.clone(),
                    });
                    let mut sockets = Vec::with_capacity(self.workers.count());
                    for _ in 1..self.workers.count() {
                        sockets.push(socket.try_clone()?);
                    }
                    sockets.push(socket);
                    let tasks = &self.shared.tasks;
                    self.workers.spawn_each(|_| {
                        let socket = sockets.pop().expect("one socket per worker");
                        tasks.track_future(accept.clone().run(socket, stopped.clone().into()))
                    });
                    self.bound.insert(
                        listen,
                        BoundListener {
                            local,
                            reuse_port,
                            settings,
                            stop,
                        },
                    );
                }
            }
        }
        self.bound.retain(|listen, bound| {
            let keep = wanted.contains(listen);
            if !keep {
                tracing::info!(listen = %listen, "no longer listening (removed from the configuration)");
                let _ = bound.stop.send(true);
            }
            keep
        });
        Ok(())
    }

    /// The address a configured `listen` string is bound to.
    pub fn local_addr(&self, listen: &str) -> Option<SocketAddr> {
        self.bound.get(listen).map(|bound| bound.local)
    }
}

/// A listening socket for `listen` ("host:port"), non-blocking, for the
/// workers to share. The backlog is nginx's `listen ... backlog` scale: a
/// burst of handshakes must not find the accept queue full. With
/// `reuse_port` (SO_REUSEPORT) other processes may bind the same address:
/// the kernel spreads new connections between their sockets.
async fn bind(listen: &str, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let mut last_error = None;
    for address in tokio::net::lookup_host(listen).await? {
        let socket = Socket::new(Domain::for_address(address), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        if reuse_port {
            socket.set_reuse_port(true)?;
        }
        if address.is_ipv6() {
            // As nginx (`ipv6only=on`): `[::]:80` takes IPv6 only, so that
            // `0.0.0.0:80` beside it can bind too.
            socket.set_only_v6(true)?;
        }
        defer_accept(&socket);
        match socket
            .bind(&address.into())
            .and_then(|()| socket.listen(4096))
        {
            Ok(()) => {
                socket.set_nonblocking(true)?;
                return Ok(socket.into());
            }
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| std::io::Error::other("the address resolved to nothing")))
}

/// When a process sharing a port stops listening, the connections waiting
/// in its socket's accept queue are reset by the kernel, unless
/// `net.ipv4.tcp_migrate_req` (Linux 5.14) moves them to another socket of
/// the port. A zero-downtime upgrade needs it: said once, at start.
fn warn_unless_requests_migrate() {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        let setting = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req");
        if !setting.is_ok_and(|s| s.trim() == "1") {
            tracing::warn!(
                "reuse_port: net.ipv4.tcp_migrate_req is not 1, so connections still queued when \
                 this process stops listening will be reset; `sysctl -w net.ipv4.tcp_migrate_req=1` \
                 hands them to the other processes on the port"
            );
        }
    });
}

/// `TCP_DEFER_ACCEPT` (nginx's `listen ... deferred`): the kernel hands a
/// connection over only once its first bytes (the request head or the TLS
/// ClientHello) arrived, so the first read finds them instead of waiting
/// for another wake-up, and a client that connects and says nothing costs
/// no task at all. socket2 has no setter for it.
fn defer_accept(socket: &socket2::Socket) {
    use std::os::fd::AsRawFd;
    let seconds: libc::c_int = 10;
    // SAFETY: setsockopt reads one c_int from a valid pointer.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&raw const seconds).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "TCP_DEFER_ACCEPT not set");
    }
}

/// One listen address: its protocol settings (from its default, first,
/// server) and, when its servers have certificates, TLS by SNI.
struct Plan {
    listen: String,
    reuse_port: bool,
    connection: ConnectionSettings,
    tls: Option<Vec<(Vec<String>, TlsFiles)>>,
}

fn plans(config: &Config) -> Vec<Plan> {
    let mut plans: Vec<Plan> = Vec::new();
    for server in &config.servers {
        for listen in &server.listen {
            let index = match plans.iter().position(|p| &p.listen == listen) {
                Some(index) => index,
                None => {
                    let connection = ConnectionSettings {
                        header_timeout: server.client_header_timeout,
                        max_header_size: server.max_header_size,
                        redirect_https: server.redirect_http,
                        http2: server.http2,
                    };
                    plans.push(Plan {
                        listen: listen.clone(),
                        reuse_port: server.reuse_port,
                        connection,
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
    settings: Arc<ArcSwap<Settings>>,
    shared: Arc<Shared>,
    connections: Arc<Semaphore>,
}

impl Accept {
    /// Accepts on this worker until the address is removed or wasp drains.
    async fn run(self: Arc<Self>, socket: std::net::TcpListener, mut stop: Shutdown) {
        let this = self;
        let socket = match TcpListener::from_std(socket) {
            Ok(socket) => socket,
            Err(error) => {
                tracing::error!(listen = %this.listen, %error, "cannot accept on this worker");
                return;
            }
        };
        // A connection's local address is the listener's unless it listens on
        // a wildcard address: only then is a getsockname per connection needed.
        let fixed_local = socket
            .local_addr()
            .ok()
            .filter(|a| !a.ip().is_unspecified());
        let mut drain = this.shared.drain.clone();
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
                () = drain.signalled() => return,
                () = stop.signalled() => return,
            };
            let Ok(permit) = this.connections.clone().try_acquire_owned() else {
                tracing::warn!(%client, "max_connections reached; connection closed");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let this = this.clone();
            this.shared.tasks.clone().spawn(async move {
                let settings = this.settings.load_full();
                let local = fixed_local
                    .or_else(|| stream.local_addr().ok())
                    .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
                let (stream, sni) = match &settings.tls {
                    None => (ClientStream::Plain(stream), None),
                    Some(tls) => match tokio::time::timeout(
                        settings.connection.header_timeout,
                        tls.accept(stream),
                    )
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
                    },
                };
                let tls = matches!(stream, ClientStream::Tls(_));
                let _gauge = this.shared.metrics.connection_opened(&this.listen);
                let info = ConnInfo {
                    client,
                    local,
                    listener: this.listen.clone(),
                    tls,
                    sni,
                    _permit: permit,
                    _gauge,
                };
                serve_connection(stream, info, settings.connection, this.shared.clone()).await;
            });
        }
    }
}
