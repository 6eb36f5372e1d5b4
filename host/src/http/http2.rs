//! What an HTTP/2 request must look like for phases written for HTTP/1.1
//! and for the HTTP/1.1 upstreams it is forwarded to: its `:authority` as a
//! `Host` header, its cookies on one line, and an extended CONNECT
//! (RFC 8441) as the WebSocket upgrade it stands for.

use super::context::Refusal;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Version};
use hyper::ext::Protocol;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;

/// Rewrites an HTTP/2 request's head into its HTTP/1.1 form (nothing for
/// other versions). The version stays `HTTP/2.0`, as the access log names it.
///
/// An extended CONNECT with `:protocol = websocket` becomes `GET` with
/// `Upgrade: websocket`, `Connection: upgrade` and a `Sec-WebSocket-Key` of
/// wasp's own (RFC 8441 §5: the HTTP/2 client sends none; the upstream
/// needs one for its HTTP/1.1 handshake), so the router, the origin check,
/// the limits and `set_headers` treat it as any WebSocket handshake. Any
/// other CONNECT is refused: wasp is no forward proxy.
pub fn as_http1(parts: &mut Parts) -> Result<(), Refusal> {
    if parts.version != Version::HTTP_2 {
        return Ok(());
    }
    // RFC 9113 §8.3.1: `:authority` replaces `Host`; nginx fills `$host`
    // from it likewise.
    if !parts.headers.contains_key(header::HOST)
        && let Some(authority) = parts.uri.authority()
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        parts.headers.insert(header::HOST, host);
    }
    join_cookies(&mut parts.headers);
    if parts.method != Method::CONNECT {
        return Ok(());
    }
    match parts.extensions.get::<Protocol>() {
        Some(protocol) if protocol.as_str().eq_ignore_ascii_case("websocket") => {
            parts.method = Method::GET;
            let headers = &mut parts.headers;
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            let key =
                HeaderValue::from_str(&generate_key()).expect("base64 is a valid header value");
            headers.insert(header::SEC_WEBSOCKET_KEY, key);
            Ok(())
        }
        Some(protocol) => Err(Refusal::new(
            501,
            format!(
                "extended CONNECT for `{}`: only websocket is supported",
                protocol.as_str()
            ),
        )),
        None => Err(Refusal::new(405, "CONNECT is not supported")),
    }
}

/// RFC 9113 §8.2.3: HTTP/2 may split `Cookie` into several fields, which
/// must be joined with "; " before they go to an HTTP/1.1 server.
fn join_cookies(headers: &mut http::HeaderMap) {
    if headers.get_all(header::COOKIE).iter().nth(1).is_none() {
        return;
    }
    let joined: Vec<u8> = headers
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect::<Vec<_>>()
        .join(&b"; "[..]);
    if let Ok(joined) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, joined);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::headers::is_websocket_upgrade;

    fn parts(method: Method, protocol: Option<&'static str>) -> Parts {
        let mut request = http::Request::builder()
            .method(method)
            .version(Version::HTTP_2)
            .uri("https://chat.example:8443/ws/")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .body(())
            .unwrap();
        if let Some(protocol) = protocol {
            request
                .extensions_mut()
                .insert(Protocol::from_static(protocol));
        }
        request.into_parts().0
    }

    #[test]
    fn websocket_connect_becomes_an_upgrade() {
        let mut head = parts(Method::CONNECT, Some("websocket"));
        as_http1(&mut head).unwrap();
        assert_eq!(head.method, Method::GET);
        assert!(is_websocket_upgrade(&head.headers));
        assert_eq!(head.headers["host"], "chat.example:8443");
        assert_eq!(head.headers["cookie"], "a=1; b=2");
        assert_eq!(head.headers["sec-websocket-key"].len(), 24);
        assert_eq!(head.version, Version::HTTP_2);
    }

    #[test]
    fn other_connects_are_refused() {
        let refusal = as_http1(&mut parts(Method::CONNECT, None)).unwrap_err();
        assert_eq!(refusal.status, 405);
        let refusal = as_http1(&mut parts(Method::CONNECT, Some("webtransport"))).unwrap_err();
        assert_eq!(refusal.status, 501);
    }

    #[test]
    fn a_get_keeps_its_method_and_gains_a_host() {
        let mut head = parts(Method::GET, None);
        as_http1(&mut head).unwrap();
        assert_eq!(head.method, Method::GET);
        assert!(!is_websocket_upgrade(&head.headers));
        assert_eq!(head.headers["host"], "chat.example:8443");
    }
}
