//! `origin.configure`: the Origin allow-lists of WebSocket locations.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The locations that check `Origin`, by location id
/// ([`Location::id`](super::Location::id)); a location absent from the map
/// accepts every handshake. Unknown keys are refused: a misspelt key would
/// otherwise leave a location unchecked.
///
/// ```
/// # use wasp_sdk::config::OriginConfig;
/// let config: OriginConfig = wasp_sdk::parse_config(r#"{ "locations": { "1": {
///   "origins": ["https://chat.example.com", "https://*.example.com"],
///   "allow_missing": true } } }"#)?;
/// assert_eq!(config.locations[&1].origins.len(), 2);
/// # Ok::<(), String>(())
/// ```
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct OriginConfig {
    /// Each checking location's policy (JSON object keys are the ids as
    /// strings, `"1"`).
    #[serde(default)]
    pub locations: BTreeMap<u32, OriginPolicy>,
}

/// One location's `origins` and `allow_missing_origin`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OriginPolicy {
    /// Allowed origins, `scheme://host[:port]`; `scheme://*.domain` allows
    /// any subdomain of `domain`.
    #[serde(default)]
    pub origins: Vec<String>,
    /// Accept handshakes without an `Origin` header (non-browser clients).
    #[serde(default = "yes")]
    pub allow_missing: bool,
}

fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn serializes_as_the_documented_json_and_back() {
        let config = OriginConfig {
            locations: BTreeMap::from([(
                1,
                OriginPolicy {
                    origins: vec!["https://chat.example.com".into()],
                    allow_missing: false,
                },
            )]),
        };
        let json = json!({ "locations": { "1": { "origins": ["https://chat.example.com"],
            "allow_missing": false } } });
        assert_eq!(serde_json::to_value(&config).unwrap(), json);
        assert_eq!(
            serde_json::from_value::<OriginConfig>(json).unwrap(),
            config
        );
    }

    #[test]
    fn allow_missing_defaults_to_true_and_typos_are_refused() {
        let config: OriginConfig = crate::parse_config(r#"{ "locations": { "2": {} } }"#).unwrap();
        assert!(config.locations[&2].allow_missing);
        assert!(config.locations[&2].origins.is_empty());
        for bad in [
            r#"{ "location": {} }"#,
            r#"{ "locations": { "1": { "origin": [] } } }"#,
            r#"{ "locations": { "x": {} } }"#,
        ] {
            assert!(crate::parse_config::<OriginConfig>(bad).is_err(), "{bad}");
        }
    }
}
