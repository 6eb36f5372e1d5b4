//! wasp's default balancer: nginx's upstream policies.
//!
//! - `round_robin` (the default): smooth weighted round-robin.
//! - `ip_hash`: a client's IPv4 /24 (or IPv6 address) sticks to one peer.
//! - `least_conn`: fewest active connections per unit of weight.
//! - `hash`: a weighted modulo of the CRC-32 of the expanded `hash_key`, or
//!   with `consistent = true` a ketama ring.
//!
//! Every policy skips unusable peers, uses `backup` peers only when no
//! primary is usable, and, when no peer at all is usable, picks among them
//! anyway as nginx does. No decision depends on instance memory: round-robin
//! positions come from the host's per-upstream `cursor`, and the only state
//! kept is caches derived from the configuration and the peer list, so any
//! instance, fresh or old, gives the same answer to the same call.

mod config;
mod consistent;
mod crc32;
mod hash;
mod ip_hash;
mod least_conn;
mod peers;
mod round_robin;

use std::collections::HashMap;

use wasp_sdk::config::Balance;
use wasp_sdk::{Balancer, Peer, RequestHead};

use consistent::Ring;
use peers::Candidates;
use round_robin::RoundRobin;

/// The balancer: each configured upstream's policy and caches.
pub struct DefaultBalancer {
    upstreams: HashMap<String, Upstream>,
}

struct Upstream {
    policy: Balance,
    consistent: bool,
    /// Schedules for round-robin, least_conn ties and the hash policies'
    /// fallback.
    round_robin: RoundRobin,
    /// The consistent-hash ring, built on first use and whenever the
    /// primaries' addresses or weights change.
    ring: Option<Ring>,
}

impl Upstream {
    /// The ketama ring for the candidates' primaries.
    fn ring(&mut self, candidates: &Candidates) -> &Ring {
        if !self.ring.as_ref().is_some_and(|ring| ring.fits(candidates)) {
            self.ring = Some(Ring::build(candidates));
        }
        self.ring.as_ref().expect("ring built above")
    }
}

impl Balancer for DefaultBalancer {
    fn configure(config: &str) -> Result<Self, String> {
        let config = config::parse(config)?;
        let upstreams = config
            .upstreams
            .into_iter()
            .map(|(name, upstream)| {
                let state = Upstream {
                    policy: upstream.balance,
                    consistent: upstream.consistent,
                    round_robin: RoundRobin::default(),
                    ring: None,
                };
                (name, state)
            })
            .collect();
        Ok(DefaultBalancer { upstreams })
    }

    fn pick(
        &mut self,
        head: &RequestHead,
        upstream: &str,
        peers: &[Peer],
        cursor: u64,
        hash_key: &str,
    ) -> Option<u32> {
        let upstream = self.upstreams.get_mut(upstream)?;
        let candidates = Candidates::new(peers);
        let chosen = match upstream.policy {
            Balance::RoundRobin => None,
            Balance::IpHash => ip_hash::pick(&candidates, &head.client_ip),
            Balance::LeastConn => least_conn::pick(&candidates, &mut upstream.round_robin, cursor),
            Balance::Hash if upstream.consistent => {
                upstream.ring(&candidates).pick(&candidates, hash_key)
            }
            Balance::Hash => hash::pick(&candidates, hash_key),
        };
        // Round-robin is the policy itself or, as in nginx, what the others
        // fall back to when their own choice finds nothing usable.
        let chosen = chosen.or_else(|| {
            upstream
                .round_robin
                .pick(&candidates, &candidates.pool(), cursor)
        })?;
        u32::try_from(chosen).ok()
    }
}

wasp_sdk::export!(balancer: DefaultBalancer);

#[cfg(test)]
mod tests {
    use super::*;
    use peers::tests::peers;

    const CONFIG: &str = r#"{ "upstreams": {
        "rr": { "balance": "round_robin" },
        "ip": { "balance": "ip_hash" },
        "lc": { "balance": "least_conn" },
        "hash": { "balance": "hash" },
        "ketama": { "balance": "hash", "consistent": true }
    } }"#;

    fn head(client_ip: &str) -> RequestHead {
        wasp_sdk::testing::head("/ws").with_client(client_ip)
    }

    fn balancer() -> DefaultBalancer {
        DefaultBalancer::configure(CONFIG).unwrap()
    }

    /// The addresses picked for cursors `0..n`.
    fn picks(upstream: &str, specs: &[&str], n: u64) -> String {
        let list = peers(specs);
        let mut b = balancer();
        (0..n)
            .map(|cursor| {
                let i = b
                    .pick(&head("10.0.0.1"), upstream, &list, cursor, "k")
                    .unwrap();
                list[i as usize].address.clone()
            })
            .collect()
    }

    #[test]
    fn smooth_weighted_round_robin() {
        assert_eq!(picks("rr", &["a*5", "b", "c"], 7), "aabacaa");
    }

    #[test]
    fn backups_only_when_no_primary_is_usable() {
        assert_eq!(picks("rr", &["a", "b~"], 3), "aaa");
        assert_eq!(picks("rr", &["a!", "b~", "c~"], 4), "bcbc");
        assert_eq!(picks("ip", &["a!", "b~"], 2), "bb");
        assert_eq!(picks("hash", &["a!", "b~"], 2), "bb");
        assert_eq!(picks("ketama", &["a!", "b~"], 2), "bb");
        assert_eq!(picks("lc", &["a!", "b~"], 2), "bb");
    }

    #[test]
    fn nothing_usable_still_picks_a_primary() {
        for upstream in ["rr", "ip", "lc", "hash", "ketama"] {
            let got = picks(upstream, &["a!", "b!", "c!~"], 4);
            assert!(!got.contains('c'), "{upstream}: {got}");
        }
    }

    #[test]
    fn unknown_upstream_or_no_peers_is_none() {
        let mut b = balancer();
        assert_eq!(
            b.pick(&head("10.0.0.1"), "nope", &peers(&["a"]), 0, ""),
            None
        );
        assert_eq!(b.pick(&head("10.0.0.1"), "rr", &[], 0, ""), None);
    }

    #[test]
    fn ip_hash_sticks_per_slash_24() {
        let list = peers(&["a", "b", "c"]);
        let mut b = balancer();
        let mut pick = |ip: &str, cursor| b.pick(&head(ip), "ip", &list, cursor, "").unwrap();
        let first = pick("172.16.5.1", 0);
        for (n, ip) in ["172.16.5.1", "172.16.5.99", "172.16.5.250"]
            .iter()
            .enumerate()
        {
            assert_eq!(pick(ip, n as u64 + 1), first);
        }
    }

    #[test]
    fn empty_hash_key_falls_back_to_round_robin() {
        let list = peers(&["a", "b"]);
        let mut b = balancer();
        let got: Vec<u32> = (0..4)
            .map(|c| b.pick(&head("10.0.0.1"), "hash", &list, c, "").unwrap())
            .collect();
        assert_eq!(got, vec![0, 1, 0, 1]);
    }

    #[test]
    fn deterministic_across_fresh_instances() {
        let list = peers(&["a*3+2", "b*2+1", "c+0", "d!", "e~"]);
        let calls: Vec<(&str, String, u64, String)> = ["rr", "ip", "lc", "hash", "ketama"]
            .iter()
            .flat_map(|&u| {
                (0..50u64).map(move |n| (u, format!("10.{n}.3.4"), n * 7, format!("key-{n}")))
            })
            .collect();
        // One long-lived instance against a fresh one per call.
        let mut old = balancer();
        for (upstream, ip, cursor, key) in &calls {
            let warm = old.pick(&head(ip), upstream, &list, *cursor, key);
            let fresh = balancer().pick(&head(ip), upstream, &list, *cursor, key);
            assert_eq!(warm, fresh, "{upstream} {ip} {cursor} {key}");
            assert!(warm.is_some_and(|i| i < 3), "{upstream} picked {warm:?}");
        }
    }
}
