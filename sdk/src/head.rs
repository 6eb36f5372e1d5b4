//! Header lookup on the request head: the host sends all headers as one
//! block (`name: value` lines, names lower-cased), which crosses the sandbox
//! boundary about twice as fast as a list of pairs.

use crate::RequestHead;

impl RequestHead {
    /// All headers in arrival order, as `(lower-case name, value)`.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers.lines().filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            Some((name, value.trim()))
        })
    }

    /// The first value of header `name` (any case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The value of query parameter `name` (not percent-decoded), if present.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then_some(value)
        })
    }

    /// The `Host` header without its port, lower-cased.
    pub fn host(&self) -> Option<String> {
        let host = self.header("host")?;
        let name = match host.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(v6),
            None => host.split(':').next().unwrap_or(host),
        };
        Some(name.to_ascii_lowercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(headers: &str, query: &str) -> RequestHead {
        RequestHead {
            method: "GET".into(),
            path: "/".into(),
            query: query.into(),
            headers: headers.into(),
            client_ip: "127.0.0.1".into(),
            client_port: 1,
            listener: "127.0.0.1:80".into(),
            tls: false,
            sni: None,
        }
    }

    #[test]
    fn header_lookup_is_case_insensitive_and_trims() {
        let h = head("host: Example.COM:8080\nx-user:  alice \nx-user: bob", "");
        assert_eq!(h.header("X-User"), Some("alice"));
        assert_eq!(h.header("missing"), None);
        assert_eq!(h.host().as_deref(), Some("example.com"));
        assert_eq!(h.headers().count(), 3);
    }

    #[test]
    fn ipv6_host_keeps_its_brackets_content() {
        assert_eq!(head("host: [::1]:80", "").host().as_deref(), Some("::1"));
    }

    #[test]
    fn query_params() {
        let h = head("", "room=blue&flag&x=1");
        assert_eq!(h.query_param("room"), Some("blue"));
        assert_eq!(h.query_param("flag"), Some(""));
        assert_eq!(h.query_param("y"), None);
    }
}
