//! The request path as nginx matches locations against it: percent-decoded,
//! `.` and `..` segments resolved and slashes merged. Matching the raw path
//! instead would let `/%61dmin/`, `//admin/` or `/x/../admin/` slip past
//! `location ^~ /admin/`.

use std::borrow::Cow;

/// A request path with its normalized form.
pub(crate) struct RequestPath<'a> {
    raw: &'a str,
    /// Borrows `raw` when normalizing changes nothing, the common case.
    normalized: Cow<'a, [u8]>,
}

impl<'a> RequestPath<'a> {
    /// `None` where nginx answers 400: a malformed `%` escape, or a `..`
    /// climbing above the root.
    pub(crate) fn new(raw: &'a str) -> Option<Self> {
        let bytes = raw.as_bytes();
        let normalized = if bytes.first() != Some(&b'/') || is_normal(bytes) {
            Cow::Borrowed(bytes)
        } else {
            match resolve(&decode(bytes)?)? {
                same if same == bytes => Cow::Borrowed(bytes),
                changed => Cow::Owned(changed),
            }
        };
        Some(RequestPath { raw, normalized })
    }

    pub(crate) fn normalized(&self) -> &[u8] {
        &self.normalized
    }

    /// Appends the normalized path from byte `from` on, as a request target:
    /// verbatim when it is the raw path, else escaped like nginx does.
    /// `from` must end a matched pattern, so it falls on a char boundary.
    pub(crate) fn push_from(&self, from: usize, out: &mut String) {
        match &self.normalized {
            Cow::Borrowed(_) => out.push_str(&self.raw[from..]),
            Cow::Owned(path) => push_escaped(&path[from..], out),
        }
    }
}

/// True when decoding and resolving could not change the path.
fn is_normal(path: &[u8]) -> bool {
    !path.contains(&b'%')
        && !path
            .windows(2)
            .any(|pair| pair[0] == b'/' && matches!(pair[1], b'/' | b'.'))
}

fn decode(path: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(path.len());
    let mut bytes = path.iter();
    while let Some(&byte) = bytes.next() {
        if byte == b'%' {
            let high = hex(*bytes.next()?)?;
            let low = hex(*bytes.next()?)?;
            out.push(high << 4 | low);
        } else {
            out.push(byte);
        }
    }
    Some(out)
}

fn hex(digit: u8) -> Option<u8> {
    char::from(digit).to_digit(16).map(|value| value as u8)
}

/// Resolves the segments of a decoded path that starts with `/`.
fn resolve(path: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(path.len());
    let mut trailing_slash = false;
    for segment in path[1..].split(|&b| b == b'/') {
        trailing_slash = matches!(segment, b"" | b"." | b"..");
        match segment {
            b"" | b"." => {}
            b".." => {
                let parent = out.iter().rposition(|&b| b == b'/')?;
                out.truncate(parent);
            }
            _ => {
                out.push(b'/');
                out.extend_from_slice(segment);
            }
        }
    }
    if trailing_slash {
        out.push(b'/');
    }
    Some(out)
}

/// Percent-encodes what cannot stand in a request target's path (nginx's
/// `NGX_ESCAPE_URI` set: controls, space, `#`, `%`, `?` and non-ASCII).
fn push_escaped(bytes: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &byte in bytes {
        if byte <= b' ' || byte >= 0x7f || matches!(byte, b'#' | b'%' | b'?') {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        } else {
            out.push(char::from(byte));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalized(raw: &str) -> Option<String> {
        let path = RequestPath::new(raw)?;
        Some(String::from_utf8_lossy(path.normalized()).into_owned())
    }

    #[test]
    fn normalizes_like_nginx() {
        let cases = [
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a/b/", "/a/b/"),
            ("//a///b", "/a/b"),
            ("/a/./b/.", "/a/b/"),
            ("/a/b/../c", "/a/c"),
            ("/a/..", "/"),
            ("/%61dmin/%2e%2e/x", "/x"),
            ("/a%2Fb", "/a/b"),
            ("/100%25", "/100%"),
            ("/.well-known/x", "/.well-known/x"),
            ("*", "*"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalized(raw).as_deref(), Some(want), "{raw}");
        }
    }

    #[test]
    fn refuses_what_nginx_answers_400() {
        for raw in ["/..", "/a/../../b", "/%zz", "/%4", "/%"] {
            assert_eq!(normalized(raw), None, "{raw}");
        }
    }

    #[test]
    fn borrows_unchanged_paths() {
        for raw in ["/a/b", "/.well-known/x"] {
            let path = RequestPath::new(raw).unwrap();
            assert!(matches!(path.normalized, Cow::Borrowed(_)), "{raw}");
        }
    }

    #[test]
    fn escapes_normalized_tails() {
        let path = RequestPath::new("/ws//a%20b%3F%25/%C3%A9").unwrap();
        let mut out = String::new();
        path.push_from(3, &mut out);
        assert_eq!(out, "/a%20b%3F%25/%C3%A9");
        let raw = RequestPath::new("/ws/a-b").unwrap();
        let mut out = String::new();
        raw.push_from(4, &mut out);
        assert_eq!(out, "a-b");
    }
}
