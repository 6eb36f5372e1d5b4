//! Several wasp processes sharing state through Redis (`[cluster]`):
//! `limit_conn` and `limit_req` counted across them (`limits.rs`), and the
//! plugins' kv and counters replicated between them (`kv.rs`).
//!
//! Nothing here sits in a request's way for longer than `timeout`: a
//! request asks Redis with that bound and falls back to the local limits
//! (which always run first); a plugin call never waits on the network
//! (its writes go to a queue a background task sends). One task on the
//! main runtime keeps the connection: it connects, catches up (our
//! connection counts and the kv writes made while Redis was away), then
//! listens to the kv channel and refreshes this instance's liveness key
//! until the connection breaks, and tries again every `retry`. Losing and
//! regaining Redis is logged once each and shown by `wasp_cluster_connected`.
//!
//! Knows nothing of HTTP: limits come as keys and numbers, the kv as
//! [`KvWrite`]s.

mod kv;
mod limits;

pub use limits::ConnSlot;

use crate::plugins::SharedState;
use crate::shutdown::Shutdown;
use arc_swap::ArcSwapOption;
use prometheus_client::metrics::gauge::Gauge;
use redis::aio::MultiplexedConnection;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Keys and channels are under this prefix, so a Redis database can be
/// shared with other uses.
const PREFIX: &str = "wasp:";
/// How often this instance says it is alive; after three missed beats the
/// others stop counting its connections.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// What a cluster member needs to know at start.
pub struct Settings {
    pub redis: String,
    pub instance: String,
    pub timeout: Duration,
    pub retry: Duration,
}

/// This process's membership of the cluster.
pub struct Cluster {
    instance: String,
    timeout: Duration,
    retry: Duration,
    client: redis::Client,
    /// The connection while Redis answers; `None` while it is away.
    connection: ArcSwapOption<MultiplexedConnection>,
    connected: AtomicBool,
    gauge: Gauge,
    limits: limits::State,
    kv: kv::Replica,
}

impl Cluster {
    /// Starts the member: the connection task runs on the calling runtime
    /// until `stop`. `store` is the plugins' kv, replicated from now on.
    pub fn start(
        settings: Settings,
        store: Arc<SharedState>,
        gauge: Gauge,
        stop: Shutdown,
    ) -> anyhow::Result<Arc<Cluster>> {
        let client = redis::Client::open(settings.redis.as_str())
            .map_err(|e| anyhow::anyhow!("cluster.redis {}: {e}", settings.redis))?;
        let (replica, writes) = kv::Replica::new(store.clone());
        let cluster = Arc::new(Cluster {
            instance: settings.instance,
            timeout: settings.timeout,
            retry: settings.retry,
            client,
            connection: ArcSwapOption::empty(),
            connected: AtomicBool::new(false),
            gauge,
            limits: limits::State::default(),
            kv: replica,
        });
        store.replicate(Arc::new(cluster.kv.clone()));
        gauge_set(&cluster.gauge, false);
        tokio::spawn(cluster.clone().keep_connected(writes, stop));
        Ok(cluster)
    }

    /// This process's name among the others.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Whether Redis answers (as far as the last exchange tells).
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// The connection, if Redis is there.
    fn connection(&self) -> Option<MultiplexedConnection> {
        self.connection.load_full().map(|c| (*c).clone())
    }

    /// Connects, serves, and connects again after a loss, until `stop`.
    async fn keep_connected(self: Arc<Self>, mut writes: kv::Writes, mut stop: Shutdown) {
        let mut was_connected = None;
        loop {
            let session = async {
                let (connection, pubsub) = self.connect().await?;
                self.catch_up(&connection, &mut writes).await?;
                self.connection.store(Some(Arc::new(connection.clone())));
                self.connected.store(true, Ordering::Relaxed);
                gauge_set(&self.gauge, true);
                if was_connected != Some(true) {
                    tracing::info!(instance = %self.instance, "cluster: connected to Redis; limits and plugin kv are shared");
                    was_connected = Some(true);
                }
                self.serve(connection, pubsub, &mut writes).await
            };
            let error = tokio::select! {
                result = session => match result {
                    Ok(()) => return,
                    Err(error) => error,
                },
                () = stop.signalled() => return,
            };
            self.connection.store(None);
            self.connected.store(false, Ordering::Relaxed);
            gauge_set(&self.gauge, false);
            if was_connected != Some(false) {
                tracing::warn!(
                    instance = %self.instance,
                    "cluster: Redis unreachable ({error}); serving with this process's limits and kv until it is back"
                );
                was_connected = Some(false);
            }
            tokio::select! {
                () = tokio::time::sleep(self.retry) => {}
                () = stop.signalled() => return,
            }
        }
    }

    async fn connect(&self) -> redis::RedisResult<(MultiplexedConnection, redis::aio::PubSub)> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.retry.max(Duration::from_secs(1))))
            .set_response_timeout(Some(self.retry.max(Duration::from_secs(1))));
        let connection = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let mut pubsub = self.client.get_async_pubsub().await?;
        pubsub.subscribe(kv::CHANNEL).await?;
        Ok((connection, pubsub))
    }

    /// What Redis missed while it was away, and what we missed.
    async fn catch_up(
        &self,
        connection: &MultiplexedConnection,
        writes: &mut kv::Writes,
    ) -> redis::RedisResult<()> {
        self.heartbeat(connection).await?;
        self.limits.catch_up(&self.instance, connection).await?;
        self.kv.catch_up(connection, writes).await
    }

    /// Until the connection breaks: applies the kv channel's messages,
    /// sends this process's kv writes, beats the heart.
    async fn serve(
        &self,
        connection: MultiplexedConnection,
        pubsub: redis::aio::PubSub,
        writes: &mut kv::Writes,
    ) -> redis::RedisResult<()> {
        use futures_util::StreamExt;
        let mut messages = pubsub.into_on_message();
        let mut beat = tokio::time::interval(HEARTBEAT);
        loop {
            tokio::select! {
                message = messages.next() => match message {
                    Some(message) => self.kv.received(message.get_payload_bytes()),
                    None => return Err(redis::RedisError::from(std::io::Error::other("the subscription ended"))),
                },
                write = writes.next() => self.kv.send(&connection, write).await?,
                _ = beat.tick() => self.heartbeat(&connection).await?,
            }
        }
    }

    /// `wasp:alive:INSTANCE`, expiring after three beats.
    async fn heartbeat(&self, connection: &MultiplexedConnection) -> redis::RedisResult<()> {
        redis::cmd("SET")
            .arg(format!("{PREFIX}alive:{}", self.instance))
            .arg(1)
            .arg("PX")
            .arg(3 * HEARTBEAT.as_millis() as u64)
            .query_async::<()>(&mut connection.clone())
            .await
    }
}

/// An instance's name when `[cluster]` gives none: the host name and the
/// process id, unique among the processes of a cluster unless two hosts
/// share a name.
pub fn default_instance() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_default();
    let host = if host.is_empty() { "wasp" } else { &host };
    format!("{host}-{}", std::process::id())
}

fn gauge_set(gauge: &Gauge, connected: bool) {
    gauge.set(i64::from(connected));
}
