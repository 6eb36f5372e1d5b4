//! Two backends sharing rooms through a real `redis-server`.

use crate::common::{Backend, Client};
use serde_json::json;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A throwaway `redis-server` on a free port, without persistence; killed on drop.
pub struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    pub fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("find a free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-server ({e}); this test needs it: apt-get install -y redis-server"
                )
            });
        let redis = Redis { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !redis.ping() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        redis
    }

    fn ping(&self) -> bool {
        let Ok(mut conn) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let mut answer = [0u8; 7];
        conn.write_all(b"PING\r\n").is_ok()
            && conn.read_exact(&mut answer).is_ok()
            && &answer == b"+PONG\r\n"
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn clients_on_two_backends_share_a_room() {
    let redis = Redis::start();
    let url = redis.url();
    let a = Backend::start(&["--redis", &url, "--name", "backend-a"]);
    let b = Backend::start(&["--redis", &url, "--name", "backend-b"]);

    let mut ann = Client::connect(&a).await;
    let mut bob = Client::connect(&b).await;
    let joined = ann.join("lobby", "ann").await;
    assert_eq!(joined["backend"], "backend-a");
    let joined = bob.join("lobby", "bob").await;
    assert_eq!(joined["backend"], "backend-b");
    assert_eq!(
        joined["members"],
        json!(["ann", "bob"]),
        "members span backends"
    );
    assert_eq!(
        ann.recv().await,
        json!({"type":"presence","room":"lobby","event":"join","nick":"bob","members":["ann","bob"]})
    );

    ann.send(json!({"type":"say","text":"hi from a"})).await;
    for client in [&mut ann, &mut bob] {
        let message = client.recv_type("message").await;
        assert_eq!(
            (&message["nick"], &message["text"]),
            (&json!("ann"), &json!("hi from a"))
        );
    }
    bob.send(json!({"type":"say","text":"hi from b"})).await;
    for client in [&mut ann, &mut bob] {
        let message = client.recv_type("message").await;
        assert_eq!(
            (&message["nick"], &message["text"]),
            (&json!("bob"), &json!("hi from b"))
        );
    }

    // Nicknames are unique across backends.
    let mut impostor = Client::connect(&b).await;
    impostor
        .send(json!({"type":"join","room":"lobby","nick":"ann"}))
        .await;
    assert!(
        impostor.recv_type("error").await["reason"]
            .as_str()
            .unwrap()
            .contains("taken")
    );

    // Leaving on one backend is seen on the other.
    bob.close().await;
    assert_eq!(
        ann.recv().await,
        json!({"type":"presence","room":"lobby","event":"leave","nick":"bob","members":["ann"]})
    );
}

#[tokio::test]
async fn a_restarted_backend_forgets_its_stale_members() {
    let redis = Redis::start();
    let url = redis.url();
    let a = Backend::start(&["--redis", &url, "--name", "backend-a"]);
    let mut ann = Client::connect(&a).await;
    ann.join("lobby", "ann").await;
    drop(a); // SIGKILL: no chance to clean up

    let a = Backend::start(&["--redis", &url, "--name", "backend-a"]);
    let mut again = Client::connect(&a).await;
    let joined = again.join("lobby", "ann").await;
    assert_eq!(joined["members"], json!(["ann"]));
}
