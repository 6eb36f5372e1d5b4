//! A small routing table and a request head, both built from the fuzz input,
//! through the default router (`NginxRouter`, called natively). `configure`
//! may refuse the table; `route` must never panic, and its decision must be
//! consistent with the table and safe to act on:
//! - a `static-files` path for a `/`-path (the router normalizes those and
//!   answers 400 when `..` climbs above the root, path.rs) must not climb above
//!   the root after percent-decoding and `..` resolution;
//! - decisions name a location of the table with the same action;
//! - a clean request target (no controls, spaces, `#`) gives a clean upstream
//!   `uri` and redirect `location`: no header injection via decoded bytes.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use wasp_plugin_router::NginxRouter;
use wasp_sdk::config::{FixedResponse, Location, LocationAction, MatchKind, RouterConfig, Server};
use wasp_sdk::{Decision, RequestHead, Router};

const LISTENERS: [&str; 3] = ["0.0.0.0:80", "127.0.0.1:8080", "[::]:443"];
/// Words shared by patterns, names and paths so that they meet often.
const WORDS: [&str; 10] = [
    "a",
    "b",
    "admin",
    "static",
    "ws",
    "A",
    "é",
    "x.png",
    "index.html",
    "api",
];
const HOSTS: [&str; 4] = [
    "example.com",
    "www.example.com",
    "chat.example.org",
    "localhost",
];

#[derive(Arbitrary, Debug)]
struct Input {
    servers: Vec<ServerIn>,
    request: RequestIn,
}

#[derive(Arbitrary, Debug)]
struct ServerIn {
    listen: Vec<u8>,
    names: Vec<NameIn>,
    locations: Vec<LocationIn>,
}

#[derive(Arbitrary, Debug)]
enum NameIn {
    Any,
    Exact(u8),
    /// `*.name`
    Leading(u8),
    /// `.name`
    Dotted(u8),
    /// `name.*` (of the name's first label)
    Trailing(u8),
    /// `~` + a regex from tokens
    Regex(Vec<Tok>),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
struct LocationIn {
    kind: Kind,
    pattern: Vec<Tok>,
    action: ActionIn,
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq)]
enum Kind {
    Prefix,
    Exact,
    PrefixStopRegex,
    Regex,
    RegexNocase,
}

#[derive(Arbitrary, Debug)]
enum ActionIn {
    Proxy {
        upstream: u8,
        uri: Option<Vec<Tok>>,
    },
    Static,
    Return {
        status: u16,
        location: Option<Vec<Tok>>,
    },
}

/// Pieces of paths, patterns and regexes.
#[derive(Arbitrary, Debug, Clone)]
enum Tok {
    Slash,
    Dot,
    DotDot,
    Word(u8),
    /// `%XX` of any byte.
    Escape(u8),
    /// `%` followed by two arbitrary characters (often malformed).
    Percent(char, char),
    Char(char),
    /// Regex syntax.
    Meta(u8),
}

#[derive(Arbitrary, Debug)]
struct RequestIn {
    method: u8,
    listener: u8,
    /// Without a leading `/` the path is used as is (`*`, or garbage).
    rooted: bool,
    path: Vec<Tok>,
    query: String,
    host: Option<HostIn>,
}

#[derive(Arbitrary, Debug)]
struct HostIn {
    name: u8,
    sub: Option<u8>,
    port: Option<u16>,
    upper: bool,
    trailing_dot: bool,
    raw: Option<String>,
}

fn render(toks: &[Tok]) -> String {
    let mut out = String::new();
    for tok in toks.iter().take(24) {
        match tok {
            Tok::Slash => out.push('/'),
            Tok::Dot => out.push('.'),
            Tok::DotDot => out.push_str(".."),
            Tok::Word(i) => out.push_str(WORDS[usize::from(*i) % WORDS.len()]),
            Tok::Escape(b) => out.push_str(&format!("%{b:02X}")),
            Tok::Percent(a, b) => {
                out.push('%');
                out.push(*a);
                out.push(*b);
            }
            Tok::Char(c) => out.push(*c),
            Tok::Meta(i) => {
                const META: [&str; 12] = [
                    "^", "$", ".*", "\\.", "(", ")", "|", "+", "?", "[a-z]", "\\d", "(?i)",
                ];
                out.push_str(META[usize::from(*i) % META.len()]);
            }
        }
    }
    out
}

/// A path-like pattern: rooted as the config requires of prefix/exact ones.
fn rooted(toks: &[Tok]) -> String {
    let text = render(toks);
    if text.starts_with('/') {
        text
    } else {
        format!("/{text}")
    }
}

fn host_name(i: u8) -> &'static str {
    HOSTS[usize::from(i) % HOSTS.len()]
}

fn server_name(name: &NameIn) -> String {
    match name {
        NameIn::Any => String::new(),
        NameIn::Exact(i) => host_name(*i).to_owned(),
        NameIn::Leading(i) => format!("*.{}", host_name(*i)),
        NameIn::Dotted(i) => format!(".{}", host_name(*i)),
        NameIn::Trailing(i) => format!("{}.*", host_name(*i).split('.').next().unwrap_or("x")),
        NameIn::Regex(toks) => format!("~{}", render(toks)),
        NameIn::Raw(raw) => raw.chars().take(24).collect(),
    }
}

/// One location of the routing table the host sends the router.
fn location(id: u32, location: &LocationIn) -> Location {
    let kind = match location.kind {
        Kind::Prefix => MatchKind::Prefix,
        Kind::Exact => MatchKind::Exact,
        Kind::PrefixStopRegex => MatchKind::PrefixStopRegex,
        Kind::Regex => MatchKind::Regex,
        Kind::RegexNocase => MatchKind::RegexNoCase,
    };
    let regex = matches!(kind, MatchKind::Regex | MatchKind::RegexNoCase);
    let pattern = if regex {
        render(&location.pattern)
    } else {
        rooted(&location.pattern)
    };
    let action = match &location.action {
        ActionIn::Proxy { upstream, uri } => LocationAction::Proxy {
            upstream: format!("up{}", upstream % 3),
            // The config refuses a URI part in regex locations.
            uri: uri.as_ref().filter(|_| !regex).map(|toks| rooted(toks)),
        },
        ActionIn::Static => LocationAction::Static,
        ActionIn::Return { status, location } => LocationAction::Return {
            response: FixedResponse {
                status: 200 + status % 400,
                headers: location
                    .iter()
                    .map(|toks| ("location".to_owned(), render(toks)))
                    .collect(),
                body: String::new(),
            },
        },
    };
    Location {
        id,
        kind,
        pattern,
        action,
    }
}

fn request_head(request: &RequestIn) -> RequestHead {
    const METHODS: [&str; 5] = ["GET", "POST", "HEAD", "OPTIONS", "CONNECT"];
    let mut path = render(&request.path);
    if request.rooted {
        path.insert(0, '/');
    }
    let mut headers = String::from("user-agent: fuzz\n");
    if let Some(host) = &request.host {
        let mut value = match &host.raw {
            Some(raw) => raw.replace(['\r', '\n'], ""),
            None => match host.sub {
                Some(sub) => format!(
                    "{}.{}",
                    WORDS[usize::from(sub) % WORDS.len()],
                    host_name(host.name)
                ),
                None => host_name(host.name).to_owned(),
            },
        };
        if host.trailing_dot {
            value.push('.');
        }
        if host.upper {
            value = value.to_ascii_uppercase();
        }
        if let Some(port) = host.port {
            value.push_str(&format!(":{port}"));
        }
        headers.push_str(&format!("host: {value}\n"));
    }
    RequestHead {
        method: METHODS[usize::from(request.method) % METHODS.len()].to_owned(),
        path,
        query: request.query.chars().take(16).collect(),
        headers,
        client_ip: "192.0.2.1".into(),
        client_port: 40000,
        listener: LISTENERS[usize::from(request.listener) % LISTENERS.len()].to_owned(),
        tls: false,
        sni: None,
    }
}

/// Percent-decodes and resolves `.`/`..` like a file server would, independently
/// of the router; `None` on a malformed escape or when `..` climbs above `/`.
fn resolve_under_root(path: &str) -> Option<Vec<Vec<u8>>> {
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    let mut segments: Vec<Vec<u8>> = Vec::new();
    for segment in decoded.split(|&b| b == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => {
                segments.pop()?;
            }
            name => segments.push(name.to_vec()),
        }
    }
    Some(segments)
}

/// Visible ASCII other than `#`: what may appear in a request target we send.
fn clean(text: &str, allow_question: bool) -> bool {
    text.bytes()
        .all(|b| (0x21..=0x7e).contains(&b) && b != b'#' && (allow_question || b != b'?'))
}

fuzz_target!(|input: Input| {
    let mut id = 0u32;
    let servers: Vec<Server> = input
        .servers
        .iter()
        .take(4)
        .map(|server| Server {
            listen: server
                .listen
                .iter()
                .take(3)
                .map(|i| LISTENERS[usize::from(*i) % LISTENERS.len()].to_owned())
                .collect(),
            server_names: server.names.iter().take(4).map(server_name).collect(),
            locations: server
                .locations
                .iter()
                .take(8)
                .map(|l| {
                    let this = id;
                    id += 1;
                    location(this, l)
                })
                .collect(),
        })
        .collect();
    let table = RouterConfig { servers };
    let config = serde_json::to_string(&table).expect("a routing table serializes");
    let Ok(mut router) = NginxRouter::configure(&config) else {
        return;
    };
    let locations: Vec<&Location> = table.servers.iter().flat_map(|s| &s.locations).collect();
    let clean_config = locations.iter().all(|l| match &l.action {
        LocationAction::Proxy { uri: Some(uri), .. } => clean(uri, false),
        _ => true,
    });

    let head = request_head(&input.request);
    let decision = router.route(&head);
    // Same head, same answer.
    assert_eq!(
        format!("{decision:?}"),
        format!("{:?}", router.route(&head))
    );

    let clean_request = clean(&head.path, false) && clean(&head.query, true);
    let find = |id: u32| {
        locations
            .iter()
            .find(|l| l.id == id)
            .unwrap_or_else(|| panic!("unknown location {id} in {decision:?}"))
    };
    match &decision {
        Decision::StaticFiles(files) => {
            assert!(
                matches!(find(files.location).action, LocationAction::Static),
                "{decision:?}"
            );
            if head.path.starts_with('/') {
                assert!(
                    resolve_under_root(&files.path).is_some(),
                    "static path escapes the root: {config}\n{head:?}\n{decision:?}"
                );
            }
        }
        Decision::Proxy(proxy) => {
            let LocationAction::Proxy { upstream, .. } = &find(proxy.location).action else {
                panic!("{decision:?}");
            };
            assert_eq!(&proxy.upstream, upstream);
            assert!(proxy.set_headers.is_empty());
            if clean_request && clean_config {
                assert!(
                    clean(&proxy.uri, true),
                    "unclean upstream uri {:?}: {config}\n{head:?}",
                    proxy.uri
                );
            }
        }
        // A `return` location's answer, or one the router makes up.
        Decision::Respond(response) => {
            let returned = locations.iter().any(|l| {
                matches!(&l.action, LocationAction::Return { response: fixed }
                    if fixed.status == response.status && fixed.headers == response.headers)
            });
            if !returned {
                match (response.status, response.headers.as_slice()) {
                    (400 | 404, []) => {}
                    (301, [(name, target)]) if name == "location" => {
                        if clean_request {
                            assert!(clean(target, true), "unclean redirect {target:?}: {head:?}");
                        }
                    }
                    _ => panic!("unexpected answer {response:?} to {head:?}: {config}"),
                }
            }
        }
    }
});
