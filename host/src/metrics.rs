//! Process-wide Prometheus metrics, updated live by the proxy's hot paths.
//!
//! One [`Metrics`] per process (`Arc<Metrics>`) owns a prometheus-client
//! [`Registry`] and typed metric families; [`Metrics::encode`] renders them
//! for the admin listener's `GET /metrics`.
//!
//! # Cost
//!
//! prometheus-client's counters and gauges are `Arc`ed atomics, so a handle
//! bound to one label set once keeps updating the same series with a single
//! relaxed atomic add. The methods here rely on that:
//!
//! * Per message or chunk: [`LocationCounters::message`] and
//!   [`LocationCounters::bytes`] are one or two relaxed atomic adds on
//!   counters bound when the handle was made: no lock, no hash, no allocation.
//! * Per plugin call: each plugin pool binds its `(plugin, role)` series once
//!   ([`CallObserver::bind`](crate::plugins::CallObserver::bind)), so a call
//!   is one atomic add and one histogram observation (a short mutex inside
//!   prometheus-client): no lookup, no hash.
//! * Per connection, WebSocket or handshake: [`Metrics::connection_opened`],
//!   [`Metrics::websocket_opened`] and [`Metrics::location`] use the same
//!   allocation-free lookups; [`Metrics::handshake`] and [`Metrics::request`]
//!   are one family lookup (one small `String` for the location) and one
//!   array index respectively.
//! * Rare events (reloads, upstream failures, health changes) go straight to
//!   the families, allocating their label strings.
//!
//! Label values must come from the configuration (listener addresses,
//! location, upstream, peer and plugin names), never from client input:
//! every distinct value is a series kept for the life of the process.

use crate::buffered::{Buffers, Held};
use crate::direction::Direction;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

/// How a plugin call ended (mirrors `plugins::CallError`, plus success).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallOutcome {
    Ok,
    Trap,
    Timeout,
    OutOfMemory,
    Unavailable,
}

impl CallOutcome {
    const ALL: [CallOutcome; 5] = [
        CallOutcome::Ok,
        CallOutcome::Trap,
        CallOutcome::Timeout,
        CallOutcome::OutOfMemory,
        CallOutcome::Unavailable,
    ];

    fn label(self) -> &'static str {
        match self {
            CallOutcome::Ok => "ok",
            CallOutcome::Trap => "trap",
            CallOutcome::Timeout => "timeout",
            CallOutcome::OutOfMemory => "oom",
            CallOutcome::Unavailable => "unavailable",
        }
    }
}

/// Status classes of `wasp_http_requests_total`, indexed by `status / 100 - 1`.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Reload kinds whose series exist from the start, so that an alert on
/// `wasp_reloads_total{result="error"}` sees a 0 before the first failure.
const RELOAD_KINDS: [&str; 3] = ["plugin", "config", "tls"];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    listener: String,
    protocol: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LocationLabels {
    location: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    location: String,
    direction: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandshakeLabels {
    location: String,
    result: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    class: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginCallLabels {
    plugin: String,
    role: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabels {
    role: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    kind: String,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    upstream: String,
    peer: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HealthLabels {
    upstream: String,
    peer: String,
    state: &'static str,
}

/// Plugin call latency buckets: 1 µs doubling up to 16.384 ms (15 bounds).
/// Doubling keeps the bounds short in the exposition (`le="0.000512"`, not
/// the long decimals a factor such as 10^(1/3) produces), and 16 ms is the
/// first bound past the default 10 ms call deadline, so calls that ran into
/// it stand apart from the slow-but-successful ones below it.
fn plugin_call_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1e-6, 2.0, 15))
}

/// A map from a label value to handles bound to it, so that hot paths look
/// series up by `&str` without building (allocating) a label set each time.
struct Bound<V> {
    map: RwLock<HashMap<Box<str>, V>>,
}

impl<V> Default for Bound<V> {
    fn default() -> Self {
        Bound {
            map: RwLock::default(),
        }
    }
}

impl<V: Clone> Bound<V> {
    /// The handle for `key`, made by `make` the first time `key` is seen.
    fn get(&self, key: &str, make: impl FnOnce() -> V) -> V {
        // A panic elsewhere cannot leave the map half-updated (insertion is
        // one call), so a poisoned lock is still safe to use.
        if let Some(value) = self
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
        {
            return value.clone();
        }
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        map.entry(key.into()).or_insert_with(make).clone()
    }
}

/// The series of one `(plugin, role)` pair, bound together when a pool of
/// that pair is made.
#[derive(Clone)]
struct PluginSeries {
    /// Indexed by `CallOutcome as usize`.
    calls: [Counter; 5],
    seconds: Histogram,
}

/// The process's metrics. See the module docs for what each call costs.
pub struct Metrics {
    registry: Registry,
    client_connections: Family<ListenerLabels, Gauge>,
    client_protocols: Family<ProtocolLabels, Counter>,
    websockets: Family<LocationLabels, Gauge>,
    upstream_websockets: Family<PeerLabels, Gauge>,
    ws_messages: Family<DirectionLabels, Counter>,
    ws_bytes: Family<DirectionLabels, Counter>,
    handshakes: Family<HandshakeLabels, Counter>,
    plugin_calls: Family<PluginCallLabels, Counter>,
    plugin_call_seconds: Family<RoleLabels, Histogram, fn() -> Histogram>,
    reloads: Family<ReloadLabels, Counter>,
    upstream_failures: Family<PeerLabels, Counter>,
    health_changes: Family<HealthLabels, Counter>,
    peer_healthy: Family<PeerLabels, Gauge>,
    /// `wasp_cpu_bans_total`: addresses refused after repeated overruns.
    cpu_bans: Counter,
    /// `wasp_access_log_dropped_lines_total`: lines the access-log writer
    /// could not take in time.
    access_log_dropped: Counter,
    /// `wasp_cluster_connected` (registered only with a cluster).
    cluster_connected: Gauge,
    /// `wasp_http_requests_total` per class, created up front: the class
    /// set is fixed, so counting a request is an index and an atomic add.
    requests: [Counter; 5],
    bound_listeners: Bound<Gauge>,
    bound_locations: Bound<LocationCounters>,
    /// upstream → peer → `wasp_upstream_websockets` gauge.
    bound_peers: Bound<Arc<Bound<Gauge>>>,
    /// plugin → role → series.
    bound_plugins: Bound<Arc<Bound<PluginSeries>>>,
    /// Bytes the relays hold for peers (`crate::buffered`), summed on scrape
    /// into the two gauges below.
    buffers: Arc<Buffers>,
    buffered: Gauge,
    buffered_max: Gauge,
    /// The allocator's bytes in use and held free (`crate::heap`), read on scrape.
    heap_in_use: Gauge,
    heap_free: Gauge,
}

impl Metrics {
    /// Creates the registry with every family registered and the fixed
    /// series (request classes, known reload kinds) present at zero.
    pub fn new() -> Arc<Metrics> {
        Metrics::for_instance(None)
    }

    /// [`Metrics::new`] for a member of a cluster: every series carries
    /// `instance="NAME"`, so that the processes' series add up instead of
    /// colliding, and `wasp_cluster_connected` says whether Redis answers.
    pub fn for_instance(instance: Option<&str>) -> Arc<Metrics> {
        let mut registry = match instance {
            Some(name) => Registry::with_labels(std::iter::once((
                std::borrow::Cow::Borrowed("instance"),
                std::borrow::Cow::Owned(name.to_owned()),
            ))),
            None => Registry::default(),
        };
        let cluster_connected = Gauge::default();
        if instance.is_some() {
            registry.register(
                "wasp_cluster_connected",
                "1 while Redis answers (limits and plugin kv shared with the cluster), 0 while this process serves on its own",
                cluster_connected.clone(),
            );
        }
        let client_connections = Family::default();
        registry.register(
            "wasp_client_connections",
            "Open client connections, per listener",
            Family::clone(&client_connections),
        );
        let client_protocols = Family::default();
        registry.register(
            "wasp_client_connections_by_protocol",
            "Client connections accepted, per listener and protocol (http/1.1, h2)",
            Family::clone(&client_protocols),
        );
        let websockets = Family::default();
        registry.register(
            "wasp_websockets",
            "Open proxied WebSockets, per location",
            Family::clone(&websockets),
        );
        let upstream_websockets = Family::default();
        registry.register(
            "wasp_upstream_websockets",
            "Open proxied WebSockets, per upstream peer",
            Family::clone(&upstream_websockets),
        );
        let ws_messages = Family::default();
        registry.register(
            "wasp_ws_messages",
            "WebSocket messages relayed, per location and direction",
            Family::clone(&ws_messages),
        );
        let ws_bytes = Family::default();
        registry.register_with_unit(
            "wasp_ws",
            "WebSocket payload or tunnelled bytes relayed, per location and direction",
            Unit::Bytes,
            Family::clone(&ws_bytes),
        );
        let handshakes = Family::default();
        registry.register(
            "wasp_ws_handshakes",
            "WebSocket upgrade attempts, per location and answered status",
            Family::clone(&handshakes),
        );
        let request_family = Family::<ClassLabels, Counter>::default();
        registry.register(
            "wasp_http_requests",
            "HTTP requests answered, per status class",
            Family::clone(&request_family),
        );
        let plugin_calls = Family::default();
        registry.register(
            "wasp_plugin_calls",
            "Plugin calls, per plugin, role and outcome",
            Family::clone(&plugin_calls),
        );
        let plugin_call_seconds =
            Family::new_with_constructor(plugin_call_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "wasp_plugin_call",
            "Wall-clock duration of plugin calls, per role",
            Unit::Seconds,
            Family::clone(&plugin_call_seconds),
        );
        let reloads = Family::default();
        registry.register(
            "wasp_reloads",
            "Reloads, per kind and result",
            Family::clone(&reloads),
        );
        let upstream_failures = Family::default();
        registry.register(
            "wasp_upstream_failures",
            "Failed attempts to reach an upstream peer",
            Family::clone(&upstream_failures),
        );
        let health_changes = Family::default();
        registry.register(
            "wasp_upstream_health_changes",
            "Upstream peer health transitions, per new state",
            Family::clone(&health_changes),
        );
        let cpu_bans = Counter::default();
        registry.register(
            "wasp_cpu_bans",
            "Addresses refused for a while because filter calls on their messages overran the CPU deadline repeatedly",
            cpu_bans.clone(),
        );
        let access_log_dropped = Counter::default();
        registry.register(
            "wasp_access_log_dropped_lines",
            "Access-log lines dropped because the writer thread's queue was full (a log file slower than the traffic)",
            access_log_dropped.clone(),
        );
        let peer_healthy = Family::default();
        registry.register(
            "wasp_upstream_peer_healthy",
            "1 if the peer is considered healthy, 0 if not (present once its health changed)",
            Family::clone(&peer_healthy),
        );

        let buffered = Gauge::default();
        registry.register_with_unit(
            "wasp_relay_buffered",
            "Bytes WebSocket relays hold for a peer now: read and not yet taken by the other peer (or not a whole frame yet)",
            Unit::Bytes,
            buffered.clone(),
        );
        let buffered_max = Gauge::default();
        registry.register_with_unit(
            "wasp_relay_connection_buffered_max",
            "The most bytes one WebSocket relay has held at once since start (bounded by buffer_size plus the message in flight, per direction)",
            Unit::Bytes,
            buffered_max.clone(),
        );

        let heap_in_use = Gauge::default();
        let heap_free = Gauge::default();
        if crate::heap::usage().is_some() {
            registry.register_with_unit(
                "wasp_heap_in_use",
                "Bytes of heap memory in use (jemalloc, every thread)",
                Unit::Bytes,
                heap_in_use.clone(),
            );
            registry.register_with_unit(
                "wasp_heap_free",
                "Resident bytes the allocator holds beyond those in use: freed pages not yet returned to the kernel (its background thread returns them after 10 s unused), partly used slabs, its own metadata",
                Unit::Bytes,
                heap_free.clone(),
            );
        }

        let requests =
            STATUS_CLASSES.map(|class| request_family.get_or_create_owned(&ClassLabels { class }));
        for kind in RELOAD_KINDS {
            for result in ["ok", "error"] {
                let _ = reloads.get_or_create(&ReloadLabels {
                    kind: kind.to_owned(),
                    result,
                });
            }
        }

        Arc::new(Metrics {
            registry,
            client_connections,
            client_protocols,
            websockets,
            upstream_websockets,
            ws_messages,
            ws_bytes,
            handshakes,
            plugin_calls,
            plugin_call_seconds,
            reloads,
            upstream_failures,
            health_changes,
            peer_healthy,
            cpu_bans,
            access_log_dropped,
            cluster_connected,
            requests,
            bound_listeners: Bound::default(),
            bound_locations: Bound::default(),
            bound_peers: Bound::default(),
            bound_plugins: Bound::default(),
            buffers: Arc::default(),
            buffered,
            buffered_max,
            heap_in_use,
            heap_free,
        })
    }

    /// The `wasp_cluster_connected` gauge, for the cluster to set.
    pub fn cluster_connected(&self) -> Gauge {
        self.cluster_connected.clone()
    }

    /// The OpenMetrics 1.0 text exposition of every series (ends in `# EOF`).
    /// Serve it as `application/openmetrics-text; version=1.0.0; charset=utf-8`.
    pub fn encode(&self) -> String {
        let totals = self.buffers.totals();
        self.buffered.set(totals.held as i64);
        self.buffered_max.set(totals.peak as i64);
        if let Some(heap) = crate::heap::usage() {
            self.heap_in_use.set(heap.in_use as i64);
            self.heap_free.set(heap.free as i64);
        }
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encoding into a String cannot fail");
        out
    }

    /// Counts an accepted client connection on `listener` (its configured
    /// address) until the returned guard is dropped.
    pub fn connection_opened(&self, listener: &str) -> ConnectionGuard {
        let gauge = self.bound_listeners.get(listener, || {
            self.client_connections
                .get_or_create_owned(&ListenerLabels {
                    listener: listener.to_owned(),
                })
        });
        gauge.inc();
        ConnectionGuard { gauge }
    }

    /// Counts a client connection on `listener` by the protocol it speaks
    /// (`http/1.1` or `h2`), once per connection: the WebSockets and
    /// requests of one HTTP/2 connection count once.
    pub fn client_protocol(&self, listener: &str, protocol: &'static str) {
        self.client_protocols
            .get_or_create(&ProtocolLabels {
                listener: listener.to_owned(),
                protocol,
            })
            .inc();
    }

    /// Counts a proxied WebSocket, in its location and on its upstream peer,
    /// until the returned guard is dropped.
    pub fn websocket_opened(&self, location: &str, upstream: &str, peer: &str) -> WebSocketGuard {
        let location = self.location(location).0.websockets.clone();
        let peer = self
            .bound_peers
            .get(upstream, Default::default)
            .get(peer, || {
                self.upstream_websockets.get_or_create_owned(&PeerLabels {
                    upstream: upstream.to_owned(),
                    peer: peer.to_owned(),
                })
            });
        location.inc();
        peer.inc();
        WebSocketGuard { location, peer }
    }

    /// The counters of `location`, bound once: keep the handle for the life
    /// of a connection (or of a configuration) and count through it.
    pub fn location(&self, location: &str) -> LocationCounters {
        self.bound_locations.get(location, || {
            let counter = |family: &Family<DirectionLabels, Counter>, dir: Direction| {
                family.get_or_create_owned(&DirectionLabels {
                    location: location.to_owned(),
                    direction: dir.label(),
                })
            };
            LocationCounters(Arc::new(LocationSeries {
                messages: Direction::ALL.map(|dir| counter(&self.ws_messages, dir)),
                bytes: Direction::ALL.map(|dir| counter(&self.ws_bytes, dir)),
                websockets: self.websockets.get_or_create_owned(&LocationLabels {
                    location: location.to_owned(),
                }),
                buffers: self.buffers.clone(),
            }))
        })
    }

    /// The counter of access-log lines dropped, for [`crate::access_log`].
    pub fn access_log_dropped(&self) -> Counter {
        self.access_log_dropped.clone()
    }

    /// The counter of bans started, for [`crate::cpu_bans::CpuBans`].
    pub fn cpu_bans(&self) -> Counter {
        self.cpu_bans.clone()
    }

    /// Counts a WebSocket upgrade attempt at `location` by the status it was
    /// answered with (101 on success).
    pub fn handshake(&self, location: &str, result: u16) {
        self.handshakes
            .get_or_create(&HandshakeLabels {
                location: location.to_owned(),
                result,
            })
            .inc();
    }

    /// Counts an answered HTTP request by status class; statuses outside
    /// 100..=599 (which `http::StatusCode` can hold) clamp to 1xx or 5xx.
    pub fn request(&self, status: u16) {
        let class = usize::from((status / 100).clamp(1, 5)) - 1;
        self.requests[class].inc();
    }

    /// The series of a `(plugin, role)` pair. The first lookup of a pair
    /// creates all five outcome series, so traps and timeouts read 0, not absent.
    fn plugin_series(&self, plugin: &str, role: &str) -> PluginSeries {
        self.bound_plugins
            .get(plugin, Default::default)
            .get(role, || PluginSeries {
                calls: CallOutcome::ALL.map(|outcome| {
                    self.plugin_calls.get_or_create_owned(&PluginCallLabels {
                        plugin: plugin.to_owned(),
                        role: role.to_owned(),
                        outcome: outcome.label(),
                    })
                }),
                seconds: self.plugin_call_seconds.get_or_create_owned(&RoleLabels {
                    role: role.to_owned(),
                }),
            })
    }

    /// Counts a reload of `kind` ("plugin", "config", "tls") by result.
    pub fn reload(&self, kind: &str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reloads
            .get_or_create(&ReloadLabels {
                kind: kind.to_owned(),
                result,
            })
            .inc();
    }

    /// Counts a failed attempt to reach `peer` of `upstream`.
    pub fn upstream_failure(&self, upstream: &str, peer: &str) {
        self.upstream_failures
            .get_or_create(&peer_labels(upstream, peer))
            .inc();
    }

    /// Records that `peer` of `upstream` turned healthy or unhealthy.
    pub fn health_change(&self, upstream: &str, peer: &str, healthy: bool) {
        let state = if healthy { "healthy" } else { "unhealthy" };
        self.health_changes
            .get_or_create(&HealthLabels {
                upstream: upstream.to_owned(),
                peer: peer.to_owned(),
                state,
            })
            .inc();
        self.peer_healthy
            .get_or_create(&peer_labels(upstream, peer))
            .set(i64::from(healthy));
    }
}

fn peer_labels(upstream: &str, peer: &str) -> PeerLabels {
    PeerLabels {
        upstream: upstream.to_owned(),
        peer: peer.to_owned(),
    }
}

/// Keeps `wasp_client_connections` counting one connection while alive.
#[must_use = "the connection is counted only while the guard lives"]
pub struct ConnectionGuard {
    gauge: Gauge,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Keeps `wasp_websockets` and `wasp_upstream_websockets` counting one
/// WebSocket while alive.
#[must_use = "the WebSocket is counted only while the guard lives"]
pub struct WebSocketGuard {
    location: Gauge,
    peer: Gauge,
}

impl Drop for WebSocketGuard {
    fn drop(&mut self) {
        self.location.dec();
        self.peer.dec();
    }
}

struct LocationSeries {
    /// Indexed by `Direction::index`.
    messages: [Counter; 2],
    bytes: [Counter; 2],
    websockets: Gauge,
    buffers: Arc<Buffers>,
}

/// The per-direction counters of one location, pre-bound: counting is a
/// relaxed atomic add per series, and cloning is one `Arc` increment.
#[derive(Clone)]
pub struct LocationCounters(Arc<LocationSeries>);

impl LocationCounters {
    /// Counts one WebSocket message of `bytes` payload bytes.
    pub fn message(&self, dir: Direction, bytes: usize) {
        self.0.messages[dir as usize].inc();
        self.0.bytes[dir as usize].inc_by(bytes as u64);
    }

    /// Counts bytes with no message framing (raw tunnels), as they flow, so
    /// that long-lived tunnels show up before they close.
    pub fn bytes(&self, dir: Direction, bytes: u64) {
        self.0.bytes[dir as usize].inc_by(bytes);
    }

    /// The buffer accounting of one connection relayed on this thread
    /// (`crate::buffered`): once per connection.
    pub fn held(&self) -> Held {
        self.0.buffers.connection()
    }
}

impl crate::plugins::CallObserver for Metrics {
    fn bind(
        &self,
        plugin: &str,
        role: crate::plugins::Role,
    ) -> Arc<dyn crate::plugins::CallRecorder> {
        Arc::new(self.plugin_series(plugin, role.as_str()))
    }
}

/// One plugin call: its outcome per plugin and role, its duration per role.
impl crate::plugins::CallRecorder for PluginSeries {
    fn record(&self, elapsed: std::time::Duration, error: Option<&crate::plugins::CallError>) {
        use crate::plugins::CallError;
        let outcome = match error {
            None => CallOutcome::Ok,
            Some(CallError::Timeout) => CallOutcome::Timeout,
            Some(CallError::OutOfMemory) => CallOutcome::OutOfMemory,
            Some(CallError::Trap(_)) => CallOutcome::Trap,
            Some(CallError::Unavailable(_)) => CallOutcome::Unavailable,
        };
        self.calls[outcome as usize].inc();
        self.seconds.observe(elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample line starting with `series` (name and labels).
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map(|value| value.parse().expect("numeric sample"))
    }

    #[test]
    fn connection_gauge_follows_guards() {
        let metrics = Metrics::new();
        let first = metrics.connection_opened("0.0.0.0:80");
        let second = metrics.connection_opened("0.0.0.0:80");
        let other = metrics.connection_opened("[::]:443");
        let text = metrics.encode();
        assert_eq!(
            sample(&text, r#"wasp_client_connections{listener="0.0.0.0:80"}"#),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, r#"wasp_client_connections{listener="[::]:443"}"#),
            Some(1.0)
        );
        drop(first);
        drop(other);
        let text = metrics.encode();
        assert_eq!(
            sample(&text, r#"wasp_client_connections{listener="0.0.0.0:80"}"#),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, r#"wasp_client_connections{listener="[::]:443"}"#),
            Some(0.0)
        );
        drop(second);
        assert_eq!(
            sample(
                &metrics.encode(),
                r#"wasp_client_connections{listener="0.0.0.0:80"}"#
            ),
            Some(0.0)
        );
    }

    #[test]
    fn heap_gauges_follow_the_allocator() {
        let metrics = Metrics::new();
        let in_use = |text: &str| sample(text, "wasp_heap_in_use_bytes").expect("in use");
        let before = in_use(&metrics.encode());
        // 64 MiB held while scraping again (other tests allocate meanwhile:
        // a margin below the 64).
        let block = vec![1u8; 64 << 20];
        let during = in_use(&metrics.encode());
        assert!(
            during - before >= 48.0 * 1048576.0,
            "{before} then {during}"
        );
        assert!(sample(&metrics.encode(), "wasp_heap_free_bytes").is_some());
        drop(block);
    }

    #[test]
    fn websocket_gauges_per_location_and_peer() {
        let metrics = Metrics::new();
        let a = metrics.websocket_opened("/chat", "backend", "10.0.0.1:80");
        let b = metrics.websocket_opened("/chat", "backend", "10.0.0.2:80");
        let c = metrics.websocket_opened("/feed", "backend", "10.0.0.1:80");
        let text = metrics.encode();
        assert_eq!(
            sample(&text, r#"wasp_websockets{location="/chat"}"#),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, r#"wasp_websockets{location="/feed"}"#),
            Some(1.0)
        );
        let peer1 = r#"wasp_upstream_websockets{upstream="backend",peer="10.0.0.1:80"}"#;
        let peer2 = r#"wasp_upstream_websockets{upstream="backend",peer="10.0.0.2:80"}"#;
        assert_eq!(sample(&text, peer1), Some(2.0));
        assert_eq!(sample(&text, peer2), Some(1.0));
        drop((a, c));
        let text = metrics.encode();
        assert_eq!(
            sample(&text, r#"wasp_websockets{location="/chat"}"#),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, r#"wasp_websockets{location="/feed"}"#),
            Some(0.0)
        );
        assert_eq!(sample(&text, peer1), Some(0.0));
        assert_eq!(sample(&text, peer2), Some(1.0));
        drop(b);
    }

    #[test]
    fn location_counters_count_messages_and_bytes() {
        let metrics = Metrics::new();
        let chat = metrics.location("/chat");
        chat.message(Direction::ClientToUpstream, 10);
        chat.message(Direction::ClientToUpstream, 5);
        // A second handle for the same location shares the series.
        metrics
            .location("/chat")
            .message(Direction::UpstreamToClient, 7);
        chat.bytes(Direction::UpstreamToClient, 100);
        let text = metrics.encode();
        let up = r#"{location="/chat",direction="client_to_upstream"}"#;
        let down = r#"{location="/chat",direction="upstream_to_client"}"#;
        assert_eq!(
            sample(&text, &format!("wasp_ws_messages_total{up}")),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, &format!("wasp_ws_messages_total{down}")),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, &format!("wasp_ws_bytes_total{up}")),
            Some(15.0)
        );
        assert_eq!(
            sample(&text, &format!("wasp_ws_bytes_total{down}")),
            Some(107.0)
        );
        assert!(
            text.contains("# TYPE wasp_ws_bytes counter\n# UNIT wasp_ws_bytes bytes\n"),
            "{text}"
        );
    }

    #[test]
    fn handshakes_requests_reloads_and_upstreams() {
        let metrics = Metrics::new();
        metrics.handshake("/chat", 101);
        metrics.handshake("/chat", 101);
        metrics.handshake("/chat", 403);
        for status in [200, 204, 301, 404, 502, 101] {
            metrics.request(status);
        }
        metrics.reload("plugin", true);
        metrics.reload("config", false);
        metrics.upstream_failure("backend", "10.0.0.1:80");
        metrics.health_change("backend", "10.0.0.1:80", false);
        metrics.health_change("backend", "10.0.0.1:80", true);
        metrics.health_change("backend", "10.0.0.1:80", false);
        let text = metrics.encode();
        for (series, value) in [
            (
                r#"wasp_ws_handshakes_total{location="/chat",result="101"}"#,
                2.0,
            ),
            (
                r#"wasp_ws_handshakes_total{location="/chat",result="403"}"#,
                1.0,
            ),
            (r#"wasp_http_requests_total{class="1xx"}"#, 1.0),
            (r#"wasp_http_requests_total{class="2xx"}"#, 2.0),
            (r#"wasp_http_requests_total{class="3xx"}"#, 1.0),
            (r#"wasp_http_requests_total{class="4xx"}"#, 1.0),
            (r#"wasp_http_requests_total{class="5xx"}"#, 1.0),
            (r#"wasp_reloads_total{kind="plugin",result="ok"}"#, 1.0),
            (r#"wasp_reloads_total{kind="config",result="error"}"#, 1.0),
            (r#"wasp_reloads_total{kind="tls",result="error"}"#, 0.0),
            (
                r#"wasp_upstream_failures_total{upstream="backend",peer="10.0.0.1:80"}"#,
                1.0,
            ),
            (
                r#"wasp_upstream_health_changes_total{upstream="backend",peer="10.0.0.1:80",state="unhealthy"}"#,
                2.0,
            ),
            (
                r#"wasp_upstream_health_changes_total{upstream="backend",peer="10.0.0.1:80",state="healthy"}"#,
                1.0,
            ),
            (
                r#"wasp_upstream_peer_healthy{upstream="backend",peer="10.0.0.1:80"}"#,
                0.0,
            ),
        ] {
            assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn plugin_calls_and_latency_histogram() {
        use crate::plugins::{CallError, CallObserver, Role};
        use std::time::Duration;
        let metrics = Metrics::new();
        let auth = metrics.bind("auth", Role::Router);
        auth.record(Duration::from_micros(3), None);
        auth.record(Duration::from_millis(3), None);
        auth.record(Duration::from_millis(500), Some(&CallError::Timeout));
        // A second pool of the same pair shares its series.
        metrics
            .bind("auth", Role::Router)
            .record(Duration::from_micros(3), None);
        let trap = CallError::Trap("unreachable".into());
        metrics
            .bind("lb", Role::Balancer)
            .record(Duration::from_micros(1), Some(&trap));
        let text = metrics.encode();
        let calls = |plugin: &str, role: &str, outcome: &str| {
            sample(
                &text,
                &format!(
                    r#"wasp_plugin_calls_total{{plugin="{plugin}",role="{role}",outcome="{outcome}"}}"#
                ),
            )
        };
        assert_eq!(calls("auth", "router", "ok"), Some(3.0));
        assert_eq!(calls("auth", "router", "timeout"), Some(1.0));
        assert_eq!(calls("auth", "router", "trap"), Some(0.0));
        assert_eq!(calls("auth", "router", "oom"), Some(0.0));
        assert_eq!(calls("auth", "router", "unavailable"), Some(0.0));
        assert_eq!(calls("lb", "balancer", "trap"), Some(1.0));
        // Cumulative buckets: 3 µs (twice) falls in le=0.000004, 3 ms in le=0.004096, 0.5 s only in +Inf.
        let bucket = |role: &str, le: &str| {
            sample(
                &text,
                &format!(r#"wasp_plugin_call_seconds_bucket{{le="{le}",role="{role}"}}"#),
            )
        };
        assert_eq!(bucket("router", "0.000001"), Some(0.0), "{text}");
        assert_eq!(bucket("router", "0.000004"), Some(2.0));
        assert_eq!(bucket("router", "0.002048"), Some(2.0));
        assert_eq!(bucket("router", "0.004096"), Some(3.0));
        assert_eq!(bucket("router", "0.016384"), Some(3.0));
        assert_eq!(bucket("router", "+Inf"), Some(4.0));
        assert_eq!(bucket("balancer", "0.000001"), Some(1.0));
        assert_eq!(
            sample(&text, r#"wasp_plugin_call_seconds_count{role="router"}"#),
            Some(4.0)
        );
        let sum = sample(&text, r#"wasp_plugin_call_seconds_sum{role="router"}"#).unwrap();
        assert!((sum - 0.503006).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn label_values_are_escaped() {
        let metrics = Metrics::new();
        metrics.handshake("/a\"b\\c", 502);
        let text = metrics.encode();
        assert_eq!(
            sample(
                &text,
                r#"wasp_ws_handshakes_total{location="/a\"b\\c",result="502"}"#
            ),
            Some(1.0),
            "{text}"
        );
    }
}
