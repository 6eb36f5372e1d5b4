//! Upstreams that misbehave, on loopback: one that never answers, one that
//! answers late, one that hangs up, and an address whose connects hang.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What a [`faulty`] upstream does with each connection.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Reads the request and never answers; holds the connection.
    Silent,
    /// Answers `200` with body `late`, this long after the request head.
    Late(Duration),
    /// Closes the connection once the request head arrived.
    HangUp,
    /// Sends half a response head, then closes.
    HalfHead,
}

/// An upstream doing `fault` to every connection until the handle is aborted.
pub async fn faulty(fault: Fault) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(tokio::spawn(serve(stream, fault)));
        }
    });
    (addr, serving)
}

async fn serve(mut stream: TcpStream, fault: Fault) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    match fault {
        Fault::Silent => {
            // Holds the connection open until the peer or the test ends it.
            let _ = stream.read(&mut buf).await;
            std::future::pending::<()>().await;
        }
        Fault::Late(delay) => {
            tokio::time::sleep(delay).await;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nlate")
                .await;
        }
        Fault::HangUp => {}
        Fault::HalfHead => {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Le").await;
        }
    }
}

/// A listener whose accept queue is full: the kernel drops further SYNs,
/// so a connect to it hangs (a loopback blackhole). Keep all three alive.
pub fn blackhole() -> (socket2::Socket, Vec<std::net::TcpStream>, SocketAddr) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        let filler =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        filler.set_nonblocking(true).unwrap();
        let _ = filler.connect(&addr.into());
        fillers.push(std::net::TcpStream::from(filler));
    }
    std::thread::sleep(Duration::from_millis(200));
    (socket, fillers, addr)
}
