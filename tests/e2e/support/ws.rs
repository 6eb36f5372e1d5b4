//! Reading a client WebSocket in tests: the next message within a
//! generous bound, so that a test fails instead of hanging.

use futures_util::StreamExt;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A client WebSocket as `connect_async` makes it.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Bound on every wait: generous, only there to fail instead of hanging.
pub const WAIT: Duration = Duration::from_secs(30);

/// The next message; fails the test if none comes within [`WAIT`] or the
/// connection ends.
pub async fn next(ws: &mut Ws) -> Message {
    timeout(WAIT, ws.next())
        .await
        .expect("a message in time")
        .expect("connection open")
        .expect("a message")
}

/// The next message, which must be text.
pub async fn next_text(ws: &mut Ws) -> String {
    match next(ws).await {
        Message::Text(text) => text.as_str().to_owned(),
        other => panic!("expected text, got {other:?}"),
    }
}
