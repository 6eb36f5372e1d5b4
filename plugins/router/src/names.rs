//! Server selection by `Host`, in nginx's order of precedence: exact name,
//! longest leading wildcard, longest trailing wildcard, first regex in
//! configuration order. After those come the servers that accept any name
//! (the contract's empty or absent `server_names`), then the listener's
//! default server, its first.

use std::borrow::Cow;
use std::collections::HashMap;

use regex::{Regex, RegexBuilder};
use wasp_sdk::RequestHead;

/// One `server_name`, parsed.
pub(crate) enum Name {
    /// `""`, or no names at all.
    Any,
    /// `example.com`, lower-cased.
    Exact(String),
    /// `*.example.com` (`bare: false`) or `.example.com`, which also matches
    /// `example.com` itself (`bare: true`); `suffix` is `example.com`.
    Leading { suffix: String, bare: bool },
    /// `www.example.*`; the prefix kept is `www.example.`.
    Trailing(String),
    /// `~^www\d+\.example\.net$`.
    Regex(Regex),
}

/// Parses a server's `server_names`; an empty list accepts any name.
pub(crate) fn parse(names: &[String]) -> Result<Vec<Name>, String> {
    if names.is_empty() {
        return Ok(vec![Name::Any]);
    }
    names.iter().map(|name| parse_one(name)).collect()
}

fn parse_one(name: &str) -> Result<Name, String> {
    if let Some(pattern) = name.strip_prefix('~') {
        // nginx matches regex names caselessly when they hold upper case;
        // the host is lower case, so caseless always is the same thing.
        return RegexBuilder::new(pattern)
            .case_insensitive(true)
            .build()
            .map(Name::Regex)
            .map_err(|e| format!("invalid server name {name:?}: {e}"));
    }
    if name.is_empty() {
        return Ok(Name::Any);
    }
    let lower = name.to_ascii_lowercase();
    let (parsed, rest) = if let Some(rest) = lower.strip_prefix("*.") {
        let suffix = rest.to_owned();
        (
            Name::Leading {
                suffix,
                bare: false,
            },
            rest,
        )
    } else if let Some(rest) = lower.strip_prefix('.') {
        let suffix = rest.to_owned();
        (Name::Leading { suffix, bare: true }, rest)
    } else if let Some(rest) = lower.strip_suffix(".*") {
        (Name::Trailing(format!("{rest}.")), rest)
    } else {
        (Name::Exact(lower.clone()), lower.as_str())
    };
    if rest.is_empty() || rest.contains('*') {
        return Err(format!(
            "invalid server name {name:?}: a wildcard is only allowed as \"*.name\" or \"name.*\""
        ));
    }
    Ok(parsed)
}

/// The names of the servers sharing one listen address.
pub(crate) struct Names {
    /// The first server on the listener: nginx's default server.
    default: usize,
    exact: HashMap<String, usize>,
    /// Longest suffix first.
    leading: Vec<(String, bool, usize)>,
    /// Longest prefix first.
    trailing: Vec<(String, usize)>,
    regexes: Vec<(Regex, usize)>,
    /// The first server accepting any name.
    any: Option<usize>,
    /// Whether more than one server listens here.
    shared: bool,
    /// False when the `Host` cannot change the answer (one server, or no
    /// names at all), so that `select` skips reading it.
    by_host: bool,
}

impl Names {
    pub(crate) fn new(default: usize) -> Self {
        Names {
            default,
            exact: HashMap::new(),
            leading: Vec::new(),
            trailing: Vec::new(),
            regexes: Vec::new(),
            any: None,
            shared: false,
            by_host: false,
        }
    }

    /// Adds server `server` (servers are added in configuration order).
    pub(crate) fn add(&mut self, server: usize, names: &[Name]) {
        self.shared |= server != self.default;
        for name in names {
            match name {
                Name::Any => {
                    self.any.get_or_insert(server);
                }
                // nginx keeps the first server of a name and ignores the others.
                Name::Exact(name) => {
                    self.exact.entry(name.clone()).or_insert(server);
                }
                Name::Leading { suffix, bare } => {
                    self.leading.push((suffix.clone(), *bare, server))
                }
                Name::Trailing(prefix) => self.trailing.push((prefix.clone(), server)),
                Name::Regex(regex) => self.regexes.push((regex.clone(), server)),
            }
        }
    }

    /// Orders wildcards for longest-match-first lookup, once all servers are in.
    pub(crate) fn finish(&mut self) {
        // Stable sorts: of two equal wildcards, the first server keeps it.
        self.leading
            .sort_by_key(|(suffix, ..)| std::cmp::Reverse(suffix.len()));
        self.trailing
            .sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        let named = !(self.exact.is_empty()
            && self.leading.is_empty()
            && self.trailing.is_empty()
            && self.regexes.is_empty());
        self.by_host = self.shared && named;
    }

    /// The index of the server that handles `head`.
    pub(crate) fn select(&self, head: &RequestHead) -> usize {
        if !self.by_host {
            return self.any.unwrap_or(self.default);
        }
        let host = head.header("host").map_or("", host_name);
        // Clients send lower case nearly always: lower-case only when needed.
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(host.to_ascii_lowercase())
        } else {
            Cow::Borrowed(host)
        };
        self.lookup(&host).or(self.any).unwrap_or(self.default)
    }

    fn lookup(&self, host: &str) -> Option<usize> {
        if let Some(&server) = self.exact.get(host) {
            return Some(server);
        }
        let leading = self.leading.iter().find(|(suffix, bare, _)| {
            match host.strip_suffix(suffix.as_str()) {
                Some("") => *bare,
                Some(sub) => sub.len() > 1 && sub.ends_with('.'),
                None => false,
            }
        });
        if let Some(&(.., server)) = leading {
            return Some(server);
        }
        let trailing = self
            .trailing
            .iter()
            .find(|(prefix, _)| host.len() > prefix.len() && host.starts_with(prefix.as_str()));
        if let Some(&(_, server)) = trailing {
            return Some(server);
        }
        self.regexes
            .iter()
            .find(|(regex, _)| regex.is_match(host))
            .map(|&(_, server)| server)
    }
}

/// The name part of a `Host` value: no port, no IPv6 brackets, no trailing
/// dot (nginx drops it: `example.com.` is `example.com`).
fn host_name(host: &str) -> &str {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map_or(v6, |(addr, _)| addr),
        None => host.split_once(':').map_or(host, |(name, _)| name),
    };
    name.strip_suffix('.').unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_name_drops_port_brackets_and_trailing_dot() {
        assert_eq!(host_name("example.com:8080"), "example.com");
        assert_eq!(host_name("example.com."), "example.com");
        assert_eq!(host_name("[::1]:80"), "::1");
        assert_eq!(host_name(""), "");
    }

    #[test]
    fn misplaced_wildcards_are_refused() {
        for bad in ["*", "www.*.com", "*.example.*", ".", "*.", "ex*ample.com"] {
            assert!(parse_one(bad).is_err(), "{bad} accepted");
        }
        assert!(parse_one("~(").is_err());
    }
}
