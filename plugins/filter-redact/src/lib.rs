//! `redact`: replaces whole words (case-insensitive) and regex matches in
//! text messages. A message with nothing to redact is forwarded untouched;
//! binary messages always are.
//!
//! Configuration: `{ "words": ["darn"], "patterns": ["\\d{16}"],
//! "replacement": "***", "direction": "both" }`. `replacement` is literal
//! (`$1` is not expanded); `direction` is `both` (default), `client`
//! (client → upstream only) or `upstream` (upstream → client only). At least
//! one word or pattern is required.

use regex::Regex;
use wasp_sdk::{Action, Direction, Directions, Filter, Message, RequestHead};

#[derive(serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    words: Vec<String>,
    patterns: Vec<String>,
    replacement: String,
    direction: Directions,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            words: Vec::new(),
            patterns: Vec::new(),
            replacement: "***".into(),
            direction: Directions::Both,
        }
    }
}

/// The filter: every word and pattern as one regex, so a message is
/// scanned once however many there are.
pub struct Redact {
    regex: Regex,
    replacement: String,
    direction: Directions,
}

impl Filter for Redact {
    type Connection = ();

    fn configure(config: &str) -> Result<Self, String> {
        let config: Config = wasp_sdk::parse_config(config)?;
        if config.words.is_empty() && config.patterns.is_empty() {
            return Err("nothing to redact: give words or patterns".into());
        }
        let mut alternatives = Vec::with_capacity(config.patterns.len() + 1);
        if !config.words.is_empty() {
            if config.words.iter().any(|w| w.is_empty()) {
                return Err("words must not be empty".into());
            }
            let words: Vec<String> = config.words.iter().map(|w| regex::escape(w)).collect();
            // Half boundaries ask only that no word character (Unicode)
            // touches the match from outside, so words that start or end
            // with punctuation (`c++`) still match whole.
            alternatives.push(format!(
                r"(?i:\b{{start-half}}(?:{})\b{{end-half}})",
                words.join("|")
            ));
        }
        for pattern in &config.patterns {
            // Compiled alone first so an error names the pattern at fault.
            Regex::new(pattern).map_err(|e| format!("invalid pattern {pattern:?}: {e}"))?;
            alternatives.push(format!("(?:{pattern})"));
        }
        let regex = Regex::new(&alternatives.join("|"))
            .map_err(|e| format!("words and patterns together do not compile: {e}"))?;
        Ok(Redact {
            regex,
            replacement: config.replacement,
            direction: config.direction,
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
        match self.redact(text) {
            Some(redacted) => Action::Replace(Message::Text(redacted)),
            None => Action::Forward,
        }
    }
}

impl Redact {
    /// `text` with every match replaced, or `None` when nothing matched
    /// (then nothing is allocated). Empty matches are skipped: a pattern
    /// like `\d*` would otherwise insert the replacement between every
    /// character.
    fn redact(&self, text: &str) -> Option<String> {
        let mut matches = self.regex.find_iter(text).filter(|m| !m.is_empty());
        let first = matches.next()?;
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for m in std::iter::once(first).chain(matches) {
            out.push_str(&text[last..m.start()]);
            out.push_str(&self.replacement);
            last = m.end();
        }
        out.push_str(&text[last..]);
        Some(out)
    }
}

wasp_sdk::export!(filter: Redact);

#[cfg(test)]
mod tests {
    use super::*;
    use wasp_sdk::testing::{TestFilter, head};

    const UP: Direction = Direction::ClientToUpstream;
    const DOWN: Direction = Direction::UpstreamToClient;

    /// The filter configured with `config`, driven as wasp drives it, with
    /// connection 1 open.
    fn filter(config: &str) -> TestFilter<Redact> {
        let mut filter = TestFilter::configure(config).unwrap();
        assert_eq!(filter.open(&head("/ws")), 1);
        filter
    }

    /// The replaced text, or `None` when the message is forwarded.
    fn run(f: &mut TestFilter<Redact>, dir: Direction, text: &str) -> Option<String> {
        match f.message(1, dir, Message::Text(text.into())) {
            Action::Forward => None,
            Action::Replace(Message::Text(text)) => Some(text),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn words_match_whole_and_in_any_case() {
        let mut f = filter(r#"{"words": ["darn", "heck"]}"#);
        assert_eq!(
            run(&mut f, UP, "Darn it, HECK!").as_deref(),
            Some("*** it, ***!")
        );
        assert_eq!(run(&mut f, UP, "darned hecks undarn"), None);
        assert_eq!(run(&mut f, UP, "darn_it darn1"), None);
        assert_eq!(run(&mut f, UP, "darn").as_deref(), Some("***"));
    }

    #[test]
    fn word_boundaries_and_case_are_unicode_aware() {
        let mut f = filter(r#"{"words": ["über", "café"]}"#);
        assert_eq!(run(&mut f, UP, "ÜBER alles").as_deref(), Some("*** alles"));
        assert_eq!(run(&mut f, UP, "Café!").as_deref(), Some("***!"));
        // `é` and `ß` are word characters: no boundary inside these.
        assert_eq!(run(&mut f, UP, "überé cafés"), None);
        assert_eq!(run(&mut f, UP, "ßüber"), None);
    }

    #[test]
    fn words_are_literal_and_may_end_in_punctuation() {
        let mut f = filter(r#"{"words": ["c++", "a.b"]}"#);
        assert_eq!(
            run(&mut f, UP, "I like C++ a lot").as_deref(),
            Some("I like *** a lot")
        );
        assert_eq!(run(&mut f, UP, "a.b axb").as_deref(), Some("*** axb"));
        assert_eq!(run(&mut f, UP, "xc++"), None);
    }

    #[test]
    fn patterns_replace_their_matches() {
        let mut f = filter(r#"{"patterns": ["\\d{16}", "(?i)secret-\\w+"], "replacement": "[x]"}"#);
        assert_eq!(
            run(&mut f, UP, "card 1234567812345678, SECRET-abc").as_deref(),
            Some("card [x], [x]")
        );
        assert_eq!(run(&mut f, UP, "card 1234"), None);
        // Flags inside a pattern stay inside it.
        let mut f = filter(r#"{"patterns": ["(?i)a", "b"]}"#);
        assert_eq!(run(&mut f, UP, "AB b").as_deref(), Some("***B ***"));
    }

    #[test]
    fn words_and_patterns_combine() {
        let mut f = filter(r#"{"words": ["darn"], "patterns": ["\\d+"]}"#);
        assert_eq!(
            run(&mut f, UP, "darn 42 times").as_deref(),
            Some("*** *** times")
        );
    }

    #[test]
    fn replacement_is_literal() {
        let mut f = filter(r#"{"patterns": ["(\\d)"], "replacement": "$1"}"#);
        assert_eq!(run(&mut f, UP, "a1").as_deref(), Some("a$1"));
    }

    #[test]
    fn empty_matches_are_ignored() {
        let mut f = filter(r#"{"patterns": ["\\d*"]}"#);
        assert_eq!(run(&mut f, UP, "abc"), None);
        assert_eq!(run(&mut f, UP, "a12b").as_deref(), Some("a***b"));
    }

    #[test]
    fn binary_passes_and_direction_applies() {
        let mut f = filter(r#"{"words": ["darn"], "direction": "upstream"}"#);
        assert_eq!(run(&mut f, UP, "darn"), None);
        assert_eq!(run(&mut f, DOWN, "darn").as_deref(), Some("***"));
        let mut f = filter(r#"{"words": ["darn"], "direction": "client"}"#);
        assert_eq!(run(&mut f, UP, "darn").as_deref(), Some("***"));
        assert_eq!(run(&mut f, DOWN, "darn"), None);
        let mut f = filter(r#"{"words": ["darn"]}"#);
        assert_eq!(run(&mut f, DOWN, "darn").as_deref(), Some("***"));
        let binary = Message::Binary(b"darn".to_vec());
        assert!(matches!(f.message(1, UP, binary), Action::Forward));
    }

    #[test]
    fn bad_configs_are_refused() {
        let err = Redact::configure(r#"{"patterns": ["ok", "(unclosed"]}"#)
            .err()
            .unwrap();
        assert!(err.contains("\"(unclosed\""), "{err}");
        for bad in [
            "",
            "{}",
            r#"{"words": []}"#,
            r#"{"words": [""]}"#,
            r#"{"words": "darn"}"#,
            r#"{"words": ["darn"], "direction": "down"}"#,
            r#"{"words": ["darn"], "replace": "x"}"#,
            r#"{"patterns": ["a)"]}"#,
        ] {
            assert!(Redact::configure(bad).is_err(), "{bad} accepted");
        }
    }
}
