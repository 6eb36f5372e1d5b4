//! Opening WebSocket connections to the target, spread over several loopback source addresses so a single load
//! generator is not limited by one address's ephemeral ports.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    os::fd::AsRawFd,
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};
use futures_util::{SinkExt, StreamExt};
use tokio::{
    net::{TcpSocket, TcpStream},
    time::{Instant, timeout_at},
};
use tokio_tungstenite::{
    WebSocketStream, client_async_with_config,
    tungstenite::{Bytes, Message, http::Uri, protocol::WebSocketConfig},
};

/// Read buffer of every WebSocket, client or backend: tungstenite's default of 128 KiB would make the load
/// generator and the echo backend cost more memory per idle connection than the proxies being measured.
const READ_BUFFER: usize = 4 * 1024;

/// WebSocket settings shared by the load generator and the echo backend.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(READ_BUFFER)
}

/// A connected client WebSocket.
pub type Ws = WebSocketStream<TcpStream>;

/// Where to connect and from which source addresses.
#[derive(Debug, Clone)]
pub struct Target {
    url: String,
    addr: SocketAddr,
    sources: Vec<Ipv4Addr>,
}

impl Target {
    /// Resolves a `ws://host:port/path` URL; `sources` addresses from 127.0.0.2 upwards are used when the
    /// target is an IPv4 loopback address.
    pub async fn resolve(url: &str, sources: u8) -> Result<Self> {
        Self::resolve_from(url, 0, sources).await
    }

    /// As [`resolve`](Self::resolve), with the source addresses starting `skip` addresses further up
    /// (127.0.0.(2 + skip), …): two groups of connections then come from distinct addresses.
    pub async fn resolve_from(url: &str, skip: u8, sources: u8) -> Result<Self> {
        let first = 2 + u16::from(skip);
        ensure!(
            first + u16::from(sources) <= 255,
            "{sources} source addresses from 127.0.0.{first} run past 127.0.0.254"
        );
        let uri: Uri = url
            .parse()
            .with_context(|| format!("invalid URL `{url}`"))?;
        if uri.scheme_str() != Some("ws") {
            bail!("only ws:// URLs are supported, not `{url}`");
        }
        let host = uri.host().context("URL without a host")?;
        let port = uri.port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((host, port))
            .await
            .with_context(|| format!("resolving {host}"))?
            .next()
            .with_context(|| format!("{host} has no address"))?;
        let sources = match addr.ip() {
            IpAddr::V4(ip) if ip.is_loopback() => (first..first + u16::from(sources))
                .map(|last| Ipv4Addr::new(127, 0, 0, last as u8))
                .collect(),
            _ => Vec::new(),
        };
        Ok(Self {
            url: url.to_owned(),
            addr,
            sources,
        })
    }

    /// The URL connections are made to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Opens connection number `index` (its source address is chosen round-robin) and completes the upgrade.
    pub async fn connect(&self, index: usize) -> Result<Ws> {
        let socket = match self.addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if !self.sources.is_empty() {
            let source = self.sources[index % self.sources.len()];
            bind_without_port(&socket)?;
            socket
                .bind(SocketAddr::from((source, 0)))
                .with_context(|| format!("binding source address {source}"))?;
        }
        let stream = socket
            .connect(self.addr)
            .await
            .with_context(|| format!("connecting to {}", self.addr))?;
        stream.set_nodelay(true)?;
        let (ws, _response) =
            client_async_with_config(self.url.as_str(), stream, Some(ws_config()))
                .await
                .with_context(|| format!("WebSocket upgrade at {}", self.url))?;
        Ok(ws)
    }
}

/// Lets the kernel pick the source port at `connect` time, per destination, instead of at `bind` time
/// (`IP_BIND_ADDRESS_NO_PORT`), so bound sockets do not exhaust one address's port range.
fn bind_without_port(socket: &TcpSocket) -> std::io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: the fd is open for the life of `socket`, and `one` is a readable c_int of the given length.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&raw const one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Sends `message` and waits for the identical message to come back (skipping pings and pongs).
pub async fn round_trip(ws: &mut Ws, message: Message) -> Result<()> {
    ws.send(message.clone()).await?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(echo)) if echo == message => return Ok(()),
            Some(Ok(other)) => bail!("unexpected reply {other:?}"),
            Some(Err(e)) => return Err(e.into()),
            None => bail!("connection ended before the echo"),
        }
    }
}

/// Sends a ping and waits for the pong carrying its payload (skipping other pongs and pings). Whoever terminates
/// the client's WebSocket answers: the backend through a tunnel (nginx, HAProxy, wasp without filters), the
/// proxy itself where it relays frames (wasp with filters). Either way the connection is open end to end: a
/// proxy relays the backend's `101` only once the backend accepted, and a connection the proxy closed since
/// shows its close frame or its end instead of the pong.
pub async fn ping_pong(ws: &mut Ws, payload: Bytes) -> Result<()> {
    ws.send(Message::Ping(payload.clone())).await?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Pong(answer))) if answer == payload => return Ok(()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(frame))) => bail!("closed by the target: {frame:?}"),
            Some(Ok(other)) => bail!("unexpected message {other:?} instead of a pong"),
            Some(Err(e)) => return Err(e.into()),
            None => bail!("connection ended before the pong"),
        }
    }
}

/// How long the closing handshake may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Closing handshake: sends a close frame and reads until the peer's close frame (or the end of the stream).
pub async fn close(mut ws: Ws) -> Result<()> {
    ws.close(None).await?;
    let deadline = Instant::now() + CLOSE_TIMEOUT;
    loop {
        match timeout_at(deadline, ws.next()).await {
            Err(_) => bail!("no close frame within {CLOSE_TIMEOUT:?}"),
            Ok(None | Some(Ok(Message::Close(_)))) => return Ok(()),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn loopback_targets_get_source_addresses() {
        let target = Target::resolve("ws://127.0.0.1:9001/chat", 3)
            .await
            .unwrap();
        assert_eq!(target.addr, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(
            target.sources,
            [
                Ipv4Addr::new(127, 0, 0, 2),
                Ipv4Addr::new(127, 0, 0, 3),
                Ipv4Addr::new(127, 0, 0, 4)
            ]
        );
        assert_eq!(
            Target::resolve("ws://127.0.0.1/", 0)
                .await
                .unwrap()
                .addr
                .port(),
            80
        );
    }

    #[tokio::test]
    async fn a_second_group_takes_the_addresses_after_the_first() {
        let target = Target::resolve_from("ws://127.0.0.1:9001/", 4, 2)
            .await
            .unwrap();
        assert_eq!(
            target.sources,
            [Ipv4Addr::new(127, 0, 0, 6), Ipv4Addr::new(127, 0, 0, 7)]
        );
        // 127.0.0.252 to .254 are the last three; a fourth would be .255.
        assert!(
            Target::resolve_from("ws://127.0.0.1:9001/", 250, 3)
                .await
                .is_ok()
        );
        assert!(
            Target::resolve_from("ws://127.0.0.1:9001/", 250, 4)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn other_schemes_are_rejected() {
        assert!(Target::resolve("wss://127.0.0.1:9001/", 1).await.is_err());
        assert!(Target::resolve("http://127.0.0.1:9001/", 1).await.is_err());
    }
}
