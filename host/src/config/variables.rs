//! nginx variables in configuration values (`set_headers`, `limit_conn_key`,
//! `limit_req.key`, `hash_key`): the `$name` / `${name}` syntax and the names
//! wasp knows. `wasp check` refuses a name it does not know, as `nginx -t`
//! does ("unknown variable"), instead of expanding it to nothing; the proxy
//! expands the rest per request (`crate::vars`).

/// A piece of a value: literal text, or the name of a variable (as written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece<'a> {
    Literal(&'a str),
    Variable(&'a str),
}

/// The variables wasp computes, by name (nginx's names).
pub const NAMES: &[&str] = &[
    "host",
    "remote_addr",
    "binary_remote_addr",
    "remote_port",
    "proxy_add_x_forwarded_for",
    "connection_upgrade",
    "scheme",
    "request_uri",
    "uri",
    "document_uri",
    "args",
    "query_string",
    "request_method",
    "proxy_host",
    "server_port",
];

/// Families of variables: `$http_NAME` (a request header), `$arg_NAME` (a
/// query parameter).
pub const PREFIXES: &[&str] = &["http_", "arg_"];

/// Whether wasp knows variable `name` (case-insensitive, as nginx).
pub fn is_known(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    NAMES.contains(&name.as_str())
        || PREFIXES
            .iter()
            .any(|prefix| name.len() > prefix.len() && name.starts_with(prefix))
}

/// Splits `text` at `$name` and `${name}` references. A `$` that starts no
/// name (at the end, or before a character that cannot start one, or an
/// unclosed `${`) is literal.
pub fn split(text: &str) -> Vec<Piece<'_>> {
    let mut pieces = Vec::new();
    let mut literal_start = 0;
    let mut at = 0;
    while let Some(found) = text[at..].find('$') {
        let dollar = at + found;
        let after = &text[dollar + 1..];
        let (name, consumed) = match after.strip_prefix('{') {
            Some(braced) => match braced.find('}') {
                Some(end) => (&braced[..end], end + 2),
                None => ("", 0),
            },
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], end)
            }
        };
        if name.is_empty() {
            at = dollar + 1;
            continue;
        }
        if literal_start < dollar {
            pieces.push(Piece::Literal(&text[literal_start..dollar]));
        }
        pieces.push(Piece::Variable(name));
        at = dollar + 1 + consumed;
        literal_start = at;
    }
    if literal_start < text.len() {
        pieces.push(Piece::Literal(&text[literal_start..]));
    }
    pieces
}

/// The variables of `text` that wasp does not know.
pub fn unknown(text: &str) -> impl Iterator<Item = &str> {
    split(text).into_iter().filter_map(|piece| match piece {
        Piece::Variable(name) if !is_known(name) => Some(name),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_names_braces_and_lone_dollars() {
        assert_eq!(
            split("${scheme}://$host$request_uri"),
            [
                Piece::Variable("scheme"),
                Piece::Literal("://"),
                Piece::Variable("host"),
                Piece::Variable("request_uri"),
            ]
        );
        assert_eq!(
            split("a$-b$"),
            [Piece::Literal("a$-b$")],
            "a `$` starting no name is literal"
        );
        assert_eq!(split("x${open"), [Piece::Literal("x${open")]);
    }

    #[test]
    fn knows_names_and_families() {
        assert!(is_known("remote_addr") && is_known("Host"));
        assert!(is_known("http_x_user") && is_known("arg_room"));
        assert!(!is_known("http_") && !is_known("nope"));
        assert_eq!(
            unknown("$host-$nope-${typo}").collect::<Vec<_>>(),
            ["nope", "typo"]
        );
    }
}
