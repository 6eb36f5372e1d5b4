//! Header rules of a proxy: hop-by-hop headers (RFC 9110 §7.6.1) stay on
//! their connection, and the location's `set_headers` (nginx
//! `proxy_set_header`) decide what else the upstream sees.

use crate::vars::{RequestVars, Template};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, never forwarded as they are.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// True for a WebSocket opening handshake: `Upgrade: websocket` and a
/// `Connection` header listing `upgrade`.
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let upgrade = headers.get_all(header::UPGRADE).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("websocket"))
        })
    });
    upgrade && connection_lists(headers, "upgrade")
}

fn connection_lists(headers: &HeaderMap, token: &str) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// The headers of the request sent upstream: the client's end-to-end
/// headers, then each of `set` expanded (an empty value removes the header,
/// as in nginx), then the router plugin's literal additions.
pub fn upstream_request(
    client: &HeaderMap,
    set: &[(HeaderName, Template)],
    plugin_set: &[(String, String)],
    vars: &RequestVars<'_>,
    drop_extensions: bool,
) -> HeaderMap {
    let mut headers = client.clone();
    strip_hop_by_hop(&mut headers);
    if drop_extensions {
        // A filtered WebSocket is re-framed by wasp, which negotiates
        // permessage-deflate with each leg itself (or none may).
        headers.remove(header::SEC_WEBSOCKET_EXTENSIONS);
    }
    for (name, template) in set {
        let value = template.expand(vars);
        headers.remove(name);
        if !value.is_empty()
            && let Ok(value) = HeaderValue::from_str(&value)
        {
            headers.insert(name.clone(), value);
        }
    }
    for (name, value) in plugin_set {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn websocket_handshake_detection() {
        assert!(is_websocket_upgrade(&map(&[
            ("upgrade", "WebSocket"),
            ("connection", "keep-alive, Upgrade")
        ])));
        assert!(!is_websocket_upgrade(&map(&[("upgrade", "websocket")])));
        assert!(!is_websocket_upgrade(&map(&[
            ("upgrade", "h2c"),
            ("connection", "upgrade")
        ])));
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut headers = map(&[
            ("connection", "close, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert_eq!(headers["x-kept"], "yes");
    }
}
