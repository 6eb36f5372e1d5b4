//! The peers a policy may choose from, with nginx's fallbacks: backups only
//! when no primary is usable, and failed peers again when nothing is usable.

use wasp_sdk::Peer;

/// A peer's weight for arithmetic. A zero weight (which the configuration
/// refuses) counts as 1 so that it can never divide by zero.
pub(crate) fn weight(peer: &Peer) -> u64 {
    u64::from(peer.weight.max(1))
}

/// The peers of one pick, with the usability the policies go by.
pub(crate) struct Candidates<'a> {
    pub(crate) peers: &'a [Peer],
    usable: Vec<bool>,
}

impl<'a> Candidates<'a> {
    /// Takes the host's view of the peers. When no peer at all is usable,
    /// every primary counts as usable (every peer, if all are backups): nginx
    /// then forgets the failures and tries the peers again rather than
    /// failing without trying, and each policy picks among them as it would.
    pub(crate) fn new(peers: &'a [Peer]) -> Self {
        let mut usable: Vec<bool> = peers.iter().map(|p| p.usable).collect();
        if !usable.contains(&true) {
            let any_primary = peers.iter().any(|p| !p.backup);
            for (flag, peer) in usable.iter_mut().zip(peers) {
                *flag = !peer.backup || !any_primary;
            }
        }
        Candidates { peers, usable }
    }

    /// Whether peer `index` may be chosen.
    pub(crate) fn is_usable(&self, index: usize) -> bool {
        self.usable[index]
    }

    /// Every primary peer, usable or not: the fixed domain of the hash
    /// policies, so that a peer going down does not remap the others' keys.
    pub(crate) fn primaries(&self) -> Vec<usize> {
        (0..self.peers.len())
            .filter(|&i| !self.peers[i].backup)
            .collect()
    }

    /// The usable primaries, or the usable backups when no primary is
    /// usable: what round-robin and least_conn choose among.
    pub(crate) fn pool(&self) -> Vec<usize> {
        let usable_with = |backup: bool| -> Vec<usize> {
            (0..self.peers.len())
                .filter(|&i| self.usable[i] && self.peers[i].backup == backup)
                .collect()
        };
        let primaries = usable_with(false);
        if primaries.is_empty() {
            usable_with(true)
        } else {
            primaries
        }
    }

    /// nginx's weighted walk over `members`: the member whose share of
    /// `0..total weight` contains `point` (which must be below the total).
    pub(crate) fn walk(&self, members: &[usize], mut point: u64) -> usize {
        for &i in members {
            let w = weight(&self.peers[i]);
            if point < w {
                return i;
            }
            point -= w;
        }
        unreachable!("point beyond the total weight")
    }

    /// The sum of the weights of `members`.
    pub(crate) fn total_weight(&self, members: &[usize]) -> u64 {
        members.iter().map(|&i| weight(&self.peers[i])).sum()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A peer for tests: `spec` is `address` with optional `*W` (weight),
    /// `!` (unusable), `+N` (active connections) and `~` (backup) suffixes,
    /// e.g. `"a*5"`, `"b!~"`, `"c+3"`.
    pub(crate) fn peer(spec: &str) -> Peer {
        let address: String = spec
            .chars()
            .take_while(|c| !matches!(c, '*' | '!' | '+' | '~'))
            .collect();
        let number_after = |mark: char| -> Option<u32> {
            let rest = spec.split_once(mark)?.1;
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        };
        Peer {
            address,
            weight: number_after('*').unwrap_or(1),
            active: number_after('+').unwrap_or(0),
            usable: !spec.contains('!'),
            backup: spec.contains('~'),
        }
    }

    pub(crate) fn peers(specs: &[&str]) -> Vec<Peer> {
        specs.iter().map(|s| peer(s)).collect()
    }

    #[test]
    fn pool_prefers_usable_primaries_then_backups() {
        let list = peers(&["a", "b!", "c~"]);
        assert_eq!(Candidates::new(&list).pool(), vec![0]);
        let list = peers(&["a!", "b!", "c~", "d!~"]);
        assert_eq!(Candidates::new(&list).pool(), vec![2]);
    }

    #[test]
    fn nothing_usable_means_every_primary_again() {
        let list = peers(&["a!", "b!", "c!~"]);
        assert_eq!(Candidates::new(&list).pool(), vec![0, 1]);
        let list = peers(&["a!~", "b!~"]);
        assert_eq!(Candidates::new(&list).pool(), vec![0, 1]);
    }

    #[test]
    fn walk_follows_weights() {
        let list = peers(&["a*2", "b*3"]);
        let c = Candidates::new(&list);
        let picks: Vec<usize> = (0..5).map(|p| c.walk(&[0, 1], p)).collect();
        assert_eq!(picks, vec![0, 0, 1, 1, 1]);
        assert_eq!(c.total_weight(&[0, 1]), 5);
    }
}
