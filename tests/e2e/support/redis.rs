//! A real `redis-server` for one test: on a free loopback port, nothing
//! saved to disk; killed and started again on the same port to test what
//! wasp does while Redis is away.

use super::{eventually, free_addr};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound on redis-server starting.
const START: Duration = Duration::from_secs(10);

pub struct Redis {
    pub addr: SocketAddr,
    child: Option<std::process::Child>,
}

impl Redis {
    /// Starts redis-server (the apt package `redis-server`) and waits for its PONG.
    pub async fn start() -> Redis {
        let mut redis = Redis {
            addr: free_addr(),
            child: None,
        };
        redis.run().await;
        redis
    }

    /// The address wasp's `[cluster] redis` names.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    async fn run(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.addr.port().to_string())
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server runs (apt-get install redis-server)");
        self.child = Some(child);
        let addr = self.addr;
        eventually("redis-server to answer", START, async || {
            ping(addr).await.then_some(())
        })
        .await;
    }

    /// Kills it (SIGKILL): connections drop, connecting is refused.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub async fn restart(&mut self) {
        self.kill();
        self.run().await;
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether `PING` gets `+PONG` at `addr`.
async fn ping(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return false;
    };
    if stream.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut answer = [0; 7];
    stream.read_exact(&mut answer).await.is_ok() && &answer == b"+PONG\r\n"
}
