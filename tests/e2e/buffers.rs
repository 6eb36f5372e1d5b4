//! What a peer that never reads costs wasp, read from wasp's own accounting
//! (`wasp_relay_buffered_bytes`, `wasp_relay_connection_buffered_max_bytes`
//! on the admin `/metrics`): the other peer pushes until every buffer on the
//! way is full and its writes wait, far more than 64 KiB, and wasp must have
//! held something (backpressure engaged) but never more than 64 KiB for the
//! connection. Through the frame relay (a filtered location) and the raw
//! tunnel, with a deaf client and with a deaf upstream.

use crate::support::backend::{answer_upgrade, read_head};
use crate::support::config::ConfigBuilder;
use crate::support::{eventually, free_addr, request, sample, start_proxy, temp_dir, test_plugins};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::timeout;

/// The bound the issue sets per connection.
const BOUND: f64 = (64 << 10) as f64;
/// Each message pushed: a quarter of the bound, four times `buffer_size`.
const MESSAGE: usize = 16 << 10;
/// What "far more than 64 KiB" means here.
const FAR_MORE: usize = 1 << 20;
/// A write that makes no progress for this long found every buffer full.
const STALLED: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, PartialEq)]
enum Deaf {
    Client,
    Upstream,
}

/// One binary frame of `MESSAGE` zero bytes, masked (with a zero key, which
/// leaves the payload as it is) when it goes to a server.
fn frame(masked: bool) -> Vec<u8> {
    let mut frame = vec![0x82, 126 | if masked { 0x80 } else { 0 }];
    frame.extend_from_slice(&(MESSAGE as u16).to_be_bytes());
    if masked {
        frame.extend_from_slice(&[0; 4]);
    }
    frame.resize(frame.len() + MESSAGE, 0);
    frame
}

/// Writes frames until one makes no progress for `STALLED`; how many bytes went.
async fn push_until_stalled(stream: &mut TcpStream, masked: bool) -> usize {
    let frame = frame(masked);
    let mut pushed = 0;
    while let Ok(written) = timeout(STALLED, stream.write_all(&frame)).await {
        written.expect("the proxy keeps the connection while backpressure holds");
        pushed += frame.len();
    }
    pushed
}

/// An upstream that answers the upgrade, then pushes frames until the
/// proxy stops taking them (its count sent on `pushed`) when the client is
/// the deaf one, or never reads again when it is itself deaf.
async fn upstream(deaf: Deaf, pushed: oneshot::Sender<usize>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        answer_upgrade(&mut tcp).await;
        if deaf == Deaf::Client {
            let _ = pushed.send(push_until_stalled(&mut tcp, false).await);
        }
        // Never reads; keeps the socket open.
        std::future::pending::<()>().await;
    });
    addr
}

/// Floods one WebSocket against a `deaf` peer through a filtered location
/// (the frame relay) or a plain one (the tunnel); returns what was pushed
/// and wasp's accounting once the pusher stalled.
async fn flood(deaf: Deaf, filtered: bool) -> (usize, f64, f64) {
    let (pushed_tx, pushed_rx) = oneshot::channel();
    let upstream = upstream(deaf, pushed_tx).await;
    let admin = free_addr();
    let filter = temp_dir(&format!("buffers-{}", filtered as u8)).join("passthrough.wasm");
    std::fs::write(&filter, test_plugins::get("passthrough")).unwrap();
    let config = ConfigBuilder::new()
        .set("admin", admin.to_string())
        .location("/", |l| {
            let l = l.proxy_pass(upstream);
            if filtered { l.filter_file(&filter) } else { l }
        })
        .build();
    let (_proxy, addr) = start_proxy(&config).await;

    let mut client = TcpStream::connect(addr).await.unwrap();
    let upgrade = "GET /ws HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                   Sec-WebSocket-Key: SGVsbG8sIHdvcmxkIQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    client.write_all(upgrade.as_bytes()).await.unwrap();
    assert!(read_head(&mut client).await.starts_with("HTTP/1.1 101"));
    let pushed = match deaf {
        Deaf::Upstream => push_until_stalled(&mut client, true).await,
        // The client reads nothing more.
        Deaf::Client => timeout(Duration::from_secs(60), pushed_rx)
            .await
            .expect("the upstream's writes stall")
            .unwrap(),
    };

    let metrics = async || request(admin, "GET", "/metrics").await.1;
    // Backpressure holds: wasp keeps what the deaf peer did not take.
    let now = eventually(
        "wasp to account for bytes held",
        Duration::from_secs(10),
        async || {
            let text = metrics().await;
            sample(&text, "wasp_relay_buffered_bytes").filter(|held| *held > 0.0)
        },
    )
    .await;
    let text = metrics().await;
    let max = sample(&text, "wasp_relay_connection_buffered_max_bytes").expect("the max series");
    drop(client);
    (pushed, now, max)
}

fn check(deaf: Deaf, (pushed, now, max): (usize, f64, f64)) {
    let who = if deaf == Deaf::Client {
        "client"
    } else {
        "upstream"
    };
    assert!(
        pushed > FAR_MORE,
        "only {pushed} bytes pushed before the writes against a deaf {who} stalled"
    );
    assert!(now > 0.0 && now <= max, "held now {now}, max {max}");
    assert!(
        max <= BOUND,
        "wasp held {max} bytes for a deaf {who}, over the 64 KiB bound"
    );
}

#[tokio::test]
async fn a_filtered_websocket_holds_at_most_64_kib_for_a_client_that_never_reads() {
    check(Deaf::Client, flood(Deaf::Client, true).await);
}

#[tokio::test]
async fn a_filtered_websocket_holds_at_most_64_kib_for_an_upstream_that_never_reads() {
    check(Deaf::Upstream, flood(Deaf::Upstream, true).await);
}

#[tokio::test]
async fn a_tunnel_holds_at_most_64_kib_for_a_client_that_never_reads() {
    check(Deaf::Client, flood(Deaf::Client, false).await);
}

#[tokio::test]
async fn a_tunnel_holds_at_most_64_kib_for_an_upstream_that_never_reads() {
    check(Deaf::Upstream, flood(Deaf::Upstream, false).await);
}
