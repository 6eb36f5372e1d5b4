//! `router.configure`: the routing table.

use serde::{Deserialize, Serialize};

/// The routing table: every `[[server]]` of the configuration, in file
/// order. The first server of a listen address answers requests whose
/// `Host` no server of that address names.
///
/// ```
/// # use wasp_sdk::config::{LocationAction, MatchKind, RouterConfig};
/// let table: RouterConfig = wasp_sdk::parse_config(r#"{ "servers": [ {
///   "listen": ["0.0.0.0:80"],
///   "server_names": ["chat.example.com"],
///   "locations": [
///     { "id": 0, "kind": "prefix", "pattern": "/", "action": "static" },
///     { "id": 1, "kind": "prefix", "pattern": "/ws/", "action": "proxy",
///       "upstream": "backend", "uri": null },
///     { "id": 2, "kind": "exact", "pattern": "/health", "action": "return",
///       "return": { "status": 200, "headers": [], "body": "ok" } },
///     { "id": 3, "kind": "prefix_stop_regex", "pattern": "/static/", "action": "static" },
///     { "id": 4, "kind": "regex", "pattern": "\\.php$", "action": "proxy",
///       "upstream": "127.0.0.1:9000", "uri": null },
///     { "id": 5, "kind": "regex_nocase", "pattern": "\\.(png|jpg)$", "action": "static" }
///   ] } ] }"#)?;
/// let location = &table.servers[0].locations[4];
/// assert_eq!(location.kind, MatchKind::Regex);
/// assert_eq!(location.pattern, r"\.php$");
/// assert!(matches!(&location.action, LocationAction::Proxy { uri: None, .. }));
/// # Ok::<(), String>(())
/// ```
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RouterConfig {
    /// The servers in file order.
    pub servers: Vec<Server>,
}

/// One `[[server]]` block.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Server {
    /// Listen addresses as written in the configuration (`"0.0.0.0:80"`),
    /// the same text as the `listener` of the requests they accept.
    pub listen: Vec<String>,
    /// `server_name`s as written (`"chat.example.com"`, `"*.example.com"`,
    /// `"~regex"`); empty means any host.
    #[serde(default)]
    pub server_names: Vec<String>,
    /// The server's locations in file order.
    #[serde(default)]
    pub locations: Vec<Location>,
}

/// One `[[server.location]]`: how its path matches and what it does.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Location {
    /// The location's number: the host numbers locations across all
    /// servers in file order (0, 1, 2, …). Decisions and the origin
    /// policy name locations by this id.
    pub id: u32,
    /// How [`pattern`](Self::pattern) matches the request path.
    pub kind: MatchKind,
    /// The path prefix, exact path or regex, without its modifier.
    pub pattern: String,
    /// What the location does, under the key `"action"`.
    #[serde(flatten)]
    pub action: LocationAction,
}

/// nginx's location modifiers, by the name the table uses.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchKind {
    /// `/prefix`: the longest matching prefix wins, unless a regex matches.
    #[serde(rename = "prefix")]
    Prefix,
    /// `= /exact`: this path only; a match ends the search.
    #[serde(rename = "exact")]
    Exact,
    /// `^~ /prefix`: a prefix that, when longest, skips the regex locations.
    #[serde(rename = "prefix_stop_regex")]
    PrefixStopRegex,
    /// `~ regex`: the first matching regex in file order wins.
    #[serde(rename = "regex")]
    Regex,
    /// `~* regex`: the same, case-insensitive.
    #[serde(rename = "regex_nocase")]
    RegexNoCase,
}

impl MatchKind {
    /// The modifier written before the pattern in nginx syntax (empty for a
    /// plain prefix).
    pub fn modifier(self) -> &'static str {
        match self {
            MatchKind::Prefix => "",
            MatchKind::Exact => "=",
            MatchKind::PrefixStopRegex => "^~",
            MatchKind::Regex => "~",
            MatchKind::RegexNoCase => "~*",
        }
    }
}

/// What a location does with a request: `"action": "proxy"`, `"static"` or
/// `"return"`, with the fields of that action beside it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum LocationAction {
    /// `proxy_pass`: relay to an upstream.
    Proxy {
        /// The upstream's name: a key of
        /// [`BalancerConfig::upstreams`](super::BalancerConfig).
        upstream: String,
        /// `proxy_pass`'s URI part (`null` when it has none): it replaces
        /// the matched prefix of the request path, as in nginx. Regex
        /// locations never have one.
        #[serde(default)]
        uri: Option<String>,
    },
    /// `root`: the host serves files; the router answers with the path.
    Static,
    /// `return`: answer with a fixed response, under the key `"return"`.
    Return {
        /// The response to send.
        #[serde(rename = "return")]
        response: FixedResponse,
    },
}

/// The response of a `return` location.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct FixedResponse {
    /// HTTP status.
    pub status: u16,
    /// Response headers as `[name, value]` pairs (`return.location`
    /// becomes `["location", URL]`).
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// Response body.
    #[serde(default)]
    pub body: String,
}

#[cfg(feature = "guest")]
impl From<FixedResponse> for crate::Response {
    fn from(fixed: FixedResponse) -> Self {
        crate::Response {
            status: fixed.status,
            headers: fixed.headers,
            body: fixed.body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// One location of each action, as the host sends them.
    fn locations() -> Vec<(Location, Value)> {
        let location = |id, kind, pattern: &str, action| Location {
            id,
            kind,
            pattern: pattern.into(),
            action,
        };
        vec![
            (
                location(
                    0,
                    MatchKind::Prefix,
                    "/ws/",
                    LocationAction::Proxy {
                        upstream: "backend".into(),
                        uri: Some("/chat/".into()),
                    },
                ),
                json!({ "id": 0, "kind": "prefix", "pattern": "/ws/", "action": "proxy",
                        "upstream": "backend", "uri": "/chat/" }),
            ),
            (
                location(
                    1,
                    MatchKind::RegexNoCase,
                    "\\.php$",
                    LocationAction::Proxy {
                        upstream: "127.0.0.1:9000".into(),
                        uri: None,
                    },
                ),
                json!({ "id": 1, "kind": "regex_nocase", "pattern": "\\.php$", "action": "proxy",
                        "upstream": "127.0.0.1:9000", "uri": null }),
            ),
            (
                location(
                    2,
                    MatchKind::PrefixStopRegex,
                    "/static/",
                    LocationAction::Static,
                ),
                json!({ "id": 2, "kind": "prefix_stop_regex", "pattern": "/static/",
                        "action": "static" }),
            ),
            (
                location(
                    3,
                    MatchKind::Exact,
                    "/old",
                    LocationAction::Return {
                        response: FixedResponse {
                            status: 301,
                            headers: vec![("location".into(), "https://example.com/".into())],
                            body: String::new(),
                        },
                    },
                ),
                json!({ "id": 3, "kind": "exact", "pattern": "/old", "action": "return",
                        "return": { "status": 301, "headers": [["location", "https://example.com/"]],
                                    "body": "" } }),
            ),
        ]
    }

    #[test]
    fn locations_serialize_as_the_documented_json_and_back() {
        for (location, json) in locations() {
            assert_eq!(serde_json::to_value(&location).unwrap(), json);
            assert_eq!(serde_json::from_value::<Location>(json).unwrap(), location);
        }
    }

    #[test]
    fn optional_fields_default() {
        let table: RouterConfig = crate::parse_config(
            r#"{ "servers": [ { "listen": ["x:1"] }, { "listen": [], "locations": [
                { "id": 0, "kind": "regex", "pattern": "a", "action": "proxy", "upstream": "u" },
                { "id": 1, "kind": "exact", "pattern": "/", "action": "return",
                  "return": { "status": 204 } } ] } ] }"#,
        )
        .unwrap();
        assert!(table.servers[0].server_names.is_empty());
        assert!(table.servers[0].locations.is_empty());
        let locations = &table.servers[1].locations;
        assert!(matches!(
            &locations[0].action,
            LocationAction::Proxy { uri: None, .. }
        ));
        assert!(matches!(
            &locations[1].action,
            LocationAction::Return { response } if response.headers.is_empty() && response.body.is_empty()
        ));
    }

    #[test]
    fn unknown_kinds_and_actions_are_refused() {
        let location = |kind: &str, action: &str| {
            let json =
                format!(r#"{{ "id": 0, "kind": "{kind}", "pattern": "/", "action": "{action}" }}"#);
            serde_json::from_str::<Location>(&json)
        };
        assert!(location("prefix", "static").is_ok());
        assert!(location("regex_no_case", "static").is_err());
        assert!(location("prefix", "redirect").is_err());
    }
}
