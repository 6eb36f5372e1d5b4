//! Behaviour of the router through its plugin interface, against the
//! routing-table JSON of the contract.

use wasp_plugin_router::NginxRouter;
use wasp_sdk::{Decision, RequestHead, Router};

fn router(json: &str) -> NginxRouter {
    NginxRouter::configure(json).unwrap_or_else(|e| panic!("configure failed: {e}"))
}

fn configure_error(json: &str) -> String {
    match NginxRouter::configure(json) {
        Ok(_) => panic!("configure accepted {json}"),
        Err(e) => e,
    }
}

fn head(listener: &str, host: &str, target: &str) -> RequestHead {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    RequestHead {
        method: "GET".into(),
        path: path.into(),
        query: query.into(),
        headers: format!("host: {host}\nuser-agent: test"),
        client_ip: "127.0.0.1".into(),
        client_port: 40000,
        listener: listener.into(),
        tls: false,
        sni: None,
    }
}

/// A decision as one comparable line.
fn summary(decision: Decision) -> String {
    match decision {
        Decision::Proxy(p) => {
            assert!(p.set_headers.is_empty());
            format!("proxy {} {} {}", p.location, p.upstream, p.uri)
        }
        Decision::StaticFiles(s) => format!("static {} {}", s.location, s.path),
        Decision::Respond(r) => {
            let headers: Vec<String> = r.headers.iter().map(|(n, v)| format!(" {n}={v}")).collect();
            format!(
                "respond {}{}{}",
                r.status,
                headers.concat(),
                if r.body.is_empty() {
                    String::new()
                } else {
                    format!(" {}", r.body)
                }
            )
        }
    }
}

fn route(router: &mut NginxRouter, target: &str) -> String {
    summary(router.route(&head("0.0.0.0:80", "example.com", target)))
}

/// One server on `0.0.0.0:80` with these locations.
fn single(locations: &str) -> NginxRouter {
    router(&format!(
        r#"{{"servers": [{{"listen": ["0.0.0.0:80"], "locations": [{locations}]}}]}}"#
    ))
}

fn check(router: &mut NginxRouter, cases: &[(&str, &str)]) {
    for (target, want) in cases {
        assert_eq!(route(router, target), *want, "request {target}");
    }
}

/// The example of nginx's `location` documentation, configurations A to E.
#[test]
fn nginx_documentation_example() {
    let mut r = single(
        r#"
        {"id": 0, "kind": "exact", "pattern": "/", "action": "static"},
        {"id": 1, "kind": "prefix", "pattern": "/", "action": "static"},
        {"id": 2, "kind": "prefix", "pattern": "/documents/", "action": "static"},
        {"id": 3, "kind": "prefix_stop_regex", "pattern": "/images/", "action": "static"},
        {"id": 4, "kind": "regex_nocase", "pattern": "\\.(gif|jpg|jpeg)$", "action": "static"}"#,
    );
    check(
        &mut r,
        &[
            ("/", "static 0 /"),
            ("/index.html", "static 1 /index.html"),
            (
                "/documents/document.html",
                "static 2 /documents/document.html",
            ),
            ("/images/1.gif", "static 3 /images/1.gif"),
            ("/documents/1.jpg", "static 4 /documents/1.jpg"),
            // `~*` ignores case; the prefixes do not.
            ("/DOCUMENTS/1.JPG", "static 4 /DOCUMENTS/1.JPG"),
            ("/?q=1", "static 0 /"),
        ],
    );
}

#[test]
fn location_order_follows_nginx() {
    let mut r = single(
        r#"
        {"id": 0, "kind": "prefix", "pattern": "/a/", "action": "static"},
        {"id": 1, "kind": "prefix", "pattern": "/a/b/", "action": "static"},
        {"id": 2, "kind": "prefix_stop_regex", "pattern": "/s/", "action": "static"},
        {"id": 3, "kind": "regex", "pattern": "\\.x$", "action": "static"},
        {"id": 4, "kind": "regex", "pattern": "^/a/.*\\.x$", "action": "static"},
        {"id": 5, "kind": "prefix_stop_regex", "pattern": "/p/", "action": "static"},
        {"id": 6, "kind": "prefix", "pattern": "/p/q/", "action": "static"}"#,
    );
    check(
        &mut r,
        &[
            // The longest prefix wins whatever the order in the file.
            ("/a/b/c", "static 1 /a/b/c"),
            ("/a/c", "static 0 /a/c"),
            // Regexes beat a plain prefix, the first in file order winning.
            ("/a/b/c.x", "static 3 /a/b/c.x"),
            // `~` is case-sensitive.
            ("/a/b/c.X", "static 1 /a/b/c.X"),
            // `^~` stops the regexes, but only when it is the longest prefix.
            ("/s/c.x", "static 2 /s/c.x"),
            ("/p/q/c.x", "static 3 /p/q/c.x"),
            ("/p/c.x", "static 5 /p/c.x"),
            // Nothing matches.
            ("/z", "respond 404"),
        ],
    );
}

#[test]
fn proxy_uri_and_rewrites() {
    let mut r = single(
        r#"
        {"id": 0, "kind": "prefix", "pattern": "/ws/", "action": "proxy", "upstream": "backend", "uri": "/chat/"},
        {"id": 1, "kind": "prefix", "pattern": "/api", "action": "proxy", "upstream": "127.0.0.1:9000", "uri": null},
        {"id": 2, "kind": "exact", "pattern": "/old", "action": "proxy", "upstream": "b", "uri": "/new"},
        {"id": 3, "kind": "regex", "pattern": "\\.php$", "action": "proxy", "upstream": "php", "uri": "/ignored/"},
        {"id": 4, "kind": "prefix", "pattern": "/bare/", "action": "proxy", "upstream": "b"}"#,
    );
    check(
        &mut r,
        &[
            // nginx: `location /ws/ { proxy_pass http://b/chat/; }`.
            ("/ws/room?a=1", "proxy 0 backend /chat/room?a=1"),
            ("/ws/", "proxy 0 backend /chat/"),
            // Without a URI part the request target goes up unchanged.
            ("/api/v1/x?y=2&z", "proxy 1 127.0.0.1:9000 /api/v1/x?y=2&z"),
            ("/api%2Fv1", "proxy 1 127.0.0.1:9000 /api%2Fv1"),
            ("/old?k=v", "proxy 2 b /new?k=v"),
            // Regex locations cannot rewrite (nginx refuses a URI part there).
            ("/x/index.php?a", "proxy 3 php /x/index.php?a"),
            ("/bare/x", "proxy 4 b /bare/x"),
            // A rewrite of a path that needed normalizing uses the normal
            // form, escaped again.
            ("/ws//room%20one/./x", "proxy 0 backend /chat/room%20one/x"),
        ],
    );
}

#[test]
fn proxied_prefix_without_its_slash_redirects() {
    let mut r = single(
        r#"
        {"id": 0, "kind": "prefix", "pattern": "/", "action": "static"},
        {"id": 1, "kind": "prefix", "pattern": "/ws/", "action": "proxy", "upstream": "b", "uri": null},
        {"id": 2, "kind": "regex", "pattern": "s$", "action": "static"},
        {"id": 3, "kind": "prefix", "pattern": "/files/", "action": "static"},
        {"id": 4, "kind": "prefix", "pattern": "/api/", "action": "proxy", "upstream": "b", "uri": null},
        {"id": 5, "kind": "exact", "pattern": "/api", "action": "static"},
        {"id": 6, "kind": "prefix", "pattern": "/v2/", "action": "proxy", "upstream": "b", "uri": null},
        {"id": 7, "kind": "prefix", "pattern": "/v2", "action": "static"}"#,
    );
    check(
        &mut r,
        &[
            // Even before regexes, as nginx does.
            ("/ws", "respond 301 location=/ws/"),
            ("/ws?room=1", "respond 301 location=/ws/?room=1"),
            // Only proxied locations redirect.
            ("/files", "static 2 /files"),
            // A location named exactly like the path wins.
            ("/api", "static 5 /api"),
            ("/v2", "static 7 /v2"),
        ],
    );
}

#[test]
fn return_and_static_actions() {
    let mut r = single(
        r#"
        {"id": 0, "kind": "exact", "pattern": "/health", "action": "return", "return": {"status": 200, "headers": [], "body": "ok"}},
        {"id": 1, "kind": "prefix", "pattern": "/old/", "action": "return", "return": {"status": 301, "headers": [["location", "https://example.com/"]], "body": ""}},
        {"id": 2, "kind": "prefix", "pattern": "/static/", "action": "static"}"#,
    );
    check(
        &mut r,
        &[
            ("/health", "respond 200 ok"),
            ("/health/", "respond 404"),
            ("/old/x", "respond 301 location=https://example.com/"),
            // The static path is the request path, without the query.
            ("/static/app.css?v=3", "static 2 /static/app.css"),
        ],
    );
}

/// Locations match the normalized path, so encodings and dot segments
/// cannot dodge a location.
#[test]
fn locations_match_the_normalized_path() {
    let mut r = single(
        r#"
        {"id": 0, "kind": "prefix", "pattern": "/", "action": "static"},
        {"id": 1, "kind": "prefix_stop_regex", "pattern": "/admin/", "action": "return", "return": {"status": 403}}"#,
    );
    check(
        &mut r,
        &[
            ("/admin/x", "respond 403"),
            ("/%61dmin/x", "respond 403"),
            ("//admin/x", "respond 403"),
            ("/public/../admin/x", "respond 403"),
            ("/public/%2e%2e/admin/x", "respond 403"),
            // What nginx answers 400.
            ("/../admin/x", "respond 400"),
            ("/%zz", "respond 400"),
        ],
    );
}

fn servers() -> NginxRouter {
    router(
        r#"{"servers": [
        {"listen": ["0.0.0.0:80"], "server_names": ["default.test"],
         "locations": [{"id": 0, "kind": "prefix", "pattern": "/", "action": "static"}]},
        {"listen": ["0.0.0.0:80", "0.0.0.0:8080"], "server_names": ["*.example.com"],
         "locations": [{"id": 1, "kind": "prefix", "pattern": "/", "action": "static"}]},
        {"listen": ["0.0.0.0:80"], "server_names": ["www.example.com", "Chat.Example.com"],
         "locations": [{"id": 2, "kind": "prefix", "pattern": "/", "action": "static"}]},
        {"listen": ["0.0.0.0:80"], "server_names": ["*.api.example.com", "www.example.*"],
         "locations": [{"id": 3, "kind": "prefix", "pattern": "/", "action": "static"}]},
        {"listen": ["0.0.0.0:80"], "server_names": [".bare.test", "~^node\\d+\\.test$"],
         "locations": [{"id": 4, "kind": "prefix", "pattern": "/", "action": "static"}]},
        {"listen": ["0.0.0.0:443"], "server_names": [],
         "locations": [{"id": 5, "kind": "prefix", "pattern": "/", "action": "static"}]},
        {"listen": ["0.0.0.0:8080"],
         "locations": [{"id": 6, "kind": "prefix", "pattern": "/", "action": "static"}]},
        {"listen": ["0.0.0.0:443"], "server_names": ["secure.test"],
         "locations": [{"id": 7, "kind": "prefix", "pattern": "/", "action": "static"}]}
    ]}"#,
    )
}

#[test]
fn server_selection_by_listener_and_host() {
    let mut r = servers();
    let cases = [
        // Exact names beat wildcards, whichever server comes first.
        ("0.0.0.0:80", "www.example.com", 2),
        // Names are case-insensitive; the port does not count.
        ("0.0.0.0:80", "CHAT.example.com:80", 2),
        ("0.0.0.0:80", "chat.example.com.", 2),
        // Leading wildcards: the longest wins; they need a subdomain.
        ("0.0.0.0:80", "a.example.com", 1),
        ("0.0.0.0:80", "v1.api.example.com", 3),
        ("0.0.0.0:80", "example.com", 0),
        // Trailing wildcards.
        ("0.0.0.0:80", "www.example.org", 3),
        // `.name` covers the name and its subdomains.
        ("0.0.0.0:80", "bare.test", 4),
        ("0.0.0.0:80", "x.bare.test", 4),
        // Regex names.
        ("0.0.0.0:80", "node12.test", 4),
        ("0.0.0.0:80", "node.test", 0),
        // No name matches: the listener's first server.
        ("0.0.0.0:80", "unknown.test", 0),
        ("0.0.0.0:80", "", 0),
        // A server without names takes what the named ones do not.
        ("0.0.0.0:443", "secure.test", 7),
        ("0.0.0.0:443", "other.test", 5),
        ("0.0.0.0:8080", "a.example.com", 1),
        ("0.0.0.0:8080", "other.test", 6),
        // A listener no server has: the first server.
        ("127.0.0.1:9", "www.example.com", 0),
    ];
    for (listener, host, want) in cases {
        let got = summary(r.route(&head(listener, host, "/")));
        assert_eq!(got, format!("static {want} /"), "{listener} {host}");
    }
}

#[test]
fn request_without_host_goes_to_the_default_server() {
    let mut r = servers();
    let mut no_host = head("0.0.0.0:80", "", "/");
    no_host.headers.clear();
    assert_eq!(summary(r.route(&no_host)), "static 0 /");
}

#[test]
fn empty_table_answers_404() {
    let mut r = router(r#"{"servers": []}"#);
    assert_eq!(route(&mut r, "/"), "respond 404");
}

#[test]
fn configuration_errors_name_the_culprit() {
    let server = |locations: &str| {
        format!(r#"{{"servers": [{{"listen": ["0.0.0.0:80"], "locations": [{locations}]}}]}}"#)
    };
    let bad_regex = configure_error(&server(
        r#"{"id": 7, "kind": "regex", "pattern": "(unclosed", "action": "static"}"#,
    ));
    assert!(
        bad_regex.starts_with("location 7: invalid regex \"(unclosed\""),
        "{bad_regex}"
    );

    let duplicate = configure_error(&server(
        r#"{"id": 0, "kind": "prefix", "pattern": "/a", "action": "static"},
           {"id": 1, "kind": "prefix_stop_regex", "pattern": "/a", "action": "static"}"#,
    ));
    assert_eq!(duplicate, "locations 0 and 1: duplicate location \"/a\"");
    let duplicate = configure_error(&server(
        r#"{"id": 0, "kind": "exact", "pattern": "/a", "action": "static"},
           {"id": 1, "kind": "exact", "pattern": "/a", "action": "static"}"#,
    ));
    assert_eq!(duplicate, "location 1: duplicate location \"= /a\"");
    // An exact and a prefix location may share a path.
    router(&server(
        r#"{"id": 0, "kind": "exact", "pattern": "/a", "action": "static"},
           {"id": 1, "kind": "prefix", "pattern": "/a", "action": "static"}"#,
    ));

    let bad_name = configure_error(
        r#"{"servers": [{"listen": ["0.0.0.0:80"]}, {"listen": ["0.0.0.0:80"], "server_names": ["www.*.com"]}]}"#,
    );
    assert!(
        bad_name.starts_with("server 1: invalid server name \"www.*.com\""),
        "{bad_name}"
    );
}

#[test]
fn malformed_json_is_refused() {
    for json in [
        "{",
        r#"{"servers": {}}"#,
        r#"{"servers": [{"locations": []}]}"#,
        r#"{"servers": [{"listen": [], "locations": [{"id": 0, "kind": "fuzzy", "pattern": "/", "action": "static"}]}]}"#,
        r#"{"servers": [{"listen": [], "locations": [{"id": 0, "kind": "prefix", "pattern": "/", "action": "proxy"}]}]}"#,
        r#"{"servers": [{"listen": [], "locations": [{"id": 0, "kind": "prefix", "pattern": "/", "action": "return"}]}]}"#,
    ] {
        let error = configure_error(json);
        assert!(
            error.starts_with("invalid configuration: "),
            "{json}: {error}"
        );
    }
}

#[test]
fn contract_example_table() {
    let mut r = router(
        r#"{"servers": [{"listen": ["0.0.0.0:80"], "server_names": ["chat.example.com"], "locations": [
        { "id": 0, "kind": "prefix",   "pattern": "/",      "action": "static" },
        { "id": 1, "kind": "prefix",   "pattern": "/ws/",   "action": "proxy", "upstream": "backend", "uri": null },
        { "id": 2, "kind": "exact",    "pattern": "/health", "action": "return", "return": { "status": 200, "headers": [], "body": "ok" } },
        { "id": 3, "kind": "prefix_stop_regex", "pattern": "/static/", "action": "static" },
        { "id": 4, "kind": "regex",    "pattern": "\\.php$", "action": "proxy", "upstream": "127.0.0.1:9000", "uri": null },
        { "id": 5, "kind": "regex_nocase", "pattern": "\\.(png|jpg)$", "action": "static" }
    ]}]}"#,
    );
    check(
        &mut r,
        &[
            ("/", "static 0 /"),
            ("/ws/chat?room=1", "proxy 1 backend /ws/chat?room=1"),
            ("/health", "respond 200 ok"),
            ("/static/logo.PNG", "static 3 /static/logo.PNG"),
            ("/index.php", "proxy 4 127.0.0.1:9000 /index.php"),
            ("/img/logo.PNG", "static 5 /img/logo.PNG"),
        ],
    );
}
