//! A real upstream for the tests: HTTP/1.1 and WebSocket on one port, over
//! plain TCP or TLS; it counts the connections it accepted.
//!
//! Plain requests get a JSON report of what arrived (method, URI, headers).
//! A WebSocket handshake is accepted; the first message the backend sends is
//! the same JSON report, then it echoes every message. A text message
//! `close:CODE` makes it close with that code. `GET /health` answers 503
//! while the backend is set unhealthy, like any other path otherwise.

use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::{WebSocketStream, client_async};

/// A running backend; it stops when told to or when the test's runtime ends.
pub struct Backend {
    pub addr: SocketAddr,
    pub name: String,
    healthy: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    stop: watch::Sender<bool>,
    close_http: watch::Sender<u64>,
    accepting: JoinHandle<()>,
}

/// What every connection of a backend shares.
#[derive(Clone)]
struct Control {
    name: String,
    healthy: Arc<AtomicBool>,
    stop: watch::Receiver<bool>,
    close_http: watch::Receiver<u64>,
}

impl Control {
    /// Resolves once the backend is stopped (never if its handle is dropped
    /// without stopping it).
    async fn stopped(&self) {
        if self.stop.clone().wait_for(|&stop| stop).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Backend {
    /// Starts a backend on an ephemeral port of 127.0.0.1, named `name`
    /// (reported as `"backend"` so tests can tell backends apart).
    pub async fn start(name: &str) -> Backend {
        Backend::start_at(name, "127.0.0.1:0".parse().unwrap()).await
    }

    /// Starts a backend on `addr`, e.g. again where a stopped one was.
    pub async fn start_at(name: &str, addr: SocketAddr) -> Backend {
        Backend::serve(name, addr, None).await
    }

    /// Starts a backend speaking TLS with `acceptor` on an ephemeral port.
    pub async fn start_tls(name: &str, acceptor: TlsAcceptor) -> Backend {
        Backend::serve(name, "127.0.0.1:0".parse().unwrap(), Some(acceptor)).await
    }

    async fn serve(name: &str, addr: SocketAddr, tls: Option<TlsAcceptor>) -> Backend {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stop_rx) = watch::channel(false);
        let (close_http, close_http_rx) = watch::channel(0);
        let control = Control {
            name: name.to_string(),
            healthy: Arc::new(AtomicBool::new(true)),
            stop: stop_rx,
            close_http: close_http_rx,
        };
        let healthy = control.healthy.clone();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        let accepting = tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    _ = control.stopped() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(_) => return,
                    },
                };
                counted.fetch_add(1, Ordering::SeqCst);
                let (control, tls) = (control.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        None => serve_connection(stream, peer, control).await,
                        Some(tls) => {
                            if let Ok(stream) = tls.accept(stream).await {
                                serve_connection(stream, peer, control).await;
                            }
                        }
                    }
                });
            }
        });
        Backend {
            addr,
            name: name.to_string(),
            healthy,
            accepted,
            stop,
            close_http,
            accepting,
        }
    }

    /// Kills the backend: closes its listener (connecting is refused from
    /// now on) and every connection it has, WebSockets included.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.accepting.await;
    }

    /// Closes every HTTP connection it has (WebSockets stay), as a server
    /// whose keepalive timeout ran out does.
    pub fn close_http_connections(&self) {
        self.close_http.send_modify(|generation| *generation += 1);
    }

    /// The connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Makes `GET /health` answer 503 (false) or 200 (true).
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
    }
}

/// One client connection, until it closes or the backend stops.
async fn serve_connection<S>(stream: S, peer: SocketAddr, control: Control)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let serving = control.clone();
    let service = service_fn(move |req| serve(req, peer, serving.clone()));
    let connection = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    let mut close_http = control.close_http.clone();
    close_http.mark_unchanged();
    let told_to_close = async {
        // A dropped handle (a test keeping only the address) never tells.
        if close_http.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = control.stopped() => {}
        _ = told_to_close => {}
        _ = connection => {}
    }
}

fn report(req: &Request<Incoming>, peer: SocketAddr, name: &str) -> Value {
    let headers: Vec<Value> = req
        .headers()
        .iter()
        .map(|(k, v)| json!([k.as_str(), String::from_utf8_lossy(v.as_bytes())]))
        .collect();
    json!({
        "backend": name,
        "method": req.method().as_str(),
        "uri": req.uri().to_string(),
        "version": format!("{:?}", req.version()),
        "headers": headers,
        "peer": peer.ip().to_string(),
    })
}

async fn serve(
    mut req: Request<Incoming>,
    peer: SocketAddr,
    control: Control,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let report = report(&req, peer, &control.name);
    let key = req.headers().get("sec-websocket-key").cloned();
    let wants_ws = req
        .headers()
        .get("upgrade")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if let (true, Some(key)) = (wants_ws, key) {
        let accept = derive_accept_key(key.as_bytes());
        let upgrade = hyper::upgrade::on(&mut req);
        let protocol = req.headers().get("sec-websocket-protocol").cloned();
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else { return };
            let ws =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            tokio::select! {
                _ = control.stopped() => {}
                _ = echo(ws, report) => {}
            }
        });
        let mut response = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-accept", accept);
        if let Some(protocol) = protocol {
            // Pick the first offered subprotocol.
            let first = protocol
                .to_str()
                .unwrap_or("")
                .split(',')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            response = response.header("sec-websocket-protocol", first);
        }
        return Ok(response.body(Full::default()).unwrap());
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut report = report;
    report["body_len"] = json!(body.len());
    let unhealthy = report["uri"] == "/health" && !control.healthy.load(Ordering::SeqCst);
    let status = if unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    Ok(Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-backend", control.name)
        .body(Full::new(Bytes::from(report.to_string())))
        .unwrap())
}

async fn echo<S>(mut ws: WebSocketStream<S>, report: Value)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if ws.send(Message::text(report.to_string())).await.is_err() {
        return;
    }
    while let Some(Ok(message)) = ws.next().await {
        match message {
            Message::Text(text) if text.starts_with("close:") => {
                let code: u16 = text["close:".len()..].parse().unwrap_or(1000);
                let frame = CloseFrame {
                    code: CloseCode::from(code),
                    reason: "backend closes".into(),
                };
                let _ = ws.close(Some(frame)).await;
            }
            Message::Text(_) | Message::Binary(_) => {
                if ws.send(message).await.is_err() {
                    return;
                }
            }
            Message::Close(_) => {}
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
}

/// The value of header `name` in a backend report (all values joined).
pub fn header<'a>(report: &'a Value, name: &str) -> Vec<&'a str> {
    report["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|pair| pair[0].as_str().unwrap().eq_ignore_ascii_case(name))
        .map(|pair| pair[1].as_str().unwrap())
        .collect()
}

/// A connection to the proxy from `source` (all of 127.0.0.0/8 is local).
/// Reads an HTTP head (and whatever came with it in the same reads).
pub async fn read_head(stream: &mut TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed inside an HTTP head");
        head.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Reads a WebSocket upgrade request from `tcp` and answers it with 101, by
/// hand: for upstreams that go on to misbehave on the raw socket.
pub async fn answer_upgrade(tcp: &mut TcpStream) {
    use tokio::io::AsyncWriteExt;
    let head = read_head(tcp).await.to_lowercase();
    let key = head
        .lines()
        .find_map(|line| line.strip_prefix("sec-websocket-key: "))
        .expect("a Sec-WebSocket-Key")
        .trim()
        .to_owned();
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    tcp.write_all(answer.as_bytes()).await.unwrap();
}

pub async fn connect_from(proxy: SocketAddr, source: Ipv4Addr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind((source, 0).into()).unwrap();
    socket.connect(proxy).await.unwrap()
}

/// A WebSocket handshake over `stream` with extra request headers; the
/// socket and the name of the backend (its first message).
pub async fn ws_over(
    stream: TcpStream,
    headers: &[(&str, &str)],
) -> (WebSocketStream<TcpStream>, String) {
    let mut request = "ws://wasp/ws".into_client_request().unwrap();
    for (name, value) in headers {
        let name = http::HeaderName::from_bytes(name.as_bytes()).unwrap();
        request.headers_mut().insert(name, value.parse().unwrap());
    }
    let (mut ws, response) = client_async(request, stream)
        .await
        .unwrap_or_else(|e| panic!("WebSocket handshake through wasp: {e}"));
    assert_eq!(response.status(), 101);
    let report: Value = match ws.next().await {
        Some(Ok(Message::Text(text))) => serde_json::from_str(&text).unwrap(),
        other => panic!("expected the backend's report, got {other:?}"),
    };
    (ws, report["backend"].as_str().unwrap().to_owned())
}
