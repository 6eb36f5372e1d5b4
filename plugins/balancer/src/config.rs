//! The configuration wasp sends `balancer.configure`: each upstream's
//! policy. Peers, weights and health come with every pick instead.

use std::collections::HashMap;

use serde::Deserialize;

/// Above this total weight an upstream is refused at load time: its
/// round-robin schedule and consistent-hash ring (160 points per unit of
/// weight) must fit comfortably in a plugin instance's memory.
const MAX_TOTAL_WEIGHT: u64 = 10_000;

/// `{ "upstreams": { NAME: { "balance": ..., "consistent": ..., "servers": [...] } } }`.
/// Other keys the host may add (such as `hash_key`) are ignored.
#[derive(Deserialize)]
pub(crate) struct Config {
    #[serde(default)]
    pub(crate) upstreams: HashMap<String, Upstream>,
}

/// One `[upstreams.NAME]`.
#[derive(Deserialize)]
pub(crate) struct Upstream {
    #[serde(default)]
    pub(crate) balance: Policy,
    /// Only with `balance = "hash"`: ketama consistent hashing.
    #[serde(default)]
    pub(crate) consistent: bool,
    #[serde(default)]
    servers: Vec<Server>,
}

/// How an upstream chooses its peer.
#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Policy {
    #[default]
    RoundRobin,
    IpHash,
    LeastConn,
    Hash,
}

/// One server: only its weight matters here, to bound memory.
#[derive(Deserialize)]
struct Server {
    #[serde(default = "one")]
    weight: u32,
}

fn one() -> u32 {
    1
}

impl Config {
    /// Parses and checks the JSON, naming the upstream at fault.
    pub(crate) fn parse(json: &str) -> Result<Config, String> {
        let config: Config = wasp_sdk::parse_config(json)?;
        for (name, upstream) in &config.upstreams {
            if upstream.servers.iter().any(|s| s.weight == 0) {
                return Err(format!("upstream {name}: server weight must be at least 1"));
            }
            let total: u64 = upstream.servers.iter().map(|s| u64::from(s.weight)).sum();
            if total > MAX_TOTAL_WEIGHT {
                return Err(format!(
                    "upstream {name}: total server weight {total} exceeds {MAX_TOTAL_WEIGHT}"
                ));
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_shape() {
        let config = Config::parse(
            r#"{ "upstreams": { "websocket_servers": { "balance": "ip_hash", "consistent": false,
                "hash_key": "",
                "servers": [ { "address": "127.0.0.1:8081", "weight": 1, "backup": false } ] } } }"#,
        )
        .unwrap();
        let upstream = &config.upstreams["websocket_servers"];
        assert_eq!(upstream.balance, Policy::IpHash);
        assert!(!upstream.consistent);
    }

    #[test]
    fn defaults_to_round_robin_and_accepts_empty_config() {
        let config = Config::parse(r#"{ "upstreams": { "u": {} } }"#).unwrap();
        assert_eq!(config.upstreams["u"].balance, Policy::RoundRobin);
        assert!(Config::parse("").unwrap().upstreams.is_empty());
    }

    #[test]
    fn refuses_bad_policies_and_weights() {
        let err = |json| Config::parse(json).err().unwrap();
        assert!(err(r#"{ "upstreams": { "u": { "balance": "random" } } }"#).contains("random"));
        assert!(
            err(r#"{ "upstreams": { "u": { "servers": [ { "weight": 0 } ] } } }"#)
                .contains("upstream u")
        );
        assert!(
            err(r#"{ "upstreams": { "u": { "servers": [ { "weight": 10001 } ] } } }"#)
                .contains("exceeds")
        );
    }
}
