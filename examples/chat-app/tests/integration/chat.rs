//! A single backend: join/say/leave, two clients in a room, refusals.

use crate::common::{Backend, Client};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test]
async fn join_say_leave() {
    let backend = Backend::start(&["--name", "backend-1"]);
    let mut ann = Client::connect(&backend).await;

    let joined = ann.join("lobby", "ann").await;
    assert_eq!(
        joined,
        json!({"type":"joined","room":"lobby","nick":"ann","members":["ann"],"backend":"backend-1"})
    );

    ann.send(json!({"type":"say","text":"hi"})).await;
    let message = ann.recv_type("message").await;
    assert_eq!(
        (&message["room"], &message["nick"], &message["text"]),
        (&json!("lobby"), &json!("ann"), &json!("hi"))
    );
    let ts = message["ts"].as_u64().expect("ts in milliseconds");
    assert!(ts > 1_600_000_000_000, "ts {ts} is not in milliseconds");

    ann.send(json!({"type":"leave"})).await;
    assert_eq!(
        ann.recv().await,
        json!({"type":"presence","room":"lobby","event":"leave","nick":"ann","members":[]})
    );
    ann.send(json!({"type":"say","text":"anyone?"})).await;
    assert_eq!(
        ann.recv().await,
        json!({"type":"error","reason":"join a room first"})
    );
    ann.send(json!({"type":"leave"})).await;
    assert_eq!(
        ann.recv_type("error").await["reason"],
        "you are not in a room"
    );
}

#[tokio::test]
async fn two_clients_in_one_room() {
    let backend = Backend::start(&[]);
    let mut ann = Client::connect(&backend).await;
    let mut bob = Client::connect(&backend).await;
    let mut eve = Client::connect(&backend).await;

    ann.join("lobby", "ann").await;
    eve.join("elsewhere", "eve").await;
    let joined = bob.join("lobby", "bob").await;
    assert_eq!(joined["members"], json!(["ann", "bob"]));
    assert_eq!(
        joined["backend"], backend.addr,
        "the name defaults to the address"
    );
    assert_eq!(
        ann.recv().await,
        json!({"type":"presence","room":"lobby","event":"join","nick":"bob","members":["ann","bob"]})
    );

    bob.send(json!({"type":"say","text":"hello ann"})).await;
    for client in [&mut ann, &mut bob] {
        let message = client.recv_type("message").await;
        assert_eq!(
            (&message["nick"], &message["text"]),
            (&json!("bob"), &json!("hello ann"))
        );
    }
    ann.send(json!({"type":"say","text":"hi bob"})).await;
    for client in [&mut ann, &mut bob] {
        assert_eq!(client.recv_type("message").await["text"], "hi bob");
    }

    // A dropped connection is a leave.
    bob.close().await;
    assert_eq!(
        ann.recv().await,
        json!({"type":"presence","room":"lobby","event":"leave","nick":"bob","members":["ann"]})
    );
    // Nothing of this reached the other room.
    eve.expect_silence().await;
}

#[tokio::test]
async fn nicknames_are_unique_and_rooms_can_be_switched() {
    let backend = Backend::start(&[]);
    let mut ann = Client::connect(&backend).await;
    let mut impostor = Client::connect(&backend).await;
    ann.join("lobby", "ann").await;
    impostor
        .send(json!({"type":"join","room":"lobby","nick":"ann"}))
        .await;
    let error = impostor.recv_type("error").await;
    assert!(
        error["reason"].as_str().unwrap().contains("taken"),
        "{error}"
    );

    // Joining another room leaves the first: the nickname is free again there.
    ann.join("attic", "ann").await;
    let joined = impostor.join("lobby", "ann").await;
    assert_eq!(joined["members"], json!(["ann"]));
}

#[tokio::test]
async fn bad_input_gets_an_error_and_the_socket_stays_open() {
    let backend = Backend::start(&[]);
    let mut client = Client::connect(&backend).await;

    for bad in [
        "not json",
        "{\"type\":",
        "[1,2,3]",
        r#"{"type":"dance"}"#,
        r#"{"type":"join","room":"lobby"}"#,
        r#"{"type":"join","room":"no spaces","nick":"ann"}"#,
        r#"{"type":"join","room":"lobby","nick":""}"#,
        r#"{"type":"say","text":"   "}"#,
    ] {
        client.send_text(bad).await;
        let error = client.recv_type("error").await;
        assert!(
            error["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{bad:?} → {error}"
        );
    }
    client
        .send_message(Message::binary(vec![0u8, 159, 146, 150]))
        .await;
    client.recv_type("error").await;

    // Still usable.
    client.join("lobby", "ann").await;
}

#[tokio::test]
async fn only_the_chat_path_is_served() {
    let backend = Backend::start(&[]);
    let url = format!("ws://{}/ws/other", backend.addr);
    let err = tokio_tungstenite::connect_async(url)
        .await
        .expect_err("only /ws/chat upgrades");
    assert!(err.to_string().contains("404"), "{err}");
}

#[tokio::test]
async fn logs_the_forwarded_client_address() {
    let backend = Backend::start(&[]);
    let mut request = backend.url().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("X-Real-IP", "203.0.113.7".parse().unwrap());
    request.headers_mut().insert(
        "X-Forwarded-For",
        "198.51.100.1, 203.0.113.7".parse().unwrap(),
    );
    let mut client = Client::connect_request(request).await;
    client.join("lobby", "ann").await; // the connection is logged by now
    let log = backend.log_text();
    assert!(
        log.contains("203.0.113.7") && log.contains("198.51.100.1, 203.0.113.7"),
        "log:\n{log}"
    );
}
