//! Active health checks: a task per upstream that probes every peer each
//! `interval`, with a plain HTTP GET or a WebSocket handshake, and marks a
//! peer unhealthy after `fall` failures in a row and healthy again after
//! `rise` successes in a row. Passive health (`max_fails`) only notices a
//! dead peer when a client's request hits it; these checks notice before,
//! and also bring a peer back without sending it client traffic first.

use super::{ConnectError, PeerState, UpstreamGroup};
use crate::config::HealthCheck;
use crate::shutdown::Shutdown;
use bytes::Bytes;
use futures_util::future::join_all;
use http::Request;
use http::header::{CONNECTION, HOST};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;

/// Told `(upstream, peer, healthy)` on every change of a peer's verdict, so
/// the caller can count changes in its metrics without parsing logs.
pub type HealthObserver = Arc<dyn Fn(&str, &str, bool) + Send + Sync>;

/// A probe never takes longer than this, however long the interval: a peer
/// that needs more than 5 s to answer a health check is not healthy.
const MAX_PROBE_TIME: Duration = Duration::from_secs(5);

/// The configuration accepts `interval = "0s"`, which would panic
/// `tokio::time::interval` and spin; probing more often than this is useless.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// Starts checking `group`'s peers every `check.interval` until `stop` is
/// signalled, which dropping the site that holds its sender also does:
/// probing for a configuration that is gone would only add noise.
///
/// The peers' verdicts live in their [`PeerState`]s, which survive reloads;
/// a new task for a reloaded configuration picks up where this one left off,
/// apart from the partial streaks.
pub fn spawn_health_checks(
    group: Arc<UpstreamGroup>,
    check: HealthCheck,
    observer: HealthObserver,
    mut stop: Shutdown,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        // Bounding a probe by the interval keeps rounds from overlapping, so
        // each peer's results arrive in order and one round at a time.
        let timeout = check.interval.min(MAX_PROBE_TIME);
        let mut streaks = vec![Streak::default(); group.peers.len()];
        let mut ticks = tokio::time::interval(check.interval.max(MIN_INTERVAL));
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let stopped = stop.signalled();
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                _ = ticks.tick() => {}
            }
            let check = &check;
            // Peers marked `down` in the configuration never take traffic;
            // probing them would only log warnings about a deliberate state.
            let probes = group
                .peers
                .iter()
                .enumerate()
                .filter(|(_, peer)| !peer.down)
                .map(|(index, peer)| async move { (index, probe(peer, check, timeout).await) });
            let results = tokio::select! {
                _ = &mut stopped => return,
                results = join_all(probes) => results,
            };
            for (index, result) in results {
                let peer = &group.peers[index];
                if let Err(cause) = &result {
                    tracing::debug!(upstream = %group.name, peer = %peer.address, %cause, "health check failed");
                }
                let Some(healthy) =
                    streaks[index].record(result.is_ok(), peer.healthy(), check.rise, check.fall)
                else {
                    continue;
                };
                peer.set_healthy(healthy);
                match &result {
                    Ok(()) => tracing::info!(
                        upstream = %group.name, peer = %peer.address,
                        "peer is healthy again after {} successful health checks", check.rise
                    ),
                    Err(cause) => tracing::warn!(
                        upstream = %group.name, peer = %peer.address, %cause,
                        "peer is unhealthy after {} failed health checks", check.fall
                    ),
                }
                observer(&group.name, &peer.address, healthy);
            }
        }
    })
}

/// One peer's consecutive probe results.
#[derive(Debug, Default, Clone)]
struct Streak {
    successes: u32,
    failures: u32,
}

impl Streak {
    /// Counts a probe result against the peer's current verdict; returns the
    /// new verdict when `rise` successes or `fall` failures in a row change it.
    fn record(&mut self, ok: bool, healthy: bool, rise: u32, fall: u32) -> Option<bool> {
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            (!healthy && self.successes >= rise).then_some(true)
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            (healthy && self.failures >= fall).then_some(false)
        }
    }
}

/// Probes one peer; the error is the cause logged when the peer goes down.
async fn probe(peer: &PeerState, check: &HealthCheck, timeout: Duration) -> Result<(), String> {
    let attempt = async {
        let deadline = tokio::time::Instant::now() + timeout;
        let stream = super::connect_tcp(peer, deadline)
            .await
            .map_err(connect_cause)?;
        if check.websocket {
            websocket_probe(peer, &check.path, stream).await
        } else {
            http_probe(peer, &check.path, stream).await
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

fn connect_cause(error: ConnectError) -> String {
    match error {
        ConnectError::Failed(_, error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
            "connection refused".into()
        }
        ConnectError::Failed(_, error) => format!("connect failed: {error}"),
        ConnectError::Timeout(_) => "timed out".into(),
        ConnectError::Tls(..) | ConnectError::NoPeer => error.to_string(),
    }
}

/// `GET path` with `Connection: close`; healthy iff 2xx or 3xx (a redirect
/// means the server is up and routing, as in nginx's default `http_2xx|3xx`).
async fn http_probe(peer: &PeerState, path: &str, stream: TcpStream) -> Result<(), String> {
    let request = Request::get(path)
        .header(HOST, &peer.address)
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|error| format!("invalid health check request: {error}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| format!("request failed: {error}"))?;
    // The connection is driven here rather than in a spawned task so that the
    // probe's timeout (or the stop signal) also ends it: nothing outlives us.
    tokio::pin!(connection);
    let response = sender.send_request(request);
    tokio::pin!(response);
    let response = tokio::select! {
        biased;
        response = &mut response => response,
        // The connection may finish (Connection: close) in the same poll that
        // delivers the response; the response, or the reason there is none,
        // is ready by now either way.
        _ = &mut connection => response.await,
    }
    .map_err(|error| format!("request failed: {error}"))?;
    let status = response.status();
    if status.is_success() || status.is_redirection() {
        Ok(())
    } else {
        Err(format!("status {}", status.as_u16()))
    }
}

/// A WebSocket handshake to `path`; healthy iff the answer is a 101 with the
/// right `Sec-WebSocket-Accept` (tungstenite checks both, and the `Upgrade`
/// and `Connection` headers). A plain HTTP server that answers 200 to
/// anything is not a healthy WebSocket backend.
///
/// On success the probe sends a close frame and drops the connection without
/// waiting for the server's echo: the verdict is already made, and waiting
/// would only spend the probe's time budget. The close frame lets the backend
/// log a normal closure instead of an abrupt disconnect.
async fn websocket_probe(peer: &PeerState, path: &str, stream: TcpStream) -> Result<(), String> {
    let url = format!("ws://{}{path}", peer.address);
    match tokio_tungstenite::client_async(url, stream).await {
        Ok((mut socket, _)) => {
            let frame = CloseFrame {
                code: CloseCode::Normal,
                reason: "health check".into(),
            };
            // The handshake already proved the peer healthy; a failed close
            // changes nothing about that.
            let _ = socket.close(Some(frame)).await;
            Ok(())
        }
        Err(tungstenite::Error::Http(response)) => {
            Err(format!("status {}", response.status().as_u16()))
        }
        Err(error) => Err(format!("websocket handshake failed: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Balance, Upstream, UpstreamServer};
    use futures_util::StreamExt;
    use http::{Response, StatusCode};
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::Instant;
    use tokio::net::TcpListener;
    use tokio::sync::{mpsc, watch};
    use tungstenite::Message;
    use tungstenite::handshake::server::{
        ErrorResponse, Request as WsRequest, Response as WsResponse,
    };

    /// An HTTP backend whose `/health` answers 200 or 503 as `ok` says. It
    /// answers 404 for other paths and 400 without `Host: <its address>`, so
    /// a probe that gets either wrong fails.
    struct HttpBackend {
        addr: SocketAddr,
        ok: Arc<AtomicBool>,
        task: JoinHandle<()>,
    }

    async fn http_backend() -> HttpBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ok = Arc::new(AtomicBool::new(true));
        let flag = ok.clone();
        let task = tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let flag = flag.clone();
                let service = service_fn(move |request: Request<Incoming>| {
                    let host_ok = request
                        .headers()
                        .get(HOST)
                        .is_some_and(|host| *host == *addr.to_string());
                    let status = match (request.uri().path(), host_ok) {
                        ("/health", true) if flag.load(Ordering::SeqCst) => StatusCode::OK,
                        ("/health", true) => StatusCode::SERVICE_UNAVAILABLE,
                        ("/health", false) => StatusCode::BAD_REQUEST,
                        _ => StatusCode::NOT_FOUND,
                    };
                    let response = Response::builder()
                        .status(status)
                        .body(Empty::<Bytes>::new());
                    async move { Ok::<_, Infallible>(response.unwrap()) }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        HttpBackend { addr, ok, task }
    }

    /// A WebSocket backend accepting handshakes to `/ws`; reports the first
    /// message of each connection (the probe's close frame) on the channel.
    async fn websocket_backend() -> (SocketAddr, mpsc::UnboundedReceiver<Option<Message>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let sender = sender.clone();
                tokio::spawn(async move {
                    // The error type is tungstenite's callback signature, not ours.
                    #[allow(clippy::result_large_err)]
                    let check_path = |request: &WsRequest, response: WsResponse| {
                        if request.uri().path() == "/ws" {
                            Ok(response)
                        } else {
                            let mut refusal = ErrorResponse::new(None);
                            *refusal.status_mut() = StatusCode::NOT_FOUND;
                            Err(refusal)
                        }
                    };
                    if let Ok(mut socket) =
                        tokio_tungstenite::accept_hdr_async(stream, check_path).await
                    {
                        let _ = sender.send(socket.next().await.and_then(Result::ok));
                    }
                });
            }
        });
        (addr, receiver)
    }

    fn peer(addr: SocketAddr) -> Arc<PeerState> {
        let server = UpstreamServer {
            address: addr.to_string(),
            weight: 1,
            max_fails: 0,
            fail_timeout: Duration::from_secs(10),
            backup: false,
            down: false,
        };
        Arc::new(PeerState::new(&server, vec![addr]))
    }

    fn group(peers: Vec<Arc<PeerState>>) -> Arc<UpstreamGroup> {
        let config = Upstream {
            balance: Balance::RoundRobin,
            hash_key: None,
            consistent: false,
            next_upstream_tries: 0,
            servers: vec![],
            health: None,
            keepalive: None,
        };
        Arc::new(UpstreamGroup::new(
            "app",
            &config,
            peers,
            Arc::new(AtomicU64::new(0)),
            crate::metrics::Metrics::new(),
        ))
    }

    fn check(path: &str, websocket: bool) -> HealthCheck {
        HealthCheck {
            path: path.into(),
            interval: Duration::from_millis(100),
            rise: 2,
            fall: 3,
            websocket,
        }
    }

    type Events = Arc<Mutex<Vec<(String, String, bool)>>>;

    fn recording_observer() -> (HealthObserver, Events) {
        let events = Events::default();
        let seen = events.clone();
        let observer: HealthObserver =
            Arc::new(move |upstream: &str, peer: &str, healthy: bool| {
                seen.lock()
                    .unwrap()
                    .push((upstream.into(), peer.into(), healthy));
            });
        (observer, events)
    }

    /// Polls `condition` until it holds, failing the test after 5 s.
    async fn eventually(what: &str, condition: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Ends the task and checks that it does end promptly.
    async fn stop_checks(stop: watch::Sender<bool>, task: JoinHandle<()>) {
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("task did not stop")
            .unwrap();
    }

    fn refused_addr() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    }

    #[test]
    fn fall_failures_in_a_row_take_a_peer_down_and_rise_successes_bring_it_back() {
        let mut streak = Streak::default();
        assert_eq!(streak.record(false, true, 2, 3), None);
        assert_eq!(streak.record(false, true, 2, 3), None);
        assert_eq!(streak.record(false, true, 2, 3), Some(false));
        assert_eq!(streak.record(false, false, 2, 3), None, "already down");
        assert_eq!(streak.record(true, false, 2, 3), None);
        assert_eq!(streak.record(true, false, 2, 3), Some(true));
        assert_eq!(streak.record(true, true, 2, 3), None, "already up");
    }

    #[test]
    fn an_interrupted_streak_starts_over() {
        let mut streak = Streak::default();
        streak.record(false, true, 2, 3);
        streak.record(false, true, 2, 3);
        streak.record(true, true, 2, 3);
        assert_eq!(streak.record(false, true, 2, 3), None);
        assert_eq!(streak.record(false, true, 2, 3), None);
        assert_eq!(streak.record(false, true, 2, 3), Some(false));
        streak.record(true, false, 2, 3);
        streak.record(false, false, 2, 3);
        assert_eq!(streak.record(true, false, 2, 3), None);
        assert_eq!(streak.record(true, false, 2, 3), Some(true));
    }

    #[tokio::test]
    async fn a_peer_follows_its_health_endpoint_down_and_up() {
        let flapping = http_backend().await;
        let steady = http_backend().await;
        let (flapping_peer, steady_peer) = (peer(flapping.addr), peer(steady.addr));
        let group = group(vec![flapping_peer.clone(), steady_peer.clone()]);
        let (observer, events) = recording_observer();
        let (stop, stopped) = watch::channel(false);
        let task = spawn_health_checks(group, check("/health", false), observer, stopped.into());

        flapping.ok.store(false, Ordering::SeqCst);
        eventually("the peer is unhealthy", || !flapping_peer.healthy()).await;
        assert!(!flapping_peer.available(Instant::now()));
        flapping.ok.store(true, Ordering::SeqCst);
        eventually("the peer is healthy", || flapping_peer.healthy()).await;
        assert!(flapping_peer.available(Instant::now()));

        stop_checks(stop, task).await;
        assert!(steady_peer.healthy());
        let address = flapping.addr.to_string();
        let expected = vec![
            ("app".to_string(), address.clone(), false),
            ("app".to_string(), address, true),
        ];
        assert_eq!(*events.lock().unwrap(), expected);
    }

    #[tokio::test]
    async fn a_stopped_backend_goes_down() {
        let backend = http_backend().await;
        let peer = peer(backend.addr);
        let (observer, events) = recording_observer();
        let (stop, stopped) = watch::channel(false);
        let task = spawn_health_checks(
            group(vec![peer.clone()]),
            check("/health", false),
            observer,
            stopped.into(),
        );

        backend.task.abort();
        let _ = backend.task.await;
        eventually("the peer is unhealthy", || !peer.healthy()).await;
        assert!(!peer.available(Instant::now()));
        stop_checks(stop, task).await;
        assert_eq!(
            *events.lock().unwrap(),
            vec![("app".into(), backend.addr.to_string(), false)]
        );
    }

    #[tokio::test]
    async fn http_probe_causes_name_what_went_wrong() {
        let backend = http_backend().await;
        let timeout = Duration::from_secs(2);
        assert_eq!(
            probe(&peer(backend.addr), &check("/health", false), timeout).await,
            Ok(())
        );
        assert_eq!(
            probe(&peer(backend.addr), &check("/missing", false), timeout).await,
            Err("status 404".into())
        );
        backend.ok.store(false, Ordering::SeqCst);
        assert_eq!(
            probe(&peer(backend.addr), &check("/health", false), timeout).await,
            Err("status 503".into())
        );
        assert_eq!(
            probe(&peer(refused_addr()), &check("/health", false), timeout).await,
            Err("connection refused".into())
        );
    }

    #[tokio::test]
    async fn websocket_probe_wants_a_real_handshake() {
        let (addr, mut first_messages) = websocket_backend().await;
        let timeout = Duration::from_secs(2);
        assert_eq!(
            probe(&peer(addr), &check("/ws", true), timeout).await,
            Ok(())
        );
        match first_messages.recv().await.unwrap() {
            Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Normal),
            other => panic!("expected a close frame, got {other:?}"),
        }
        assert_eq!(
            probe(&peer(addr), &check("/other", true), timeout).await,
            Err("status 404".into())
        );

        // A plain HTTP server answering 200 is up, but not a WebSocket backend.
        let plain = http_backend().await;
        assert_eq!(
            probe(&peer(plain.addr), &check("/health", true), timeout).await,
            Err("status 200".into())
        );
    }

    #[tokio::test]
    async fn a_websocket_check_takes_down_a_plain_http_peer() {
        let plain = http_backend().await;
        let peer = peer(plain.addr);
        let (observer, events) = recording_observer();
        let (stop, stopped) = watch::channel(false);
        let task = spawn_health_checks(
            group(vec![peer.clone()]),
            check("/health", true),
            observer,
            stopped.into(),
        );
        eventually("the peer is unhealthy", || !peer.healthy()).await;
        stop_checks(stop, task).await;
        assert_eq!(events.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn stop_ends_the_task_even_during_a_probe() {
        // A backend that accepts and then never answers: the probe hangs
        // until its 5 s timeout unless the stop signal cuts it short.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted, mut connections) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                accepted.send(stream).unwrap();
            }
        });
        let (observer, events) = recording_observer();
        let (stop, stopped) = watch::channel(false);
        let mut slow = check("/health", false);
        slow.interval = Duration::from_secs(60);
        let task = spawn_health_checks(group(vec![peer(addr)]), slow, observer, stopped.into());

        let _held = connections.recv().await.unwrap();
        stop_checks(stop, task).await;
        assert!(events.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn dropping_the_stop_sender_ends_the_task() {
        let (observer, _) = recording_observer();
        let (stop, stopped) = watch::channel(false);
        let task = spawn_health_checks(
            group(vec![peer(refused_addr())]),
            check("/health", false),
            observer,
            stopped.into(),
        );
        drop(stop);
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("task did not stop")
            .unwrap();
    }
}
