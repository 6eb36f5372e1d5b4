//! nginx's smooth weighted round-robin, driven by the host's cursor.
//!
//! nginx keeps a running `current_weight` per peer in worker memory. Our
//! instances are pooled and replaced at any time, so instead the schedule
//! that algorithm produces from a fresh start is computed once per peer set
//! and indexed by the host's pick counter: the same picks, in the same
//! order, from any instance and any process.

use crate::peers::{Candidates, weight};

/// Schedules kept per upstream. More than one, so that a peer failing and
/// recovering, or a retry excluding the peer just tried, switches between
/// cached schedules instead of recomputing them on every pick.
const KEPT: usize = 4;

/// The cached schedules of one upstream, most recently used first.
#[derive(Default)]
pub(crate) struct RoundRobin {
    recent: Vec<Schedule>,
}

/// One period of the schedule of a peer set.
struct Schedule {
    /// The set it was computed for: `(peer index, weight)` in peer order.
    members: Vec<(usize, u64)>,
    /// Peer indices, one per pick.
    picks: Vec<u32>,
}

impl RoundRobin {
    /// The peer of `members` (indices into the candidates' peers) that pick
    /// number `cursor` gets, or `None` when `members` is empty.
    pub(crate) fn pick(
        &mut self,
        candidates: &Candidates,
        members: &[usize],
        cursor: u64,
    ) -> Option<usize> {
        if members.is_empty() {
            return None;
        }
        let set = || members.iter().map(|&i| (i, weight(&candidates.peers[i])));
        match self
            .recent
            .iter()
            .position(|s| s.members.iter().copied().eq(set()))
        {
            Some(found) => self.recent[..=found].rotate_right(1),
            None => {
                let members: Vec<(usize, u64)> = set().collect();
                let picks = schedule(&members);
                self.recent.truncate(KEPT - 1);
                self.recent.insert(0, Schedule { members, picks });
            }
        }
        let picks = &self.recent[0].picks;
        Some(picks[(cursor % picks.len() as u64) as usize] as usize)
    }
}

/// One period of nginx's `ngx_http_upstream_get_peer` from all-zero current
/// weights: each pick adds every member's weight to its current weight,
/// takes the first member with the highest, and subtracts the total from it.
///
/// Weights are first divided by their greatest common divisor: scaling every
/// weight scales every current weight alike, so the order is the same and
/// the period (the total weight) shrinks.
fn schedule(members: &[(usize, u64)]) -> Vec<u32> {
    let divisor = members.iter().fold(0, |g, &(_, w)| gcd(g, w));
    let weights: Vec<i64> = members.iter().map(|&(_, w)| (w / divisor) as i64).collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    (0..total)
        .map(|_| {
            let mut best = 0;
            for (k, w) in weights.iter().enumerate() {
                current[k] += w;
                if current[k] > current[best] {
                    best = k;
                }
            }
            current[best] -= total;
            members[best].0 as u32
        })
        .collect()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peers::tests::peers;

    fn sequence(specs: &[&str], picks: u64) -> String {
        let list = peers(specs);
        let candidates = Candidates::new(&list);
        let pool = candidates.pool();
        let mut rr = RoundRobin::default();
        (0..picks)
            .map(|cursor| {
                list[rr.pick(&candidates, &pool, cursor).unwrap()]
                    .address
                    .as_str()
            })
            .collect()
    }

    #[test]
    fn nginx_smooth_sequence() {
        assert_eq!(sequence(&["a*5", "b", "c"], 14), "aabacaaaabacaa");
    }

    #[test]
    fn equal_weights_rotate() {
        assert_eq!(sequence(&["a", "b", "c"], 6), "abcabc");
        // Same order as weight 1 each: the common factor is divided out.
        assert_eq!(sequence(&["a*4", "b*4", "c*4"], 6), "abcabc");
    }

    #[test]
    fn skips_unusable_and_uses_backups_last() {
        assert_eq!(sequence(&["a", "b!", "c"], 4), "acac");
        assert_eq!(sequence(&["a!", "b~", "c~"], 4), "bcbc");
    }

    #[test]
    fn proportions_match_weights() {
        let s = sequence(&["a*3", "b*2", "c"], 600);
        let count = |ch| s.chars().filter(|&c| c == ch).count();
        assert_eq!((count('a'), count('b'), count('c')), (300, 200, 100));
    }

    #[test]
    fn cache_keeps_recent_sets() {
        let list = peers(&["a", "b", "c"]);
        let candidates = Candidates::new(&list);
        let mut rr = RoundRobin::default();
        for set in [
            vec![0, 1, 2],
            vec![0, 2],
            vec![1, 2],
            vec![0, 1],
            vec![0, 2],
        ] {
            rr.pick(&candidates, &set, 0);
        }
        assert_eq!(rr.recent.len(), KEPT);
        assert_eq!(rr.recent[0].members, vec![(0, 1), (2, 1)]);
        assert_eq!(rr.pick(&candidates, &[0, 2], 1), Some(2));
    }
}
