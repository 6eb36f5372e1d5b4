//! What a location does: exactly one of `proxy_pass` (to a declared or an
//! implicit upstream), `root` (static files) and `return`.

use std::net::IpAddr;
use std::ops::Range;

use toml::Spanned;

use super::upstream::{host_port, implicit};
use super::{Checker, Upstreams};
use crate::config::raw::{RawLocation, StringList};
use crate::config::{LocationAction, MatchKind, TlsFiles, UpstreamTls, defaults};

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

        if raw.proxy_pass.is_none() || !is_https(raw) {
            self.tls_settings_need_https(raw);
        }
        if let Some(proxy_pass) = &raw.proxy_pass {
            let (upstream, uri) = self.proxy_pass(proxy_pass, upstreams)?;
            let tls = is_https(raw).then(|| self.upstream_tls(raw, &upstream));
            if tls.is_some() && upstreams.all[&upstream].health.is_some() {
                self.error(
                    proxy_pass.span(),
                    format!(
                        "upstream `{upstream}` has health checks, which speak plain HTTP; \
                         remove `health` or use proxy_pass http://"
                    ),
                );
            }
            if uri.is_some() && matches!(kind, MatchKind::Regex | MatchKind::RegexNoCase) {
                self.error(
                    proxy_pass.span(),
                    "proxy_pass cannot have a URI part in a regex location (nginx rule)",
                );
            }
            Some(LocationAction::Proxy { upstream, uri, tls })
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
        let (rest, default_port) = if let Some(rest) = text.strip_prefix("https://") {
            (rest, defaults::UPSTREAM_TLS_PORT)
        } else if let Some(rest) = text.strip_prefix("http://") {
            (rest, defaults::UPSTREAM_PORT)
        } else {
            self.error(
                proxy_pass.span(),
                format!("proxy_pass must look like http://NAME[/uri] or https://NAME[/uri], got `{text}`"),
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
        // Like nginx, a host without a port means port 80 (443 for https);
        // but a bare word
        // such as `backend` is far more likely a misspelt upstream name.
        let looks_like_host = host.parse::<IpAddr>().is_ok()
            || host.starts_with('[')
            || host == "localhost"
            || host.contains('.');
        let port = match port {
            Some(port) => port,
            None if looks_like_host => default_port,
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

fn is_https(raw: &RawLocation) -> bool {
    raw.proxy_pass
        .as_ref()
        .is_some_and(|p| p.get_ref().starts_with("https://"))
}

impl Checker<'_> {
    /// `proxy_ssl_*` on a location that does not proxy to https:// would do
    /// nothing: refused.
    fn tls_settings_need_https(&mut self, raw: &RawLocation) {
        let spans = [
            (
                "proxy_ssl_verify",
                raw.proxy_ssl_verify.as_ref().map(Spanned::span),
            ),
            (
                "proxy_ssl_trusted_certificate",
                raw.proxy_ssl_trusted_certificate
                    .as_ref()
                    .map(Spanned::span),
            ),
            (
                "proxy_ssl_server_name",
                raw.proxy_ssl_server_name.as_ref().map(Spanned::span),
            ),
            (
                "proxy_ssl_name",
                raw.proxy_ssl_name.as_ref().map(Spanned::span),
            ),
            (
                "proxy_ssl_certificate",
                raw.proxy_ssl_certificate.as_ref().map(Spanned::span),
            ),
            (
                "proxy_ssl_certificate_key",
                raw.proxy_ssl_certificate_key.as_ref().map(Spanned::span),
            ),
        ];
        for (key, span) in spans {
            if let Some(span) = span {
                self.error(span, format!("{key} only applies with proxy_pass https://"));
            }
        }
    }

    /// The location's `proxy_ssl_*` settings, for an https:// `upstream`.
    fn upstream_tls(&mut self, raw: &RawLocation, upstream: &str) -> UpstreamTls {
        let name = match &raw.proxy_ssl_name {
            Some(name) => {
                let text = name.get_ref();
                if text.is_empty()
                    || text.contains(|c: char| c.is_whitespace() || "/@[]".contains(c))
                {
                    self.error(
                        name.span(),
                        "proxy_ssl_name must be a host name or an IP address, e.g. backend.example.com",
                    );
                }
                text.clone()
            }
            None => default_ssl_name(upstream),
        };
        let client_certificate = match (&raw.proxy_ssl_certificate, &raw.proxy_ssl_certificate_key)
        {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: self.non_empty_path(cert.clone(), "proxy_ssl_certificate"),
                key: self.non_empty_path(key.clone(), "proxy_ssl_certificate_key"),
            }),
            (Some(cert), None) => {
                self.error(
                    cert.span(),
                    "proxy_ssl_certificate needs proxy_ssl_certificate_key",
                );
                None
            }
            (None, Some(key)) => {
                self.error(
                    key.span(),
                    "proxy_ssl_certificate_key needs proxy_ssl_certificate",
                );
                None
            }
            (None, None) => None,
        };
        UpstreamTls {
            verify: raw
                .proxy_ssl_verify
                .as_ref()
                .map_or(defaults::PROXY_SSL_VERIFY, |v| *v.get_ref()),
            trusted_certificate: self.path(
                raw.proxy_ssl_trusted_certificate.clone(),
                "proxy_ssl_trusted_certificate",
            ),
            server_name: raw
                .proxy_ssl_server_name
                .as_ref()
                .map_or(defaults::PROXY_SSL_SERVER_NAME, |v| *v.get_ref()),
            name,
            client_certificate,
        }
    }
}

/// nginx's `$proxy_host` without its port: an upstream's name, or the host
/// of `host:port`; an IPv6 address loses its brackets.
fn default_ssl_name(upstream: &str) -> String {
    let host = match host_port(upstream) {
        Ok((host, _)) => host,
        Err(_) => upstream,
    };
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned()
}
