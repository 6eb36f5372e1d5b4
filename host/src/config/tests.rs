use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use super::*;

fn guide(name: &str) -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/nginx-guide")
        .join(name);
    Config::load(&path).unwrap_or_else(|error| panic!("{error}"))
}

fn parse(text: &str) -> Config {
    Config::parse(text, "test.toml").unwrap_or_else(|error| panic!("{error}"))
}

/// The error text for `text`, which must be refused.
fn errors(text: &str) -> String {
    Config::parse(text, "test.toml")
        .expect_err("the configuration should be refused")
        .to_string()
}

/// The filter crates of the workspace (`plugins/filter-NAME`), sorted: the
/// built-in filter names the embedded plugins must offer.
fn filter_crates() -> Vec<String> {
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    let mut names: Vec<String> = std::fs::read_dir(plugins)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|dir| dir.strip_prefix("filter-").map(str::to_owned))
        .collect();
    names.sort();
    names
}

fn proxy(location: &Location) -> (&str, Option<&str>) {
    match &location.action {
        LocationAction::Proxy { upstream, uri, .. } => (upstream, uri.as_deref()),
        other => panic!("expected proxy, got {other:?}"),
    }
}

fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

const HOUR: Duration = Duration::from_secs(3600);
const MINUTE: Duration = Duration::from_secs(60);

/// A configuration using every key of the spec.
const FULL: &str = r#"
admin = "127.0.0.1:9900"
max_connections = 500
workers = 3
shutdown_grace = "30s"

[plugins]
router = "plugins/router.wasm"
call_timeout = "20ms"
call_timeout_per_mib = "5ms"
ban_after_overruns = 5
ban_time = "10m"
memory_limit = "32m"
instances = 50
cache_dir = "/tmp/wasp-cache"

[upstreams.websocket_servers]
balance = "hash"
hash_key = "$arg_room"
consistent = true
next_upstream_tries = 3
servers = [
  "127.0.0.1:8081",
  { address = "127.0.0.1:8082", weight = 5, max_fails = 2, fail_timeout = "30s", down = true },
]
health = { path = "/health", interval = "2s", rise = 1, fall = 5, websocket = true }

[[server]]
listen = ["127.0.0.1:8443", "[::1]:8443"]
server_name = ["chat.example.com", "*.chat.example.com"]
tls = { cert = "cert.pem", key = "key.pem" }
client_header_timeout = "10s"
client_max_body_size = "8m"
max_header_size = "16k"
strict_websocket = true

[[server.location]]
path = "/ws/"
proxy_pass = "http://websocket_servers/chat/"
set_headers = { Upgrade = "$http_upgrade", Connection = "$connection_upgrade" }
limit_conn = 10
limit_conn_status = 429
limit_req = { rate = "60r/m", burst = 20 }
origins = ["https://chat.example.com", "https://*.example.com"]
allow_missing_origin = false
filters = ["max-size", { plugin = "json", config = { required = ["type"], direction = "client" } }, { plugin = "./my-filter.wasm", fail = "open" }]
max_message_size = "64k"

[[server.location]]
path = "= /health"
return = { status = 200, body = "ok" }

[[server.location]]
path = "^~ /static/"
root = "/var/www"

[[server.location]]
path = "~ \\.php$"
proxy_pass = "http://127.0.0.1:9000"

[[server.location]]
path = "~* \\.(png|jpg)$"
root = "/var/images"

[[server]]
listen = "127.0.0.1:8000"
redirect_http = true

[[server.location]]
path = "/old"
return = { status = 301, location = "https://example.com/" }
"#;

#[test]
fn embedded_default_is_the_chat_app() {
    let config = Config::embedded_default();
    assert_eq!(config.servers.len(), 1);
    let server = &config.servers[0];
    assert_eq!(server.listen, ["127.0.0.1:8000"]);
    assert_eq!(
        server.locations[0].action,
        LocationAction::Static {
            root: PathBuf::from("examples/chat-app/public"),
            index: vec!["index.html".into()],
            try_files: vec!["$uri".into(), "$uri/".into(), "/index.html".into()],
        }
    );
    let ws = &server.locations[1];
    assert_eq!((ws.kind, ws.pattern.as_str()), (MatchKind::Prefix, "/ws/"));
    assert_eq!(proxy(ws), ("127.0.0.1:8080", None));
    // Written order, not alphabetical.
    assert_eq!(
        ws.set_headers,
        headers(&[
            ("Upgrade", "$http_upgrade"),
            ("Connection", "upgrade"),
            ("Host", "$host"),
            ("X-Real-IP", "$remote_addr"),
            ("X-Forwarded-For", "$proxy_add_x_forwarded_for"),
        ])
    );
    assert_eq!((ws.read_timeout, ws.send_timeout), (HOUR, HOUR));
    assert_eq!(ws.connect_timeout, MINUTE);
    assert_eq!(
        config.upstreams["127.0.0.1:8080"].servers[0].address,
        "127.0.0.1:8080"
    );
}

#[test]
fn every_guide_example_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/nginx-guide");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "toml") {
            let config = Config::load(&path).unwrap_or_else(|error| panic!("{error}"));
            assert_eq!(Config::parse(&config.render(), "rendered").unwrap(), config);
            count += 1;
        }
    }
    assert!(count >= 7, "only {count} examples in {}", dir.display());
}

#[test]
fn guide_basic() {
    let config = guide("basic.toml");
    let server = &config.servers[0];
    assert_eq!(server.server_names, ["example.com"]);
    let location = &server.locations[0];
    assert_eq!(location.pattern, "/socket/");
    assert_eq!(proxy(location), ("backend_server", None));
    assert_eq!(
        location.set_headers,
        headers(&[("Upgrade", "$http_upgrade"), ("Connection", "upgrade")])
    );
    assert_eq!(location.read_timeout, MINUTE);
    let upstream = &config.upstreams["backend_server"];
    assert_eq!(upstream.balance, Balance::RoundRobin);
    assert_eq!(upstream.servers[0].address, "127.0.0.1:8080");
}

#[test]
fn guide_timeouts() {
    let location = &guide("timeouts.toml").servers[0].locations[0];
    assert_eq!(
        (
            location.read_timeout,
            location.send_timeout,
            location.connect_timeout
        ),
        (HOUR, HOUR, HOUR)
    );
}

#[test]
fn guide_complete() {
    let location = &guide("complete.toml").servers[0].locations[0];
    assert_eq!(
        location.set_headers,
        headers(&[
            ("Upgrade", "$http_upgrade"),
            ("Connection", "$connection_upgrade"),
            ("X-Real-IP", "$remote_addr"),
            ("X-Forwarded-For", "$proxy_add_x_forwarded_for"),
            ("Host", "$host"),
        ])
    );
    assert_eq!(location.connect_timeout, HOUR);
    assert_eq!(location.buffer_size, 16 * 1024);
}

#[test]
fn guide_chat() {
    let config = guide("chat.toml");
    let server = &config.servers[0];
    assert_eq!(server.server_names, ["chat.example.com"]);
    let [root, ws] = &server.locations[..] else {
        panic!("two locations expected");
    };
    assert_eq!((root.id, ws.id), (0, 1));
    assert!(
        matches!(&root.action, LocationAction::Static { index, .. } if index == &["index.html"])
    );
    assert_eq!(proxy(ws), ("127.0.0.1:8080", None));
    assert_eq!(ws.set_headers.len(), 5);
    assert_eq!((ws.read_timeout, ws.send_timeout), (HOUR, HOUR));
}

#[test]
fn guide_load_balancing() {
    let config = guide("load-balancing.toml");
    let upstream = &config.upstreams["websocket_servers"];
    assert_eq!(upstream.balance, Balance::IpHash);
    let addresses: Vec<&str> = upstream
        .servers
        .iter()
        .map(|s| s.address.as_str())
        .collect();
    assert_eq!(
        addresses,
        ["127.0.0.1:8081", "127.0.0.1:8082", "127.0.0.1:8083"]
    );
    assert_eq!(
        proxy(&config.servers[0].locations[0]),
        ("websocket_servers", None)
    );
    assert_eq!(config.upstreams.len(), 1);
}

#[test]
fn guide_limit_conn() {
    let location = &guide("limit-conn.toml").servers[0].locations[0];
    assert_eq!(location.limit_conn, Some(10));
    assert_eq!(location.limit_conn_key, "$binary_remote_addr");
    assert_eq!(location.limit_conn_status, 503);
}

#[test]
fn guide_tls() {
    let config = guide("tls.toml");
    assert_eq!(
        config.servers[0].tls,
        Some(TlsFiles {
            cert: "/path/to/cert.pem".into(),
            key: "/path/to/key.pem".into()
        })
    );
    // TLS offers HTTP/2 by default (nginx needs `http2 on;`).
    assert!(config.servers[0].http2);
    assert!(config.servers[1].redirect_http);
    assert!(!config.servers[1].http2);
    assert!(config.servers[1].locations.is_empty());
}

#[test]
fn defaults_are_nginx_like() {
    let config = parse(
        "[[server]]\nlisten = \"127.0.0.1:8000\"\n[[server.location]]\npath = \"/\"\nproxy_pass = \"http://127.0.0.1:8080\"\n",
    );
    assert_eq!(config.admin, None);
    assert_eq!(config.max_connections, 10_000);
    assert_eq!(config.shutdown_grace, Duration::from_secs(10));
    assert_eq!(
        config.plugins,
        PluginSettings {
            router: None,
            balancer: None,
            origin: None,
            call_timeout: Duration::from_millis(10),
            call_timeout_per_mib: Duration::from_millis(10),
            ban_after_overruns: 3,
            ban_time: Duration::from_secs(60),
            memory_limit: 64 << 20,
            instances: 1000,
            cache_dir: None,
        }
    );
    assert_eq!(
        config.upstreams["127.0.0.1:8080"],
        Upstream {
            balance: Balance::RoundRobin,
            hash_key: None,
            consistent: false,
            next_upstream_tries: 0,
            servers: vec![UpstreamServer {
                address: "127.0.0.1:8080".into(),
                weight: 1,
                max_fails: 1,
                fail_timeout: Duration::from_secs(10),
                backup: false,
                down: false,
            }],
            health: None,
            keepalive: None,
        }
    );
    let server = &config.servers[0];
    assert!(server.server_names.is_empty());
    assert_eq!(server.tls, None);
    assert!(!server.redirect_http && !server.strict_websocket);
    // HTTP/2 is on by default with TLS only (no h2c unless asked).
    assert!(!server.http2);
    assert_eq!(server.client_header_timeout, MINUTE);
    assert_eq!(server.client_body_timeout, MINUTE);
    assert_eq!(server.client_max_body_size, 1 << 20);
    assert_eq!(server.max_header_size, 32 << 10);
    let location = &server.locations[0];
    assert_eq!(location.set_headers, []);
    assert_eq!(
        (
            location.connect_timeout,
            location.read_timeout,
            location.send_timeout
        ),
        (MINUTE, MINUTE, MINUTE)
    );
    assert_eq!(location.buffer_size, 4096);
    assert_eq!(location.limit_conn, None);
    assert_eq!(location.limit_conn_key, "$binary_remote_addr");
    assert_eq!(location.limit_conn_status, 503);
    assert_eq!(location.limit_req, None);
    assert!(location.origins.is_empty() && location.allow_missing_origin);
    assert!(location.filters.is_empty());
    assert_eq!(location.max_message_size, 1 << 20);
}

#[test]
fn full_spec_example() {
    let config = parse(FULL);
    assert_eq!(config.admin, Some("127.0.0.1:9900".parse().unwrap()));
    assert_eq!(config.max_connections, 500);
    assert_eq!(config.workers, Some(3));
    assert_eq!(
        config.plugins.router,
        Some(PathBuf::from("plugins/router.wasm"))
    );
    assert_eq!(config.plugins.call_timeout, Duration::from_millis(20));
    assert_eq!(
        config.plugins.call_timeout_per_mib,
        Duration::from_millis(5)
    );
    assert_eq!(config.plugins.ban_after_overruns, 5);
    assert_eq!(config.plugins.ban_time, Duration::from_secs(600));
    assert_eq!(config.plugins.memory_limit, 32 << 20);

    let upstream = &config.upstreams["websocket_servers"];
    assert_eq!(upstream.balance, Balance::Hash);
    assert_eq!(upstream.hash_key.as_deref(), Some("$arg_room"));
    assert!(upstream.consistent);
    assert_eq!(upstream.next_upstream_tries, 3);
    assert_eq!(upstream.servers[0].weight, 1);
    let second = &upstream.servers[1];
    assert_eq!((second.weight, second.max_fails, second.down), (5, 2, true));
    assert_eq!(second.fail_timeout, Duration::from_secs(30));
    assert_eq!(
        upstream.health,
        Some(HealthCheck {
            path: "/health".into(),
            interval: Duration::from_secs(2),
            rise: 1,
            fall: 5,
            websocket: true,
        })
    );

    let server = &config.servers[0];
    assert_eq!(server.listen, ["127.0.0.1:8443", "[::1]:8443"]);
    assert_eq!(server.max_header_size, 16 << 10);
    let kinds: Vec<(MatchKind, &str)> = server
        .locations
        .iter()
        .map(|l| (l.kind, l.pattern.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            (MatchKind::Prefix, "/ws/"),
            (MatchKind::Exact, "/health"),
            (MatchKind::PrefixStopRegex, "/static/"),
            (MatchKind::Regex, "\\.php$"),
            (MatchKind::RegexNoCase, "\\.(png|jpg)$"),
        ]
    );
    let ws = &server.locations[0];
    assert_eq!(proxy(ws), ("websocket_servers", Some("/chat/")));
    assert_eq!(ws.limit_conn_status, 429);
    assert_eq!(
        ws.limit_req,
        Some(LimitReq {
            rate_per_sec: 1.0,
            burst: 20,
            key: "$binary_remote_addr".into()
        })
    );
    assert!(!ws.allow_missing_origin);
    assert_eq!(
        ws.filters,
        [
            FilterSpec {
                plugin: "max-size".into(),
                config: json!({}),
                fail_open: false
            },
            FilterSpec {
                plugin: "json".into(),
                config: json!({ "required": ["type"], "direction": "client" }),
                fail_open: false
            },
            FilterSpec {
                plugin: "./my-filter.wasm".into(),
                config: json!({}),
                fail_open: true
            },
        ]
    );
    assert_eq!(ws.max_message_size, 64 << 10);
    assert_eq!(
        server.locations[1].action,
        LocationAction::Return {
            status: 200,
            headers: vec![],
            body: "ok".into()
        }
    );
    let old = &config.servers[1].locations[0];
    assert_eq!(old.id, 5);
    assert_eq!(
        old.action,
        LocationAction::Return {
            status: 301,
            headers: headers(&[("location", "https://example.com/")]),
            body: String::new()
        }
    );
    assert_eq!(proxy(&server.locations[3]), ("127.0.0.1:9000", None));

    let rendered = config.render();
    assert_eq!(
        Config::parse(&rendered, "rendered").unwrap(),
        config,
        "{rendered}"
    );
}

#[test]
fn router_json_contract() {
    let json: Value = serde_json::from_str(&parse(FULL).router_json()).unwrap();
    let server = &json["servers"][0];
    assert_eq!(server["listen"], json!(["127.0.0.1:8443", "[::1]:8443"]));
    assert_eq!(
        server["server_names"],
        json!(["chat.example.com", "*.chat.example.com"])
    );
    assert_eq!(
        server["locations"][0],
        json!({ "id": 0, "kind": "prefix", "pattern": "/ws/", "action": "proxy",
                "upstream": "websocket_servers", "uri": "/chat/" })
    );
    assert_eq!(
        server["locations"][1],
        json!({ "id": 1, "kind": "exact", "pattern": "/health", "action": "return",
                "return": { "status": 200, "headers": [], "body": "ok" } })
    );
    assert_eq!(
        server["locations"][2],
        json!({ "id": 2, "kind": "prefix_stop_regex", "pattern": "/static/", "action": "static" })
    );
    assert_eq!(
        server["locations"][3],
        json!({ "id": 3, "kind": "regex", "pattern": "\\.php$", "action": "proxy",
                "upstream": "127.0.0.1:9000", "uri": null })
    );
    assert_eq!(server["locations"][4]["kind"], "regex_nocase");
    assert_eq!(
        json["servers"][1]["locations"][0]["return"],
        json!({ "status": 301, "headers": [["location", "https://example.com/"]], "body": "" })
    );
    assert_eq!(json["servers"][1]["server_names"], json!([]));
}

#[test]
fn balancer_json_contract() {
    let json: Value = serde_json::from_str(&guide("load-balancing.toml").balancer_json()).unwrap();
    assert_eq!(
        json,
        json!({ "upstreams": { "websocket_servers": { "balance": "ip_hash", "consistent": false,
            "servers": [
                { "address": "127.0.0.1:8081", "weight": 1, "backup": false },
                { "address": "127.0.0.1:8082", "weight": 1, "backup": false },
                { "address": "127.0.0.1:8083", "weight": 1, "backup": false },
            ] } } })
    );
    let json: Value = serde_json::from_str(&parse(FULL).balancer_json()).unwrap();
    assert_eq!(json["upstreams"]["websocket_servers"]["balance"], "hash");
    assert_eq!(json["upstreams"]["websocket_servers"]["consistent"], true);
    assert_eq!(
        json["upstreams"]["websocket_servers"]["servers"][1]["weight"],
        5
    );
    assert_eq!(
        json["upstreams"]["127.0.0.1:9000"]["balance"],
        "round_robin"
    );
}

#[test]
fn origin_json_contract() {
    let json: Value = serde_json::from_str(&parse(FULL).origin_json()).unwrap();
    assert_eq!(
        json,
        json!({ "locations": { "0": {
            "origins": ["https://chat.example.com", "https://*.example.com"],
            "allow_missing": false } } })
    );
    // The embedded default (the chat example) checks Origin on /ws/ only.
    let json: Value = serde_json::from_str(&Config::embedded_default().origin_json()).unwrap();
    assert_eq!(
        json,
        json!({ "locations": { "1": {
            "origins": ["http://127.0.0.1:8000", "http://localhost:8000"],
            "allow_missing": true } } })
    );
}

#[test]
fn proxy_pass_forms() {
    let config = parse(
        r#"
[upstreams.app]
servers = ["127.0.0.1:8081"]
[[server]]
listen = "127.0.0.1:8000"
[[server.location]]
path = "/a/"
proxy_pass = "http://app/new/"
[[server.location]]
path = "/b/"
proxy_pass = "http://localhost"
[[server.location]]
path = "/c/"
proxy_pass = "http://backend.internal/"
[[server.location]]
path = "/d/"
proxy_pass = "http://[::1]:9000"
[[server.location]]
path = "/e/"
proxy_pass = "http://localhost:80/x"
"#,
    );
    let targets: Vec<(&str, Option<&str>)> = config.locations().map(proxy).collect();
    assert_eq!(
        targets,
        [
            ("app", Some("/new/")),
            ("localhost:80", None),
            ("backend.internal:80", Some("/")),
            ("[::1]:9000", None),
            ("localhost:80", Some("/x")),
        ]
    );
    let names: Vec<&str> = config.upstreams.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["[::1]:9000", "app", "backend.internal:80", "localhost:80"]
    );
}

#[test]
fn upstream_server_without_port_is_port_80() {
    let config = parse(
        "[upstreams.u]\nservers = [\"backend1.example.com\"]\n[[server]]\nlisten = \"127.0.0.1:8000\"\n",
    );
    assert_eq!(
        config.upstreams["u"].servers[0].address,
        "backend1.example.com:80"
    );
}

const LOCATION_HEAD: &str = "[[server]]\nlisten = \"127.0.0.1:8000\"\n[[server.location]]\n";

#[test]
fn every_filter_crate_is_a_builtin_filter() {
    let names = filter_crates();
    assert!(names.len() >= 4, "{names:?}");
    let list = names
        .iter()
        .map(|name| format!("{name:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let config = parse(&format!(
        "{LOCATION_HEAD}path = \"/\"\nproxy_pass = \"http://127.0.0.1:8080\"\nfilters = [{list}]\n"
    ));
    let plugins: Vec<&str> = config
        .locations()
        .next()
        .unwrap()
        .filters
        .iter()
        .map(|f| f.plugin.as_str())
        .collect();
    assert_eq!(plugins, names);
}

#[test]
fn error_unknown_key() {
    let text = format!(
        "{LOCATION_HEAD}path = \"/\"\nproxy_pass = \"http://127.0.0.1:8080\"\nproxy_read_timeout = \"60s\"\n"
    );
    let error = errors(&text);
    assert!(
        error.starts_with("test.toml:6:1: unknown field `proxy_read_timeout`, expected one of"),
        "{error}"
    );
    assert!(!error.contains('\n'), "{error}");

    let error = errors("lisen = \"127.0.0.1:8000\"\n");
    assert!(
        error.starts_with("test.toml:1:1: unknown field `lisen`"),
        "{error}"
    );
}

#[test]
fn error_bad_duration() {
    let text = format!(
        "{LOCATION_HEAD}path = \"/\"\nproxy_pass = \"http://127.0.0.1:8080\"\nread_timeout = \"10 seconds\"\n"
    );
    assert_eq!(
        errors(&text),
        "test.toml:6:16: invalid duration `10 seconds`: use a number with ms, s, m, h or d (e.g. \"500ms\", \"60s\", \"1h\"); a bare integer is seconds"
    );
    let text = format!(
        "{LOCATION_HEAD}path = \"/\"\nproxy_pass = \"http://127.0.0.1:8080\"\nbuffer_size = \"16 kilo\"\n"
    );
    assert!(errors(&text).starts_with("test.toml:6:15: invalid size `16 kilo`"));
}

#[test]
fn error_missing_upstream() {
    let text = format!("{LOCATION_HEAD}path = \"/\"\nproxy_pass = \"http://foo\"\n");
    assert_eq!(
        errors(&text),
        "test.toml:5:14: proxy_pass refers to unknown upstream `foo` (declare [upstreams.foo] or write foo:PORT)"
    );
}

#[test]
fn error_bad_regex() {
    let text =
        format!("{LOCATION_HEAD}path = \"~ ^/(chat\"\nproxy_pass = \"http://127.0.0.1:8080\"\n");
    assert_eq!(
        errors(&text),
        "test.toml:4:8: invalid regex `^/(chat`: unclosed group"
    );
}

#[test]
fn error_two_actions() {
    let text = format!(
        "{LOCATION_HEAD}path = \"/\"\nproxy_pass = \"http://127.0.0.1:8080\"\nroot = \"/var/www\"\n"
    );
    assert_eq!(
        errors(&text),
        "test.toml:6:8: location `/` has both proxy_pass and root; use exactly one of proxy_pass, root or return"
    );
    let text = format!("{LOCATION_HEAD}path = \"/\"\n");
    assert_eq!(
        errors(&text),
        "test.toml:4:8: location `/` needs one of proxy_pass, root or return"
    );
}

#[test]
fn several_errors_at_once() {
    let text = r#"[upstreams.lb]
balance = "hash"
servers = [{ address = "127.0.0.1:8081", weight = 0 }]

[[server]]
listen = "8000"

[[server.location]]
path = "/ws/"
proxy_pass = "ftp://lb"
limit_conn_status = 200

[[server.location]]
path = "/ws/"
proxy_pass = "http://lb"
filters = ["gzip"]

[[server.location]]
path = "~ \\.php$"
proxy_pass = "http://lb/index.php"
"#;
    let unknown_filter = format!(
        "test.toml:16:12: unknown filter `gzip`: use {} or a path to a .wasm file",
        filter_crates().join(", ")
    );
    let expected = [
        "test.toml:2:11: balance = \"hash\" needs a hash_key, e.g. \"$remote_addr\"",
        "test.toml:3:51: weight must be at least 1",
        "test.toml:6:10: listen: `8000` is not an IP:PORT address (e.g. 127.0.0.1:8000, 0.0.0.0:80, [::]:443)",
        "test.toml:10:14: proxy_pass must look like http://NAME[/uri] or https://NAME[/uri], got `ftp://lb`",
        "test.toml:11:21: limit_conn_status must be between 400 and 599",
        "test.toml:14:8: duplicate location `/ws/` in this server (first at line 9)",
        unknown_filter.as_str(),
        "test.toml:20:14: proxy_pass cannot have a URI part in a regex location (nginx rule)",
    ];
    assert_eq!(errors(text), expected.join("\n"));
}

#[test]
fn more_semantic_errors() {
    let cases = [
        (
            "",
            "test.toml:1:1: no [[server]] block: a configuration needs at least one",
        ),
        (
            "[[server]]\n",
            "test.toml:1:1: a server needs at least one `listen` address",
        ),
        (
            "[upstreams.u]\nservers = []\n[[server]]\nlisten = \"127.0.0.1:1\"\n",
            "test.toml:2:11: upstream `u` needs at least one server",
        ),
        (
            "[upstreams.u]\nservers = [\"a:1\"]\nhash_key = \"$uri\"\n[[server]]\nlisten = \"127.0.0.1:1\"\n",
            "test.toml:3:12: hash_key only applies with balance = \"hash\"",
        ),
        (
            "[[server]]\nlisten = \"127.0.0.1:1\"\ntls = { cert = \"\", key = \"k.pem\" }\n",
            "test.toml:3:16: tls.cert must not be empty",
        ),
        (
            "[[server]]\nlisten = \"127.0.0.1:1\"\n[[server.location]]\npath = \"/\"\nproxy_pass = \"http://127.0.0.1:1\"\nset_headers = { \"Bad Name\" = \"x\" }\n",
            "test.toml:6:17: `Bad Name` is not a valid header name",
        ),
        (
            "[[server]]\nlisten = \"127.0.0.1:1\"\n[[server.location]]\npath = \"/\"\nproxy_pass = \"http://127.0.0.1:1\"\nlimit_req = { rate = \"10/s\" }\n",
            "test.toml:6:22: invalid rate `10/s`: use \"Nr/s\" or \"Nr/m\" (e.g. \"10r/s\")",
        ),
        (
            "[[server]]\nlisten = \"127.0.0.1:1\"\n[[server.location]]\npath = \"/\"\nproxy_pass = \"http://127.0.0.1:1\"\nfilters = [{ plugin = \"json\", fail = \"maybe\" }]\n",
            "test.toml:6:38: unknown variant `maybe`, expected `closed` or `open`",
        ),
        (
            "[[server]]\nlisten = \"127.0.0.1:1\"\n[[server]]\nlisten = [\"127.0.0.1:1\"]\ntls = { cert = \"c.pem\", key = \"k.pem\" }\n",
            "test.toml:4:10: listen address 127.0.0.1:1 is used both with and without tls",
        ),
        (
            "[[server]]\nlisten = \"127.0.0.1:1\"\n[[server.location]]\npath = \"ws\"\nreturn = { status = 204 }\n",
            "test.toml:4:8: location path `ws` must start with `/` (or a modifier: =, ^~, ~, ~*)",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(errors(text), expected, "for:\n{text}");
    }
}

#[test]
fn error_display_for_unreadable_file() {
    let error = Config::load(Path::new("/nonexistent/wasp.toml")).unwrap_err();
    assert!(
        error.to_string().starts_with("/nonexistent/wasp.toml: "),
        "{error}"
    );
}

#[test]
fn render_fills_in_defaults() {
    let rendered = Config::embedded_default().render();
    for expected in [
        "max_connections = 10000",
        "# workers: one per CPU",
        "call_timeout = \"10ms\"",
        "log_format = \"text\"",
        "call_timeout_per_mib = \"10ms\"",
        "ban_after_overruns = 3",
        "ban_time = \"60s\"",
        "memory_limit = \"64m\"",
        "# upstream 127.0.0.1:8080: implicit (from proxy_pass)",
        "listen = [\"127.0.0.1:8000\"]",
        "read_timeout = \"3600s\"",
        "connect_timeout = \"60s\"",
        "set_headers = { Upgrade = \"$http_upgrade\", Connection = \"upgrade\", Host = \"$host\", X-Real-IP = \"$remote_addr\", X-Forwarded-For = \"$proxy_add_x_forwarded_for\" }",
        "max_message_size = \"1m\"",
    ] {
        assert!(
            rendered.contains(expected),
            "missing {expected:?} in:\n{rendered}"
        );
    }
}

/// Found by `fuzz/` (`config_parse`): values that parsed but whose rendering did not.
#[test]
fn render_round_trips_extreme_durations_and_rates() {
    let base = "[[server]]\nlisten = \"127.0.0.1:1\"\n[[server.location]]\npath = \"/\"\nreturn = { status = 204 }\n";
    // Bare seconds had no upper bound, while the rendered `"Ns"` does.
    assert_eq!(
        errors(&format!("shutdown_grace = 9223372036854775807\n{base}")),
        "test.toml:1:18: duration `9223372036854775807` is too large"
    );
    let most = u64::MAX / 1000;
    let config = parse(&format!("shutdown_grace = {most}\n{base}"));
    assert_eq!(config.shutdown_grace, Duration::from_secs(most));
    // Rates beyond f64's integers, which `{}` printed above u64::MAX or rounded to N ± 1.
    for rate in [
        "18446744073709551615r/s",
        "4448907916947084r/m",
        "7r/m",
        "120r/m",
    ] {
        let config = parse(&format!("{base}limit_req = {{ rate = \"{rate}\" }}\n"));
        let rendered = config.render();
        let again = Config::parse(&rendered, "rendered").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again, config, "{rate}:\n{rendered}");
    }
}

#[test]
fn workers_must_be_at_least_one() {
    let text = "workers = 0\n[[server]]\nlisten = \"127.0.0.1:8000\"\n";
    assert_eq!(errors(text), "test.toml:1:11: workers must be at least 1");
}

#[test]
fn unknown_variables_are_refused_where_they_are_written() {
    // nginx -t: `unknown "nope" variable`. wasp used to expand them to "".
    let text = format!(
        "{LOCATION_HEAD}path = \"/\"\nproxy_pass = \"http://127.0.0.1:8080\"\n\
         set_headers = {{ X-Who = \"$remote_addr $nope\" }}\n\
         limit_conn = 1\nlimit_conn_key = \"$http_x_user$typo\"\n"
    );
    let error = errors(&text);
    assert!(
        error.contains("test.toml:6:17: unknown variable `$nope` in the value of header `X-Who`"),
        "{error}"
    );
    assert!(
        error.contains("test.toml:8:18: unknown variable `$typo`"),
        "{error}"
    );
    let text = "[upstreams.app]\nbalance = \"hash\"\nhash_key = \"${arg_room}-$oops\"\nservers = [\"127.0.0.1:8081\"]\n\
                [[server]]\nlisten = \"127.0.0.1:8000\"\n[[server.location]]\npath = \"/\"\nproxy_pass = \"http://app\"\n";
    assert!(
        errors(text).contains("test.toml:3:12: unknown variable `$oops`"),
        "{}",
        errors(text)
    );
}

#[test]
fn a_max_header_size_under_8k_is_refused_not_raised() {
    // It used to become 8 KiB silently: hyper reads heads with no less.
    let text = "[[server]]\nlisten = \"127.0.0.1:8000\"\nmax_header_size = \"4k\"\n\
                [[server.location]]\npath = \"/\"\nproxy_pass = \"http://127.0.0.1:8080\"\n";
    assert!(
        errors(text).starts_with("test.toml:3:19: max_header_size must be at least 8k"),
        "{}",
        errors(text)
    );
    let text = text.replace("\"4k\"", "\"8k\"");
    assert_eq!(
        Config::parse(&text, "test.toml").unwrap().servers[0].max_header_size,
        8192
    );
}

#[test]
fn buffers_is_refused_with_the_reason() {
    // It was parsed and printed, and changed nothing.
    let text = format!(
        "{LOCATION_HEAD}path = \"/\"\nproxy_pass = \"http://127.0.0.1:8080\"\nbuffers = \"4 16k\"\n"
    );
    let error = errors(&text);
    assert!(
        error.starts_with("test.toml:6:11: buffers (nginx's proxy_buffers) is not supported"),
        "{error}"
    );
}

#[test]
fn connection_settings_of_a_second_server_on_one_address_are_refused_not_ignored() {
    // They apply before the Host header picks a server: only the first
    // server's count (nginx uses the default server's, silently).
    let text = "[[server]]\nlisten = \"127.0.0.1:8000\"\nclient_header_timeout = \"5s\"\n\
                [[server.location]]\npath = \"/\"\nreturn = { status = 200 }\n\
                [[server]]\nlisten = \"127.0.0.1:8000\"\nserver_name = \"b.example\"\n\
                client_header_timeout = \"30s\"\nmax_header_size = \"64k\"\nredirect_http = true\n\
                http2 = true\n[[server.location]]\npath = \"/\"\nreturn = { status = 200 }\n";
    let error = errors(text);
    for (position, key) in [
        ("test.toml:10:25", "client_header_timeout"),
        ("test.toml:11:19", "max_header_size"),
        ("test.toml:12:17", "redirect_http"),
        ("test.toml:13:9", "http2"),
    ] {
        assert!(
            error.contains(&format!(
                "{position}: {key} differs from the first server on 127.0.0.1:8000"
            )),
            "{error}"
        );
    }
    // The same values, or none, are fine.
    let same = text
        .replace("\"30s\"", "\"5s\"")
        .replace("max_header_size = \"64k\"\n", "")
        .replace("redirect_http = true\n", "")
        .replace("http2 = true\n", "");
    Config::parse(&same, "test.toml").unwrap();
}

#[test]
fn access_log_is_inherited_by_servers_that_do_not_set_it() {
    let dir = std::env::temp_dir();
    let file = dir.join("wasp-access.log");
    let text = format!(
        "access_log = {:?}\n\
         [[server]]\nlisten = \"127.0.0.1:8000\"\n\
         [[server]]\nlisten = \"127.0.0.1:8001\"\naccess_log = \"off\"\n\
         [[server]]\nlisten = \"127.0.0.1:8002\"\naccess_log = \"stderr\"\n",
        file.display().to_string()
    );
    let config = parse(&text);
    assert_eq!(config.access_log, AccessLog::File(file.clone()));
    let logs: Vec<&AccessLog> = config.servers.iter().map(|s| &s.access_log).collect();
    assert_eq!(
        logs,
        [&AccessLog::File(file), &AccessLog::Off, &AccessLog::Stderr]
    );
    assert_eq!(parse(&config.render()), config);
    // The default: stderr, as before the setting existed.
    let config = parse("[[server]]\nlisten = \"127.0.0.1:8000\"\n");
    assert_eq!(config.servers[0].access_log, AccessLog::Stderr);
}

#[test]
fn access_log_in_a_missing_directory_is_refused_where_it_is_written() {
    let error =
        errors("[[server]]\nlisten = \"127.0.0.1:8000\"\naccess_log = \"/no/such/dir/a.log\"\n");
    assert_eq!(
        error,
        "test.toml:3:14: access_log: directory `/no/such/dir` does not exist (nor does the file, then)"
    );
    let error = errors("access_log = \"/tmp\"\n[[server]]\nlisten = \"127.0.0.1:8000\"\n");
    assert_eq!(error, "test.toml:1:14: access_log: `/tmp` is a directory");
}

#[test]
fn every_unknown_key_is_reported_with_a_suggestion_when_one_is_close() {
    let text = format!(
        "lisen = \"x\"\n{LOCATION_HEAD}path = \"/\"\nproxy_pass = \"http://127.0.0.1:8080\"\n\
         read_timout = \"1s\"\nproxy_read_timeout = \"60s\"\n[plugins]\ncall_timeot = \"1ms\"\n"
    );
    let error = errors(&text);
    let lines: Vec<&str> = error.lines().collect();
    assert_eq!(lines.len(), 4, "{error}");
    // `listen` is a server's key: not one edit from any top-level key.
    assert!(
        lines[0].starts_with("test.toml:1:1: unknown field `lisen`, expected one of"),
        "{error}"
    );
    assert_eq!(
        lines[1],
        "test.toml:7:1: unknown field `read_timout`: did you mean `read_timeout`?"
    );
    assert!(
        lines[2].starts_with("test.toml:8:1: unknown field `proxy_read_timeout`, expected one of"),
        "{error}"
    );
    assert_eq!(
        lines[3],
        "test.toml:10:1: unknown field `call_timeot`: did you mean `call_timeout`?"
    );
}

#[test]
fn unknown_keys_do_not_hide_the_semantic_checks() {
    let text =
        format!("{LOCATION_HEAD}path = \"/\"\nproxy_pass = \"http://foo\"\nbufer_size = \"8k\"\n");
    assert_eq!(
        errors(&text),
        "test.toml:5:14: proxy_pass refers to unknown upstream `foo` (declare [upstreams.foo] or write foo:PORT)\n\
         test.toml:6:1: unknown field `bufer_size`: did you mean `buffer_size`?"
    );
}

#[test]
fn a_value_of_the_wrong_type_is_one_problem_not_two() {
    // `path` taken out would be "missing field `path`" as well.
    let text = format!("{LOCATION_HEAD}path = 5\nproxy_pass = \"http://127.0.0.1:8080\"\n");
    let error = errors(&text);
    assert_eq!(error.lines().count(), 1, "{error}");
    assert!(
        error.starts_with("test.toml:4:8: invalid type: integer `5`"),
        "{error}"
    );
}

#[test]
fn every_syntax_error_is_reported() {
    let error = errors("a = \nb = [1,\n[[server]\n");
    assert!(error.lines().count() >= 2, "{error}");
    assert!(error.starts_with("test.toml:1:"), "{error}");
}

#[test]
fn proxy_pass_https_and_its_tls_settings() {
    let text = "[upstreams.lb]\nservers = [\"10.0.0.1:8443\"]\n\
                [[server]]\nlisten = \"127.0.0.1:8000\"\n\
                [[server.location]]\npath = \"/a/\"\nproxy_pass = \"https://backend.example\"\n\
                [[server.location]]\npath = \"/b/\"\nproxy_pass = \"https://lb/x\"\n\
                proxy_ssl_verify = false\nproxy_ssl_server_name = false\nproxy_ssl_name = \"b.example\"\n\
                proxy_ssl_trusted_certificate = \"ca.pem\"\n\
                proxy_ssl_certificate = \"c.pem\"\nproxy_ssl_certificate_key = \"c.key\"\n";
    let config = Config::parse(text, "test.toml").unwrap();
    let locations: Vec<&Location> = config.locations().collect();
    let LocationAction::Proxy { upstream, tls, .. } = &locations[0].action else {
        panic!("not a proxy")
    };
    // nginx: https without a port is 443; verification and SNI on by default.
    assert_eq!(upstream, "backend.example:443");
    let tls = tls.as_ref().unwrap();
    assert!(tls.verify && tls.server_name);
    assert_eq!(tls.name, "backend.example");
    assert_eq!(tls.trusted_certificate, None);
    let LocationAction::Proxy { upstream, uri, tls } = &locations[1].action else {
        panic!("not a proxy")
    };
    assert_eq!((upstream.as_str(), uri.as_deref()), ("lb", Some("/x")));
    let tls = tls.as_ref().unwrap();
    assert!(!tls.verify && !tls.server_name);
    assert_eq!(tls.name, "b.example");
    assert_eq!(
        tls.trusted_certificate.as_deref(),
        Some(Path::new("ca.pem"))
    );
    assert_eq!(
        tls.client_certificate.as_ref().unwrap().key,
        Path::new("c.key")
    );
    // The rendering parses back to the same configuration.
    assert_eq!(Config::parse(&config.render(), "rendered").unwrap(), config);

    let refused = "[upstreams.lb]\nservers = [\"10.0.0.1:8443\"]\nhealth = { path = \"/h\" }\n\
                   [[server]]\nlisten = \"127.0.0.1:8000\"\n\
                   [[server.location]]\npath = \"/a/\"\nproxy_pass = \"http://lb\"\nproxy_ssl_verify = false\n\
                   [[server.location]]\npath = \"/b/\"\nproxy_pass = \"https://lb\"\nproxy_ssl_certificate = \"c.pem\"\n";
    let error = errors(refused);
    for expected in [
        "test.toml:9:20: proxy_ssl_verify only applies with proxy_pass https://",
        "test.toml:12:14: upstream `lb` has health checks, which speak plain HTTP",
        "test.toml:13:25: proxy_ssl_certificate needs proxy_ssl_certificate_key",
    ] {
        assert!(error.contains(expected), "{expected} not in\n{error}");
    }
}

#[test]
fn upstream_keepalive() {
    let text = "[upstreams.lb]\nservers = [\"10.0.0.1:80\"]\nkeepalive = 8\nkeepalive_requests = 100\n\
                [upstreams.plain]\nservers = [\"10.0.0.2:80\"]\n\
                [[server]]\nlisten = \"127.0.0.1:8000\"\n\
                [[server.location]]\npath = \"/\"\nproxy_pass = \"http://lb\"\n";
    let config = Config::parse(text, "test.toml").unwrap();
    let keepalive = config.upstreams["lb"].keepalive.as_ref().unwrap();
    assert_eq!(keepalive.connections, 8);
    assert_eq!(keepalive.requests, 100);
    assert_eq!(keepalive.timeout, MINUTE);
    assert_eq!(config.upstreams["plain"].keepalive, None);
    assert_eq!(Config::parse(&config.render(), "rendered").unwrap(), config);

    let refused = "[upstreams.lb]\nservers = [\"10.0.0.1:80\"]\nkeepalive_timeout = \"5s\"\n\
                   [upstreams.zero]\nservers = [\"10.0.0.1:80\"]\nkeepalive = 0\n\
                   [[server]]\nlisten = \"127.0.0.1:8000\"\n\
                   [[server.location]]\npath = \"/\"\nproxy_pass = \"http://lb\"\n";
    let error = errors(refused);
    assert!(
        error.contains("test.toml:3:21: keepalive_timeout only applies with keepalive"),
        "{error}"
    );
    assert!(
        error.contains("test.toml:6:13: keepalive must be at least 1"),
        "{error}"
    );
}

#[test]
fn client_body_timeout_is_read_and_must_be_more_than_zero() {
    let server = |value: &str| {
        format!("[[server]]\nlisten = \"127.0.0.1:8000\"\nclient_body_timeout = \"{value}\"\n")
    };
    assert_eq!(
        parse(&server("5s")).servers[0].client_body_timeout,
        Duration::from_secs(5)
    );
    assert_eq!(
        errors(&server("0s")),
        "test.toml:3:23: client_body_timeout must be more than zero"
    );
}

#[test]
fn reuse_port_needs_a_named_port_and_one_setting_per_address() {
    let config = parse(
        "[[server]]\nlisten = \"127.0.0.1:8000\"\nreuse_port = true\n\
         [[server.location]]\npath = \"/\"\nreturn = { status = 200, body = \"\" }\n",
    );
    assert!(config.servers[0].reuse_port);
    assert_eq!(Config::parse(&config.render(), "rendered").unwrap(), config);
    let port_zero = errors(
        "[[server]]\nlisten = \"127.0.0.1:0\"\nreuse_port = true\n\
         [[server.location]]\npath = \"/\"\nreturn = { status = 200, body = \"\" }\n",
    );
    assert!(
        port_zero.contains("test.toml:3:14: reuse_port with port 0"),
        "{port_zero}"
    );
    let differs = errors(
        "[[server]]\nlisten = \"127.0.0.1:8000\"\nreuse_port = true\n\
         [[server.location]]\npath = \"/\"\nreturn = { status = 200, body = \"\" }\n\
         [[server]]\nlisten = \"127.0.0.1:8000\"\nserver_name = \"b\"\nreuse_port = false\n\
         [[server.location]]\npath = \"/\"\nreturn = { status = 200, body = \"\" }\n",
    );
    assert!(
        differs.contains("test.toml:10:14: reuse_port differs from the first server"),
        "{differs}"
    );
}

#[test]
fn cluster_settings_are_checked_and_rendered() {
    let server = "[[server]]\nlisten = \"127.0.0.1:8000\"\n\
                  [[server.location]]\npath = \"/\"\nreturn = { status = 200, body = \"\" }\n";
    let config = parse(&format!(
        "[cluster]\nredis = \"redis://127.0.0.1:6379\"\ninstance = \"edge-1\"\n{server}"
    ));
    let cluster = config.cluster.clone().unwrap();
    assert_eq!(cluster.instance.as_deref(), Some("edge-1"));
    assert_eq!(cluster.timeout, defaults::CLUSTER_TIMEOUT);
    assert_eq!(Config::parse(&config.render(), "rendered").unwrap(), config);
    let refused = errors(&format!(
        "[cluster]\nredis = \"127.0.0.1:6379\"\ninstance = \"edge 1\"\ntimeout = \"0s\"\n{server}"
    ));
    for expected in [
        "test.toml:2:9: cluster.redis: expected a redis://host:port",
        "test.toml:3:12: cluster.instance:",
        "test.toml:4:11: cluster.timeout must be above zero",
    ] {
        assert!(refused.contains(expected), "{expected} in {refused}");
    }
}
