//! Semantic checks on the raw file shape, producing the typed [`Config`]
//! with defaults filled in. Every problem is recorded with its position and
//! checking goes on, so one run reports as many errors as it can.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::raw::{
    FailMode, RawConfig, RawFilter, RawHealth, RawLocation, RawPlugins, RawServer, RawUpstream,
    RawUpstreamServer, Shorthand, StringList,
};
use super::units::{Dur, Size, parse_rate};
use super::{
    Balance, Config, ConfigError, Diagnostic, FilterSpec, HealthCheck, LimitReq, Location,
    LocationAction, MatchKind, PluginSettings, Server, TlsFiles, Upstream, UpstreamServer,
    diagnostic,
};

const BUILTIN_FILTERS: [&str; 4] = ["max-size", "json", "rate", "redact"];
const DEFAULT_LIMIT_KEY: &str = "$binary_remote_addr";

/// Checks `raw` (parsed from `text`) and builds the configuration, or reports every problem found.
pub fn validate(raw: RawConfig, text: &str, source: &str) -> Result<Config, ConfigError> {
    let mut checker = Checker {
        text,
        source,
        errors: Vec::new(),
    };
    let config = checker.config(raw);
    if checker.errors.is_empty() {
        Ok(config)
    } else {
        checker
            .errors
            .sort_by_key(|error| (error.line, error.column));
        Err(ConfigError::Invalid(checker.errors))
    }
}

struct Checker<'a> {
    text: &'a str,
    source: &'a str,
    errors: Vec<Diagnostic>,
}

/// What a server's locations need to resolve `proxy_pass`.
struct Upstreams<'a> {
    declared: &'a BTreeSet<String>,
    all: &'a mut BTreeMap<String, Upstream>,
}

impl Checker<'_> {
    fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        let error = diagnostic(self.text, self.source, span.start, message.into());
        self.errors.push(error);
    }

    fn config(&mut self, raw: RawConfig) -> Config {
        let admin = raw.admin.and_then(|admin| {
            parse_listen(admin.get_ref())
                .map_err(|message| self.error(admin.span(), format!("admin: {message}")))
                .ok()
        });
        let max_connections = raw.max_connections.map_or(10_000, |max| {
            self.at_least_one(&max, "max_connections");
            max.into_inner() as usize
        });
        let workers = raw.workers.map(|workers| {
            self.at_least_one(&workers, "workers");
            workers.into_inner() as usize
        });

        let declared: BTreeSet<String> = raw
            .upstreams
            .keys()
            .map(|name| name.get_ref().clone())
            .collect();
        let mut upstreams = BTreeMap::new();
        for (name, upstream) in raw.upstreams {
            let upstream = self.upstream(&name, upstream);
            upstreams.insert(name.into_inner(), upstream);
        }

        if raw.server.is_empty() {
            self.error(
                0..0,
                "no [[server]] block: a configuration needs at least one",
            );
        }
        let mut next_id = 0;
        let mut listen_tls = HashMap::new();
        let mut servers = Vec::new();
        for server in raw.server {
            let mut resolve = Upstreams {
                declared: &declared,
                all: &mut upstreams,
            };
            servers.push(self.server(server, &mut next_id, &mut resolve, &mut listen_tls));
        }

        Config {
            admin,
            max_connections,
            workers,
            shutdown_grace: dur(raw.shutdown_grace, 10),
            plugins: self.plugins(raw.plugins),
            upstreams,
            servers,
        }
    }

    fn plugins(&mut self, raw: RawPlugins) -> PluginSettings {
        if let Some(timeout) = &raw.call_timeout
            && timeout.get_ref().0.is_zero()
        {
            self.error(timeout.span(), "call_timeout must be more than zero");
        }
        if let Some(instances) = &raw.instances {
            self.at_least_one(instances, "instances");
        }
        PluginSettings {
            router: self.path(raw.router, "plugins.router"),
            balancer: self.path(raw.balancer, "plugins.balancer"),
            origin: self.path(raw.origin, "plugins.origin"),
            call_timeout: raw
                .call_timeout
                .map_or(Duration::from_millis(10), |t| t.get_ref().0),
            memory_limit: size(raw.memory_limit, 64 << 20),
            instances: raw.instances.map_or(1000, Spanned::into_inner),
            cache_dir: self.path(raw.cache_dir, "plugins.cache_dir"),
        }
    }

    fn upstream(&mut self, name: &Spanned<String>, raw: RawUpstream) -> Upstream {
        let valid_name = !name.get_ref().is_empty()
            && name
                .get_ref()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !valid_name {
            self.error(
                name.span(),
                format!(
                    "upstream name `{}` may only use letters, digits, `_`, `.` and `-`",
                    name.get_ref()
                ),
            );
        }
        let balance = raw
            .balance
            .as_ref()
            .map_or(Balance::RoundRobin, |b| *b.get_ref());
        let is_hash = balance == Balance::Hash;
        match (&raw.hash_key, is_hash) {
            (None, true) => {
                let span = raw.balance.as_ref().map_or(name.span(), Spanned::span);
                self.error(
                    span,
                    "balance = \"hash\" needs a hash_key, e.g. \"$remote_addr\"",
                );
            }
            (Some(key), false) => {
                self.error(key.span(), "hash_key only applies with balance = \"hash\"");
            }
            (Some(key), true) if key.get_ref().trim().is_empty() => {
                self.error(key.span(), "hash_key must not be empty");
            }
            _ => {}
        }
        if let Some(consistent) = &raw.consistent
            && *consistent.get_ref()
            && !is_hash
        {
            self.error(
                consistent.span(),
                "consistent only applies with balance = \"hash\"",
            );
        }
        if raw.servers.get_ref().is_empty() {
            self.error(
                raw.servers.span(),
                format!("upstream `{}` needs at least one server", name.get_ref()),
            );
        }
        let servers = raw
            .servers
            .into_inner()
            .into_iter()
            .filter_map(|server| self.upstream_server(server, balance))
            .collect();
        Upstream {
            balance,
            hash_key: raw.hash_key.map(Spanned::into_inner),
            consistent: raw.consistent.is_some_and(Spanned::into_inner),
            next_upstream_tries: raw.next_upstream_tries.unwrap_or(0),
            servers,
            health: raw.health.map(|health| self.health(health)),
        }
    }

    fn upstream_server(
        &mut self,
        server: Spanned<Shorthand<RawUpstreamServer>>,
        balance: Balance,
    ) -> Option<UpstreamServer> {
        let span = server.span();
        let Shorthand(raw) = server.into_inner();
        if let Some(weight) = &raw.weight {
            self.at_least_one(weight, "weight");
        }
        let backup = raw.backup.unwrap_or(false);
        if backup && matches!(balance, Balance::IpHash | Balance::Hash) {
            // nginx refuses this too: a hash maps each key to one fixed primary.
            self.error(
                span.clone(),
                format!(
                    "backup servers cannot be used with balance = \"{}\"",
                    balance.as_str()
                ),
            );
        }
        let address = match host_port(&raw.address) {
            Ok((host, port)) => format!("{host}:{}", port.unwrap_or(80)),
            Err(message) => {
                self.error(span, format!("upstream server: {message}"));
                return None;
            }
        };
        Some(UpstreamServer {
            address,
            weight: raw.weight.map_or(1, Spanned::into_inner),
            max_fails: raw.max_fails.unwrap_or(1),
            fail_timeout: dur(raw.fail_timeout, 10),
            backup,
            down: raw.down.unwrap_or(false),
        })
    }

    fn health(&mut self, raw: RawHealth) -> HealthCheck {
        if !raw.path.get_ref().starts_with('/') {
            self.error(raw.path.span(), "health check path must start with `/`");
        }
        for count in [&raw.rise, &raw.fall].into_iter().flatten() {
            self.at_least_one(count, "rise and fall");
        }
        HealthCheck {
            path: raw.path.into_inner(),
            interval: dur(raw.interval, 5),
            rise: raw.rise.map_or(2, Spanned::into_inner),
            fall: raw.fall.map_or(3, Spanned::into_inner),
            websocket: raw.websocket.unwrap_or(false),
        }
    }

    fn server(
        &mut self,
        server: Spanned<RawServer>,
        next_id: &mut u32,
        upstreams: &mut Upstreams,
        listen_tls: &mut HashMap<SocketAddr, bool>,
    ) -> Server {
        let span = server.span();
        let raw = server.into_inner();
        let has_tls = raw.tls.is_some();
        let mut listen = Vec::new();
        match raw.listen {
            None => self.error(span, "a server needs at least one `listen` address"),
            Some(addresses) if addresses.get_ref().0.is_empty() => {
                self.error(
                    addresses.span(),
                    "a server needs at least one `listen` address",
                );
            }
            Some(addresses) => {
                let span = addresses.span();
                for address in addresses.into_inner().0 {
                    match parse_listen(&address) {
                        Ok(addr) => {
                            if *listen_tls.entry(addr).or_insert(has_tls) != has_tls {
                                self.error(
                                    span.clone(),
                                    format!(
                                        "listen address {address} is used both with and without tls"
                                    ),
                                );
                            }
                        }
                        Err(message) => self.error(span.clone(), format!("listen: {message}")),
                    }
                    listen.push(address);
                }
            }
        }
        let server_names = raw.server_name.map_or_else(Vec::new, |names| {
            if names
                .get_ref()
                .0
                .iter()
                .any(|n| n.contains(char::is_whitespace))
            {
                self.error(
                    names.span(),
                    "server_name entries cannot contain spaces; use a list",
                );
            }
            names.into_inner().0
        });
        let tls = raw.tls.map(|tls| TlsFiles {
            cert: self.non_empty_path(tls.cert, "tls.cert"),
            key: self.non_empty_path(tls.key, "tls.key"),
        });

        let mut first_seen = HashMap::new();
        let mut locations = Vec::new();
        for location in raw.location {
            let id = *next_id;
            *next_id += 1;
            if let Some(location) = self.location(location, id, upstreams, &mut first_seen) {
                locations.push(location);
            }
        }
        Server {
            listen,
            server_names,
            tls,
            redirect_http: raw.redirect_http.unwrap_or(false),
            client_header_timeout: dur(raw.client_header_timeout, 60),
            client_max_body_size: raw.client_max_body_size.map_or(1 << 20, |s| s.0),
            max_header_size: size(raw.max_header_size, 32 << 10),
            strict_websocket: raw.strict_websocket.unwrap_or(false),
            locations,
        }
    }

    fn location(
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
        let limit_conn_status = raw.limit_conn_status.map_or(503, |status| {
            u16::try_from(*status.get_ref())
                .ok()
                .filter(|s| (400..=599).contains(s))
                .unwrap_or_else(|| {
                    self.error(
                        status.span(),
                        "limit_conn_status must be between 400 and 599",
                    );
                    503
                })
        });
        let limit_req = raw.limit_req.map(|limit| LimitReq {
            rate_per_sec: parse_rate(limit.rate.get_ref()).unwrap_or_else(|message| {
                self.error(limit.rate.span(), message);
                1.0
            }),
            burst: limit.burst.unwrap_or(0),
            key: limit.key.unwrap_or_else(|| DEFAULT_LIMIT_KEY.to_owned()),
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
        let buffers = raw
            .buffers
            .map_or((8, 4 << 10), |buffers| (buffers.0, buffers.1.bytes()));

        Some(Location {
            id,
            kind,
            pattern,
            action: action?,
            set_headers,
            connect_timeout: dur(raw.connect_timeout, 60),
            read_timeout: dur(raw.read_timeout, 60),
            send_timeout: dur(raw.send_timeout, 60),
            buffer_size: size(raw.buffer_size, 4 << 10),
            buffers,
            limit_conn,
            limit_conn_key: raw
                .limit_conn_key
                .unwrap_or_else(|| DEFAULT_LIMIT_KEY.to_owned()),
            limit_conn_status,
            limit_req,
            origins,
            allow_missing_origin: raw.allow_missing_origin.unwrap_or(true),
            filters,
            max_message_size: size(raw.max_message_size, 1 << 20),
        })
    }

    /// The location's one action among `proxy_pass`, `root` and `return`.
    fn action(
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
                index: words(&raw.index).unwrap_or_else(|| vec!["index.html".to_owned()]),
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
            None if looks_like_host => 80,
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
            .or_insert_with(|| Upstream {
                balance: Balance::RoundRobin,
                hash_key: None,
                consistent: false,
                next_upstream_tries: 0,
                servers: vec![UpstreamServer {
                    address: name.clone(),
                    weight: 1,
                    max_fails: 1,
                    fail_timeout: Duration::from_secs(10),
                    backup: false,
                    down: false,
                }],
                health: None,
            });
        Some((name, uri))
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

    fn filter(&mut self, filter: Spanned<Shorthand<RawFilter>>) -> FilterSpec {
        let span = filter.span();
        let Shorthand(raw) = filter.into_inner();
        if !BUILTIN_FILTERS.contains(&raw.plugin.as_str()) && !raw.plugin.ends_with(".wasm") {
            self.error(
                span.clone(),
                format!(
                    "unknown filter `{}`: use max-size, json, rate, redact or a path to a .wasm file",
                    raw.plugin
                ),
            );
        }
        let table = toml::Value::Table(raw.config.unwrap_or_default());
        let config = toml_to_json(table).unwrap_or_else(|| {
            self.error(
                span,
                "filter config cannot contain nan or inf: JSON has no such numbers",
            );
            serde_json::Value::Null
        });
        FilterSpec {
            plugin: raw.plugin,
            config,
            fail_open: matches!(raw.fail, Some(FailMode::Open)),
        }
    }

    fn at_least_one<T: Copy + Into<u64>>(&mut self, value: &Spanned<T>, what: &str) {
        if (*value.get_ref()).into() == 0 {
            self.error(value.span(), format!("{what} must be at least 1"));
        }
    }

    fn path(&mut self, path: Option<Spanned<String>>, what: &str) -> Option<PathBuf> {
        path.map(|path| self.non_empty_path(path, what))
    }

    fn non_empty_path(&mut self, path: Spanned<String>, what: &str) -> PathBuf {
        if path.get_ref().trim().is_empty() {
            self.error(path.span(), format!("{what} must not be empty"));
        }
        PathBuf::from(path.into_inner())
    }
}

fn dur(value: Option<Dur>, default_secs: u64) -> Duration {
    value.map_or(Duration::from_secs(default_secs), |d| d.0)
}

fn size(value: Option<Size>, default: usize) -> usize {
    value.map_or(default, Size::bytes)
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

/// Parses a listen address, which must be a literal `IP:PORT`.
fn parse_listen(address: &str) -> Result<SocketAddr, String> {
    address.parse().map_err(|_| {
        format!("`{address}` is not an IP:PORT address (e.g. 127.0.0.1:8000, 0.0.0.0:80, [::]:443)")
    })
}

/// Splits `host[:port]`, keeping IPv6 brackets in the host.
fn host_port(text: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port) = if text.starts_with('[') {
        let end = text
            .find(']')
            .ok_or_else(|| format!("`{text}` has an unclosed `[`"))?;
        match &text[end + 1..] {
            "" => (&text[..=end], None),
            rest => (
                &text[..=end],
                Some(
                    rest.strip_prefix(':')
                        .ok_or_else(|| format!("`{text}` is not host:port"))?,
                ),
            ),
        }
    } else {
        match text.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                return Err(format!(
                    "IPv6 address `{text}` needs brackets, e.g. [::1]:8080"
                ));
            }
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || "/@?#".contains(c)) {
        return Err(format!("`{text}` is not a valid host:port"));
    }
    let port = port
        .map(|port| {
            port.parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("invalid port in `{text}`"))
        })
        .transpose()?;
    Ok((host, port))
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

/// A filter's `config` table as JSON (datetimes become their TOML text);
/// `None` when it holds a non-finite float, which JSON cannot express.
fn toml_to_json(value: toml::Value) -> Option<serde_json::Value> {
    use serde_json::Value as Json;
    Some(match value {
        toml::Value::String(s) => Json::String(s),
        toml::Value::Integer(i) => Json::from(i),
        toml::Value::Float(f) => Json::Number(serde_json::Number::from_f64(f)?),
        toml::Value::Boolean(b) => Json::Bool(b),
        toml::Value::Datetime(d) => Json::String(d.to_string()),
        toml::Value::Array(items) => {
            Json::Array(items.into_iter().map(toml_to_json).collect::<Option<_>>()?)
        }
        toml::Value::Table(table) => Json::Object(
            table
                .into_iter()
                .map(|(key, value)| Some((key, toml_to_json(value)?)))
                .collect::<Option<_>>()?,
        ),
    })
}
