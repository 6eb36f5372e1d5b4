//! `wasp check`'s view of a configuration: the resolved settings as TOML
//! with every default written out (like `nginx -T`). The output parses back
//! to the same [`Config`].

use std::fmt::Write;
use std::time::Duration;

use super::{Config, LocationAction, MatchKind, Upstream};

impl Config {
    /// The resolved configuration as TOML, every default filled in.
    pub fn render(&self) -> String {
        let mut out = String::from("# wasp configuration, resolved: every default filled in\n");
        match self.admin {
            Some(admin) => line(&mut out, "admin", &string(&admin.to_string())),
            None => out.push_str("# admin listener: off\n"),
        }
        line(
            &mut out,
            "max_connections",
            &self.max_connections.to_string(),
        );
        match self.workers {
            Some(workers) => line(&mut out, "workers", &workers.to_string()),
            None => out.push_str("# workers: one per CPU\n"),
        }
        line(&mut out, "shutdown_grace", &duration(self.shutdown_grace));
        line(&mut out, "log_format", &string(self.log_format.as_str()));
        line(
            &mut out,
            "access_log",
            &string(&self.access_log.as_setting()),
        );

        let plugins = &self.plugins;
        out.push_str("\n[plugins]\n");
        for (role, path) in [
            ("router", &plugins.router),
            ("balancer", &plugins.balancer),
            ("origin", &plugins.origin),
        ] {
            match path {
                Some(path) => line(&mut out, role, &string(&path.display().to_string())),
                None => writeln!(out, "# {role}: embedded").unwrap(),
            }
        }
        line(&mut out, "call_timeout", &duration(plugins.call_timeout));
        line(
            &mut out,
            "call_timeout_per_mib",
            &duration(plugins.call_timeout_per_mib),
        );
        line(
            &mut out,
            "ban_after_overruns",
            &plugins.ban_after_overruns.to_string(),
        );
        line(&mut out, "ban_time", &duration(plugins.ban_time));
        line(&mut out, "memory_limit", &size(plugins.memory_limit as u64));
        line(&mut out, "instances", &plugins.instances.to_string());
        match &plugins.cache_dir {
            Some(dir) => line(&mut out, "cache_dir", &string(&dir.display().to_string())),
            None => out.push_str("# cache_dir: wasmtime's per-user cache\n"),
        }

        if let Some(cluster) = &self.cluster {
            out.push_str("\n[cluster]\n");
            line(&mut out, "redis", &string(&cluster.redis));
            match &cluster.instance {
                Some(instance) => line(&mut out, "instance", &string(instance)),
                None => out.push_str("# instance: host name and process id\n"),
            }
            line(&mut out, "timeout", &duration(cluster.timeout));
            line(&mut out, "retry", &duration(cluster.retry));
        }

        for (name, upstream) in &self.upstreams {
            // Implicit upstreams come from `proxy_pass http://host:port` and are
            // recreated by it; declared names cannot contain `:`.
            if name.contains(':') {
                writeln!(out, "\n# upstream {name}: implicit (from proxy_pass)").unwrap();
                write_upstream(&mut out, upstream, "# ");
            } else {
                writeln!(out, "\n[upstreams.{}]", key(name)).unwrap();
                write_upstream(&mut out, upstream, "");
            }
        }

        for server in &self.servers {
            out.push_str("\n[[server]]\n");
            line(&mut out, "listen", &strings(&server.listen));
            line(&mut out, "server_name", &strings(&server.server_names));
            if let Some(tls) = &server.tls {
                let cert = string(&tls.cert.display().to_string());
                let key = string(&tls.key.display().to_string());
                line(
                    &mut out,
                    "tls",
                    &format!("{{ cert = {cert}, key = {key} }}"),
                );
            }
            line(&mut out, "redirect_http", &server.redirect_http.to_string());
            line(&mut out, "http2", &server.http2.to_string());
            line(
                &mut out,
                "client_header_timeout",
                &duration(server.client_header_timeout),
            );
            line(
                &mut out,
                "client_body_timeout",
                &duration(server.client_body_timeout),
            );
            line(
                &mut out,
                "client_max_body_size",
                &size(server.client_max_body_size),
            );
            line(
                &mut out,
                "max_header_size",
                &size(server.max_header_size as u64),
            );
            line(
                &mut out,
                "strict_websocket",
                &server.strict_websocket.to_string(),
            );
            line(
                &mut out,
                "access_log",
                &string(&server.access_log.as_setting()),
            );
            line(&mut out, "reuse_port", &server.reuse_port.to_string());

            for location in &server.locations {
                writeln!(out, "\n[[server.location]]  # id {}", location.id).unwrap();
                let path = match location.kind {
                    MatchKind::Prefix => location.pattern.clone(),
                    kind => format!("{} {}", kind.modifier(), location.pattern),
                };
                line(&mut out, "path", &string(&path));
                match &location.action {
                    LocationAction::Proxy { upstream, uri, tls } => {
                        let uri = uri.as_deref().unwrap_or("");
                        let scheme = if tls.is_some() { "https" } else { "http" };
                        line(
                            &mut out,
                            "proxy_pass",
                            &string(&format!("{scheme}://{upstream}{uri}")),
                        );
                        if let Some(tls) = tls {
                            line(&mut out, "proxy_ssl_verify", &tls.verify.to_string());
                            if let Some(ca) = &tls.trusted_certificate {
                                let ca = string(&ca.display().to_string());
                                line(&mut out, "proxy_ssl_trusted_certificate", &ca);
                            }
                            let sni = tls.server_name.to_string();
                            line(&mut out, "proxy_ssl_server_name", &sni);
                            line(&mut out, "proxy_ssl_name", &string(&tls.name));
                            if let Some(files) = &tls.client_certificate {
                                let cert = string(&files.cert.display().to_string());
                                let key = string(&files.key.display().to_string());
                                line(&mut out, "proxy_ssl_certificate", &cert);
                                line(&mut out, "proxy_ssl_certificate_key", &key);
                            }
                        }
                    }
                    LocationAction::Static {
                        root,
                        index,
                        try_files,
                    } => {
                        line(&mut out, "root", &string(&root.display().to_string()));
                        line(&mut out, "index", &strings(index));
                        line(&mut out, "try_files", &strings(try_files));
                    }
                    LocationAction::Return {
                        status,
                        headers,
                        body,
                    } => {
                        let mut fields = format!("status = {status}");
                        for (name, value) in headers {
                            write!(fields, ", {} = {}", key(name), string(value)).unwrap();
                        }
                        write!(fields, ", body = {}", string(body)).unwrap();
                        line(&mut out, "return", &format!("{{ {fields} }}"));
                    }
                }
                let headers: Vec<String> = location
                    .set_headers
                    .iter()
                    .map(|(name, value)| format!("{} = {}", key(name), string(value)))
                    .collect();
                line(&mut out, "set_headers", &inline_table(&headers));
                line(
                    &mut out,
                    "connect_timeout",
                    &duration(location.connect_timeout),
                );
                line(&mut out, "read_timeout", &duration(location.read_timeout));
                line(&mut out, "send_timeout", &duration(location.send_timeout));
                line(&mut out, "buffer_size", &size(location.buffer_size as u64));
                match location.limit_conn {
                    Some(limit) => line(&mut out, "limit_conn", &limit.to_string()),
                    None => out.push_str("# limit_conn: off\n"),
                }
                line(
                    &mut out,
                    "limit_conn_key",
                    &string(&location.limit_conn_key),
                );
                line(
                    &mut out,
                    "limit_conn_status",
                    &location.limit_conn_status.to_string(),
                );
                match &location.limit_req {
                    Some(limit) => {
                        let value = format!(
                            "{{ rate = {}, burst = {}, key = {} }}",
                            string(&rate(limit.rate_per_sec)),
                            limit.burst,
                            string(&limit.key)
                        );
                        line(&mut out, "limit_req", &value);
                    }
                    None => out.push_str("# limit_req: off\n"),
                }
                line(&mut out, "origins", &strings(&location.origins));
                line(
                    &mut out,
                    "allow_missing_origin",
                    &location.allow_missing_origin.to_string(),
                );
                let filters: Vec<String> = location
                    .filters
                    .iter()
                    .map(|filter| {
                        // Configs come from TOML tables, so converting back cannot fail
                        // unless a hand-built Config holds JSON null.
                        let config = toml::Value::try_from(&filter.config)
                            .map_or_else(|_| "{}".to_owned(), |value| value.to_string());
                        let fail = if filter.fail_open { "open" } else { "closed" };
                        format!(
                            "{{ plugin = {}, config = {config}, fail = \"{fail}\" }}",
                            string(&filter.plugin)
                        )
                    })
                    .collect();
                line(&mut out, "filters", &list(&filters, ""));
                line(
                    &mut out,
                    "max_message_size",
                    &size(location.max_message_size as u64),
                );
                line(
                    &mut out,
                    "websocket_deflate",
                    &location.websocket_deflate.to_string(),
                );
            }
        }
        out
    }
}

fn write_upstream(out: &mut String, upstream: &Upstream, prefix: &str) {
    let mut field = |name: &str, value: &str| writeln!(out, "{prefix}{name} = {value}").unwrap();
    field("balance", &string(upstream.balance.as_str()));
    if let Some(hash_key) = &upstream.hash_key {
        field("hash_key", &string(hash_key));
    }
    field("consistent", &upstream.consistent.to_string());
    field(
        "next_upstream_tries",
        &upstream.next_upstream_tries.to_string(),
    );
    let servers: Vec<String> = upstream
        .servers
        .iter()
        .map(|server| {
            format!(
                "{{ address = {}, weight = {}, max_fails = {}, fail_timeout = {}, backup = {}, down = {} }}",
                string(&server.address),
                server.weight,
                server.max_fails,
                duration(server.fail_timeout),
                server.backup,
                server.down
            )
        })
        .collect();
    field("servers", &list(&servers, prefix));
    if let Some(keepalive) = &upstream.keepalive {
        field("keepalive", &keepalive.connections.to_string());
        field("keepalive_timeout", &duration(keepalive.timeout));
        field("keepalive_requests", &keepalive.requests.to_string());
    }
    if let Some(health) = &upstream.health {
        let value = format!(
            "{{ path = {}, interval = {}, rise = {}, fall = {}, websocket = {} }}",
            string(&health.path),
            duration(health.interval),
            health.rise,
            health.fall,
            health.websocket
        );
        field("health", &value);
    }
}

fn line(out: &mut String, name: &str, value: &str) {
    writeln!(out, "{name} = {value}").unwrap();
}

/// A TOML basic string.
fn string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

fn strings(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|item| string(item)).collect();
    format!("[{}]", items.join(", "))
}

/// A TOML array with one item per line (each line starting with `prefix`).
fn list(items: &[String], prefix: &str) -> String {
    if items.is_empty() {
        return "[]".to_owned();
    }
    let mut text = String::from("[\n");
    for item in items {
        writeln!(text, "{prefix}  {item},").unwrap();
    }
    text.push_str(prefix);
    text.push(']');
    text
}

fn inline_table(fields: &[String]) -> String {
    if fields.is_empty() {
        "{}".to_owned()
    } else {
        format!("{{ {} }}", fields.join(", "))
    }
}

/// A bare key when TOML allows one, else a quoted key.
fn key(name: &str) -> String {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        name.to_owned()
    } else {
        string(name)
    }
}

/// A duration in whole seconds as nginx configurations usually write them
/// (`"3600s"`), or in milliseconds when it has a fraction of a second.
fn duration(value: Duration) -> String {
    let millis = value.as_millis();
    if millis.is_multiple_of(1000) {
        string(&format!("{}s", millis / 1000))
    } else {
        string(&format!("{millis}ms"))
    }
}

/// A `limit_req` rate that `parse_rate` reads back as exactly `per_sec`.
fn rate(per_sec: f64) -> String {
    if per_sec.fract() == 0.0 {
        // Integral: it came from `Nr/s` (or `Nr/m` with N a multiple of 60);
        // `as` saturates the one value above u64::MAX, 2^64, which u64::MAX gives back.
        return format!("{}r/s", per_sec as u64);
    }
    // It is `N / 60` for some N; above 2^51 the product may round to N's neighbour.
    let guess = (per_sec * 60.0).round() as u64;
    (guess.saturating_sub(2)..=guess.saturating_add(2))
        .find(|&n| n as f64 / 60.0 == per_sec)
        .map_or_else(|| format!("{guess}r/m"), |n| format!("{n}r/m"))
}

/// A size as a string in the largest unit that divides it exactly, or a bare number of bytes.
fn size(bytes: u64) -> String {
    let text = size_text(bytes);
    if text.bytes().all(|b| b.is_ascii_digit()) {
        text
    } else {
        string(&text)
    }
}

fn size_text(bytes: u64) -> String {
    [(30, "g"), (20, "m"), (10, "k")]
        .into_iter()
        .find(|(shift, _)| bytes > 0 && bytes.is_multiple_of(1 << shift))
        .map_or_else(
            || bytes.to_string(),
            |(shift, suffix)| format!("{}{suffix}", bytes >> shift),
        )
}
