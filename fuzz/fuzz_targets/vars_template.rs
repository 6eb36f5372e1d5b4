//! nginx variables in header templates (`host/src/vars.rs`, with the
//! variable syntax of `host/src/config/variables.rs`, both compiled from
//! source): any template text, expanded against any request a client could
//! make (header values hyper accepts, a parsed URI's path and query).
//! - `Template::parse` never panics; text without `$` is one literal;
//! - an unknown variable is refused by name, and `config::variables::unknown`
//!   (what `wasp check` reports) names the same one;
//! - expanding never panics, and when the template's literals make a valid
//!   header value, so does the expansion: a variable cannot smuggle a CR,
//!   LF or NUL into the upstream request.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use libfuzzer_sys::{arbitrary, fuzz_target};
use std::net::SocketAddr;

#[allow(dead_code)]
#[path = "../../host/src/config/mod.rs"]
mod config;
#[allow(dead_code)]
#[path = "../../host/src/vars.rs"]
mod vars;

mod plugins {
    pub mod embedded {
        include!(concat!(env!("OUT_DIR"), "/default_plugin_names.rs"));
    }
}

#[derive(Debug, arbitrary::Arbitrary)]
struct Input {
    template: String,
    headers: Vec<(String, Vec<u8>)>,
    method: String,
    target: String,
    client: SocketAddr,
    local: SocketAddr,
    tls: bool,
    proxy_host: String,
}

fuzz_target!(|input: Input| {
    let template = match vars::Template::parse(&input.template) {
        Ok(template) => template,
        Err(name) => {
            assert!(input.template.contains('$'));
            let unknown: Vec<_> = config::variables::unknown(&input.template).collect();
            assert!(unknown.contains(&name.as_str()), "{name:?} not in {unknown:?}");
            return;
        }
    };
    let mut headers = HeaderMap::new();
    for (name, value) in &input.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
    let Ok(uri) = input.target.parse::<Uri>() else {
        return;
    };
    let method = match http::Method::from_bytes(input.method.as_bytes()) {
        Ok(method) => method,
        Err(_) => http::Method::GET,
    };
    let proxy_host = match input.proxy_host.parse::<http::uri::Authority>() {
        Ok(authority) => authority.to_string(),
        Err(_) => "backend".to_owned(),
    };
    let request = vars::RequestVars {
        headers: &headers,
        method: method.as_str(),
        path: uri.path(),
        query: uri.query().unwrap_or(""),
        client: input.client,
        local: input.local,
        tls: input.tls,
        proxy_host: &proxy_host,
    };
    let value = template.expand(&request);
    if !input.template.contains('$') {
        assert_eq!(value, input.template);
    }
    let literals_clean = !input.template.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0));
    if literals_clean {
        assert!(
            !value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)),
            "{:?} expanded to {value:?}",
            input.template
        );
    }
});
