//! nginx's `least_conn`: the usable peer with the fewest active connections
//! per unit of weight; ties go round-robin.

use crate::peers::{Candidates, weight};
use crate::round_robin::RoundRobin;

/// The peer of the candidates' pool with the lowest `active / weight`
/// (compared as `active_a * weight_b < active_b * weight_a`, without
/// division, as nginx does); among equals, smooth weighted round-robin over
/// the tied peers at `cursor`.
pub(crate) fn pick(
    candidates: &Candidates,
    round_robin: &mut RoundRobin,
    cursor: u64,
) -> Option<usize> {
    let load = |i: usize| {
        let peer = &candidates.peers[i];
        (u64::from(peer.active), weight(peer))
    };
    let pool = candidates.pool();
    let (best_active, best_weight) = pool.iter().map(|&i| load(i)).reduce(|best, (a, w)| {
        if a * best.1 < best.0 * w {
            (a, w)
        } else {
            best
        }
    })?;
    let tied: Vec<usize> = pool
        .into_iter()
        .filter(|&i| {
            let (a, w) = load(i);
            a * best_weight == best_active * w
        })
        .collect();
    round_robin.pick(candidates, &tied, cursor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peers::tests::peers;

    fn pick_for(specs: &[&str], cursor: u64) -> usize {
        let list = peers(specs);
        pick(&Candidates::new(&list), &mut RoundRobin::default(), cursor).unwrap()
    }

    #[test]
    fn fewest_connections_wins() {
        assert_eq!(pick_for(&["a+5", "b+2", "c+9"], 0), 1);
        assert_eq!(pick_for(&["a+5", "b+2", "c+9"], 7), 1);
    }

    #[test]
    fn connections_are_weighed() {
        // 6/3 = 2 per unit of weight beats 3/1.
        assert_eq!(pick_for(&["a+3", "b*3+6"], 0), 1);
    }

    #[test]
    fn ties_rotate_with_the_cursor() {
        let picks: Vec<usize> = (0..4)
            .map(|c| pick_for(&["a+1", "b+4", "c+1"], c))
            .collect();
        assert_eq!(picks, vec![0, 2, 0, 2]);
    }

    #[test]
    fn skips_unusable_then_uses_backups() {
        assert_eq!(pick_for(&["a+0!", "b+3"], 0), 1);
        assert_eq!(pick_for(&["a!", "b+3~", "c+1~"], 0), 2);
    }
}
