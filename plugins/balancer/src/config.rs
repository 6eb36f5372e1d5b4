//! Reading the host's [`BalancerConfig`]: the contract's types, plus the
//! limit this balancer puts on weights. Peers, weights and health come with
//! every pick instead.

use wasp_sdk::config::BalancerConfig;

/// Above this total weight an upstream is refused at load time: its
/// round-robin schedule and consistent-hash ring (160 points per unit of
/// weight) must fit comfortably in a plugin instance's memory.
const MAX_TOTAL_WEIGHT: u64 = 10_000;

/// Parses and checks the JSON, naming the upstream at fault.
pub(crate) fn parse(json: &str) -> Result<BalancerConfig, String> {
    let config: BalancerConfig = wasp_sdk::parse_config(json)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use wasp_sdk::config::Balance;

    #[test]
    fn parses_the_documented_shape() {
        let config = parse(
            r#"{ "upstreams": { "websocket_servers": { "balance": "ip_hash", "consistent": false,
                "hash_key": "",
                "servers": [ { "address": "127.0.0.1:8081", "weight": 1, "backup": false } ] } } }"#,
        )
        .unwrap();
        let upstream = &config.upstreams["websocket_servers"];
        assert_eq!(upstream.balance, Balance::IpHash);
        assert!(!upstream.consistent);
    }

    #[test]
    fn defaults_to_round_robin_and_accepts_empty_config() {
        let config = parse(r#"{ "upstreams": { "u": {} } }"#).unwrap();
        assert_eq!(config.upstreams["u"].balance, Balance::RoundRobin);
        assert!(parse("").unwrap().upstreams.is_empty());
    }

    #[test]
    fn refuses_bad_policies_and_weights() {
        let err = |json| parse(json).err().unwrap();
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
