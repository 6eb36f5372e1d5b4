//! nginx variables (`$host`, `$remote_addr`, `$http_upgrade`...) in header
//! values and keys: parsed once into a [`Template`] at load time, expanded
//! per request against a [`RequestVars`].

use crate::config::variables::{self, Piece};
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
}

impl Var {
    /// The variable `name` (lower-cased); `None` when wasp does not know it.
    fn parse(name: &str) -> Option<Var> {
        Some(match name {
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
                if !variables::is_known(name) {
                    return None;
                }
                if let Some(header) = name.strip_prefix("http_") {
                    Var::Header(header.replace('_', "-"))
                } else {
                    Var::Arg(name.strip_prefix("arg_")?.to_string())
                }
            }
        })
    }
}

impl Template {
    /// Splits `text` at its variables; `Err` names the first one wasp does
    /// not know (`wasp check` refuses those, so a loaded configuration has
    /// none).
    pub fn parse(text: &str) -> Result<Template, String> {
        let parts = variables::split(text)
            .into_iter()
            .map(|piece| match piece {
                Piece::Literal(text) => Ok(Part::Literal(text.to_owned())),
                Piece::Variable(name) => Var::parse(&name.to_ascii_lowercase())
                    .map(Part::Var)
                    .ok_or_else(|| name.to_owned()),
            })
            .collect::<Result<_, _>>()?;
        Ok(Template { parts })
    }

    /// A template of a loaded configuration, whose variables `wasp check`
    /// already proved known.
    pub fn from_config(text: &str) -> Template {
        Template::parse(text)
            .unwrap_or_else(|name| panic!("config validation let unknown variable ${name} through"))
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
                // nginx: `$http_x_forwarded_for, $remote_addr`, every
                // X-Forwarded-For header of the request joined.
                let before = out.len();
                self.append_header("x-forwarded-for", out);
                if out.len() > before {
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
            Var::Header(name) => self.append_header(name, out),
            Var::Arg(name) => {
                let value = self.query.split('&').find_map(|pair| {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    (key == name).then_some(value)
                });
                out.push_str(value.unwrap_or(""));
            }
        }
    }

    /// Every `name` header of the request, joined with `, ` as nginx joins
    /// repeated headers for `$http_NAME`.
    fn append_header(&self, name: &str, out: &mut String) {
        let mut values = self
            .headers
            .get_all(name)
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
        Template::parse(template).unwrap().expand(&vars)
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
        // Every X-Forwarded-For header, as nginx joins them.
        assert_eq!(
            expand(
                "$proxy_add_x_forwarded_for",
                &[
                    ("x-forwarded-for", "1.1.1.1"),
                    ("x-forwarded-for", "2.2.2.2")
                ],
                ""
            ),
            "1.1.1.1, 2.2.2.2, 10.1.2.3"
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
            expand("$http_x_user|$-|$", &[("x-user", "ann")], ""),
            "ann|$-|$"
        );
        assert_eq!(Template::parse("a $nope b"), Err("nope".to_owned()));
        assert_eq!(expand("$proxy_host", &[], ""), "backend");
    }
}
