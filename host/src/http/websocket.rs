//! After the upstream's 101: take both sockets back from hyper and relay
//! them — the raw tunnel, or the frame relay when the location has filters.

use super::client_stream::ClientStream;
use crate::access_log::AccessEntry;
use crate::metrics::Metrics;
use crate::plugins::RequestHead;
use crate::relay::frames::{self, FrameRelayConfig};
use crate::relay::tunnel::{self, TunnelConfig};
use crate::site::Site;
use crate::upstream::PeerGuard;
use bytes::Bytes;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Everything an upgraded connection needs once hyper lets go of it.
pub struct Relay {
    pub conn_id: u64,
    pub head: RequestHead,
    pub entry: AccessEntry,
    /// Counts the connection against its peer (least_conn) until it ends.
    pub guard: PeerGuard,
    /// The `limit_conn` slot: an open WebSocket counts until it closes.
    pub _slot: Option<crate::limits::ConnectionSlot>,
    pub site: Arc<Site>,
    pub location: u32,
    /// Keeps the client connection's `max_connections` slot.
    pub _conn: Arc<super::ConnInfo>,
    pub shutdown: watch::Receiver<bool>,
    pub metrics: Arc<Metrics>,
    pub upstream: String,
}

impl Relay {
    pub async fn run(self, client: OnUpgrade, upstream: OnUpgrade) {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(error) => {
                tracing::warn!(%error, "WebSocket upgrade did not complete");
                self.entry.log(101, 0, " ws=failed");
                return;
            }
        };
        let (Some((client, client_prefix)), Some((upstream, upstream_prefix))) =
            (into_client(client), into_tcp(upstream))
        else {
            tracing::error!("upgraded connection is not one wasp made");
            return;
        };
        let Some(location) = self.site.location(self.location) else {
            return;
        };
        let idle = location.config.read_timeout;
        let peer = &self.guard.peer().address;
        let _open = self
            .metrics
            .websocket_opened(&location.label, &self.upstream, peer);
        let tunnel_config = TunnelConfig {
            idle,
            buffer: location.config.buffer_size,
        };
        if !location.filters.is_empty() {
            let config = FrameRelayConfig {
                max_message_size: location.config.max_message_size,
                idle_timeout: idle,
                traffic: location.counters.clone(),
            };
            let chain = &location.filters;
            // Boxed: the frame relay's state is several times the tunnel's,
            // and inline it would size every tunnel's task the same.
            let stats = Box::pin(frames::run(
                client,
                client_prefix,
                upstream,
                upstream_prefix,
                self.conn_id,
                self.head,
                chain,
                config,
                self.shutdown,
            ))
            .await;
            let [up, down] = stats.messages;
            let close = stats.close_code.unwrap_or(1006);
            self.entry.log(
                101,
                stats.bytes[1],
                &format!(
                    " ws_up={} ws_msgs={up}/{down} ws_close={close} peer={peer}",
                    stats.bytes[0]
                ),
            );
            return;
        }
        // A tunnel never looks at the request head again: free it rather
        // than hold it for the life of an idle WebSocket.
        drop(self.head);
        let stats = match client {
            ClientStream::Plain(client) => {
                tunnel::run(
                    client,
                    client_prefix,
                    upstream,
                    upstream_prefix,
                    tunnel_config,
                    &location.counters,
                    self.shutdown,
                )
                .await
            }
            ClientStream::Tls(client) => {
                tunnel::run_streams(
                    client,
                    client_prefix,
                    upstream,
                    upstream_prefix,
                    tunnel_config,
                    &location.counters,
                    self.shutdown,
                )
                .await
            }
        };
        self.entry.log(
            101,
            stats.client_bytes,
            &format!(
                " ws_up={} ws_end={:?} peer={peer}",
                stats.upstream_bytes, stats.end
            ),
        );
    }
}

/// The client's connection under an upgrade, with the bytes hyper had
/// already read past the HTTP head.
fn into_client(upgraded: Upgraded) -> Option<(ClientStream, Bytes)> {
    let parts = upgraded.downcast::<TokioIo<ClientStream>>().ok()?;
    Some((parts.io.into_inner(), parts.read_buf))
}

/// The upstream socket under an upgrade, likewise.
fn into_tcp(upgraded: Upgraded) -> Option<(TcpStream, Bytes)> {
    let parts = upgraded.downcast::<TokioIo<TcpStream>>().ok()?;
    Some((parts.io.into_inner(), parts.read_buf))
}
