//! `[[server.location]]`: the path and its nginx modifier, headers, limits
//! and the WebSocket settings. What the location does is checked in
//! `action`, its filters in `filters`.

use std::collections::{BTreeSet, HashMap};

use super::{Checker, Upstreams, dur, size};
use crate::config::raw::RawLocation;
use crate::config::units::parse_rate;
use crate::config::{LimitReq, Location, MatchKind, defaults, diagnostic, variables};

impl Checker<'_> {
    pub(super) fn location(
        &mut self,
        raw: RawLocation,
        id: u32,
        upstreams: &mut Upstreams,
        first_seen: &mut HashMap<(bool, String), usize>,
    ) -> Option<Location> {
        let path_span = raw.path.span();
        let (kind, pattern) = match parse_path(raw.path.get_ref()) {
            Ok(parsed) => parsed,
            Err(message) => {
                self.error(path_span, message);
                return None;
            }
        };
        let duplicate_key = match kind {
            MatchKind::Exact => Some((true, pattern.clone())),
            MatchKind::Prefix | MatchKind::PrefixStopRegex => Some((false, pattern.clone())),
            MatchKind::Regex | MatchKind::RegexNoCase => None,
        };
        if let Some(key) = duplicate_key {
            let line = diagnostic(self.text, self.source, path_span.start, String::new()).line;
            if let Some(first) = first_seen.insert(key, line) {
                self.error(
                    path_span.clone(),
                    format!(
                        "duplicate location `{}` in this server (first at line {first})",
                        raw.path.get_ref()
                    ),
                );
            }
        }

        let action = self.action(&raw, kind, &pattern, upstreams);
        let set_headers = self.headers(&raw);
        let limit_conn = raw.limit_conn.map(|limit| {
            self.at_least_one(&limit, "limit_conn");
            limit.into_inner()
        });
        let limit_conn_status =
            raw.limit_conn_status
                .map_or(defaults::LIMIT_CONN_STATUS, |status| {
                    u16::try_from(*status.get_ref())
                        .ok()
                        .filter(|s| (400..=599).contains(s))
                        .unwrap_or_else(|| {
                            self.error(
                                status.span(),
                                "limit_conn_status must be between 400 and 599",
                            );
                            defaults::LIMIT_CONN_STATUS
                        })
                });
        let limit_req = raw.limit_req.map(|limit| LimitReq {
            rate_per_sec: parse_rate(limit.rate.get_ref()).unwrap_or_else(|message| {
                self.error(limit.rate.span(), message);
                1.0
            }),
            burst: limit.burst.unwrap_or(defaults::LIMIT_REQ_BURST),
            key: limit
                .key
                .map_or_else(|| defaults::LIMIT_KEY.to_owned(), |key| self.variables(key)),
        });
        let origins = raw
            .origins
            .unwrap_or_default()
            .into_iter()
            .map(|origin| {
                if let Err(message) = check_origin(origin.get_ref()) {
                    self.error(origin.span(), message);
                }
                origin.into_inner()
            })
            .collect();
        let filters = raw
            .filters
            .unwrap_or_default()
            .into_iter()
            .map(|filter| self.filter(filter))
            .collect();
        if let Some(buffers) = &raw.buffers {
            self.error(
                buffers.span(),
                "buffers (nginx's proxy_buffers) is not supported: wasp streams upstream responses \
                 to the client as they come, as nginx does with `proxy_buffering off`; remove it",
            );
        }

        Some(Location {
            id,
            kind,
            pattern,
            action: action?,
            set_headers,
            connect_timeout: dur(raw.connect_timeout, defaults::PROXY_TIMEOUT),
            read_timeout: dur(raw.read_timeout, defaults::PROXY_TIMEOUT),
            send_timeout: dur(raw.send_timeout, defaults::PROXY_TIMEOUT),
            buffer_size: size(raw.buffer_size, defaults::BUFFER_SIZE),
            limit_conn,
            limit_conn_key: raw
                .limit_conn_key
                .map_or_else(|| defaults::LIMIT_KEY.to_owned(), |key| self.variables(key)),
            limit_conn_status,
            limit_req,
            origins,
            allow_missing_origin: raw
                .allow_missing_origin
                .unwrap_or(defaults::ALLOW_MISSING_ORIGIN),
            filters,
            max_message_size: size(raw.max_message_size, defaults::MAX_MESSAGE_SIZE),
            websocket_deflate: raw.websocket_deflate.unwrap_or(defaults::WEBSOCKET_DEFLATE),
        })
    }

    fn headers(&mut self, raw: &RawLocation) -> Vec<(String, String)> {
        let Some(headers) = &raw.set_headers else {
            return Vec::new();
        };
        let mut seen = BTreeSet::new();
        let mut result = Vec::new();
        for (name, value) in &headers.0 {
            let lower = name.get_ref().to_ascii_lowercase();
            if !is_token(&lower) {
                self.error(
                    name.span(),
                    format!("`{}` is not a valid header name", name.get_ref()),
                );
            } else if !seen.insert(lower) {
                self.error(
                    name.span(),
                    format!("header `{}` is set twice", name.get_ref()),
                );
            }
            for unknown in variables::unknown(value) {
                self.error(
                    name.span(),
                    format!(
                        "unknown variable `${unknown}` in the value of header `{}`",
                        name.get_ref()
                    ),
                );
            }
            if value.contains(['\r', '\n', '\0']) {
                self.error(
                    name.span(),
                    format!(
                        "the value of header `{}` contains a line break or NUL",
                        name.get_ref()
                    ),
                );
            }
            result.push((name.get_ref().clone(), value.clone()));
        }
        result
    }
}

/// Splits an nginx location `path` into its modifier and pattern, compiling regexes.
fn parse_path(path: &str) -> Result<(MatchKind, String), String> {
    let path = path.trim();
    let (kind, pattern) = if let Some(rest) = path.strip_prefix("^~") {
        (MatchKind::PrefixStopRegex, rest)
    } else if let Some(rest) = path.strip_prefix("~*") {
        (MatchKind::RegexNoCase, rest)
    } else if let Some(rest) = path.strip_prefix('~') {
        (MatchKind::Regex, rest)
    } else if let Some(rest) = path.strip_prefix('=') {
        (MatchKind::Exact, rest)
    } else {
        (MatchKind::Prefix, path)
    };
    let pattern = pattern.trim_start();
    match kind {
        MatchKind::Regex | MatchKind::RegexNoCase => {
            if pattern.is_empty() {
                return Err(format!("location path `{path}` has no regex"));
            }
            regex::RegexBuilder::new(pattern)
                .case_insensitive(kind == MatchKind::RegexNoCase)
                .build()
                .map_err(|error| {
                    // The regex crate's message spans lines (it draws a caret); keep the gist.
                    let text = error.to_string();
                    let gist = text.lines().last().unwrap_or_default().trim();
                    format!(
                        "invalid regex `{pattern}`: {}",
                        gist.trim_start_matches("error: ")
                    )
                })?;
        }
        _ if !pattern.starts_with('/') => {
            return Err(format!(
                "location path `{path}` must start with `/` (or a modifier: =, ^~, ~, ~*)"
            ));
        }
        _ => {}
    }
    Ok((kind, pattern.to_owned()))
}

/// An Origin allow-list entry: `scheme://host[:port]`, the host may start with `*.`.
fn check_origin(origin: &str) -> Result<(), String> {
    let valid = origin.split_once("://").is_some_and(|(scheme, host)| {
        !scheme.is_empty() && !host.is_empty() && !host.contains(['/', ' '])
    });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "origin `{origin}` must look like scheme://host[:port], e.g. https://chat.example.com or https://*.example.com"
        ))
    }
}

/// RFC 9110 token characters (header names).
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}
