//! `balancer.configure`: the upstreams and their policies. Peers' live
//! state (active connections, usability) comes with every pick instead.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Every upstream by name: the `[upstreams.NAME]` tables plus one implicit
/// upstream per `proxy_pass` to a `host:port` (named by that address).
///
/// ```
/// # use wasp_sdk::config::{Balance, BalancerConfig};
/// let config: BalancerConfig = wasp_sdk::parse_config(r#"{ "upstreams": {
///   "websocket_servers": { "balance": "ip_hash", "consistent": false, "servers": [
///     { "address": "127.0.0.1:8081", "weight": 1, "backup": false } ] } } }"#)?;
/// assert_eq!(config.upstreams["websocket_servers"].balance, Balance::IpHash);
/// # Ok::<(), String>(())
/// ```
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct BalancerConfig {
    /// The upstreams by name.
    #[serde(default)]
    pub upstreams: BTreeMap<String, Upstream>,
}

/// One upstream: how it chooses a peer, and its servers.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Upstream {
    /// The balancing policy.
    #[serde(default)]
    pub balance: Balance,
    /// Only with [`Balance::Hash`]: ketama consistent hashing.
    #[serde(default)]
    pub consistent: bool,
    /// The servers in configuration order: the peers of each pick, in the
    /// same order.
    #[serde(default)]
    pub servers: Vec<UpstreamServer>,
}

/// One server of an upstream.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct UpstreamServer {
    /// `host:port`.
    #[serde(default)]
    pub address: String,
    /// Weight, at least 1.
    #[serde(default = "one")]
    pub weight: u32,
    /// Used only when no primary server is usable.
    #[serde(default)]
    pub backup: bool,
}

fn one() -> u32 {
    1
}

/// nginx's upstream balancing policies.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Weighted round-robin (nginx's default).
    #[default]
    RoundRobin,
    /// Hash of the client address (nginx `ip_hash`).
    IpHash,
    /// Fewest active connections (nginx `least_conn`).
    LeastConn,
    /// Hash of the expanded `hash_key` (nginx `hash`).
    Hash,
}

impl Balance {
    /// The policy's name, as the configuration and the JSON write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::RoundRobin => "round_robin",
            Balance::IpHash => "ip_hash",
            Balance::LeastConn => "least_conn",
            Balance::Hash => "hash",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn serializes_as_the_documented_json_and_back() {
        let config = BalancerConfig {
            upstreams: BTreeMap::from([(
                "websocket_servers".to_string(),
                Upstream {
                    balance: Balance::IpHash,
                    consistent: false,
                    servers: vec![UpstreamServer {
                        address: "127.0.0.1:8081".into(),
                        weight: 1,
                        backup: false,
                    }],
                },
            )]),
        };
        let json = json!({ "upstreams": { "websocket_servers": { "balance": "ip_hash",
            "consistent": false,
            "servers": [ { "address": "127.0.0.1:8081", "weight": 1, "backup": false } ] } } });
        assert_eq!(serde_json::to_value(&config).unwrap(), json);
        assert_eq!(
            serde_json::from_value::<BalancerConfig>(json).unwrap(),
            config
        );
    }

    #[test]
    fn policy_names_match_serde() {
        for balance in [
            Balance::RoundRobin,
            Balance::IpHash,
            Balance::LeastConn,
            Balance::Hash,
        ] {
            assert_eq!(serde_json::to_value(balance).unwrap(), balance.as_str());
        }
    }

    #[test]
    fn everything_defaults_and_unknown_keys_are_ignored() {
        let config: BalancerConfig = crate::parse_config(
            r#"{ "upstreams": { "u": { "hash_key": "$arg_room", "servers": [ {} ] } } }"#,
        )
        .unwrap();
        let upstream = &config.upstreams["u"];
        assert_eq!(upstream.balance, Balance::RoundRobin);
        assert!(!upstream.consistent);
        assert_eq!(upstream.servers[0].weight, 1);
        assert!(!upstream.servers[0].backup);
        assert_eq!(
            crate::parse_config::<BalancerConfig>(""),
            Ok(BalancerConfig::default())
        );
    }
}
