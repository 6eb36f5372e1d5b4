//! wasp's default origin checker: a per-location allow-list for the
//! `Origin` header of WebSocket handshakes.
//!
//! Configuration: [`wasp_sdk::config::OriginConfig`], built by the host
//! from each location's `origins` and `allow_missing_origin`.
//!
//! A pattern is `scheme://host[:port]` with no path. Schemes and hosts
//! compare case-insensitively; ports compare after filling in the scheme's
//! default (80 for http, 443 for https), so `https://a.com` and
//! `https://a.com:443` are the same origin. `*.example.com` matches any
//! subdomain, however deep, but not `example.com` itself. `Origin: null`
//! (sandboxed pages, `file:` URLs) matches no pattern. A location missing
//! from the map accepts every handshake.

use std::collections::HashMap;

use wasp_sdk::config::OriginConfig;
use wasp_sdk::{Origin, RequestHead};

/// How much of a refused origin the reason repeats: it is client-supplied.
const MAX_SHOWN: usize = 100;

/// One location's policy.
struct Policy {
    patterns: Vec<Pattern>,
    /// Accept handshakes without an `Origin` header (non-browser clients).
    allow_missing: bool,
}

/// One allowed origin, normalised: lower-case scheme and host, port filled
/// in from the scheme when it has a default.
#[derive(Debug, PartialEq)]
struct Pattern {
    scheme: String,
    host: HostPattern,
    port: Option<u16>,
}

#[derive(Debug, PartialEq)]
enum HostPattern {
    /// This host only.
    Exact(String),
    /// Any host ending in `.` + this domain (`*.example.com` holds
    /// `example.com`).
    Subdomains(String),
}

impl Pattern {
    fn parse(text: &str) -> Result<Pattern, String> {
        let invalid = |why: &str| format!("invalid origin pattern {text:?}: {why}");
        let (wildcard, plain) = match text.split_once("://") {
            Some((scheme, rest)) => match rest.strip_prefix("*.") {
                Some(domain) => (true, format!("{scheme}://{domain}")),
                None => (false, text.to_owned()),
            },
            None => (false, text.to_owned()),
        };
        let parts = Parts::split(&plain).map_err(invalid)?;
        if wildcard && parts.host.starts_with('[') {
            return Err(invalid("a wildcard needs a domain name"));
        }
        let host = parts.host.to_ascii_lowercase();
        Ok(Pattern {
            scheme: parts.scheme.to_ascii_lowercase(),
            host: if wildcard {
                HostPattern::Subdomains(host)
            } else {
                HostPattern::Exact(host)
            },
            port: parts.port,
        })
    }

    fn matches(&self, origin: &Parts) -> bool {
        if !origin.scheme.eq_ignore_ascii_case(&self.scheme) || origin.port != self.port {
            return false;
        }
        match &self.host {
            HostPattern::Exact(host) => origin.host.eq_ignore_ascii_case(host),
            HostPattern::Subdomains(domain) => {
                // `Parts::split` refuses empty labels, so a longer host
                // ending in `.domain` has at least one label in front.
                let host = origin.host.as_bytes();
                host.len() > domain.len() + 1
                    && host[host.len() - domain.len() - 1] == b'.'
                    && host[host.len() - domain.len()..].eq_ignore_ascii_case(domain.as_bytes())
            }
        }
    }
}

/// An origin `scheme://host[:port]` split into its parts, borrowed from
/// the text; `port` is the explicit port or the scheme's default.
#[derive(Debug)]
struct Parts<'a> {
    scheme: &'a str,
    host: &'a str,
    port: Option<u16>,
}

impl<'a> Parts<'a> {
    fn split(text: &'a str) -> Result<Parts<'a>, &'static str> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or("expected scheme://host[:port]")?;
        let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
        if !scheme_ok {
            return Err("invalid scheme");
        }
        if rest.contains(['/', '?', '#']) {
            return Err("an origin has no path, query or fragment");
        }
        if rest.contains('@') {
            return Err("an origin has no user name");
        }
        let (host, port) = match rest.strip_prefix('[') {
            Some(v6) => {
                let end = v6.find(']').ok_or("unclosed [")?;
                let addr = &v6[..end];
                if addr.is_empty()
                    || !addr
                        .chars()
                        .all(|c| c.is_ascii_hexdigit() || ":.".contains(c))
                {
                    return Err("invalid IPv6 address");
                }
                (&rest[..end + 2], &v6[end + 1..])
            }
            None => {
                let end = rest.find(':').unwrap_or(rest.len());
                let host = &rest[..end];
                let label_ok = |label: &str| {
                    !label.is_empty()
                        && label
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                };
                if !host.split('.').all(label_ok) {
                    return Err("invalid host");
                }
                (host, &rest[end..])
            }
        };
        let port = match port.strip_prefix(':') {
            Some(digits) => {
                // `u16::from_str` would accept a `+`.
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err("invalid port");
                }
                Some(digits.parse().map_err(|_| "invalid port")?)
            }
            None if port.is_empty() => default_port(scheme),
            None => return Err("invalid host"),
        };
        Ok(Parts { scheme, host, port })
    }
}

/// The port a URL of `scheme` uses when it names none.
fn default_port(scheme: &str) -> Option<u16> {
    if scheme.eq_ignore_ascii_case("http") {
        Some(80)
    } else if scheme.eq_ignore_ascii_case("https") {
        Some(443)
    } else {
        None
    }
}

/// The plugin: a policy per location id.
pub struct OriginCheck {
    locations: HashMap<u32, Policy>,
}

impl Origin for OriginCheck {
    fn configure(config: &str) -> Result<Self, String> {
        let config: OriginConfig = wasp_sdk::parse_config(config)?;
        let mut locations = HashMap::with_capacity(config.locations.len());
        for (id, location) in config.locations {
            let patterns = location
                .origins
                .iter()
                .map(|text| Pattern::parse(text))
                .collect::<Result<_, _>>()
                .map_err(|e| format!("location {id}: {e}"))?;
            locations.insert(
                id,
                Policy {
                    patterns,
                    allow_missing: location.allow_missing,
                },
            );
        }
        Ok(OriginCheck { locations })
    }

    fn check(&mut self, head: &RequestHead, location: u32) -> Result<(), String> {
        let Some(policy) = self.locations.get(&location) else {
            return Ok(());
        };
        let Some(origin) = head.header("origin") else {
            return if policy.allow_missing {
                Ok(())
            } else {
                Err("missing Origin header".into())
            };
        };
        // A malformed origin (including `null`) matches nothing.
        if let Ok(parts) = Parts::split(origin)
            && policy.patterns.iter().any(|p| p.matches(&parts))
        {
            return Ok(());
        }
        if origin.is_empty() {
            return Err("empty Origin header".into());
        }
        let mut end = origin.len().min(MAX_SHOWN);
        while !origin.is_char_boundary(end) {
            end -= 1;
        }
        Err(format!("origin {} is not allowed", &origin[..end]))
    }
}

wasp_sdk::export!(origin: OriginCheck);

#[cfg(test)]
mod tests {
    use super::*;

    fn head(origin: Option<&str>) -> RequestHead {
        let head = wasp_sdk::testing::head("/ws/")
            .with_header("host", "chat.example.com")
            .with_header("upgrade", "websocket");
        match origin {
            Some(origin) => head.with_header("origin", origin),
            None => head,
        }
    }

    /// A checker with `origins` on location 1.
    fn checker(origins: &[&str]) -> OriginCheck {
        let config = serde_json::json!({ "locations": { "1": { "origins": origins } } });
        OriginCheck::configure(&config.to_string()).unwrap()
    }

    fn allowed(c: &mut OriginCheck, origin: &str) -> bool {
        c.check(&head(Some(origin)), 1).is_ok()
    }

    #[test]
    fn exact_origins() {
        let mut c = checker(&["https://chat.example.com", "http://localhost:8080"]);
        assert!(allowed(&mut c, "https://chat.example.com"));
        assert!(allowed(&mut c, "HTTPS://Chat.Example.COM"));
        assert!(allowed(&mut c, "http://localhost:8080"));
        assert!(!allowed(&mut c, "http://chat.example.com"));
        assert!(!allowed(&mut c, "https://chat.example.com:8443"));
        assert!(!allowed(&mut c, "http://localhost"));
        assert!(!allowed(&mut c, "http://localhost:8081"));
        assert!(!allowed(&mut c, "https://chat.example.com.evil.io"));
        assert!(!allowed(&mut c, "https://evil.chat.example.com"));
    }

    #[test]
    fn default_ports_are_implied() {
        let mut c = checker(&["https://a.com", "http://b.com", "http://c.com:80"]);
        assert!(allowed(&mut c, "https://a.com:443"));
        assert!(allowed(&mut c, "http://b.com:80"));
        assert!(allowed(&mut c, "http://c.com"));
        assert!(!allowed(&mut c, "https://a.com:80"));
        assert!(!allowed(&mut c, "http://b.com:443"));
        let mut c = checker(&["https://a.com:443"]);
        assert!(allowed(&mut c, "https://a.com"));
    }

    #[test]
    fn wildcards_match_subdomains_only() {
        let mut c = checker(&["https://*.example.com"]);
        assert!(allowed(&mut c, "https://chat.example.com"));
        assert!(allowed(&mut c, "https://a.b.Example.com"));
        assert!(allowed(&mut c, "https://chat.example.com:443"));
        assert!(!allowed(&mut c, "https://example.com"));
        assert!(!allowed(&mut c, "https://.example.com"));
        assert!(!allowed(&mut c, "https://badexample.com"));
        assert!(!allowed(&mut c, "https://chat.example.com.evil.io"));
        assert!(!allowed(&mut c, "http://chat.example.com"));
        assert!(!allowed(&mut c, "https://chat.example.com:8443"));
    }

    #[test]
    fn ipv6_hosts() {
        let mut c = checker(&["http://[::1]:8080"]);
        assert!(allowed(&mut c, "http://[::1]:8080"));
        assert!(!allowed(&mut c, "http://[::2]:8080"));
    }

    #[test]
    fn null_and_malformed_origins_match_nothing() {
        let mut c = checker(&["https://chat.example.com"]);
        for bad in [
            "null",
            "chat.example.com",
            "https://chat.example.com/",
            "https://chat.example.com/x",
            "https://user@chat.example.com",
            "https://chat.example.com:",
            "https://chat.example.com:+443",
        ] {
            assert!(!allowed(&mut c, bad), "{bad}");
        }
        assert_eq!(
            c.check(&head(Some("null")), 1),
            Err("origin null is not allowed".into())
        );
        assert_eq!(
            c.check(&head(Some("")), 1),
            Err("empty Origin header".into())
        );
    }

    #[test]
    fn refusals_name_the_origin_briefly() {
        let mut c = checker(&["https://chat.example.com"]);
        assert_eq!(
            c.check(&head(Some("https://evil.example")), 1),
            Err("origin https://evil.example is not allowed".into())
        );
        let long = format!("https://{}.com", "é".repeat(200));
        let reason = c.check(&head(Some(&long)), 1).unwrap_err();
        assert!(
            reason.len() <= MAX_SHOWN + "origin  is not allowed".len(),
            "{reason}"
        );
    }

    #[test]
    fn missing_origin_follows_allow_missing() {
        let config = r#"{ "locations": {
            "1": { "origins": ["https://a.com"] },
            "2": { "origins": ["https://a.com"], "allow_missing": false },
            "3": { "allow_missing": false }
        } }"#;
        let mut c = OriginCheck::configure(config).unwrap();
        assert_eq!(c.check(&head(None), 1), Ok(()));
        assert_eq!(c.check(&head(None), 2), Err("missing Origin header".into()));
        assert!(c.check(&head(Some("https://a.com")), 2).is_ok());
        // No patterns: only a missing Origin could pass, and here it may not.
        assert!(c.check(&head(None), 3).is_err());
        assert!(c.check(&head(Some("https://a.com")), 3).is_err());
    }

    #[test]
    fn unlisted_locations_accept_everything() {
        let mut c = checker(&["https://a.com"]);
        assert!(c.check(&head(Some("https://evil.example")), 0).is_ok());
        assert!(c.check(&head(Some("null")), 7).is_ok());
        assert!(c.check(&head(None), 7).is_ok());
        let mut empty = OriginCheck::configure("").unwrap();
        assert!(empty.check(&head(Some("https://evil.example")), 1).is_ok());
    }

    #[test]
    fn patterns_are_normalised() {
        assert_eq!(
            Pattern::parse("HTTPS://*.Example.COM").unwrap(),
            Pattern {
                scheme: "https".into(),
                host: HostPattern::Subdomains("example.com".into()),
                port: Some(443),
            }
        );
        assert_eq!(Pattern::parse("app://local").unwrap().port, None);
    }

    #[test]
    fn bad_patterns_are_refused_by_name() {
        for bad in [
            "https://a.com/",
            "https://a.com/path",
            "https://a.com?q",
            "a.com",
            "null",
            "*",
            "https://*",
            "https://*.",
            "https://a.*.com",
            "https://*a.com",
            "https://*.*.a.com",
            "https://a..com",
            "https://a.com:",
            "https://a.com:99999",
            "https://a.com:x",
            "https://u@a.com",
            "https://*.[::1]",
            "https://[::1",
            "1http://a.com",
            "https://",
        ] {
            let config = serde_json::json!({ "locations": { "4": { "origins": [bad] } } });
            let err = OriginCheck::configure(&config.to_string()).err();
            let err = err.unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(
                err.starts_with("location 4: invalid origin pattern"),
                "{err}"
            );
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn bad_configs_are_refused() {
        for bad in [
            r#"{ "locations": { "x": { "origins": [] } } }"#,
            r#"{ "locations": { "1": { "origins": "https://a.com" } } }"#,
            r#"{ "locations": { "1": { "allow_missing": "yes" } } }"#,
            r#"{ "locations": { "1": { "origin": ["https://a.com"] } } }"#,
            r#"{ "location": {} }"#,
        ] {
            assert!(OriginCheck::configure(bad).is_err(), "{bad} accepted");
        }
    }
}
