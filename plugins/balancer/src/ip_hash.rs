//! nginx's `ip_hash`: clients of one IPv4 /24 (or one IPv6 address) stick to
//! one primary peer while it is usable.

use std::net::IpAddr;

use crate::peers::Candidates;

/// Rehashes after the first choice before giving up (nginx's 20 tries).
const REHASHES: usize = 20;

/// The primary peer nginx's ip_hash gives `client_ip`, or `None` when no
/// hash choice is usable within nginx's tries (the caller then falls back to
/// round-robin, as nginx does).
pub(crate) fn pick(candidates: &Candidates, client_ip: &str) -> Option<usize> {
    let primaries = candidates.primaries();
    let total = candidates.total_weight(&primaries);
    if total == 0 {
        return None;
    }
    let key = key(client_ip);
    let mut hash: u64 = 89;
    for _ in 0..=REHASHES {
        // A rehash runs the same bytes through again, from the last hash.
        for &byte in &key {
            hash = (hash * 113 + u64::from(byte)) % 6271;
        }
        let chosen = candidates.walk(&primaries, hash % total);
        if candidates.is_usable(chosen) {
            return Some(chosen);
        }
    }
    None
}

/// The bytes nginx hashes: the first three octets of an IPv4 address, all
/// sixteen of an IPv6 one, and three zero bytes (nginx's pseudo-address for
/// clients that are not IP) when the address does not parse.
///
/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a dual-stack
/// listener reports for IPv4 clients) counts as its IPv4 address, so that a
/// client keeps its peer whichever listener it reaches.
fn key(client_ip: &str) -> Vec<u8> {
    match client_ip.parse::<IpAddr>().map(|ip| ip.to_canonical()) {
        Ok(IpAddr::V4(v4)) => v4.octets()[..3].to_vec(),
        Ok(IpAddr::V6(v6)) => v6.octets().to_vec(),
        Err(_) => vec![0; 3],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peers::tests::peers;

    fn pick_for(specs: &[&str], ip: &str) -> Option<usize> {
        let list = peers(specs);
        pick(&Candidates::new(&list), ip)
    }

    #[test]
    fn nginx_hash_of_an_address() {
        // 89 → (89*113+10)%6271 = 3796 → (3796*113+0)%6271 = 2520
        //    → (2520*113+0)%6271 = 2565; 2565 % 3 = 0, and % 4 = 1.
        assert_eq!(key("10.0.0.7"), vec![10, 0, 0]);
        assert_eq!(pick_for(&["a", "b", "c"], "10.0.0.7"), Some(0));
        assert_eq!(pick_for(&["a", "b", "c", "d"], "10.0.0.7"), Some(1));
        // Weights 2,1,1: 2565 % 4 = 1 falls in a's share 0..2.
        assert_eq!(pick_for(&["a*2", "b", "c"], "10.0.0.7"), Some(0));
    }

    #[test]
    fn same_slash_24_same_peer() {
        let specs = ["a", "b", "c", "d", "e"];
        let first = pick_for(&specs, "192.168.7.1");
        for host in 2..=254 {
            assert_eq!(pick_for(&specs, &format!("192.168.7.{host}")), first);
        }
        assert_eq!(pick_for(&specs, "::ffff:192.168.7.9"), first);
    }

    #[test]
    fn different_slash_24s_spread() {
        let specs = ["a", "b", "c", "d"];
        let mut counts = [0; 4];
        for net in 0..=255 {
            counts[pick_for(&specs, &format!("10.1.{net}.5")).unwrap()] += 1;
        }
        assert!(counts.iter().all(|&n| n > 30), "uneven spread {counts:?}");
    }

    #[test]
    fn ipv6_uses_the_whole_address() {
        assert_eq!(key("2001:db8::1").len(), 16);
        assert_ne!(key("2001:db8::1"), key("2001:db8::2"));
        assert_eq!(key("not an address"), vec![0, 0, 0]);
    }

    #[test]
    fn unusable_choice_rehashes_to_another_peer() {
        let ip = "10.0.0.7";
        let chosen = pick_for(&["a", "b", "c"], ip).unwrap();
        let mut specs = vec!["a", "b", "c"];
        specs[chosen] = "x!";
        let other = pick_for(&specs, ip).unwrap();
        assert_ne!(other, chosen);
        // And it stays sticky while the first choice is down.
        assert_eq!(pick_for(&specs, "10.0.0.200"), Some(other));
    }

    #[test]
    fn gives_up_when_no_primary_is_usable() {
        assert_eq!(pick_for(&["a!", "b!", "c~"], "10.0.0.7"), None);
        assert_eq!(pick_for(&["c~"], "10.0.0.7"), None);
    }
}
