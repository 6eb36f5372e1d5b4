//! nginx directives → wasp TOML, context by context (main, http, server,
//! location, upstream), with nginx's inheritance: a block inherits its
//! parent's `proxy_set_header`, `limit_conn` and `limit_req` only when it
//! sets none itself, and every other setting unless it sets it. Settings of
//! a block apply to its nested blocks wherever they are written in it, so
//! each block is read in two passes: its settings, then its blocks.
//!
//! The TOML is written as text rather than through `toml`'s serializer so
//! that each untranslated directive leaves a comment where it was; values
//! are quoted by `toml` ([`string`]).

use std::collections::{HashMap, HashSet};

use super::read::Directive;
use super::{Imported, Note, Origin, units};
use crate::config::{Config, variables};

/// Directives that change nothing a client or an upstream can observe
/// through wasp (logging, kernel and memory tuning, TLS details rustls
/// chooses itself), each with the reason written in the comment.
const NO_EFFECT: &[(&str, &str)] = &[
    ("user", "wasp runs as the user that starts it"),
    ("pid", "wasp writes no pid file"),
    (
        "worker_rlimit_nofile",
        "wasp raises its open-file limit to the hard limit itself",
    ),
    (
        "worker_connections",
        "wasp has no per-worker connection cap (see max_connections)",
    ),
    ("events", "wasp's event loop needs no settings"),
    (
        "load_module",
        "modules are nginx's; wasp's extensions are plugins",
    ),
    ("pcre_jit", "regex engine tuning"),
    ("error_log", "wasp logs to stderr (RUST_LOG sets the level)"),
    (
        "access_log",
        "wasp writes its access log to stderr in the combined format",
    ),
    (
        "log_format",
        "wasp's access log has one format (combined plus request time)",
    ),
    ("sendfile", "kernel I/O tuning"),
    ("tcp_nopush", "kernel I/O tuning"),
    ("tcp_nodelay", "wasp always sets TCP_NODELAY"),
    ("keepalive_timeout", "client keep-alive tuning"),
    ("keepalive_requests", "client keep-alive tuning"),
    ("types_hash_max_size", "nginx hash table tuning"),
    ("types_hash_bucket_size", "nginx hash table tuning"),
    ("server_names_hash_bucket_size", "nginx hash table tuning"),
    ("server_names_hash_max_size", "nginx hash table tuning"),
    ("map_hash_bucket_size", "nginx hash table tuning"),
    ("types", "wasp derives Content-Type from the file extension"),
    (
        "default_type",
        "wasp derives Content-Type from the file extension",
    ),
    ("server_tokens", "wasp's own responses name no version"),
    ("ssl_protocols", "rustls speaks TLS 1.2 and 1.3 only"),
    ("ssl_ciphers", "rustls chooses among its safe cipher suites"),
    (
        "ssl_prefer_server_ciphers",
        "rustls chooses among its safe cipher suites",
    ),
    ("ssl_session_cache", "TLS session resumption tuning"),
    ("ssl_session_timeout", "TLS session resumption tuning"),
    ("ssl_session_tickets", "TLS session resumption tuning"),
    ("ssl_dhparam", "rustls uses no finite-field Diffie-Hellman"),
    ("ssl_ecdh_curve", "rustls chooses the key exchange"),
    (
        "proxy_buffers",
        "wasp streams responses as they arrive (nginx's proxy_buffering off); upgraded connections never use these buffers in nginx either",
    ),
    (
        "proxy_busy_buffers_size",
        "wasp streams responses as they arrive (nginx's proxy_buffering off)",
    ),
    (
        "proxy_buffering",
        "wasp streams responses as they arrive (nginx's proxy_buffering off)",
    ),
    (
        "proxy_temp_path",
        "wasp streams responses and keeps no temporary files",
    ),
    (
        "proxy_max_temp_file_size",
        "wasp streams responses and keeps no temporary files",
    ),
    (
        "proxy_temp_file_write_size",
        "wasp streams responses and keeps no temporary files",
    ),
    ("client_body_buffer_size", "wasp streams request bodies"),
    (
        "client_body_temp_path",
        "wasp streams request bodies and keeps no temporary files",
    ),
    ("reset_timedout_connection", "socket tuning"),
    ("limit_conn_log_level", "log levels"),
    ("limit_req_log_level", "log levels"),
    ("open_file_cache", "file descriptor caching"),
    (
        "keepalive",
        "upstream connection reuse: the requests and answers are the same",
    ),
    ("zone", "wasp keeps upstream state in the process"),
];

/// The wasp configuration for nginx configuration `directives`.
pub fn translate(directives: &[Directive]) -> Imported {
    let mut translator = Translator::default();
    let mut top = Vec::new();
    if directives.iter().any(|d| d.name == "http") {
        translator.main(directives, &mut top);
    } else {
        // An http-context file, as in conf.d/.
        translator.http(directives, &mut top);
    }
    translator.finish(top)
}

#[derive(Default)]
struct Translator {
    notes: Vec<Note>,
    upstreams: Vec<Section>,
    upstream_names: HashSet<String>,
    servers: Vec<ServerOut>,
    /// `map $http_upgrade $NAME { default upgrade; '' close; }`: NAME means
    /// wasp's built-in `$connection_upgrade`.
    aliases: HashMap<String, String>,
    /// `limit_conn_zone`: zone name → key.
    conn_zones: HashMap<String, String>,
    /// `limit_req_zone`: zone name → (key, rate).
    req_zones: HashMap<String, (String, String)>,
    workers: Option<String>,
}

/// A TOML table: its header and its lines (settings and comments).
struct Section {
    header: String,
    lines: Vec<String>,
}

struct ServerOut {
    default: bool,
    section: Section,
    locations: Vec<Section>,
}

/// What a block inherits from the blocks around it.
#[derive(Clone, Default)]
struct Scope {
    headers: Vec<(String, String, Origin)>,
    connect_timeout: Option<String>,
    read_timeout: Option<String>,
    send_timeout: Option<String>,
    buffer_size: Option<String>,
    http_version: Option<String>,
    root: Option<(String, Origin)>,
    index: Option<Vec<String>>,
    limit_conn: Vec<(Directive, String, u32)>,
    limit_req: Vec<Directive>,
    limit_conn_status: Option<String>,
    ssl_certificate: Option<String>,
    ssl_certificate_key: Option<String>,
    client_max_body_size: Option<String>,
    client_header_timeout: Option<String>,
    client_body_timeout: Option<String>,
}

/// Which array-like directives the current block has set (they replace,
/// not extend, the inherited ones).
#[derive(Default)]
struct Here {
    headers: bool,
    limit_conn: bool,
    limit_req: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum Ctx {
    Http,
    Server,
    Location,
}

impl Translator {
    fn note(&mut self, out: &mut Vec<String>, d: &Directive, reason: &str, differs: bool) {
        let tag = if differs {
            "NOT TRANSLATED"
        } else {
            "not needed"
        };
        out.push(format!(
            "# {tag}: {} ({}:{}): {reason}",
            d.text(),
            d.at.file,
            d.at.line
        ));
        self.notes.push(Note {
            at: d.at.clone(),
            directive: d.text(),
            reason: reason.to_owned(),
            differs,
        });
    }

    fn unsupported(&mut self, out: &mut Vec<String>, d: &Directive) {
        let reason = format!("wasp has no equivalent of nginx's `{}`", d.name);
        self.note(out, d, &reason, true);
    }

    fn main(&mut self, directives: &[Directive], out: &mut Vec<String>) {
        for d in directives {
            match d.name.as_str() {
                "http" => self.http(d.children(), out),
                "worker_processes" => match d.args.first().map(String::as_str) {
                    Some("auto") | None => {}
                    Some(n) if n.parse::<u32>().is_ok() => self.workers = Some(n.to_owned()),
                    Some(_) => self.note(out, d, "not a number of workers", true),
                },
                "daemon" | "master_process" => {
                    self.note(out, d, "wasp runs in the foreground, in one process", false)
                }
                _ => self.common(d, out, &mut Scope::default(), &mut Here::default(), None),
            }
        }
    }

    fn http(&mut self, directives: &[Directive], out: &mut Vec<String>) {
        // Upstream names first: `proxy_pass http://NAME` may come before them.
        for d in directives {
            if d.name == "upstream"
                && let Some(name) = d.args.first()
            {
                self.upstream_names.insert(name.clone());
            }
        }
        let mut scope = Scope::default();
        let mut here = Here::default();
        for d in directives {
            match d.name.as_str() {
                "server" | "upstream" => {}
                "map" => self.map(d, out),
                "limit_conn_zone" => self.limit_conn_zone(d, out),
                "limit_req_zone" => self.limit_req_zone(d, out),
                _ => self.common(d, out, &mut scope, &mut here, Some(Ctx::Http)),
            }
        }
        for d in directives {
            match d.name.as_str() {
                "upstream" => self.upstream(d),
                "server" => self.server(d, &scope),
                _ => {}
            }
        }
    }

    /// A directive that may appear at several levels; `ctx` is `None` in
    /// the main context.
    fn common(
        &mut self,
        d: &Directive,
        out: &mut Vec<String>,
        scope: &mut Scope,
        here: &mut Here,
        ctx: Option<Ctx>,
    ) {
        let arg = d.args.first().cloned();
        let in_http = ctx.is_some();
        match (d.name.as_str(), in_http) {
            ("proxy_set_header", true) => {
                if !here.headers {
                    scope.headers.clear();
                    here.headers = true;
                }
                match d.args.as_slice() {
                    [name, value] => {
                        scope
                            .headers
                            .retain(|(n, _, _)| !n.eq_ignore_ascii_case(name));
                        scope
                            .headers
                            .push((name.clone(), value.clone(), d.at.clone()));
                    }
                    _ => self.note(out, d, "proxy_set_header takes a name and a value", true),
                }
            }
            ("proxy_connect_timeout" | "proxy_read_timeout" | "proxy_send_timeout", true) => {
                match arg.as_deref().and_then(units::duration) {
                    Some(value) => {
                        let slot = match d.name.as_str() {
                            "proxy_connect_timeout" => &mut scope.connect_timeout,
                            "proxy_read_timeout" => &mut scope.read_timeout,
                            _ => &mut scope.send_timeout,
                        };
                        *slot = Some(value);
                    }
                    None => self.note(out, d, "not an nginx time", true),
                }
            }
            ("proxy_buffer_size", true) => match arg.as_deref().and_then(units::size) {
                Some(value) => scope.buffer_size = Some(value),
                None => self.note(out, d, "not an nginx size", true),
            },
            ("proxy_http_version", true) => scope.http_version = arg,
            ("root", true) => scope.root = arg.map(|root| (root, d.at.clone())),
            ("index", true) => scope.index = Some(d.args.clone()),
            ("limit_conn", true) => {
                if !here.limit_conn {
                    scope.limit_conn.clear();
                    here.limit_conn = true;
                }
                match d.args.as_slice() {
                    [zone, n] if n.parse::<u32>().is_ok() => {
                        scope
                            .limit_conn
                            .push((d.clone(), zone.clone(), n.parse().unwrap_or(0)))
                    }
                    _ => self.note(out, d, "limit_conn takes a zone and a number", true),
                }
            }
            ("limit_req", true) => {
                if !here.limit_req {
                    scope.limit_req.clear();
                    here.limit_req = true;
                }
                scope.limit_req.push(d.clone());
            }
            ("limit_conn_status", true) => scope.limit_conn_status = arg,
            ("limit_req_status", true) => {
                if arg.as_deref() != Some("503") {
                    self.note(out, d, "wasp answers 503 to requests over limit_req", true);
                }
            }
            ("ssl_certificate", true) => scope.ssl_certificate = arg,
            ("ssl_certificate_key", true) => scope.ssl_certificate_key = arg,
            ("client_max_body_size", true) => match arg.as_deref().and_then(units::size) {
                Some(size) => scope.client_max_body_size = Some(size),
                None => self.note(out, d, "not an nginx size", true),
            },
            ("client_header_timeout", true) if ctx != Some(Ctx::Location) => {
                match arg.as_deref().and_then(units::duration) {
                    Some(value) => scope.client_header_timeout = Some(value),
                    None => self.note(out, d, "not an nginx time", true),
                }
            }
            ("client_body_timeout", true) if ctx != Some(Ctx::Location) => {
                match arg.as_deref().and_then(units::duration) {
                    Some(value) => scope.client_body_timeout = Some(value),
                    None => self.note(out, d, "not an nginx time", true),
                }
            }
            ("proxy_next_upstream", true)
                if d.args.iter().all(|a| a == "error" || a == "timeout") && !d.args.is_empty() =>
            {
                self.note(out, d, "wasp's behaviour (nginx's default): the next peer after an error or a timeout, for requests it can send again", false)
            }
            ("gzip" | "charset", true) if arg.as_deref() == Some("off") => {
                self.note(out, d, "off is wasp's behaviour too", false)
            }
            (name, _) => match NO_EFFECT.iter().find(|(n, _)| *n == name) {
                Some((_, reason)) => self.note(out, d, reason, false),
                None => self.unsupported(out, d),
            },
        }
    }

    fn map(&mut self, d: &Directive, out: &mut Vec<String>) {
        let entries: Vec<(&str, Vec<&str>)> = d
            .children()
            .iter()
            .map(|e| (e.name.as_str(), e.args.iter().map(String::as_str).collect()))
            .collect();
        let is_upgrade_map = matches!(d.args.as_slice(), [source, _] if source == "$http_upgrade")
            && entries.len() == 2
            && entries.contains(&("default", vec!["upgrade"]))
            && entries.contains(&("", vec!["close"]));
        match (is_upgrade_map, d.args.get(1).and_then(|v| v.strip_prefix('$'))) {
            (true, Some(name)) => {
                if name != "connection_upgrade" {
                    self.aliases
                        .insert(name.to_owned(), "connection_upgrade".to_owned());
                }
                out.push(format!(
                    "# {} ({}:{}) is wasp's built-in $connection_upgrade: \"upgrade\" when the client sent Upgrade, \"close\" otherwise",
                    d.text(),
                    d.at.file,
                    d.at.line
                ));
            }
            _ => self.note(
                out,
                d,
                "wasp has no map; only the guide's $http_upgrade map (wasp's $connection_upgrade) is built in",
                true,
            ),
        }
    }

    fn limit_conn_zone(&mut self, d: &Directive, out: &mut Vec<String>) {
        let zone = d.args.iter().find_map(|a| a.strip_prefix("zone="));
        match (d.args.first(), zone) {
            (Some(key), Some(zone)) => {
                let name = zone.split(':').next().unwrap_or(zone);
                self.conn_zones.insert(name.to_owned(), key.clone());
                out.push(format!(
                    "# {} ({}:{}): wasp needs no zone; its key is each location's limit_conn_key",
                    d.text(),
                    d.at.file,
                    d.at.line
                ));
            }
            _ => self.note(out, d, "expected a key and zone=NAME:SIZE", true),
        }
    }

    fn limit_req_zone(&mut self, d: &Directive, out: &mut Vec<String>) {
        let zone = d.args.iter().find_map(|a| a.strip_prefix("zone="));
        let rate = d.args.iter().find_map(|a| a.strip_prefix("rate="));
        match (d.args.first(), zone, rate) {
            (Some(key), Some(zone), Some(rate)) => {
                let name = zone.split(':').next().unwrap_or(zone);
                self.req_zones
                    .insert(name.to_owned(), (key.clone(), rate.to_owned()));
                out.push(format!(
                    "# {} ({}:{}): wasp needs no zone; each location's limit_req has the key and rate",
                    d.text(),
                    d.at.file,
                    d.at.line
                ));
            }
            _ => self.note(out, d, "expected a key, zone=NAME:SIZE and rate=R", true),
        }
    }

    fn upstream(&mut self, d: &Directive) {
        let Some(name) = d.args.first() else {
            let mut out = Vec::new();
            self.note(&mut out, d, "an upstream needs a name", true);
            return;
        };
        let mut lines = Vec::new();
        let mut servers = Vec::new();
        for item in d.children() {
            match item.name.as_str() {
                "server" => {
                    if let Some(server) = self.upstream_server(item, &mut lines) {
                        servers.push(server);
                    }
                }
                "ip_hash" => lines.push("balance = \"ip_hash\"".into()),
                "least_conn" => lines.push("balance = \"least_conn\"".into()),
                "hash" => match item.args.as_slice() {
                    [key, rest @ ..] if rest.iter().all(|r| r == "consistent") => {
                        lines.push("balance = \"hash\"".into());
                        match self.template(key, item, &mut lines) {
                            Some(key) => lines.push(format!("hash_key = {}", string(&key))),
                            None => continue,
                        }
                        if !rest.is_empty() {
                            lines.push("consistent = true".into());
                        }
                    }
                    _ => self.note(&mut lines, item, "expected `hash KEY [consistent]`", true),
                },
                _ => {
                    let mut scope = Scope::default();
                    self.common(item, &mut lines, &mut scope, &mut Here::default(), None);
                }
            }
        }
        lines.push(format!("servers = [{}]", servers.join(", ")));
        self.upstreams.push(Section {
            header: format!("[upstreams.{}]", key(name)),
            lines,
        });
    }

    /// One `server` of an upstream as a TOML value.
    fn upstream_server(&mut self, d: &Directive, out: &mut Vec<String>) -> Option<String> {
        let (address, params) = d.args.split_first()?;
        if address.starts_with("unix:") {
            self.note(out, d, "wasp connects to upstreams over TCP only", true);
            return None;
        }
        let mut fields = vec![format!("address = {}", string(address))];
        for param in params {
            let (name, value) = param.split_once('=').unwrap_or((param, ""));
            match name {
                "weight" | "max_fails" if value.parse::<u32>().is_ok() => {
                    fields.push(format!("{name} = {value}"))
                }
                "fail_timeout" => match units::duration(value) {
                    Some(value) => fields.push(format!("fail_timeout = {}", string(&value))),
                    None => self.note(out, d, "fail_timeout is not an nginx time", true),
                },
                "backup" | "down" if value.is_empty() => fields.push(format!("{name} = true")),
                _ => {
                    let reason = format!("wasp has no server parameter `{param}`");
                    self.note(out, d, &reason, true);
                }
            }
        }
        Some(if fields.len() == 1 {
            string(address)
        } else {
            format!("{{ {} }}", fields.join(", "))
        })
    }

    fn server(&mut self, d: &Directive, parent: &Scope) {
        let mut scope = parent.clone();
        let mut here = Here::default();
        let mut lines = Vec::new();
        let mut listens: Vec<(String, bool)> = Vec::new();
        let mut default = false;
        let mut names: Vec<String> = Vec::new();
        let mut server_return: Option<&Directive> = None;
        for item in d.children() {
            match item.name.as_str() {
                "location" => {}
                "listen" => {
                    if let Some((address, ssl, is_default)) = self.listen(item, &mut lines) {
                        listens.push((address, ssl));
                        default |= is_default;
                    }
                }
                "server_name" => names.extend(
                    item.args
                        .iter()
                        .filter(|n| !n.is_empty() && *n != "_")
                        .cloned(),
                ),
                "return" => server_return = Some(item),
                _ => self.common(item, &mut lines, &mut scope, &mut here, Some(Ctx::Server)),
            }
        }
        if listens.is_empty() {
            // nginx's default (as root): every address, port 80.
            listens.push(("0.0.0.0:80".into(), false));
        }
        if names.iter().any(|n| n.starts_with('~')) {
            self.note(
                &mut lines,
                d,
                "wasp matches server names exactly or by wildcard, not by regex",
                true,
            );
        }
        let mut settings = Vec::new();
        match names.as_slice() {
            [] => {}
            [one] => settings.push(format!("server_name = {}", string(one))),
            many => settings.push(format!("server_name = {}", list(many))),
        }
        if let Some(size) = &scope.client_max_body_size {
            settings.push(format!("client_max_body_size = {}", string(size)));
        }
        if let Some(timeout) = &scope.client_header_timeout {
            settings.push(format!("client_header_timeout = {}", string(timeout)));
        }
        if let Some(timeout) = &scope.client_body_timeout {
            settings.push(format!("client_body_timeout = {}", string(timeout)));
        }
        let mut redirect = false;
        let mut locations = Vec::new();
        if let Some(ret) = server_return {
            if ret.args == ["301", "https://$host$request_uri"] {
                redirect = true;
            } else if let Some(section) = self.return_location(ret, &mut lines) {
                locations.push(section);
            }
            if d.children().iter().any(|c| c.name == "location") {
                lines.push(
                    "# the server's locations are not imported: its `return` answers every request first, in nginx too"
                        .into(),
                );
            }
        } else {
            for item in d.children().iter().filter(|c| c.name == "location") {
                self.location(item, &scope, &mut locations, &mut lines);
            }
        }

        let plain: Vec<&str> = listens
            .iter()
            .filter(|(_, s)| !s)
            .map(|(a, _)| a.as_str())
            .collect();
        let tls: Vec<&str> = listens
            .iter()
            .filter(|(_, s)| *s)
            .map(|(a, _)| a.as_str())
            .collect();
        for (addresses, with_tls) in [(tls, true), (plain, false)] {
            if addresses.is_empty() {
                continue;
            }
            let mut section_lines = lines.clone();
            section_lines.push(format!("listen = {}", list_or_one(&addresses)));
            section_lines.extend(settings.iter().cloned());
            if with_tls {
                match (&scope.ssl_certificate, &scope.ssl_certificate_key) {
                    (Some(cert), Some(key)) => section_lines.push(format!(
                        "tls = {{ cert = {}, key = {} }}",
                        string(cert),
                        string(key)
                    )),
                    _ => self.note(
                        &mut section_lines,
                        d,
                        "`listen ... ssl` needs ssl_certificate and ssl_certificate_key",
                        true,
                    ),
                }
            }
            if redirect {
                if with_tls {
                    // A redirect to itself: keep it as a `return`.
                    if let Some(ret) = server_return
                        && let Some(section) = self.return_location(ret, &mut section_lines)
                    {
                        self.servers.push(ServerOut {
                            default,
                            section: Section {
                                header: "[[server]]".into(),
                                lines: section_lines,
                            },
                            locations: vec![section],
                        });
                    }
                    continue;
                }
                section_lines.push("redirect_http = true".into());
            }
            self.servers.push(ServerOut {
                default,
                section: Section {
                    header: "[[server]]".into(),
                    lines: section_lines,
                },
                locations: if redirect {
                    Vec::new()
                } else {
                    clone_sections(&locations)
                },
            });
        }
    }

    /// `listen`: the address, whether it is TLS, whether it is the default.
    fn listen(&mut self, d: &Directive, out: &mut Vec<String>) -> Option<(String, bool, bool)> {
        let (address, flags) = d.args.split_first()?;
        if address.starts_with("unix:") {
            self.note(out, d, "wasp listens on TCP only", true);
            return None;
        }
        let address = if address.bytes().all(|b| b.is_ascii_digit()) {
            format!("0.0.0.0:{address}")
        } else if let Some(port) = address.strip_prefix("*:") {
            format!("0.0.0.0:{port}")
        } else if address.ends_with(']') || !address.contains(':') {
            format!("{address}:80")
        } else {
            address.clone()
        };
        let mut ssl = false;
        let mut default = false;
        for flag in flags {
            match flag.split('=').next().unwrap_or(flag) {
                "ssl" => ssl = true,
                "default_server" | "default" => default = true,
                // wasp's is per server: it applies to all of its addresses.
                "reuseport" => {
                    let line = "reuse_port = true".to_owned();
                    if !out.contains(&line) {
                        out.push(line);
                    }
                }
                "backlog" | "rcvbuf" | "sndbuf" | "deferred" | "bind" | "ipv6only"
                | "so_keepalive" | "fastopen" => {}
                "http2" => self.note(out, d, "wasp speaks HTTP/1.1 to clients", true),
                _ => {
                    let reason = format!("wasp has no listen parameter `{flag}`");
                    self.note(out, d, &reason, true);
                }
            }
        }
        Some((address, ssl, default))
    }

    fn location(
        &mut self,
        d: &Directive,
        parent: &Scope,
        locations: &mut Vec<Section>,
        server_lines: &mut Vec<String>,
    ) {
        let path = match d.args.as_slice() {
            [modifier, pattern] if ["=", "^~", "~", "~*"].contains(&modifier.as_str()) => {
                format!("{modifier} {pattern}")
            }
            [path] if path.starts_with('@') => {
                self.note(server_lines, d, "wasp has no named locations", true);
                return;
            }
            [path] => match path.strip_prefix('=') {
                Some(exact) => format!("= {exact}"),
                None => path.clone(),
            },
            _ => {
                self.note(server_lines, d, "expected `location [modifier] path`", true);
                return;
            }
        };
        let mut scope = parent.clone();
        let mut here = Here::default();
        let mut lines = vec![format!("path = {}", string(&path))];
        let mut proxy_pass = None;
        let mut try_files = None;
        let mut ret = None;
        for item in d.children() {
            match item.name.as_str() {
                "proxy_pass" => proxy_pass = Some(item),
                "try_files" => try_files = Some(item),
                "return" => ret = Some(item),
                "location" => self.note(&mut lines, item, "wasp has no nested locations", true),
                "alias" => self.note(&mut lines, item, "wasp has no alias; use root", true),
                _ => self.common(item, &mut lines, &mut scope, &mut here, Some(Ctx::Location)),
            }
        }
        if let Some(body_size) = &scope.client_max_body_size
            && parent.client_max_body_size.as_ref() != Some(body_size)
        {
            lines.push(format!(
                "# NOT TRANSLATED: client_max_body_size {body_size} in this location: wasp sets it per server"
            ));
            self.notes.push(Note {
                at: d.at.clone(),
                directive: format!("client_max_body_size {body_size}"),
                reason: "wasp sets client_max_body_size per server".into(),
                differs: true,
            });
        }
        if let Some(ret) = ret {
            // nginx's return runs before proxy_pass or files.
            if let Some(section) = self.return_location(ret, &mut lines) {
                let mut section = section;
                section.lines[0] = format!("path = {}", string(&path));
                locations.push(section);
            }
            return;
        }
        if let Some(proxy) = proxy_pass {
            if !self.proxy(proxy, &scope, &mut lines) {
                server_lines.extend(lines.into_iter().filter(|l| l.starts_with('#')));
                return;
            }
        } else if let Some((root, at)) = &scope.root {
            lines.push(format!("root = {}", string(root)));
            if !root.starts_with('/') {
                let d = Directive {
                    name: "root".into(),
                    args: vec![root.clone()],
                    block: None,
                    at: at.clone(),
                };
                self.note(&mut lines, &d, "nginx resolves a relative root against its prefix, wasp against its working directory", true);
            }
            if let Some(index) = &scope.index {
                lines.push(format!("index = {}", list(index)));
            }
            if let Some(try_files) = try_files {
                lines.push(format!("try_files = {}", list(&try_files.args)));
            }
        } else {
            self.note(
                server_lines,
                d,
                "a location without proxy_pass, root or return serves nginx's default root (html under its prefix)",
                true,
            );
            return;
        }
        self.limits(&scope, &mut lines);
        locations.push(Section {
            header: "[[server.location]]".into(),
            lines,
        });
    }

    /// A proxying location's settings; false when it cannot be translated.
    fn proxy(&mut self, d: &Directive, scope: &Scope, lines: &mut Vec<String>) -> bool {
        let Some(target) = d.args.first() else {
            self.note(lines, d, "proxy_pass needs a URL", true);
            return false;
        };
        if target.contains('$') {
            self.note(
                lines,
                d,
                "wasp's proxy_pass names its upstream without variables",
                true,
            );
            return false;
        }
        if !target.starts_with("http://") {
            self.note(lines, d, "wasp proxies to http:// upstreams only", true);
            return false;
        }
        lines.push(format!("proxy_pass = {}", string(target)));
        if scope.http_version.as_deref() != Some("1.1") {
            let note = Directive {
                name: "proxy_http_version".into(),
                args: vec![scope.http_version.clone().unwrap_or_else(|| "1.0".into())],
                block: None,
                at: d.at.clone(),
            };
            self.note(
                lines,
                &note,
                "nginx speaks HTTP/1.0 upstream (and passes no WebSocket) unless `proxy_http_version 1.1`; wasp always speaks HTTP/1.1",
                true,
            );
        }
        let mut headers: Vec<String> = Vec::new();
        let named = |name: &str| {
            scope
                .headers
                .iter()
                .any(|(n, _, _)| n.eq_ignore_ascii_case(name))
        };
        // nginx's defaults where wasp's differ (wasp passes WebSockets by default).
        let connection_set = named("connection");
        let upgrade_set = named("upgrade");
        for (name, value, at) in &scope.headers {
            let d = Directive {
                name: "proxy_set_header".into(),
                args: vec![name.clone(), value.clone()],
                block: None,
                at: at.clone(),
            };
            if let Some(value) = self.template(value, &d, lines) {
                headers.push(format!("{} = {}", key(name), string(&value)));
            }
        }
        if !upgrade_set {
            headers.push("Upgrade = \"\"".into());
        }
        if !connection_set {
            headers.push("Connection = \"close\"".into());
        }
        if !upgrade_set || !connection_set {
            lines.push(
                "# nginx sends no Upgrade and `Connection: close` unless told otherwise; wasp's defaults differ, so they are written out"
                    .into(),
            );
        }
        lines.push(format!("set_headers = {{ {} }}", headers.join(", ")));
        for (name, value) in [
            ("connect_timeout", &scope.connect_timeout),
            ("read_timeout", &scope.read_timeout),
            ("send_timeout", &scope.send_timeout),
            ("buffer_size", &scope.buffer_size),
        ] {
            if let Some(value) = value {
                lines.push(format!("{name} = {}", string(value)));
            }
        }
        true
    }

    fn limits(&mut self, scope: &Scope, lines: &mut Vec<String>) {
        for (i, (d, zone, n)) in scope.limit_conn.iter().enumerate() {
            if i > 0 {
                self.note(lines, d, "wasp has one limit_conn per location", true);
                continue;
            }
            let Some(key) = self.conn_zones.get(zone).cloned() else {
                self.note(lines, d, "no limit_conn_zone defines this zone", true);
                continue;
            };
            let Some(key) = self.template(&key, d, lines) else {
                continue;
            };
            lines.push(format!("limit_conn = {n}"));
            lines.push(format!("limit_conn_key = {}", string(&key)));
            if let Some(status) = &scope.limit_conn_status {
                lines.push(format!("limit_conn_status = {status}"));
            }
        }
        for (i, d) in scope.limit_req.iter().enumerate() {
            if i > 0 {
                self.note(lines, d, "wasp has one limit_req per location", true);
                continue;
            }
            let zone = d.args.iter().find_map(|a| a.strip_prefix("zone="));
            let Some((key, rate)) = zone.and_then(|z| self.req_zones.get(z)).cloned() else {
                self.note(lines, d, "no limit_req_zone defines this zone", true);
                continue;
            };
            let burst: u32 = d
                .args
                .iter()
                .find_map(|a| a.strip_prefix("burst="))
                .and_then(|b| b.parse().ok())
                .unwrap_or(0);
            let nodelay = d.args.iter().any(|a| a == "nodelay");
            if burst > 0 && !nodelay {
                self.note(lines, d, "nginx delays requests within the burst unless nodelay; wasp serves them at once (nodelay)", true);
            }
            if d.args.iter().any(|a| a.starts_with("delay=")) {
                self.note(
                    lines,
                    d,
                    "wasp has no delay=; it serves the burst at once (nodelay)",
                    true,
                );
            }
            let Some(key) = self.template(&key, d, lines) else {
                continue;
            };
            lines.push(format!(
                "limit_req = {{ rate = {}, burst = {burst}, key = {} }}",
                string(&rate),
                string(&key)
            ));
        }
    }

    /// A `return` as a location `/` (or the caller's path).
    fn return_location(&mut self, d: &Directive, out: &mut Vec<String>) -> Option<Section> {
        if d.args.iter().any(|a| a.contains('$')) {
            self.note(
                out,
                d,
                "wasp's return answers with literal text; it expands no variables",
                true,
            );
            return None;
        }
        let (status, text) = match d.args.as_slice() {
            [url] if url.starts_with("http://") || url.starts_with("https://") => {
                ("302", Some(url))
            }
            [status] => (status.as_str(), None),
            [status, text] => (status.as_str(), Some(text)),
            _ => {
                self.note(
                    out,
                    d,
                    "expected `return CODE [TEXT]` or `return URL`",
                    true,
                );
                return None;
            }
        };
        let Ok(code) = status.parse::<u16>() else {
            self.note(out, d, "not a status code", true);
            return None;
        };
        let mut fields = vec![format!("status = {code}")];
        match text {
            Some(url) if [301, 302, 303, 307, 308].contains(&code) => {
                fields.push(format!("location = {}", string(url)))
            }
            Some(body) => fields.push(format!("body = {}", string(body))),
            None => {}
        }
        Some(Section {
            header: "[[server.location]]".into(),
            lines: vec![
                "path = \"/\"".into(),
                format!("return = {{ {} }}", fields.join(", ")),
            ],
        })
    }

    /// A value with nginx variables as wasp writes it: map aliases renamed,
    /// `None` (and a note) when it uses a variable wasp does not have.
    fn template(&mut self, value: &str, d: &Directive, out: &mut Vec<String>) -> Option<String> {
        let mut text = String::new();
        for piece in variables::split(value) {
            match piece {
                variables::Piece::Literal(literal) => text.push_str(literal),
                variables::Piece::Variable(name) => {
                    let name = self.aliases.get(name).map_or(name, String::as_str);
                    text.push_str(&format!("${{{name}}}"));
                }
            }
        }
        let unknown = variables::unknown(&text).next().map(str::to_owned);
        if let Some(name) = unknown {
            let reason = format!("wasp has no variable `${name}`");
            self.note(out, d, &reason, true);
            return None;
        }
        Some(simplify_braces(&text))
    }

    fn finish(mut self, top: Vec<String>) -> Imported {
        let mut toml = String::from(
            "# Written by `wasp import-nginx`. Comments mark what was not carried over:\n\
             # \"NOT TRANSLATED\" where wasp behaves differently without it, \"not needed\" where not.\n",
        );
        if let Some(workers) = &self.workers {
            toml.push_str(&format!("workers = {workers}\n"));
        }
        for line in &top {
            toml.push_str(line);
            toml.push('\n');
        }
        for upstream in &self.upstreams {
            write_section(&mut toml, upstream);
        }
        // wasp's default server for an address is the first one there.
        self.servers.sort_by_key(|s| !s.default);
        for server in &self.servers {
            write_section(&mut toml, &server.section);
            for location in &server.locations {
                write_section(&mut toml, location);
            }
        }
        if let Err(error) = Config::parse(&toml, "(imported)") {
            for line in error.to_string().lines() {
                self.notes.push(Note {
                    at: Origin {
                        file: "(imported TOML)".into(),
                        line: 0,
                        column: 0,
                    },
                    directive: String::new(),
                    reason: format!("wasp check refuses the result: {line}"),
                    differs: true,
                });
            }
        }
        Imported {
            toml,
            notes: self.notes,
        }
    }
}

fn write_section(toml: &mut String, section: &Section) {
    toml.push('\n');
    toml.push_str(&section.header);
    toml.push('\n');
    for line in &section.lines {
        toml.push_str(line);
        toml.push('\n');
    }
}

fn clone_sections(sections: &[Section]) -> Vec<Section> {
    sections
        .iter()
        .map(|s| Section {
            header: s.header.clone(),
            lines: s.lines.clone(),
        })
        .collect()
}

/// A TOML string.
fn string(value: &str) -> String {
    toml::Value::String(value.to_owned()).to_string()
}

/// A TOML key: bare when it can be.
fn key(name: &str) -> String {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        name.to_owned()
    } else {
        string(name)
    }
}

fn list<S: AsRef<str>>(items: &[S]) -> String {
    let items: Vec<String> = items.iter().map(|s| string(s.as_ref())).collect();
    format!("[{}]", items.join(", "))
}

fn list_or_one(items: &[&str]) -> String {
    match items {
        [one] => string(one),
        many => list(many),
    }
}

/// `${name}` back to `$name` where the next character cannot continue the name.
fn simplify_braces(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let name = &after[..end];
        let next = after[end + 1..].chars().next();
        if next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            out.push_str(&format!("${{{name}}}"));
        } else {
            out.push('$');
            out.push_str(name);
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::super::import_text;
    use std::path::Path;

    fn import(text: &str) -> super::super::Imported {
        import_text(text, "t.conf", Path::new(".")).unwrap()
    }

    #[test]
    fn the_guides_complete_configuration_translates_without_differences() {
        let imported = import(
            "map $http_upgrade $connection_upgrade { default upgrade; '' close; }\n\
             upstream backend_server { server 127.0.0.1:8080; }\n\
             server { listen 127.0.0.1:8000; server_name example.com;\n\
               location /socket/ { proxy_pass http://backend_server; proxy_http_version 1.1;\n\
                 proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection $connection_upgrade;\n\
                 proxy_set_header X-Real-IP $remote_addr; proxy_read_timeout 3600s; proxy_connect_timeout 1h;\n\
                 proxy_buffer_size 16k; proxy_buffers 4 16k; } }\n",
        );
        assert!(
            !imported.differs(),
            "{:?}\n{}",
            imported.notes,
            imported.toml
        );
        let toml = &imported.toml;
        assert!(
            toml.contains("[upstreams.backend_server]\nservers = [\"127.0.0.1:8080\"]"),
            "{toml}"
        );
        assert!(toml.contains("path = \"/socket/\""), "{toml}");
        assert!(toml.contains("set_headers = { Upgrade = \"$http_upgrade\", Connection = \"$connection_upgrade\", X-Real-IP = \"$remote_addr\" }"), "{toml}");
        assert!(
            toml.contains("read_timeout = \"3600s\"\nconnect_timeout = \"3600s\"")
                || toml.contains("connect_timeout = \"3600s\"\nread_timeout = \"3600s\""),
            "{toml}"
        );
        assert!(
            toml.contains("# not needed: proxy_buffers 4 16k (t.conf:"),
            "{toml}"
        );
    }

    #[test]
    fn listen_reuseport_becomes_the_servers_reuse_port() {
        let imported = import(
            "server { listen 8080 reuseport; listen 8443 reuseport;\n\
               location / { proxy_pass http://127.0.0.1:1; } }",
        );
        let toml = &imported.toml;
        assert_eq!(toml.matches("reuse_port = true").count(), 1, "{toml}");
        let config = crate::config::Config::parse(toml, "imported.toml").unwrap();
        assert!(config.servers[0].reuse_port);
    }

    #[test]
    fn proxy_set_header_is_inherited_only_by_blocks_that_set_none() {
        let imported = import(
            "server { listen 80; proxy_http_version 1.1; proxy_set_header X-A a;\n\
               location /one/ { proxy_pass http://127.0.0.1:1; }\n\
               location /two/ { proxy_pass http://127.0.0.1:1; proxy_set_header X-B b; } }",
        );
        let toml = &imported.toml;
        assert!(
            toml.contains("set_headers = { X-A = \"a\", Upgrade = \"\", Connection = \"close\" }"),
            "{toml}"
        );
        assert!(
            toml.contains("set_headers = { X-B = \"b\", Upgrade = \"\", Connection = \"close\" }"),
            "{toml}"
        );
        assert!(toml.contains("listen = \"0.0.0.0:80\""), "{toml}");
    }

    #[test]
    fn a_renamed_upgrade_map_becomes_connection_upgrade() {
        let imported = import(
            "map $http_upgrade $up { default upgrade; '' close; }\n\
             server { listen 80; location / { proxy_pass http://127.0.0.1:1; proxy_http_version 1.1;\n\
               proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection $up; } }",
        );
        assert!(!imported.differs(), "{:?}", imported.notes);
        assert!(
            imported
                .toml
                .contains("Connection = \"$connection_upgrade\""),
            "{}",
            imported.toml
        );
    }

    #[test]
    fn what_wasp_cannot_do_is_commented_and_makes_the_import_differ() {
        let imported = import(
            "server { listen 80 http2; add_header X-A b;\n\
               location @named { return 404; }\n\
               location / { proxy_pass http://127.0.0.1:1; proxy_set_header X-Id $request_id; } }",
        );
        assert!(imported.differs());
        let reasons: Vec<String> = imported
            .notes
            .iter()
            .filter(|n| n.differs)
            .map(|n| n.to_string())
            .collect();
        for expected in [
            "t.conf:1:27: `add_header X-A b`",
            "`listen 80 http2`: wasp speaks HTTP/1.1 to clients",
            "`location @named`: wasp has no named locations",
            "wasp has no variable `$request_id`",
            "nginx speaks HTTP/1.0 upstream",
        ] {
            assert!(
                reasons.iter().any(|r| r.contains(expected)),
                "{expected} not in {reasons:#?}"
            );
        }
        assert!(
            imported
                .toml
                .contains("# NOT TRANSLATED: add_header X-A b (t.conf:1)"),
            "{}",
            imported.toml
        );
    }

    #[test]
    fn upstream_policies_servers_limits_and_tls_translate() {
        let imported = import(
            "limit_conn_zone $binary_remote_addr zone=addr:10m;\n\
             limit_req_zone $binary_remote_addr zone=req:10m rate=5r/s;\n\
             upstream app { hash $arg_room consistent; server 127.0.0.1:1 weight=2 max_fails=3 fail_timeout=5s; server 127.0.0.1:2 down; keepalive 8; }\n\
             server { listen 127.0.0.1:443 ssl default_server; ssl_certificate c.pem; ssl_certificate_key k.pem;\n\
               location ~* \\.php$ { return 403; }\n\
               location = /exact { return 301 https://example.com/; }\n\
               location / { limit_conn addr 3; limit_req zone=req burst=10 nodelay;\n\
                 proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection upgrade; } }\n\
             server { listen 127.0.0.1:80; return 301 https://$host$request_uri; }",
        );
        assert!(
            !imported.differs(),
            "{:?}\n{}",
            imported.notes,
            imported.toml
        );
        let toml = &imported.toml;
        for expected in [
            "balance = \"hash\"\nhash_key = \"$arg_room\"\nconsistent = true",
            "servers = [{ address = \"127.0.0.1:1\", weight = 2, max_fails = 3, fail_timeout = \"5s\" }, { address = \"127.0.0.1:2\", down = true }]",
            "tls = { cert = \"c.pem\", key = \"k.pem\" }",
            "path = '~* \\.php$'\nreturn = { status = 403 }",
            "path = \"= /exact\"\nreturn = { status = 301, location = \"https://example.com/\" }",
            "limit_conn = 3\nlimit_conn_key = \"$binary_remote_addr\"",
            "limit_req = { rate = \"5r/s\", burst = 10, key = \"$binary_remote_addr\" }",
            "listen = \"127.0.0.1:80\"\nredirect_http = true",
        ] {
            assert!(toml.contains(expected), "{expected}\nnot in\n{toml}");
        }
    }
}
