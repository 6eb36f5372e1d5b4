//! `max-size`: closes a WebSocket with 1009 (message too big) when a message
//! in either direction is larger than `max` bytes.
//!
//! Configuration: `{ "max": "64k" }`, a number of bytes or a size string
//! (`k`, `m`, `g` in powers of 1024); 64 KiB when absent, so the bare
//! `filters = ["max-size"]` of the configuration spec works.

use wasp_sdk::units::Size;
use wasp_sdk::{Action, CloseFrame, Direction, Filter, Message, RequestHead};

/// The limit when the configuration gives none.
const DEFAULT_MAX: Size = Size(64 << 10);

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Largest message allowed, in bytes.
    #[serde(default = "default_max")]
    max: Size,
}

fn default_max() -> Size {
    DEFAULT_MAX
}

/// The filter: the byte limit, checked against text and binary alike.
pub struct MaxSize {
    max: u64,
}

impl Filter for MaxSize {
    type Connection = ();

    fn configure(config: &str) -> Result<Self, String> {
        let config: Config = wasp_sdk::parse_config(config)?;
        Ok(MaxSize { max: config.max.0 })
    }

    fn on_open(&mut self, _conn: u64, _head: &RequestHead) {}

    fn on_message(&mut self, _: &mut (), _dir: Direction, msg: Message) -> Action {
        let len = match &msg {
            Message::Text(text) => text.len(),
            Message::Binary(bytes) => bytes.len(),
        };
        if len as u64 > self.max {
            Action::Close(CloseFrame {
                code: 1009,
                reason: "message too big".into(),
            })
        } else {
            Action::Forward
        }
    }
}

wasp_sdk::export!(filter: MaxSize);

#[cfg(test)]
mod tests {
    use super::*;
    use wasp_sdk::testing::{TestFilter, head};

    /// The filter configured with `config`, driven as wasp drives it, with
    /// connection 1 open.
    fn filter(config: &str) -> TestFilter<MaxSize> {
        let mut filter = TestFilter::configure(config).unwrap();
        assert_eq!(filter.open(&head("/ws")), 1);
        filter
    }

    fn is_too_big(action: Action) -> bool {
        match action {
            Action::Close(frame) => frame.code == 1009 && frame.reason == "message too big",
            Action::Forward => false,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn closes_above_the_limit_in_both_directions() {
        let mut f = filter(r#"{ "max": 4 }"#);
        for dir in [Direction::ClientToUpstream, Direction::UpstreamToClient] {
            assert!(!is_too_big(f.message(1, dir, Message::Text("abcd".into()))));
            assert!(is_too_big(f.message(1, dir, Message::Text("abcde".into()))));
            assert!(!is_too_big(f.message(1, dir, Message::Binary(vec![0; 4]))));
            assert!(is_too_big(f.message(1, dir, Message::Binary(vec![0; 5]))));
        }
    }

    #[test]
    fn text_is_measured_in_bytes() {
        let mut f = filter(r#"{ "max": 4 }"#);
        // Three characters, six UTF-8 bytes.
        assert!(is_too_big(f.message(
            1,
            Direction::ClientToUpstream,
            Message::Text("ééé".into())
        )));
    }

    #[test]
    fn sizes_accept_strings_and_default_to_64k() {
        assert_eq!(filter(r#"{ "max": "1k" }"#).filter().max, 1024);
        assert_eq!(filter(r#"{ "max": "2M" }"#).filter().max, 2 << 20);
        assert_eq!(filter("").filter().max, 64 << 10);
        assert_eq!(filter("{}").filter().max, 64 << 10);
        let mut f = filter(r#"{ "max": "1k" }"#);
        assert!(!is_too_big(f.message(
            1,
            Direction::UpstreamToClient,
            Message::Binary(vec![0; 1024])
        )));
        assert!(is_too_big(f.message(
            1,
            Direction::UpstreamToClient,
            Message::Binary(vec![0; 1025])
        )));
    }

    #[test]
    fn bad_configs_are_refused() {
        for bad in [
            r#"{ "max": "big" }"#,
            r#"{ "max": -1 }"#,
            r#"{ "max": "64kb" }"#,
            r#"{ "maximum": 10 }"#,
            r#""64k""#,
            "{",
        ] {
            assert!(MaxSize::configure(bad).is_err(), "{bad} accepted");
        }
    }
}
