//! The chat protocol: JSON text frames in both directions.
//!
//! Client → server:
//! `{"type":"join","room":"lobby","nick":"ann"}`, `{"type":"say","text":"hi"}`, `{"type":"leave"}`.
//!
//! Server → client: `joined`, `presence`, `message` and `error` (see [`ServerMessage`]).

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest room name, in characters.
pub const MAX_ROOM_LEN: usize = 64;
/// Longest nickname, in characters.
pub const MAX_NICK_LEN: usize = 32;
/// Longest chat message, in characters.
pub const MAX_TEXT_LEN: usize = 2000;

/// A request from a browser.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ClientMessage {
    /// Enter `room` as `nick` (leaving the current room first, if any).
    Join { room: String, nick: String },
    /// Send `text` to everyone in the current room.
    Say { text: String },
    /// Leave the current room.
    Leave,
}

/// Whether a member arrived or went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceEvent {
    Join,
    Leave,
}

/// An event sent to browsers. It is also what travels between backends through Redis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerMessage {
    /// Answer to a successful `join`: who is in the room, and which backend serves this socket.
    Joined {
        room: String,
        nick: String,
        members: Vec<String>,
        backend: String,
    },
    /// Someone else joined or left the room; `members` is the list after the change.
    Presence {
        room: String,
        event: PresenceEvent,
        nick: String,
        members: Vec<String>,
    },
    /// A chat line; `ts` is milliseconds since the Unix epoch, stamped by the receiving backend.
    Message {
        room: String,
        nick: String,
        text: String,
        ts: u64,
    },
    /// The request could not be honoured; the connection stays open.
    Error { reason: String },
}

impl ServerMessage {
    /// An `error` message with the given reason.
    pub fn error(reason: impl Into<String>) -> Self {
        ServerMessage::Error {
            reason: reason.into(),
        }
    }

    /// The JSON text frame for this message.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server messages always serialize")
    }
}

/// Why a client frame was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// Not JSON, or JSON of the wrong shape (unknown `type`, missing field, …).
    Malformed(String),
    /// Well-formed, but a field's value is not acceptable.
    Invalid(&'static str),
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::Malformed(detail) => write!(f, "invalid message: {detail}"),
            ProtocolError::Invalid(why) => f.write_str(why),
        }
    }
}

/// Parses and validates one text frame from a client.
///
/// Room names are 1–64 characters of ASCII letters, digits, `-`, `_` and `.`; nicknames are 1–32
/// characters without control characters (surrounding spaces are trimmed); texts are 1–2000
/// characters and not blank.
pub fn parse_client(frame: &str) -> Result<ClientMessage, ProtocolError> {
    let msg: ClientMessage =
        serde_json::from_str(frame).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    match msg {
        ClientMessage::Join { room, nick } => {
            let nick = nick.trim().to_owned();
            validate_room(&room)?;
            validate_nick(&nick)?;
            Ok(ClientMessage::Join { room, nick })
        }
        ClientMessage::Say { text } => {
            if text.trim().is_empty() {
                return Err(ProtocolError::Invalid("text must not be empty"));
            }
            if text.chars().count() > MAX_TEXT_LEN {
                return Err(ProtocolError::Invalid(
                    "text is too long (2000 characters at most)",
                ));
            }
            Ok(ClientMessage::Say { text })
        }
        ClientMessage::Leave => Ok(ClientMessage::Leave),
    }
}

fn validate_room(room: &str) -> Result<(), ProtocolError> {
    let ok_chars = room
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if room.is_empty() || room.len() > MAX_ROOM_LEN || !ok_chars {
        return Err(ProtocolError::Invalid(
            "room must be 1-64 characters of letters, digits, '-', '_' or '.'",
        ));
    }
    Ok(())
}

fn validate_nick(nick: &str) -> Result<(), ProtocolError> {
    if nick.is_empty() || nick.chars().count() > MAX_NICK_LEN {
        return Err(ProtocolError::Invalid("nick must be 1-32 characters"));
    }
    if nick.chars().any(char::is_control) {
        return Err(ProtocolError::Invalid(
            "nick must not contain control characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_the_three_requests() {
        assert_eq!(
            parse_client(r#"{"type":"join","room":"lobby","nick":"ann"}"#),
            Ok(ClientMessage::Join {
                room: "lobby".into(),
                nick: "ann".into()
            })
        );
        assert_eq!(
            parse_client(r#"{"type":"say","text":"hi"}"#),
            Ok(ClientMessage::Say { text: "hi".into() })
        );
        assert_eq!(
            parse_client(r#"{"type":"leave"}"#),
            Ok(ClientMessage::Leave)
        );
    }

    #[test]
    fn trims_nicknames() {
        assert_eq!(
            parse_client(r#"{"type":"join","room":"r","nick":"  ann "}"#),
            Ok(ClientMessage::Join {
                room: "r".into(),
                nick: "ann".into()
            })
        );
    }

    #[test]
    fn malformed_frames_are_refused() {
        for frame in [
            "not json",
            "",
            "[]",
            r#"{"room":"lobby"}"#,
            r#"{"type":"dance"}"#,
            r#"{"type":"join","room":"lobby"}"#,
            r#"{"type":"say","text":42}"#,
        ] {
            assert!(
                matches!(parse_client(frame), Err(ProtocolError::Malformed(_))),
                "{frame:?} should be malformed"
            );
        }
    }

    #[test]
    fn invalid_values_are_refused() {
        let long_nick = "n".repeat(MAX_NICK_LEN + 1);
        let long_room = "r".repeat(MAX_ROOM_LEN + 1);
        let long_text = "t".repeat(MAX_TEXT_LEN + 1);
        for frame in [
            json!({"type":"join","room":"","nick":"ann"}),
            json!({"type":"join","room":"has space","nick":"ann"}),
            json!({"type":"join","room":long_room,"nick":"ann"}),
            json!({"type":"join","room":"lobby","nick":"   "}),
            json!({"type":"join","room":"lobby","nick":long_nick}),
            json!({"type":"join","room":"lobby","nick":"a\u{7}b"}),
            json!({"type":"say","text":"  \n "}),
            json!({"type":"say","text":long_text}),
        ] {
            let frame = frame.to_string();
            assert!(
                matches!(parse_client(&frame), Err(ProtocolError::Invalid(_))),
                "{frame} should be invalid"
            );
        }
    }

    #[test]
    fn limits_count_characters_not_bytes() {
        let nick = "é".repeat(MAX_NICK_LEN);
        let frame = json!({"type":"join","room":"lobby","nick":nick}).to_string();
        assert!(parse_client(&frame).is_ok());
    }

    #[test]
    fn server_messages_have_the_documented_shape() {
        let joined = ServerMessage::Joined {
            room: "lobby".into(),
            nick: "ann".into(),
            members: vec!["ann".into()],
            backend: "backend-1".into(),
        };
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&joined.to_json()).unwrap(),
            json!({"type":"joined","room":"lobby","nick":"ann","members":["ann"],"backend":"backend-1"})
        );
        let presence = ServerMessage::Presence {
            room: "lobby".into(),
            event: PresenceEvent::Leave,
            nick: "bob".into(),
            members: vec![],
        };
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&presence.to_json()).unwrap(),
            json!({"type":"presence","room":"lobby","event":"leave","nick":"bob","members":[]})
        );
        let message = ServerMessage::Message {
            room: "lobby".into(),
            nick: "ann".into(),
            text: "hi".into(),
            ts: 7,
        };
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&message.to_json()).unwrap(),
            json!({"type":"message","room":"lobby","nick":"ann","text":"hi","ts":7})
        );
        assert_eq!(
            ServerMessage::error("nope").to_json(),
            r#"{"type":"error","reason":"nope"}"#
        );
    }

    #[test]
    fn server_messages_round_trip() {
        let message = ServerMessage::Message {
            room: "r".into(),
            nick: "n".into(),
            text: "\"quoted\" <b>".into(),
            ts: 1,
        };
        assert_eq!(
            serde_json::from_str::<ServerMessage>(&message.to_json()).unwrap(),
            message
        );
    }
}
