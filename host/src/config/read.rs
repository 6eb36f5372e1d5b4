//! Reads the file into its raw shape ([`RawConfig`]), reporting every
//! problem serde meets rather than the first: each syntax error, unknown key
//! (with "did you mean" when a known key is one edit away) and value of the
//! wrong type, at its position.
//!
//! serde stops at its first error, so the document is parsed once into
//! toml's spanned tree and deserialized again after each error with the
//! offending item taken out, until it goes through. An unknown key taken out
//! changes nothing else, so the semantic checks still run afterwards; a
//! value taken out would make them report its absence as well, so after one
//! they are skipped.

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

use super::raw::RawConfig;
use super::{Diagnostic, diagnostic};

/// Enough for any file a person wrote; a bound on the retries all the same.
const MAX_PROBLEMS: usize = 100;

/// What reading found.
pub struct Read {
    /// The raw shape, when the semantic checks can be trusted on it.
    pub raw: Option<RawConfig>,
    /// Every syntax, key and type problem, in the order met.
    pub problems: Vec<Diagnostic>,
}

pub fn read(text: &str, source: &str) -> Read {
    let problem = |span: Option<Range<usize>>, message: &str| {
        // toml's messages may end with a newline; diagnostics are one line each.
        let message = message.trim().replace('\n', "; ");
        diagnostic(text, source, span.map_or(0, |s| s.start), message)
    };
    let (mut document, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        // The recovered tree may miss what the broken lines meant to say:
        // checking it further would report that as well.
        // toml's recovery may report one mistake several times over on
        // its line: the first error of each line is the one to read.
        let mut problems: Vec<Diagnostic> = Vec::new();
        for error in &syntax {
            let found = problem(error.span(), error.message());
            if problems.iter().all(|seen| seen.line != found.line) {
                problems.push(found);
            }
        }
        return Read {
            raw: None,
            problems,
        };
    }
    let mut problems = Vec::new();
    // Keys of tables this reader took out, so that serde's "missing field"
    // that follows is not reported as a second problem.
    let mut taken: Vec<(Range<usize>, String)> = Vec::new();
    let mut trusted = true;
    while problems.len() < MAX_PROBLEMS {
        let error = match RawConfig::deserialize(toml::de::Deserializer::from(document.clone())) {
            Ok(raw) => {
                return Read {
                    raw: trusted.then_some(raw),
                    problems,
                };
            }
            Err(error) => error,
        };
        let Some(span) = error.span() else {
            problems.push(problem(None, error.message()));
            break;
        };
        let message = error.message();
        let cascade = missing_field(message)
            .is_some_and(|field| taken.iter().any(|(t, key)| *t == span && key == field));
        if !cascade {
            problems.push(problem(Some(span.clone()), &did_you_mean(message)));
        }
        let root = document.span();
        match take_out(document.get_mut(), root, &span) {
            Some(Taken::Key { table, key }) => {
                if !message.starts_with("unknown field") {
                    trusted = false;
                }
                taken.push((table, key));
            }
            Some(Taken::Value) => trusted = false,
            None => {
                if cascade {
                    problems.push(problem(Some(span), message));
                }
                break;
            }
        }
    }
    Read {
        raw: None,
        problems,
    }
}

/// serde's `missing field `NAME`` names NAME.
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

/// serde's "unknown field `X`, expected one of `a`, `b`" (or "unknown
/// variant"), with the list replaced by the known name one edit away from
/// X, if there is one.
fn did_you_mean(message: &str) -> String {
    let Some(rest) = ["unknown field `", "unknown variant `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
    else {
        return message.to_owned();
    };
    let Some((name, expected)) = rest.split_once('`') else {
        return message.to_owned();
    };
    // The known names are every other piece between backticks.
    let close = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .find(|known| strsim::damerau_levenshtein(name, known) == 1);
    match close {
        Some(known) => format!(
            "{}`{name}`: did you mean `{known}`?",
            &message[..message.len() - rest.len() - 1]
        ),
        None => message.to_owned(),
    }
}

/// What [`take_out`] removed.
enum Taken {
    /// The entry `key` of the table spanning `table`, whose key or value was at the span.
    Key { table: Range<usize>, key: String },
    /// A table or array element spanning exactly the span.
    Value,
}

/// Removes from `table` (spanning `own`) the item an error at `span` is
/// about: the entry whose key or value is there, or the array element that
/// is. The whole tree is searched: the span toml gives an array of tables
/// need not cover its tables.
fn take_out(table: &mut DeTable<'_>, own: Range<usize>, span: &Range<usize>) -> Option<Taken> {
    // Deepest first: an array of tables may share its first table's span.
    if let Some(taken) = table
        .iter_mut()
        .find_map(|(_, value)| take_out_of_value(value, span))
    {
        return Some(taken);
    }
    let hit = table
        .iter()
        .find(|(key, value)| key.span() == *span || value.span() == *span)
        .map(|(key, _)| key.clone())?;
    table.remove(&hit);
    Some(Taken::Key {
        table: own,
        key: hit.into_inner().into_owned(),
    })
}

fn take_out_of_value(value: &mut Spanned<DeValue<'_>>, span: &Range<usize>) -> Option<Taken> {
    let own = value.span();
    match value.get_mut() {
        DeValue::Table(table) => take_out(table, own, span),
        DeValue::Array(array) => {
            if let Some(taken) = array
                .iter_mut()
                .find_map(|item| take_out_of_value(item, span))
            {
                return Some(taken);
            }
            let at = array.iter().position(|item| item.span() == *span)?;
            let mut kept = DeArray::new();
            for (i, item) in std::mem::replace(array, DeArray::new()).iter().enumerate() {
                if i != at {
                    kept.push(item.clone());
                }
            }
            *array = kept;
            Some(Taken::Value)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_the_known_name_one_edit_away() {
        // The message format is serde's (`de::Error::unknown_field`): pinned
        // here so that a change in it shows.
        let message =
            "unknown field `read_timout`, expected one of `path`, `read_timeout`, `send_timeout`";
        assert_eq!(
            did_you_mean(message),
            "unknown field `read_timout`: did you mean `read_timeout`?"
        );
        let far = "unknown field `proxy_read_timeout`, expected one of `path`, `read_timeout`";
        assert_eq!(did_you_mean(far), far);
        assert_eq!(
            did_you_mean("unknown variant `jsn`, expected `text` or `json`"),
            "unknown variant `jsn`: did you mean `json`?"
        );
    }
}
