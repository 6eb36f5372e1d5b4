//! The JSON each default plugin receives in `configure` (contracts in
//! `docs-config-spec.md`).

use serde_json::{Map, Value, json};

use super::{Config, LocationAction};

impl Config {
    /// `router.configure`: servers with their listen addresses, names and numbered locations.
    pub fn router_json(&self) -> String {
        let servers: Vec<Value> = self
            .servers
            .iter()
            .map(|server| {
                let locations: Vec<Value> = server
                    .locations
                    .iter()
                    .map(|location| {
                        let mut entry = Map::new();
                        entry.insert("id".into(), location.id.into());
                        entry.insert("kind".into(), location.kind.as_str().into());
                        entry.insert("pattern".into(), location.pattern.clone().into());
                        match &location.action {
                            LocationAction::Proxy { upstream, uri } => {
                                entry.insert("action".into(), "proxy".into());
                                entry.insert("upstream".into(), upstream.clone().into());
                                entry.insert("uri".into(), uri.clone().into());
                            }
                            LocationAction::Static { .. } => {
                                entry.insert("action".into(), "static".into());
                            }
                            LocationAction::Return {
                                status,
                                headers,
                                body,
                            } => {
                                entry.insert("action".into(), "return".into());
                                let answer =
                                    json!({ "status": status, "headers": headers, "body": body });
                                entry.insert("return".into(), answer);
                            }
                        }
                        Value::Object(entry)
                    })
                    .collect();
                json!({
                    "listen": server.listen,
                    "server_names": server.server_names,
                    "locations": locations,
                })
            })
            .collect();
        json!({ "servers": servers }).to_string()
    }

    /// `balancer.configure`: every upstream (implicit ones included) with its policy and servers.
    pub fn balancer_json(&self) -> String {
        let upstreams: Map<String, Value> = self
            .upstreams
            .iter()
            .map(|(name, upstream)| {
                let servers: Vec<Value> = upstream
                    .servers
                    .iter()
                    .map(|server| {
                        json!({
                            "address": server.address,
                            "weight": server.weight,
                            "backup": server.backup,
                        })
                    })
                    .collect();
                let entry = json!({
                    "balance": upstream.balance.as_str(),
                    "consistent": upstream.consistent,
                    "servers": servers,
                });
                (name.clone(), entry)
            })
            .collect();
        json!({ "upstreams": upstreams }).to_string()
    }

    /// `origin.configure`: the Origin allow-lists of locations that have one, keyed by location id.
    pub fn origin_json(&self) -> String {
        let locations: Map<String, Value> = self
            .locations()
            .filter(|location| !location.origins.is_empty())
            .map(|location| {
                let entry = json!({
                    "origins": location.origins,
                    "allow_missing": location.allow_missing_origin,
                });
                (location.id.to_string(), entry)
            })
            .collect();
        json!({ "locations": locations }).to_string()
    }
}
