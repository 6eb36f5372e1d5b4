//! nginx variables (`$host`, `$remote_addr`, `$http_upgrade`...) in header
//! values and keys: parsed once into a [`Template`] at load time, expanded
//! per request against a [`RequestVars`].

use http::HeaderMap;
use std::net::SocketAddr;

/// A value with nginx variables, pre-split into literal and variable parts.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Literal(String),
    Var(Var),
}

#[derive(Debug, Clone, PartialEq)]
enum Var {
    Host,
    RemoteAddr,
    RemotePort,
    ProxyAddXForwardedFor,
    ConnectionUpgrade,
    Scheme,
    RequestUri,
    Uri,
    Args,
    RequestMethod,
    ProxyHost,
    ServerPort,
    /// `$http_NAME`: a request header, `_` standing for `-`.
    Header(String),
    /// `$arg_NAME`: a query parameter.
    Arg(String),
    /// Anything else expands to the empty string, as an unset nginx variable.
    Unknown,
}

impl Var {
    fn parse(name: &str) -> Var {
        match name {
            "host" => Var::Host,
            "remote_addr" | "binary_remote_addr" => Var::RemoteAddr,
            "remote_port" => Var::RemotePort,
            "proxy_add_x_forwarded_for" => Var::ProxyAddXForwardedFor,
            "connection_upgrade" => Var::ConnectionUpgrade,
            "scheme" => Var::Scheme,
            "request_uri" => Var::RequestUri,
            "uri" | "document_uri" => Var::Uri,
            "args" | "query_string" => Var::Args,
            "request_method" => Var::RequestMethod,
            "proxy_host" => Var::ProxyHost,
            "server_port" => Var::ServerPort,
            _ => {
                if let Some(header) = name.strip_prefix("http_") {
                    Var::Header(header.replace('_', "-"))
                } else if let Some(arg) = name.strip_prefix("arg_") {
                    Var::Arg(arg.to_string())
                } else {
                    Var::Unknown
                }
            }
        }
    }
}

impl Template {
    /// Splits `text` at `$name` and `${name}` references.
    pub fn parse(text: &str) -> Template {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(dollar) = rest.find('$') {
            literal.push_str(&rest[..dollar]);
            let after = &rest[dollar + 1..];
            let (name, consumed) = match after.strip_prefix('{') {
                Some(braced) => match braced.find('}') {
                    Some(end) => (&braced[..end], end + 2),
                    None => ("", 0),
                },
                None => {
                    let end = after
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(after.len());
                    (&after[..end], end)
                }
            };
            if name.is_empty() {
                literal.push('$');
                rest = after;
                continue;
            }
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(Part::Var(Var::parse(&name.to_ascii_lowercase())));
            rest = &after[consumed..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Template { parts }
    }

    /// The value for this request.
    pub fn expand(&self, vars: &RequestVars<'_>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Var(var) => vars.append(var, &mut out),
            }
        }
        out
    }
}

/// What variables are computed from: the request and its connection.
pub struct RequestVars<'a> {
    pub headers: &'a HeaderMap,
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub client: SocketAddr,
    pub local: SocketAddr,
    pub tls: bool,
    /// The upstream's name, for `$proxy_host` (nginx's default Host upstream).
    pub proxy_host: &'a str,
}

impl RequestVars<'_> {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// `$host`: the Host header without its port, lower-cased.
    pub fn host(&self) -> String {
        let host = self.header("host");
        let name = match host.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(v6),
            None => host.rsplit_once(':').map_or(host, |(name, _)| name),
        };
        name.to_ascii_lowercase()
    }

    fn append(&self, var: &Var, out: &mut String) {
        use std::fmt::Write;
        match var {
            Var::Host => out.push_str(&self.host()),
            Var::RemoteAddr => {
                let _ = write!(out, "{}", self.client.ip());
            }
            Var::RemotePort => {
                let _ = write!(out, "{}", self.client.port());
            }
            Var::ProxyAddXForwardedFor => {
                let forwarded = self.header("x-forwarded-for");
                if !forwarded.is_empty() {
                    out.push_str(forwarded);
                    out.push_str(", ");
                }
                let _ = write!(out, "{}", self.client.ip());
            }
            Var::ConnectionUpgrade => {
                // nginx's `map $http_upgrade $connection_upgrade { default upgrade; '' close; }`
                out.push_str(if self.header("upgrade").is_empty() {
                    "close"
                } else {
                    "upgrade"
                });
            }
            Var::Scheme => out.push_str(if self.tls { "https" } else { "http" }),
            Var::RequestUri => {
                out.push_str(self.path);
                if !self.query.is_empty() {
                    out.push('?');
                    out.push_str(self.query);
                }
            }
            Var::Uri => out.push_str(self.path),
            Var::Args => out.push_str(self.query),
            Var::RequestMethod => out.push_str(self.method),
            Var::ProxyHost => out.push_str(self.proxy_host),
            Var::ServerPort => {
                let _ = write!(out, "{}", self.local.port());
            }
            Var::Header(name) => {
                // Repeated headers are joined as nginx does for most of them.
                let mut values = self
                    .headers
                    .get_all(name.as_str())
                    .iter()
                    .filter_map(|v| v.to_str().ok());
                if let Some(first) = values.next() {
                    out.push_str(first);
                    for value in values {
                        out.push_str(", ");
                        out.push_str(value);
                    }
                }
            }
            Var::Arg(name) => {
                let value = self.query.split('&').find_map(|pair| {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    (key == name).then_some(value)
                });
                out.push_str(value.unwrap_or(""));
            }
            Var::Unknown => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(template: &str, headers: &[(&'static str, &str)], query: &str) -> String {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(*name, value.parse().unwrap());
        }
        let vars = RequestVars {
            headers: &map,
            method: "GET",
            path: "/ws/chat",
            query,
            client: "10.1.2.3:5555".parse().unwrap(),
            local: "127.0.0.1:8000".parse().unwrap(),
            tls: false,
            proxy_host: "backend",
        };
        Template::parse(template).expand(&vars)
    }

    #[test]
    fn guide_variables() {
        assert_eq!(
            expand("$host", &[("host", "Chat.Example.com:8000")], ""),
            "chat.example.com"
        );
        assert_eq!(expand("$remote_addr", &[], ""), "10.1.2.3");
        assert_eq!(
            expand("$http_upgrade", &[("upgrade", "websocket")], ""),
            "websocket"
        );
        assert_eq!(
            expand("$connection_upgrade", &[("upgrade", "websocket")], ""),
            "upgrade"
        );
        assert_eq!(expand("$connection_upgrade", &[], ""), "close");
        assert_eq!(expand("$proxy_add_x_forwarded_for", &[], ""), "10.1.2.3");
        assert_eq!(
            expand(
                "$proxy_add_x_forwarded_for",
                &[("x-forwarded-for", "1.1.1.1")],
                ""
            ),
            "1.1.1.1, 10.1.2.3"
        );
    }

    #[test]
    fn literals_braces_args_and_unknowns() {
        assert_eq!(expand("upgrade", &[], ""), "upgrade");
        assert_eq!(
            expand("${scheme}://$host$request_uri", &[("host", "a")], "x=1"),
            "http://a/ws/chat?x=1"
        );
        assert_eq!(expand("room-$arg_room", &[], "a=1&room=blue"), "room-blue");
        assert_eq!(
            expand("$http_x_user|$nope|$", &[("x-user", "ann")], ""),
            "ann||$"
        );
        assert_eq!(expand("$proxy_host", &[], ""), "backend");
    }
}
