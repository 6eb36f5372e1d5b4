//! One browser connection: the WebSocket handshake on `/ws/chat`, then requests in, events out.

use crate::fanout::Hub;
use crate::protocol::{ClientMessage, ServerMessage, parse_client};
use crate::rooms::{ClientId, OUTBOX_CAPACITY, Outbox};
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// The only path served.
pub const PATH: &str = "/ws/chat";
/// Largest WebSocket message accepted from a client.
const MAX_MESSAGE_SIZE: usize = 64 * 1024;

/// What the proxy told us about the client.
#[derive(Debug, Default)]
struct Forwarded {
    real_ip: Option<String>,
    forwarded_for: Option<String>,
}

/// Serves one TCP connection until the client goes away.
pub async fn serve(stream: TcpStream, peer: SocketAddr, client: ClientId, hub: Arc<Hub>) {
    let mut forwarded = Forwarded::default();
    #[allow(clippy::result_large_err)] // the shape of tungstenite's handshake callback
    let check = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        forwarded.real_ip = header("x-real-ip");
        forwarded.forwarded_for = header("x-forwarded-for");
        if req.uri().path() == PATH {
            Ok(resp)
        } else {
            let mut not_found =
                ErrorResponse::new(Some(format!("no WebSocket endpoint here; use {PATH}\n")));
            *not_found.status_mut() = StatusCode::NOT_FOUND;
            Err(not_found)
        }
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_SIZE))
        .max_frame_size(Some(MAX_MESSAGE_SIZE));
    let ws =
        match tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(config)).await {
            Ok(ws) => ws,
            Err(e) => {
                tracing::info!(%peer, "handshake refused: {e}");
                return;
            }
        };
    tracing::info!(
        %peer,
        client,
        x_real_ip = forwarded.real_ip.as_deref().unwrap_or("-"),
        x_forwarded_for = forwarded.forwarded_for.as_deref().unwrap_or("-"),
        "connected"
    );

    let (mut sink, mut stream) = ws.split();
    let (outbox, mut queued) = mpsc::channel::<Arc<str>>(OUTBOX_CAPACITY);
    let writer = tokio::spawn(async move {
        while let Some(frame) = queued.recv().await {
            if sink.send(Message::text(frame.as_ref())).await.is_err() {
                break;
            }
        }
    });

    while let Some(frame) = stream.next().await {
        match frame {
            Ok(Message::Text(text)) => handle(&hub, client, &outbox, text.as_str()).await,
            Ok(Message::Binary(_)) => reply(
                &outbox,
                ServerMessage::error("binary frames are not supported; send JSON text"),
            ),
            Ok(Message::Close(_)) => break,
            Ok(_) => {} // ping/pong: tungstenite answers pings itself
            Err(e) => {
                tracing::info!(%peer, client, "read error: {e}");
                break;
            }
        }
    }

    hub.leave(client).await;
    writer.abort();
    tracing::info!(%peer, client, "disconnected");
}

/// Acts on one text frame; every refusal becomes an `error` message.
async fn handle(hub: &Hub, client: ClientId, outbox: &Outbox, text: &str) {
    let outcome = match parse_client(text) {
        Err(e) => Err(e.to_string()),
        Ok(ClientMessage::Join { room, nick }) => {
            let joined = hub.join(client, &room, &nick, outbox).await;
            if joined.is_ok() {
                tracing::info!(client, room, nick, backend = hub.backend(), "joined");
            }
            joined
        }
        Ok(ClientMessage::Say { text }) => hub.say(client, text).await,
        Ok(ClientMessage::Leave) => match hub.leave(client).await {
            Some(confirmation) => {
                reply(outbox, confirmation);
                Ok(())
            }
            None => Err("you are not in a room".to_owned()),
        },
    };
    if let Err(reason) = outcome {
        reply(outbox, ServerMessage::error(reason));
    }
}

fn reply(outbox: &Outbox, message: ServerMessage) {
    let _ = outbox.try_send(message.to_json().into());
}
