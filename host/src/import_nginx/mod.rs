//! `wasp import-nginx nginx.conf > wasp.toml`: nginx configuration in, the
//! equivalent wasp TOML out, for people who run nginx today.
//!
//! `read` turns the files (with their `include`s) into a tree of directives
//! that remember where they were written; `translate` walks nginx's contexts
//! (main, http, server, location, upstream) and writes TOML, with one comment
//! per directive it does not carry over. A directive whose absence makes
//! wasp behave differently from nginx is a [`Note`] with `differs` set, and
//! the command exits non-zero; one that changes nothing observable (logging,
//! `sendfile`, `proxy_buffers`, ...) is only commented.

pub mod read;
pub mod translate;
mod units;

use std::fmt;
use std::path::Path;

pub use read::{Origin, ReadError};

/// The result of an import.
#[derive(Debug)]
pub struct Imported {
    /// The wasp configuration, as TOML text with comments.
    pub toml: String,
    /// What was not carried over, in file order.
    pub notes: Vec<Note>,
}

impl Imported {
    /// True when wasp running [`Imported::toml`] would behave differently
    /// from nginx running the original.
    pub fn differs(&self) -> bool {
        self.notes.iter().any(|note| note.differs)
    }
}

/// A directive that was not (fully) translated, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Where the directive is written.
    pub at: Origin,
    /// The directive as written (`proxy_buffers 4 16k`).
    pub directive: String,
    /// Why it has no (exact) wasp equivalent.
    pub reason: String,
    /// Whether wasp behaves differently without it.
    pub differs: bool,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}: `{}`: {}", self.at, self.directive, self.reason)
    }
}

/// Reads the nginx configuration at `path` (following `include`s, relative
/// to its directory as nginx does with `-c`) and translates it.
pub fn import(path: &Path) -> Result<Imported, ReadError> {
    let directives = read::read_file(path)?;
    Ok(translate::translate(&directives))
}

/// [`import`] of configuration `text`; `source` names it in notes, and
/// relative `include`s are resolved against `dir`.
pub fn import_text(text: &str, source: &str, dir: &Path) -> Result<Imported, ReadError> {
    let directives = read::read_text(text, source, dir)?;
    Ok(translate::translate(&directives))
}
