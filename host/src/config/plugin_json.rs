//! What each default plugin's `configure` receives: the contract types of
//! [`wasp_sdk::config`], built from the validated configuration and sent as
//! JSON. The plugins read them back with the same types.

use serde::Serialize;
use wasp_sdk::config as contract;

use super::{Config, LocationAction};

impl Config {
    /// `router.configure`: servers with their listen addresses, names and numbered locations.
    pub fn router_json(&self) -> String {
        to_json(&self.router_config())
    }

    /// `balancer.configure`: every upstream (implicit ones included) with its policy and servers.
    pub fn balancer_json(&self) -> String {
        to_json(&self.balancer_config())
    }

    /// `origin.configure`: the Origin allow-lists of locations that have one, keyed by location id.
    pub fn origin_json(&self) -> String {
        to_json(&self.origin_config())
    }

    fn router_config(&self) -> contract::RouterConfig {
        let servers = self
            .servers
            .iter()
            .map(|server| contract::Server {
                listen: server.listen.clone(),
                server_names: server.server_names.clone(),
                locations: server
                    .locations
                    .iter()
                    .map(|location| contract::Location {
                        id: location.id,
                        kind: location.kind,
                        pattern: location.pattern.clone(),
                        action: match &location.action {
                            LocationAction::Proxy { upstream, uri, .. } => {
                                contract::LocationAction::Proxy {
                                    upstream: upstream.clone(),
                                    uri: uri.clone(),
                                }
                            }
                            // The host serves the files: the router only names the location.
                            LocationAction::Static { .. } => contract::LocationAction::Static,
                            LocationAction::Return {
                                status,
                                headers,
                                body,
                            } => contract::LocationAction::Return {
                                response: contract::FixedResponse {
                                    status: *status,
                                    headers: headers.clone(),
                                    body: body.clone(),
                                },
                            },
                        },
                    })
                    .collect(),
            })
            .collect();
        contract::RouterConfig { servers }
    }

    fn balancer_config(&self) -> contract::BalancerConfig {
        let upstreams = self
            .upstreams
            .iter()
            .map(|(name, upstream)| {
                let servers = upstream
                    .servers
                    .iter()
                    .map(|server| contract::UpstreamServer {
                        address: server.address.clone(),
                        weight: server.weight,
                        backup: server.backup,
                    })
                    .collect();
                let entry = contract::Upstream {
                    balance: upstream.balance,
                    consistent: upstream.consistent,
                    servers,
                };
                (name.clone(), entry)
            })
            .collect();
        contract::BalancerConfig { upstreams }
    }

    fn origin_config(&self) -> contract::OriginConfig {
        let locations = self
            .locations()
            .filter(|location| !location.origins.is_empty())
            .map(|location| {
                let policy = contract::OriginPolicy {
                    origins: location.origins.clone(),
                    allow_missing: location.allow_missing_origin,
                };
                (location.id, policy)
            })
            .collect();
        contract::OriginConfig { locations }
    }
}

fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("the contract types have string or integer map keys")
}
