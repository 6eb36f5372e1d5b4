//! `json`: text messages must be JSON; with `required`, JSON objects having
//! those top-level fields. A violation closes the connection with 1007
//! (invalid payload data) and a reason saying what is wrong. Binary
//! messages pass.
//!
//! Configuration: `{ "required": ["type"], "direction": "both" }`, where
//! `direction` is `both` (default), `client` (client → upstream only) or
//! `upstream` (upstream → client only).
//!
//! Validation streams through the text with serde and keeps nothing, so
//! a valid message costs no allocation.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use wasp_sdk::{Action, CloseFrame, Direction, Directions, Filter, Message, RequestHead};

/// Longest close reason RFC 6455 allows.
const MAX_REASON: usize = 123;

#[derive(serde::Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Config {
    required: Vec<String>,
    direction: Directions,
}

/// The filter: the fields every message must have, and scratch space to
/// tick them off without allocating per message.
pub struct Json {
    /// Required top-level fields, without duplicates; empty = any JSON.
    required: Vec<String>,
    /// `seen[i]`: `required[i]` appeared in the current message.
    seen: Vec<bool>,
    direction: Directions,
}

impl Filter for Json {
    type Connection = ();

    fn configure(config: &str) -> Result<Self, String> {
        let Config {
            required,
            direction,
        } = wasp_sdk::parse_config(config)?;
        // Keep the configured order (the first missing field is reported).
        let mut unique = Vec::with_capacity(required.len());
        for field in required {
            if !unique.contains(&field) {
                unique.push(field);
            }
        }
        Ok(Json {
            seen: vec![false; unique.len()],
            required: unique,
            direction,
        })
    }

    fn on_open(&mut self, _conn: u64, _head: &RequestHead) {}

    fn on_message(&mut self, _: &mut (), dir: Direction, msg: Message) -> Action {
        let Message::Text(text) = &msg else {
            return Action::Forward;
        };
        if !self.direction.includes(dir) {
            return Action::Forward;
        }
        match self.check(text) {
            Ok(()) => Action::Forward,
            Err(reason) => Action::Close(CloseFrame {
                code: 1007,
                reason: truncate(reason, MAX_REASON),
            }),
        }
    }
}

impl Json {
    /// Checks one text message; the error is the close reason.
    fn check(&mut self, text: &str) -> Result<(), String> {
        if self.required.is_empty() {
            return serde_json::from_str::<IgnoredAny>(text)
                .map(|_| ())
                .map_err(|e| format!("invalid JSON: {e}"));
        }
        self.seen.fill(false);
        let mut de = serde_json::Deserializer::from_str(text);
        let shape = TopLevel {
            required: &self.required,
            seen: &mut self.seen,
        }
        .deserialize(&mut de)
        .and_then(|shape| de.end().map(|()| shape))
        .map_err(|e| format!("invalid JSON: {e}"))?;
        if let Shape::Other(kind) = shape {
            return Err(format!("expected a JSON object, got {kind}"));
        }
        match self.seen.iter().position(|seen| !seen) {
            Some(i) => Err(format!("missing field {:?}", self.required[i])),
            None => Ok(()),
        }
    }
}

/// What a message's top-level value is.
enum Shape {
    Object,
    /// Anything else, named for the close reason.
    Other(&'static str),
}

/// Reads the top-level value, ticking off required keys of an object and
/// skipping everything else; syntax errors still surface.
struct TopLevel<'a> {
    required: &'a [String],
    seen: &'a mut [bool],
}

impl<'de> DeserializeSeed<'de> for TopLevel<'_> {
    type Value = Shape;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Shape, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopLevel<'_> {
    type Value = Shape;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        while let Some(()) = map.next_key_seed(Key {
            required: self.required,
            seen: self.seen,
        })? {
            map.next_value::<IgnoredAny>()?;
        }
        Ok(Shape::Object)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Shape::Other("an array"))
    }
    fn visit_str<E>(self, _: &str) -> Result<Shape, E> {
        Ok(Shape::Other("a string"))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Shape, E> {
        Ok(Shape::Other("a boolean"))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Shape, E> {
        Ok(Shape::Other("a number"))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Shape, E> {
        Ok(Shape::Other("a number"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Shape, E> {
        Ok(Shape::Other("a number"))
    }
    fn visit_unit<E>(self) -> Result<Shape, E> {
        Ok(Shape::Other("null"))
    }
}

/// One object key: marks it seen when it is a required field.
struct Key<'a, 'b> {
    required: &'a [String],
    seen: &'b mut [bool],
}

impl<'de> DeserializeSeed<'de> for Key<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for Key<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<(), E> {
        if let Some(i) = self.required.iter().position(|field| field == key) {
            self.seen[i] = true;
        }
        Ok(())
    }
}

/// Cuts `text` to at most `max` bytes, on a character boundary.
fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let end = (0..=max)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(end);
    }
    text
}

wasp_sdk::export!(filter: Json);

#[cfg(test)]
mod tests {
    use super::*;
    use wasp_sdk::testing::{TestFilter, head};

    const UP: Direction = Direction::ClientToUpstream;
    const DOWN: Direction = Direction::UpstreamToClient;

    /// The filter configured with `config`, driven as wasp drives it, with
    /// connection 1 open.
    fn filter(config: &str) -> TestFilter<Json> {
        let mut filter = TestFilter::configure(config).unwrap();
        assert_eq!(filter.open(&head("/ws")), 1);
        filter
    }

    /// The close reason, or `None` when the message is forwarded.
    fn verdict(f: &mut TestFilter<Json>, dir: Direction, msg: Message) -> Option<String> {
        match f.message(1, dir, msg) {
            Action::Forward => None,
            Action::Close(frame) => {
                assert_eq!(frame.code, 1007);
                assert!(frame.reason.len() <= MAX_REASON);
                Some(frame.reason)
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    fn text(f: &mut TestFilter<Json>, dir: Direction, text: &str) -> Option<String> {
        verdict(f, dir, Message::Text(text.into()))
    }

    #[test]
    fn text_must_be_json() {
        let mut f = filter("");
        for ok in [r#"{"a":1}"#, "[1,2]", "3", r#""s""#, "null", " true "] {
            assert_eq!(text(&mut f, UP, ok), None, "{ok}");
        }
        for bad in ["", "{", "hello", r#"{"a":1} x"#, "[1,]", "{'a':1}"] {
            let reason = text(&mut f, DOWN, bad).expect(bad);
            assert!(reason.starts_with("invalid JSON: "), "{reason}");
        }
    }

    #[test]
    fn binary_passes() {
        let mut f = filter(r#"{"required": ["type"]}"#);
        assert_eq!(
            verdict(&mut f, UP, Message::Binary(b"not json".to_vec())),
            None
        );
    }

    #[test]
    fn required_fields_must_be_present_at_the_top_level() {
        let mut f = filter(r#"{"required": ["type", "id", "type"]}"#);
        assert_eq!(f.filter().required, ["type", "id"]);
        assert_eq!(
            text(&mut f, UP, r#"{"id": 1, "x": {"y": []}, "type": "a"}"#),
            None
        );
        assert_eq!(
            text(&mut f, UP, r#"{"type": "a"}"#).as_deref(),
            Some(r#"missing field "id""#)
        );
        assert_eq!(
            text(&mut f, UP, r#"{"x": {"type": 1, "id": 2}}"#).as_deref(),
            Some(r#"missing field "type""#)
        );
        // Escaped keys count once unescaped.
        assert_eq!(text(&mut f, UP, r#"{"\u0074ype": 1, "id": 2}"#), None);
        // Seen fields are forgotten between messages.
        assert_eq!(
            text(&mut f, UP, r#"{"id": 2}"#).as_deref(),
            Some(r#"missing field "type""#)
        );
    }

    #[test]
    fn required_fields_need_an_object() {
        let mut f = filter(r#"{"required": ["type"]}"#);
        for (msg, kind) in [
            ("[1]", "an array"),
            (r#""type""#, "a string"),
            ("1", "a number"),
            ("-1", "a number"),
            ("1.5", "a number"),
            ("false", "a boolean"),
            ("null", "null"),
        ] {
            assert_eq!(
                text(&mut f, UP, msg),
                Some(format!("expected a JSON object, got {kind}")),
                "{msg}"
            );
        }
        // Syntax errors win over the shape, even after a complete value.
        assert!(
            text(&mut f, UP, "[1] [")
                .unwrap()
                .starts_with("invalid JSON")
        );
        assert!(
            text(&mut f, UP, r#"{"type": }"#)
                .unwrap()
                .starts_with("invalid JSON")
        );
    }

    #[test]
    fn direction_limits_what_is_checked() {
        let mut client = filter(r#"{"direction": "client"}"#);
        assert!(text(&mut client, UP, "nope").is_some());
        assert_eq!(text(&mut client, DOWN, "nope"), None);
        let mut upstream = filter(r#"{"direction": "upstream"}"#);
        assert_eq!(text(&mut upstream, UP, "nope"), None);
        assert!(text(&mut upstream, DOWN, "nope").is_some());
        let mut both = filter(r#"{"direction": "both"}"#);
        assert!(text(&mut both, UP, "nope").is_some());
        assert!(text(&mut both, DOWN, "nope").is_some());
    }

    #[test]
    fn reasons_are_cut_to_123_bytes_on_a_char_boundary() {
        let field = "é".repeat(100);
        let mut f = filter(&format!(r#"{{"required": ["{field}"]}}"#));
        let reason = text(&mut f, UP, "{}").unwrap();
        assert!(
            reason.len() <= MAX_REASON && reason.len() >= MAX_REASON - 1,
            "{}",
            reason.len()
        );
        assert!(reason.starts_with("missing field"));
        assert_eq!(truncate("abc".into(), 2), "ab");
        assert_eq!(truncate("abc".into(), 5), "abc");
    }

    #[test]
    fn bad_configs_are_refused() {
        for bad in [
            r#"{"direction": "sideways"}"#,
            r#"{"required": "type"}"#,
            r#"{"required": [1]}"#,
            r#"{"fields": ["type"]}"#,
            "{",
        ] {
            assert!(Json::configure(bad).is_err(), "{bad} accepted");
        }
    }
}
