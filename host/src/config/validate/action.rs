//! What a location does: exactly one of `proxy_pass` (to a declared or an
//! implicit upstream), `root` (static files) and `return`.

use std::net::IpAddr;
use std::ops::Range;

use toml::Spanned;

use super::upstream::{host_port, implicit};
use super::{Checker, Upstreams};
use crate::config::raw::{RawLocation, StringList};
use crate::config::{LocationAction, MatchKind, defaults};

impl Checker<'_> {
    /// The location's one action among `proxy_pass`, `root` and `return`.
    pub(super) fn action(
        &mut self,
        raw: &RawLocation,
        kind: MatchKind,
        pattern: &str,
        upstreams: &mut Upstreams,
    ) -> Option<LocationAction> {
        let mut given: Vec<(&str, Range<usize>)> = [
            raw.proxy_pass.as_ref().map(|p| ("proxy_pass", p.span())),
            raw.root.as_ref().map(|r| ("root", r.span())),
            raw.return_.as_ref().map(|r| ("return", r.span())),
        ]
        .into_iter()
        .flatten()
        .collect();
        given.sort_by_key(|(_, span)| span.start);
        match given.as_slice() {
            [] => {
                self.error(
                    raw.path.span(),
                    format!("location `{pattern}` needs one of proxy_pass, root or return"),
                );
                return None;
            }
            [_] => {}
            [(first, _), (second, span), ..] => {
                self.error(
                    span.clone(),
                    format!(
                        "location `{pattern}` has both {first} and {second}; use exactly one of proxy_pass, root or return"
                    ),
                );
                return None;
            }
        }
        if raw.root.is_none() {
            for (key, list) in [("index", &raw.index), ("try_files", &raw.try_files)] {
                if let Some(list) = list {
                    self.error(list.span(), format!("{key} only applies with root"));
                }
            }
        }

        if let Some(proxy_pass) = &raw.proxy_pass {
            let (upstream, uri) = self.proxy_pass(proxy_pass, upstreams)?;
            if uri.is_some() && matches!(kind, MatchKind::Regex | MatchKind::RegexNoCase) {
                self.error(
                    proxy_pass.span(),
                    "proxy_pass cannot have a URI part in a regex location (nginx rule)",
                );
            }
            Some(LocationAction::Proxy { upstream, uri })
        } else if let Some(root) = &raw.root {
            // nginx writes `index a b` and `try_files $uri /x`: split entries on spaces.
            let words = |list: &Option<Spanned<StringList>>| -> Option<Vec<String>> {
                list.as_ref().map(|list| {
                    list.get_ref()
                        .0
                        .iter()
                        .flat_map(|entry| entry.split_whitespace().map(str::to_owned))
                        .collect()
                })
            };
            Some(LocationAction::Static {
                root: self.non_empty_path(root.clone(), "root"),
                index: words(&raw.index).unwrap_or_else(|| vec![defaults::INDEX.to_owned()]),
                try_files: words(&raw.try_files).unwrap_or_default(),
            })
        } else {
            let ret = raw.return_.as_ref()?.get_ref();
            let status = u16::try_from(*ret.status.get_ref())
                .ok()
                .filter(|s| (200..=599).contains(s));
            if status.is_none() {
                self.error(
                    ret.status.span(),
                    "return status must be between 200 and 599",
                );
            }
            Some(LocationAction::Return {
                status: status?,
                headers: ret
                    .location
                    .iter()
                    .map(|location| ("location".to_owned(), location.clone()))
                    .collect(),
                body: ret.body.clone().unwrap_or_default(),
            })
        }
    }

    /// Resolves `http://NAME[/uri]` to an upstream name (creating implicit `host:port` upstreams).
    fn proxy_pass(
        &mut self,
        proxy_pass: &Spanned<String>,
        upstreams: &mut Upstreams,
    ) -> Option<(String, Option<String>)> {
        let text = proxy_pass.get_ref();
        let rest = if text.starts_with("https://") {
            self.error(proxy_pass.span(), "TLS to upstreams is not supported yet");
            return None;
        } else if let Some(rest) = text.strip_prefix("http://") {
            rest
        } else {
            self.error(
                proxy_pass.span(),
                format!("proxy_pass must look like http://NAME[/uri], got `{text}`"),
            );
            return None;
        };
        let (authority, uri) = match rest.find('/') {
            Some(slash) => (&rest[..slash], Some(rest[slash..].to_owned())),
            None => (rest, None),
        };
        if upstreams.declared.contains(authority) {
            return Some((authority.to_owned(), uri));
        }
        let (host, port) = match host_port(authority) {
            Ok(parsed) => parsed,
            Err(message) => {
                self.error(proxy_pass.span(), format!("proxy_pass: {message}"));
                return None;
            }
        };
        // Like nginx, a host without a port means port 80; but a bare word
        // such as `backend` is far more likely a misspelt upstream name.
        let looks_like_host = host.parse::<IpAddr>().is_ok()
            || host.starts_with('[')
            || host == "localhost"
            || host.contains('.');
        let port = match port {
            Some(port) => port,
            None if looks_like_host => defaults::UPSTREAM_PORT,
            None => {
                self.error(
                    proxy_pass.span(),
                    format!(
                        "proxy_pass refers to unknown upstream `{host}` (declare [upstreams.{host}] or write {host}:PORT)"
                    ),
                );
                return None;
            }
        };
        let name = format!("{host}:{port}");
        upstreams
            .all
            .entry(name.clone())
            .or_insert_with(|| implicit(name.clone()));
        Some((name, uri))
    }
}
