//! The echo backend (`wasp-echo`): echoes every text and binary WebSocket message, and answers any plain HTTP
//! request with `200 ok` so proxies' health checks pass. Replies to messages that arrive together are written
//! with one flush, so the backend stays cheaper per message than the proxies in front of it.

use std::{io::Cursor, time::Duration};

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_tungstenite::{accept_async_with_config, tungstenite::Message};

use crate::connect::ws_config;

/// Largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// Accepts connections forever, serving each on its own task.
pub async fn serve(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(async move {
                    if let Err(e) = serve_connection(stream).await {
                        log_connection_error(&e);
                    }
                });
            }
            // Out of file descriptors or similar: wait for connections to close rather than spin.
            Err(e) => {
                eprintln!("wasp-echo: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Errors of single connections are the client's business (resets at the end of a run are normal).
fn log_connection_error(error: &anyhow::Error) {
    if std::env::var_os("WASP_ECHO_DEBUG").is_some() {
        eprintln!("wasp-echo: {error:#}");
    }
}

/// Reads the request head, then either upgrades and echoes, or answers `200 ok` and closes.
async fn serve_connection(mut stream: TcpStream) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut head = Vec::with_capacity(1024);
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        anyhow::ensure!(head.len() < MAX_HEAD, "request head over {MAX_HEAD} bytes");
        if stream.read_buf(&mut head).await? == 0 {
            return Ok(());
        }
    }
    if !is_websocket_upgrade(&head) {
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
            .await?;
        return Ok(stream.shutdown().await?);
    }
    // Replay the head already read in front of the rest of the stream for the WebSocket handshake.
    let (reader, writer) = stream.into_split();
    let stream = tokio::io::join(Cursor::new(head).chain(reader), writer);
    let mut ws = accept_async_with_config(stream, Some(ws_config())).await?;
    while let Some(first) = ws.next().await {
        let mut next = Some(first);
        while let Some(item) = next {
            match item {
                Ok(message @ (Message::Text(_) | Message::Binary(_))) => ws.feed(message).await?,
                // Pings are answered and closes acknowledged by tungstenite itself on the next write or read.
                Ok(_) => {}
                Err(e) => return Err(e.into()),
            }
            next = ws.next().now_or_never().flatten();
        }
        ws.flush().await?;
    }
    Ok(())
}

/// Whether a request head asks for a WebSocket upgrade (`Upgrade: websocket`, any case).
fn is_websocket_upgrade(head: &[u8]) -> bool {
    String::from_utf8_lossy(head).lines().skip(1).any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("upgrade")
                && value.to_ascii_lowercase().contains("websocket")
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_requests_are_recognised() {
        let upgrade =
            b"GET /ws HTTP/1.1\r\nHost: x\r\nconnection: Upgrade\r\nUPGRADE:WebSocket\r\n\r\n";
        assert!(is_websocket_upgrade(upgrade));
        assert!(!is_websocket_upgrade(
            b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
        ));
        assert!(!is_websocket_upgrade(
            b"GET /upgrade:websocket HTTP/1.1\r\n\r\n"
        ));
    }
}
