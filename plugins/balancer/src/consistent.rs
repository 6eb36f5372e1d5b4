//! nginx's `hash KEY consistent`: a ketama ring, compatible with
//! Cache::Memcached::Fast, so that adding or removing a peer moves only the
//! keys on its share of the ring.

use crate::crc32::{Crc32, crc32};
use crate::peers::{Candidates, weight};

/// Points on the ring per unit of weight (nginx's 160).
const POINTS_PER_WEIGHT: u64 = 160;

/// Ring positions tried after the first before giving up (nginx's 20 tries).
const NEXT_POINTS: usize = 20;

/// The ring of one upstream's primary peers.
pub(crate) struct Ring {
    /// The primaries it was built for: `(peer index, address, weight)`.
    members: Vec<(usize, String, u64)>,
    /// `(hash, peer index)`, sorted by hash, one point per distinct hash.
    points: Vec<(u32, usize)>,
}

impl Ring {
    /// Builds the ring of the candidates' primaries as nginx's
    /// `ngx_http_upstream_init_chash` does: for each peer, split its address
    /// at the last `:` into host and port, and make `160 * weight` points,
    /// each the CRC-32 of `HOST \0 PORT` followed by the previous point's
    /// hash as 4 little-endian bytes (0 for the first).
    pub(crate) fn build(candidates: &Candidates) -> Ring {
        let members: Vec<(usize, String, u64)> = candidates
            .primaries()
            .into_iter()
            .map(|i| {
                let peer = &candidates.peers[i];
                (i, peer.address.clone(), weight(peer))
            })
            .collect();
        let mut points = Vec::new();
        for (index, address, weight) in &members {
            let (host, port) = split_address(address);
            let base = Crc32::new().update(host).update(b"\0").update(port);
            let mut prev: u32 = 0;
            for _ in 0..weight * POINTS_PER_WEIGHT {
                prev = base.update(&prev.to_le_bytes()).finish();
                points.push((prev, *index));
            }
        }
        // Stable sort: of equal hashes, the earlier peer's point stays.
        points.sort_by_key(|&(hash, _)| hash);
        points.dedup_by_key(|&mut (hash, _)| hash);
        Ring { members, points }
    }

    /// Whether this ring was built for the candidates' current primaries.
    pub(crate) fn fits(&self, candidates: &Candidates) -> bool {
        let current = candidates.primaries().into_iter().map(|i| {
            let peer = &candidates.peers[i];
            (i, peer.address.as_str(), weight(peer))
        });
        self.members
            .iter()
            .map(|(i, address, w)| (*i, address.as_str(), *w))
            .eq(current)
    }

    /// The peer owning the first point at or after `crc32(key)` (wrapping),
    /// skipping unusable ones up to nginx's 20 further points, or `None`
    /// when the key is empty or nothing usable was found (the caller then
    /// falls back to round-robin, as nginx does).
    pub(crate) fn pick(&self, candidates: &Candidates, key: &str) -> Option<usize> {
        if key.is_empty() || self.points.is_empty() {
            return None;
        }
        let hash = crc32(key.as_bytes());
        let start = self.points.partition_point(|&(point, _)| point < hash);
        (0..=NEXT_POINTS)
            .map(|step| self.points[(start + step) % self.points.len()].1)
            .find(|&peer| candidates.is_usable(peer))
    }
}

/// nginx's split of a server address: `unix:PATH` is all host; otherwise
/// host and port around the last `:`, or all host when there is none.
fn split_address(address: &str) -> (&[u8], &[u8]) {
    if let Some(path) = address
        .get(..5)
        .filter(|scheme| scheme.eq_ignore_ascii_case("unix:"))
        .map(|_| &address[5..])
    {
        return (path.as_bytes(), b"");
    }
    match address.rsplit_once(':') {
        Some((host, port)) => (host.as_bytes(), port.as_bytes()),
        None => (address.as_bytes(), b""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peers::tests::peers;

    fn owners(specs: &[&str], keys: &[String]) -> Vec<String> {
        let list = peers(specs);
        let candidates = Candidates::new(&list);
        let ring = Ring::build(&candidates);
        keys.iter()
            .map(|k| list[ring.pick(&candidates, k).unwrap()].address.clone())
            .collect()
    }

    fn keys() -> Vec<String> {
        (0..1000).map(|n| format!("/chat/room-{n}")).collect()
    }

    #[test]
    fn adding_a_fourth_server_moves_a_quarter_of_the_keys() {
        let three = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"];
        let four = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80"];
        let keys = keys();
        let before = owners(&three, &keys);
        let after = owners(&four, &keys);
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        assert!((150..=350).contains(&moved), "{moved} of 1000 keys moved");
        // Every key that moved went to the new server.
        assert!(
            before
                .iter()
                .zip(&after)
                .all(|(b, a)| b == a || a == "10.0.0.4:80")
        );
    }

    #[test]
    fn points_follow_weights_and_nginx_formula() {
        let list = peers(&["10.0.0.1:80*2", "10.0.0.2:80"]);
        let ring = Ring::build(&Candidates::new(&list));
        assert_eq!(ring.points.len(), 480);
        let first = Crc32::new()
            .update(b"10.0.0.1\x0080")
            .update(&0u32.to_le_bytes())
            .finish();
        assert!(ring.points.contains(&(first, 0)));
        let second = Crc32::new()
            .update(b"10.0.0.1\x0080")
            .update(&first.to_le_bytes())
            .finish();
        assert!(ring.points.contains(&(second, 0)));
    }

    #[test]
    fn unusable_owner_passes_keys_to_the_next_point() {
        let keys = keys();
        let all = owners(&["a:1", "b:1", "c:1"], &keys);
        let without_b = owners(&["a:1", "b:1!", "c:1"], &keys);
        for (before, after) in all.iter().zip(&without_b) {
            assert_ne!(after, "b:1");
            if before != "b:1" {
                assert_eq!(before, after);
            }
        }
    }

    #[test]
    fn ring_fits_only_its_primaries() {
        let list = peers(&["a:1", "b:1"]);
        let ring = Ring::build(&Candidates::new(&list));
        assert!(ring.fits(&Candidates::new(&peers(&["a:1", "b:1!", "z~"]))));
        assert!(!ring.fits(&Candidates::new(&peers(&["a:1", "b:1*2"]))));
        assert!(!ring.fits(&Candidates::new(&peers(&["a:1", "c:1"]))));
    }

    #[test]
    fn address_split() {
        assert_eq!(split_address("[::1]:8080"), (&b"[::1]"[..], &b"8080"[..]));
        assert_eq!(split_address("unix:/tmp/s"), (&b"/tmp/s"[..], &b""[..]));
        assert_eq!(split_address("backend"), (&b"backend"[..], &b""[..]));
    }
}
