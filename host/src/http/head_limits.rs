//! What wasp checks of a request head beyond hyper's parser: its size
//! against `max_header_size`, and its `Host` header. Plain functions of the
//! head (only the `http` crate), so the `request_head` fuzz target
//! (`fuzz/`) compiles this file and runs them behind hyper as wasp does.

use http::Request;
use http::request::Parts;

/// The size of a request's head as the client sent it (request line and
/// header lines with their CRLFs). hyper's `max_buf_size` only bounds the
/// read buffer while a head is incomplete: a larger head that arrives in a
/// few big reads is parsed whole, so `max_header_size` is checked here too.
pub fn head_size<B>(request: &Request<B>) -> usize {
    let line = request.method().as_str().len() + request.uri().to_string().len() + 11;
    request
        .headers()
        .iter()
        .fold(line + 2, |size, (name, value)| {
            size + name.as_str().len() + value.len() + 4
        })
}

/// What HTTP forbids in the `Host` header and hyper lets through (RFC 9112
/// §3.2), as nginx refuses it with 400: two `Host` headers make the
/// request's target ambiguous ("client sent duplicate host header"); an
/// HTTP/1.1 request must have one; and its value must be a host, not a path
/// or text with spaces or control characters ("client sent invalid host
/// header").
pub fn host_problem(parts: &Parts) -> Option<&'static str> {
    let mut hosts = parts.headers.get_all(http::header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => Some("duplicate Host header"),
        (None, _) if parts.version == http::Version::HTTP_11 => Some("missing Host header"),
        (Some(host), None) if !is_valid_host(host.as_bytes()) => Some("invalid Host header"),
        _ => None,
    }
}

/// nginx's check of a `Host` value (`ngx_http_validate_host`): no space or
/// control character, no path separator, no `..`.
pub fn is_valid_host(host: &[u8]) -> bool {
    !host.is_empty()
        && !host.windows(2).any(|pair| pair == b"..")
        && host
            .iter()
            .all(|&b| b > 0x20 && b != 0x7f && b != b'/' && b != b'\\')
}
