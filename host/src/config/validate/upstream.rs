//! `[upstreams.NAME]`: an upstream's balancing, its servers and their
//! health checks; and the implicit upstream of `proxy_pass http://host:port`.

use toml::Spanned;

use super::{Checker, dur};
use crate::config::raw::{RawHealth, RawUpstream, RawUpstreamServer, Shorthand};
use crate::config::{Balance, HealthCheck, Keepalive, Upstream, UpstreamServer, defaults};

impl Checker<'_> {
    pub(super) fn upstream(&mut self, name: &Spanned<String>, raw: RawUpstream) -> Upstream {
        let valid_name = !name.get_ref().is_empty()
            && name
                .get_ref()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !valid_name {
            self.error(
                name.span(),
                format!(
                    "upstream name `{}` may only use letters, digits, `_`, `.` and `-`",
                    name.get_ref()
                ),
            );
        }
        let balance = raw
            .balance
            .as_ref()
            .map_or(defaults::BALANCE, |b| *b.get_ref());
        let is_hash = balance == Balance::Hash;
        match (&raw.hash_key, is_hash) {
            (None, true) => {
                let span = raw.balance.as_ref().map_or(name.span(), Spanned::span);
                self.error(
                    span,
                    "balance = \"hash\" needs a hash_key, e.g. \"$remote_addr\"",
                );
            }
            (Some(key), false) => {
                self.error(key.span(), "hash_key only applies with balance = \"hash\"");
            }
            (Some(key), true) if key.get_ref().trim().is_empty() => {
                self.error(key.span(), "hash_key must not be empty");
            }
            _ => {}
        }
        if let Some(consistent) = &raw.consistent
            && *consistent.get_ref()
            && !is_hash
        {
            self.error(
                consistent.span(),
                "consistent only applies with balance = \"hash\"",
            );
        }
        let keepalive = self.keepalive(&raw);
        if raw.servers.get_ref().is_empty() {
            self.error(
                raw.servers.span(),
                format!("upstream `{}` needs at least one server", name.get_ref()),
            );
        }
        let servers = raw
            .servers
            .into_inner()
            .into_iter()
            .filter_map(|server| self.upstream_server(server, balance))
            .collect();
        Upstream {
            keepalive,
            balance,
            hash_key: raw.hash_key.map(|key| self.variables(key)),
            consistent: raw.consistent.is_some_and(Spanned::into_inner),
            next_upstream_tries: raw
                .next_upstream_tries
                .unwrap_or(defaults::NEXT_UPSTREAM_TRIES),
            servers,
            health: raw.health.map(|health| self.health(health)),
        }
    }

    fn upstream_server(
        &mut self,
        server: Spanned<Shorthand<RawUpstreamServer>>,
        balance: Balance,
    ) -> Option<UpstreamServer> {
        let span = server.span();
        let Shorthand(raw) = server.into_inner();
        if let Some(weight) = &raw.weight {
            self.at_least_one(weight, "weight");
        }
        let backup = raw.backup.unwrap_or(false);
        if backup && matches!(balance, Balance::IpHash | Balance::Hash) {
            // nginx refuses this too: a hash maps each key to one fixed primary.
            self.error(
                span.clone(),
                format!(
                    "backup servers cannot be used with balance = \"{}\"",
                    balance.as_str()
                ),
            );
        }
        let address = match host_port(&raw.address) {
            Ok((host, port)) => format!("{host}:{}", port.unwrap_or(defaults::UPSTREAM_PORT)),
            Err(message) => {
                self.error(span, format!("upstream server: {message}"));
                return None;
            }
        };
        Some(UpstreamServer {
            address,
            weight: raw.weight.map_or(defaults::WEIGHT, Spanned::into_inner),
            max_fails: raw.max_fails.unwrap_or(defaults::MAX_FAILS),
            fail_timeout: dur(raw.fail_timeout, defaults::FAIL_TIMEOUT),
            backup,
            down: raw.down.unwrap_or(false),
        })
    }

    /// `keepalive`, and the two settings that only apply with it.
    fn keepalive(&mut self, raw: &RawUpstream) -> Option<Keepalive> {
        let Some(connections) = &raw.keepalive else {
            if let Some(timeout) = &raw.keepalive_timeout {
                self.error(
                    timeout.span(),
                    "keepalive_timeout only applies with keepalive",
                );
            }
            if let Some(requests) = &raw.keepalive_requests {
                self.error(
                    requests.span(),
                    "keepalive_requests only applies with keepalive",
                );
            }
            return None;
        };
        self.at_least_one(connections, "keepalive");
        if let Some(requests) = &raw.keepalive_requests {
            self.at_least_one(requests, "keepalive_requests");
        }
        Some(Keepalive {
            connections: *connections.get_ref(),
            timeout: raw
                .keepalive_timeout
                .as_ref()
                .map_or(defaults::KEEPALIVE_TIMEOUT, |t| t.get_ref().0),
            requests: raw
                .keepalive_requests
                .as_ref()
                .map_or(defaults::KEEPALIVE_REQUESTS, |r| *r.get_ref()),
        })
    }

    fn health(&mut self, raw: RawHealth) -> HealthCheck {
        if !raw.path.get_ref().starts_with('/') {
            self.error(raw.path.span(), "health check path must start with `/`");
        }
        for count in [&raw.rise, &raw.fall].into_iter().flatten() {
            self.at_least_one(count, "rise and fall");
        }
        HealthCheck {
            path: raw.path.into_inner(),
            interval: dur(raw.interval, defaults::HEALTH_INTERVAL),
            rise: raw.rise.map_or(defaults::HEALTH_RISE, Spanned::into_inner),
            fall: raw.fall.map_or(defaults::HEALTH_FALL, Spanned::into_inner),
            websocket: raw.websocket.unwrap_or(false),
        }
    }
}

/// The upstream `proxy_pass http://host:port` stands for: that one server,
/// everything else at its default.
pub(super) fn implicit(address: String) -> Upstream {
    Upstream {
        balance: defaults::BALANCE,
        hash_key: None,
        consistent: false,
        next_upstream_tries: defaults::NEXT_UPSTREAM_TRIES,
        servers: vec![UpstreamServer {
            address,
            weight: defaults::WEIGHT,
            max_fails: defaults::MAX_FAILS,
            fail_timeout: defaults::FAIL_TIMEOUT,
            backup: false,
            down: false,
        }],
        health: None,
        keepalive: None,
    }
}

/// Splits `host[:port]`, keeping IPv6 brackets in the host.
pub(super) fn host_port(text: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port) = if text.starts_with('[') {
        let end = text
            .find(']')
            .ok_or_else(|| format!("`{text}` has an unclosed `[`"))?;
        match &text[end + 1..] {
            "" => (&text[..=end], None),
            rest => (
                &text[..=end],
                Some(
                    rest.strip_prefix(':')
                        .ok_or_else(|| format!("`{text}` is not host:port"))?,
                ),
            ),
        }
    } else {
        match text.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                return Err(format!(
                    "IPv6 address `{text}` needs brackets, e.g. [::1]:8080"
                ));
            }
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || "/@?#".contains(c)) {
        return Err(format!("`{text}` is not a valid host:port"));
    }
    let port = port
        .map(|port| {
            port.parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("invalid port in `{text}`"))
        })
        .transpose()?;
    Ok((host, port))
}
