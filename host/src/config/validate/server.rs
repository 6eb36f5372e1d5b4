//! `[[server]]`: listen addresses, names, TLS files and the client-side
//! limits; its locations are checked in `location`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use toml::Spanned;

use super::{Checker, Upstreams};
use crate::config::raw::RawServer;
use crate::config::{AccessLog, Server, TlsFiles, defaults};

/// What a listen address's connections get before the request's `Host`
/// picks a server: the first server on that address decides, so the others
/// may not ask for something else (nginx takes the default server's too,
/// silently).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct ConnectionLevel {
    tls: bool,
    redirect_http: bool,
    http2: bool,
    client_header_timeout: Duration,
    max_header_size: usize,
    reuse_port: bool,
}

impl Checker<'_> {
    pub(super) fn server(
        &mut self,
        server: Spanned<RawServer>,
        next_id: &mut u32,
        upstreams: &mut Upstreams,
        shared_listen: &mut HashMap<SocketAddr, ConnectionLevel>,
        access_log: &AccessLog,
    ) -> Server {
        let span = server.span();
        let mut raw = server.into_inner();
        let level = ConnectionLevel {
            tls: raw.tls.is_some(),
            redirect_http: raw.redirect_http.as_ref().is_some_and(|r| *r.get_ref()),
            // As browsers speak HTTP/2 only over TLS, h2c is for clients that
            // know the server speaks it (gRPC-style, tests): opt-in.
            http2: raw
                .http2
                .as_ref()
                .map_or(raw.tls.is_some(), |h| *h.get_ref()),
            client_header_timeout: raw
                .client_header_timeout
                .as_ref()
                .map_or(defaults::CLIENT_HEADER_TIMEOUT, |t| t.get_ref().0),
            max_header_size: raw
                .max_header_size
                .as_ref()
                .map_or(defaults::MAX_HEADER_SIZE, |s| s.get_ref().bytes()),
            reuse_port: raw.reuse_port.as_ref().is_some_and(|r| *r.get_ref()),
        };
        self.reuse_port_possible(&raw);
        let mut listen = Vec::new();
        match raw.listen.take() {
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
                            let first = *shared_listen.entry(addr).or_insert(level);
                            self.same_connection_level(&raw, &address, span.clone(), first, level);
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
            redirect_http: level.redirect_http,
            http2: level.http2,
            client_header_timeout: level.client_header_timeout,
            client_body_timeout: self.client_body_timeout(raw.client_body_timeout),
            client_max_body_size: raw
                .client_max_body_size
                .map_or(defaults::CLIENT_MAX_BODY_SIZE, |s| s.0),
            max_header_size: level.max_header_size,
            strict_websocket: raw.strict_websocket.unwrap_or(false),
            access_log: raw
                .access_log
                .map_or_else(|| access_log.clone(), |setting| self.access_log(setting)),
            reuse_port: level.reuse_port,
            locations,
        }
    }
}

impl Checker<'_> {
    /// A server on a listen address an earlier server took must not ask for
    /// other connection-level settings: they would be ignored.
    fn same_connection_level(
        &mut self,
        raw: &RawServer,
        address: &str,
        listen_span: std::ops::Range<usize>,
        first: ConnectionLevel,
        this: ConnectionLevel,
    ) {
        if first.tls != this.tls {
            self.error(
                listen_span,
                format!("listen address {address} is used both with and without tls"),
            );
        }
        let why = |key: &str| {
            format!(
                "{key} differs from the first server on {address}: it applies to the connection \
                 before the Host header picks a server, so only the first server's counts; set it \
                 there (or give this server its own listen address)"
            )
        };
        if first.redirect_http != this.redirect_http
            && let Some(set) = &raw.redirect_http
        {
            self.error(set.span(), why("redirect_http"));
        }
        if first.http2 != this.http2
            && let Some(set) = &raw.http2
        {
            self.error(set.span(), why("http2"));
        }
        if first.client_header_timeout != this.client_header_timeout
            && let Some(set) = &raw.client_header_timeout
        {
            self.error(set.span(), why("client_header_timeout"));
        }
        if first.max_header_size != this.max_header_size
            && let Some(set) = &raw.max_header_size
        {
            self.error(set.span(), why("max_header_size"));
        }
        if first.reuse_port != this.reuse_port
            && let Some(set) = &raw.reuse_port
        {
            self.error(set.span(), why("reuse_port"));
        }
    }

    /// `reuse_port` shares an address between processes: it needs a port
    /// every process names alike, and a kernel that balances between them.
    fn reuse_port_possible(&mut self, raw: &RawServer) {
        let Some(set) = raw.reuse_port.as_ref().filter(|r| *r.get_ref()) else {
            return;
        };
        if !cfg!(target_os = "linux") {
            self.error(
                set.span(),
                "reuse_port needs Linux: other systems do not balance new connections \
                 between the processes sharing a port",
            );
        }
        let addresses = raw.listen.as_ref().map_or(&[][..], |l| &l.get_ref().0[..]);
        if addresses
            .iter()
            .any(|a| parse_listen(a).is_ok_and(|a| a.port() == 0))
        {
            self.error(
                set.span(),
                "reuse_port with port 0: each process would get a port of its own; name the port",
            );
        }
    }
}

/// Parses a listen address, which must be a literal `IP:PORT`.
pub(super) fn parse_listen(address: &str) -> Result<SocketAddr, String> {
    address.parse().map_err(|_| {
        format!("`{address}` is not an IP:PORT address (e.g. 127.0.0.1:8000, 0.0.0.0:80, [::]:443)")
    })
}

impl Checker<'_> {
    /// `client_body_timeout`: a time between two reads, so more than zero.
    fn client_body_timeout(
        &mut self,
        setting: Option<Spanned<crate::config::units::Dur>>,
    ) -> Duration {
        let Some(setting) = setting else {
            return defaults::CLIENT_BODY_TIMEOUT;
        };
        if setting.get_ref().0.is_zero() {
            self.error(setting.span(), "client_body_timeout must be more than zero");
        }
        setting.into_inner().0
    }
}
