//! nginx's `hash KEY` (not consistent): a weighted modulo of the key's
//! CRC-32, compatible with Cache::Memcached.

use crate::crc32::Crc32;
use crate::peers::Candidates;

/// Rehashes after the first choice before giving up (nginx's 20 tries).
const REHASHES: u32 = 20;

/// The primary peer nginx's `hash` gives `key`, or `None` when the key is
/// empty or no choice is usable within nginx's tries (the caller then falls
/// back to round-robin, as nginx does).
///
/// Each try adds `(crc32([REHASH] KEY) >> 16) & 0x7fff` to the running hash,
/// where REHASH is the try number in decimal, omitted on the first try.
pub(crate) fn pick(candidates: &Candidates, key: &str) -> Option<usize> {
    let primaries = candidates.primaries();
    let total = candidates.total_weight(&primaries);
    if key.is_empty() || total == 0 {
        return None;
    }
    let mut hash: u64 = 0;
    for rehash in 0..=REHASHES {
        let mut crc = Crc32::new();
        if rehash > 0 {
            crc = crc.update(rehash.to_string().as_bytes());
        }
        hash += u64::from((crc.update(key.as_bytes()).finish() >> 16) & 0x7fff);
        let chosen = candidates.walk(&primaries, hash % total);
        if candidates.is_usable(chosen) {
            return Some(chosen);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crc32::crc32;
    use crate::peers::tests::peers;

    fn pick_for(specs: &[&str], key: &str) -> Option<usize> {
        let list = peers(specs);
        pick(&Candidates::new(&list), key)
    }

    #[test]
    fn weighted_modulo_of_the_crc() {
        let hash = u64::from((crc32(b"room-42") >> 16) & 0x7fff);
        assert_eq!(
            pick_for(&["a", "b", "c"], "room-42"),
            Some((hash % 3) as usize)
        );
        let list = peers(&["a*2", "b", "c*3"]);
        let c = Candidates::new(&list);
        assert_eq!(pick(&c, "room-42"), Some(c.walk(&[0, 1, 2], hash % 6)));
    }

    #[test]
    fn same_key_same_peer_and_keys_spread() {
        let specs = ["a", "b", "c"];
        let mut counts = [0; 3];
        for n in 0..300 {
            let key = format!("user-{n}");
            let chosen = pick_for(&specs, &key).unwrap();
            assert_eq!(pick_for(&specs, &key), Some(chosen));
            counts[chosen] += 1;
        }
        assert!(counts.iter().all(|&n| n > 60), "uneven spread {counts:?}");
    }

    #[test]
    fn unusable_choice_rehashes() {
        let chosen = pick_for(&["a", "b", "c"], "room-42").unwrap();
        let mut specs = vec!["a", "b", "c"];
        specs[chosen] = "x!";
        assert_ne!(pick_for(&specs, "room-42"), Some(chosen));
        assert!(pick_for(&specs, "room-42").is_some());
    }

    #[test]
    fn empty_key_defers_to_round_robin() {
        assert_eq!(pick_for(&["a", "b"], ""), None);
    }
}
