//! Helpers for the integration tests: the real `wasp-chat` binary on an ephemeral port, and
//! WebSocket clients speaking its JSON protocol.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for an expected frame.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// A running `wasp-chat`, killed on drop. Its log (stderr) goes to `log`.
pub struct Backend {
    child: Child,
    /// `host:port` it listens on.
    pub addr: String,
    pub log: PathBuf,
}

impl Backend {
    /// Starts the binary with `--listen 127.0.0.1:0` plus `args`, and waits until it listens.
    pub fn start(args: &[&str]) -> Backend {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let log = std::env::temp_dir().join(format!(
            "wasp-chat-test-{}-{}.log",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let mut child = Command::new(env!("CARGO_BIN_EXE_wasp-chat"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("create the log file"))
            .spawn()
            .expect("start wasp-chat");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("read wasp-chat's stdout");
        let Some(addr) = line.trim().strip_prefix("wasp-chat listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "wasp-chat did not start (stdout {line:?}); its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        Backend {
            addr: addr.to_owned(),
            child,
            log,
        }
    }

    /// The chat endpoint's URL.
    pub fn url(&self) -> String {
        format!("ws://{}/ws/chat", self.addr)
    }

    /// What the backend has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A WebSocket client of the chat.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    /// Connects to `backend`'s chat endpoint.
    pub async fn connect(backend: &Backend) -> Client {
        Client::connect_request(backend.url().into_client_request().unwrap()).await
    }

    /// Connects with a prepared handshake request (to add headers).
    pub async fn connect_request(
        request: tokio_tungstenite::tungstenite::handshake::client::Request,
    ) -> Client {
        let (ws, _) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(request))
            .await
            .expect("handshake timed out")
            .expect("handshake failed");
        Client { ws }
    }

    /// Connects to `url` from local address `source` (to choose the
    /// client's address, e.g. for ip_hash).
    pub async fn connect_from(source: &str, url: &str) -> Client {
        let request = url.into_client_request().unwrap();
        let host = request.uri().authority().unwrap().as_str().to_owned();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        let stream = socket
            .connect(host.parse().unwrap())
            .await
            .expect("connect");
        let handshake = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream));
        let (ws, _) = tokio::time::timeout(TIMEOUT, handshake)
            .await
            .expect("handshake timed out")
            .expect("handshake failed");
        Client { ws }
    }

    /// Sends a JSON value as a text frame.
    pub async fn send(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    /// Sends a raw text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    /// Sends a raw frame of any kind.
    pub async fn send_message(&mut self, message: Message) {
        self.ws.send(message).await.expect("send");
    }

    /// The next text frame, parsed; panics after [`TIMEOUT`] or when the socket closes.
    pub async fn recv(&mut self) -> Value {
        loop {
            let frame = tokio::time::timeout(TIMEOUT, self.ws.next())
                .await
                .expect("no frame within the timeout")
                .expect("socket closed")
                .expect("read error");
            if let Message::Text(text) = frame {
                return serde_json::from_str(text.as_str())
                    .unwrap_or_else(|e| panic!("server sent non-JSON {text:?}: {e}"));
            }
        }
    }

    /// The next frame, which must have `"type": kind`.
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        let value = self.recv().await;
        assert_eq!(value["type"], kind, "expected a {kind} frame, got {value}");
        value
    }

    /// Joins `room` as `nick` and returns the `joined` answer.
    pub async fn join(&mut self, room: &str, nick: &str) -> Value {
        self.send(json!({"type": "join", "room": room, "nick": nick}))
            .await;
        let joined = self.recv_type("joined").await;
        assert_eq!(
            (joined["room"].as_str(), joined["nick"].as_str()),
            (Some(room), Some(nick))
        );
        joined
    }

    /// Asserts that nothing arrives for a short while.
    pub async fn expect_silence(&mut self) {
        if let Ok(frame) = tokio::time::timeout(Duration::from_millis(300), self.ws.next()).await {
            panic!("expected silence, got {frame:?}");
        }
    }

    /// Closes the socket politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}
