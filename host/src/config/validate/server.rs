//! `[[server]]`: listen addresses, names, TLS files and the client-side
//! limits; its locations are checked in `location`.

use std::collections::HashMap;
use std::net::SocketAddr;

use toml::Spanned;

use super::{Checker, Upstreams, dur, size};
use crate::config::raw::RawServer;
use crate::config::{Server, TlsFiles, defaults};

impl Checker<'_> {
    pub(super) fn server(
        &mut self,
        server: Spanned<RawServer>,
        next_id: &mut u32,
        upstreams: &mut Upstreams,
        listen_tls: &mut HashMap<SocketAddr, bool>,
    ) -> Server {
        let span = server.span();
        let raw = server.into_inner();
        let has_tls = raw.tls.is_some();
        let mut listen = Vec::new();
        match raw.listen {
            None => self.error(span, "a server needs at least one `listen` address"),
            Some(addresses) if addresses.get_ref().0.is_empty() => {
                self.error(
                    addresses.span(),
                    "a server needs at least one `listen` address",
                );
            }
            Some(addresses) => {
                let span = addresses.span();
                for address in addresses.into_inner().0 {
                    match parse_listen(&address) {
                        Ok(addr) => {
                            if *listen_tls.entry(addr).or_insert(has_tls) != has_tls {
                                self.error(
                                    span.clone(),
                                    format!(
                                        "listen address {address} is used both with and without tls"
                                    ),
                                );
                            }
                        }
                        Err(message) => self.error(span.clone(), format!("listen: {message}")),
                    }
                    listen.push(address);
                }
            }
        }
        let server_names = raw.server_name.map_or_else(Vec::new, |names| {
            if names
                .get_ref()
                .0
                .iter()
                .any(|n| n.contains(char::is_whitespace))
            {
                self.error(
                    names.span(),
                    "server_name entries cannot contain spaces; use a list",
                );
            }
            names.into_inner().0
        });
        let tls = raw.tls.map(|tls| TlsFiles {
            cert: self.non_empty_path(tls.cert, "tls.cert"),
            key: self.non_empty_path(tls.key, "tls.key"),
        });

        let mut first_seen = HashMap::new();
        let mut locations = Vec::new();
        for location in raw.location {
            let id = *next_id;
            *next_id += 1;
            if let Some(location) = self.location(location, id, upstreams, &mut first_seen) {
                locations.push(location);
            }
        }
        if let Some(max) = &raw.max_header_size
            && max.get_ref().0 < defaults::MIN_HEADER_SIZE
        {
            self.error(
                max.span(),
                "max_header_size must be at least 8k (the smallest request-head buffer wasp can read with)",
            );
        }
        Server {
            listen,
            server_names,
            tls,
            redirect_http: raw.redirect_http.unwrap_or(false),
            client_header_timeout: dur(raw.client_header_timeout, defaults::CLIENT_HEADER_TIMEOUT),
            client_max_body_size: raw
                .client_max_body_size
                .map_or(defaults::CLIENT_MAX_BODY_SIZE, |s| s.0),
            max_header_size: size(
                raw.max_header_size.map(Spanned::into_inner),
                defaults::MAX_HEADER_SIZE,
            ),
            strict_websocket: raw.strict_websocket.unwrap_or(false),
            locations,
        }
    }
}

/// Parses a listen address, which must be a literal `IP:PORT`.
pub(super) fn parse_listen(address: &str) -> Result<SocketAddr, String> {
    address.parse().map_err(|_| {
        format!("`{address}` is not an IP:PORT address (e.g. 127.0.0.1:8000, 0.0.0.0:80, [::]:443)")
    })
}
