//! nginx configuration files as a tree of directives, parsed by the
//! `nginx-lint-parser` crate (nginx's grammar: words, quoted strings,
//! `{ }` blocks, `;`, `#` comments), with `include` expanded in place as
//! nginx does: a relative pattern is relative to the main file's directory,
//! a glob may match nothing, a plain path must exist.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nginx_lint_parser::ast::{Argument, ArgumentValue, ConfigItem};

/// How deep `include`s may nest (a file that includes itself stops here).
const MAX_INCLUDE_DEPTH: usize = 16;

/// One directive: its name, arguments (quotes removed), block, and place.
#[derive(Debug, Clone)]
pub struct Directive {
    pub name: String,
    pub args: Vec<String>,
    /// The directives of its `{ }` block, if it has one.
    pub block: Option<Vec<Directive>>,
    pub at: Origin,
}

impl Directive {
    /// The directive as written, on one line, without its block.
    pub fn text(&self) -> String {
        let mut text = self.name.clone();
        for arg in &self.args {
            text.push(' ');
            if arg.is_empty() || arg.contains(char::is_whitespace) || arg.contains([';', '{']) {
                text.push_str(&format!("'{arg}'"));
            } else {
                text.push_str(arg);
            }
        }
        text
    }

    /// The block's directives (none for a directive without a block).
    pub fn children(&self) -> &[Directive] {
        self.block.as_deref().unwrap_or(&[])
    }
}

/// Where a directive is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: Arc<str>,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
}

/// Reads the file at `path` and what it includes.
pub fn read_file(path: &Path) -> Result<Vec<Directive>, ReadError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReadError::Io {
        path: path.to_owned(),
        source,
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    read_text(&text, &path.display().to_string(), dir)
}

/// Parses `text` (named `source`), expanding includes relative to `dir`.
pub fn read_text(text: &str, source: &str, dir: &Path) -> Result<Vec<Directive>, ReadError> {
    Reader { dir }.parse(text, source, 0)
}

struct Reader<'a> {
    dir: &'a Path,
}

impl Reader<'_> {
    fn parse(&self, text: &str, source: &str, depth: usize) -> Result<Vec<Directive>, ReadError> {
        let config = nginx_lint_parser::parse_string(text).map_err(|error| {
            let position = error.position().unwrap_or_default();
            ReadError::Syntax {
                file: source.to_owned(),
                line: position.line,
                column: position.column,
                message: error.to_string(),
            }
        })?;
        let file: Arc<str> = source.into();
        self.items(&config.items, &file, depth)
    }

    fn items(
        &self,
        items: &[ConfigItem],
        file: &Arc<str>,
        depth: usize,
    ) -> Result<Vec<Directive>, ReadError> {
        let mut directives = Vec::new();
        for item in items {
            let ConfigItem::Directive(directive) = item else {
                continue;
            };
            let at = Origin {
                file: file.clone(),
                line: directive.name_span.start.line,
                column: directive.name_span.start.column,
            };
            let args = arguments(&directive.args);
            if directive.name == "include" && directive.block.is_none() {
                directives.extend(self.include(&args, &at, depth)?);
                continue;
            }
            let block = match &directive.block {
                Some(block) if block.is_raw() => Some(Vec::new()),
                Some(block) => Some(self.items(&block.items, file, depth)?),
                None => None,
            };
            directives.push(Directive {
                name: unquote(&directive.name),
                args,
                block,
                at,
            });
        }
        Ok(directives)
    }

    /// The directives of the files `include PATTERN` names, in name order.
    fn include(
        &self,
        args: &[String],
        at: &Origin,
        depth: usize,
    ) -> Result<Vec<Directive>, ReadError> {
        let syntax = |message: String| ReadError::Syntax {
            file: at.file.to_string(),
            line: at.line,
            column: at.column,
            message,
        };
        let [pattern] = args else {
            return Err(syntax("include takes one file name or pattern".into()));
        };
        if depth >= MAX_INCLUDE_DEPTH {
            return Err(syntax(format!(
                "include `{pattern}`: more than {MAX_INCLUDE_DEPTH} nested includes"
            )));
        }
        let full = self.dir.join(pattern);
        let files: Vec<PathBuf> = if pattern.contains(['*', '?', '[']) {
            let mut files: Vec<PathBuf> = glob::glob(&full.to_string_lossy())
                .map_err(|e| syntax(format!("include `{pattern}`: {e}")))?
                .filter_map(Result::ok)
                .collect();
            files.sort();
            files
        } else {
            vec![full]
        };
        let mut directives = Vec::new();
        for path in files {
            let text = std::fs::read_to_string(&path).map_err(|source| ReadError::Io {
                path: path.clone(),
                source,
            })?;
            directives.extend(self.parse(&text, &path.display().to_string(), depth + 1)?);
        }
        Ok(directives)
    }
}

/// The arguments' values, quotes removed. The parser splits a word such
/// as `https://$host$request_uri` at each variable; nginx reads one
/// argument, so tokens with nothing between them are joined again.
fn arguments(args: &[Argument]) -> Vec<String> {
    let mut values: Vec<String> = Vec::new();
    let mut previous_end = None;
    for arg in args {
        let value = match &arg.value {
            ArgumentValue::QuotedString(s) | ArgumentValue::SingleQuotedString(s) => s.clone(),
            // `raw` keeps a variable's `$`.
            ArgumentValue::Literal(_) | ArgumentValue::Variable(_) => arg.raw.clone(),
        };
        match values.last_mut() {
            Some(last) if previous_end == Some(arg.span.start.offset) => last.push_str(&value),
            _ => values.push(value),
        }
        previous_end = Some(arg.span.end.offset);
    }
    values
}

/// A directive name written in quotes (a `map` entry `'' close;`) without them.
fn unquote(name: &str) -> String {
    for quote in ['\'', '"'] {
        if let Some(inner) = name
            .strip_prefix(quote)
            .and_then(|rest| rest.strip_suffix(quote))
        {
            return inner.to_owned();
        }
    }
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<Directive> {
        read_text(text, "t.conf", Path::new(".")).unwrap()
    }

    #[test]
    fn directives_keep_their_arguments_blocks_and_places() {
        let tree = parse(
            "map $http_upgrade $c {\n  default upgrade;\n  '' close;\n}\nserver { listen 80; set_x \"a b\" https://$host$request_uri $a; }\n",
        );
        assert_eq!(tree[0].name, "map");
        assert_eq!(tree[0].args, ["$http_upgrade", "$c"]);
        let entries = tree[0].children();
        assert_eq!(
            (entries[0].name.as_str(), entries[0].args.as_slice()),
            ("default", &["upgrade".to_string()][..])
        );
        assert_eq!(
            (entries[1].name.as_str(), entries[1].args.as_slice()),
            ("", &["close".to_string()][..])
        );
        assert_eq!((entries[1].at.line, entries[1].at.column), (3, 3));
        assert_eq!(
            tree[1].children()[1].args,
            ["a b", "https://$host$request_uri", "$a"]
        );
        assert_eq!(tree[1].at.line, 5);
    }

    #[test]
    fn a_syntax_error_names_the_place() {
        let error = read_text("server {\n listen 80;\n", "bad.conf", Path::new(".")).unwrap_err();
        assert!(error.to_string().starts_with("bad.conf:"), "{error}");
    }

    #[test]
    fn includes_are_expanded_in_place_and_globs_may_match_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("conf.d")).unwrap();
        std::fs::write(
            dir.path().join("conf.d/b.conf"),
            "upstream b { server 127.0.0.1:2; }",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("conf.d/a.conf"),
            "upstream a { server 127.0.0.1:1; }",
        )
        .unwrap();
        let main = "http { include conf.d/*.conf; include none/*.conf; }";
        let tree = read_text(main, "main.conf", dir.path()).unwrap();
        let names: Vec<&str> = tree[0]
            .children()
            .iter()
            .map(|d| d.args[0].as_str())
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert!(tree[0].children()[0].at.file.ends_with("conf.d/a.conf"));
        let missing = read_text("include missing.conf;", "main.conf", dir.path()).unwrap_err();
        assert!(matches!(missing, ReadError::Io { .. }), "{missing}");
    }
}
