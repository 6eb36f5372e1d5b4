//! A real upstream for the tests: HTTP/1.1 and WebSocket on one port.
//!
//! Plain requests get a JSON report of what arrived (method, URI, headers).
//! A WebSocket handshake is accepted; the first message the backend sends is
//! the same JSON report, then it echoes every message. A text message
//! `close:CODE` makes it close with that code.

use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

/// A running backend; it stops when the test's runtime ends.
pub struct Backend {
    pub addr: SocketAddr,
    pub name: String,
}

impl Backend {
    /// Starts a backend on an ephemeral port of 127.0.0.1, named `name`
    /// (reported as `"backend"` so tests can tell backends apart).
    pub async fn start(name: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let label = name.to_string();
        tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    return;
                };
                let label = label.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| serve(req, peer, label.clone()));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Backend {
            addr,
            name: name.to_string(),
        }
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
    name: String,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let report = report(&req, peer, &name);
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
            echo(ws, report).await;
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
    Ok(Response::builder()
        .header("content-type", "application/json")
        .header("x-backend", name)
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
