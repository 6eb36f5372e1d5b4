//! The request head plugins see, built from hyper's request.

use super::ConnInfo;
use crate::plugins::RequestHead;
use http::request::Parts;

/// Headers go as one `name: value\n` block: one string crosses the sandbox
/// boundary about twice as fast as a list of pairs.
pub fn request_head(parts: &Parts, conn: &ConnInfo) -> RequestHead {
    let mut headers = String::with_capacity(256);
    for (name, value) in &parts.headers {
        headers.push_str(name.as_str());
        headers.push_str(": ");
        headers.push_str(&String::from_utf8_lossy(value.as_bytes()));
        headers.push('\n');
    }
    RequestHead {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        headers,
        client_ip: conn.client.ip().to_string(),
        client_port: conn.client.port(),
        listener: conn.listener.to_string(),
        tls: conn.tls,
        sni: conn.sni.clone(),
    }
}
