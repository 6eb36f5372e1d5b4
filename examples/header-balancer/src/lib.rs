//! An example balancer plugin: the request header `x-backend` picks the
//! peer, by index (`x-backend: 2`, counting from 0 in configuration order)
//! or by address (`x-backend: 10.0.0.2:8080`). Requests without the header,
//! or naming a peer that does not exist or is not usable, go round-robin.
//!
//! It replaces wasp's default balancer for every upstream: point
//! `[plugins] balancer` at the built `.wasm`.

use wasp_sdk::{Balancer, Peer, RequestHead};

/// The request header that names the peer.
const HEADER: &str = "x-backend";

/// The balancer. It keeps no state: round-robin positions come from the
/// host's per-upstream cursor, which survives instance replacement.
pub struct HeaderBalancer;

impl Balancer for HeaderBalancer {
    /// wasp sends the upstreams' configuration (a
    /// [`BalancerConfig`](wasp_sdk::config::BalancerConfig): policies,
    /// servers); this balancer needs none of it.
    fn configure(_config: &str) -> Result<Self, String> {
        Ok(HeaderBalancer)
    }

    fn pick(
        &mut self,
        head: &RequestHead,
        _upstream: &str,
        peers: &[Peer],
        cursor: u64,
        _hash_key: &str,
    ) -> Option<u32> {
        let named = head
            .header(HEADER)
            .and_then(|wanted| named_peer(peers, wanted))
            .filter(|&i| peers[i].usable);
        let chosen = named.or_else(|| round_robin(peers, cursor))?;
        u32::try_from(chosen).ok()
    }
}

/// The peer `wanted` names: an index into `peers`, or an address.
fn named_peer(peers: &[Peer], wanted: &str) -> Option<usize> {
    match wanted.parse::<usize>() {
        Ok(index) => (index < peers.len()).then_some(index),
        Err(_) => peers.iter().position(|p| p.address == wanted),
    }
}

/// Plain round-robin over the usable peers (over all of them when none is
/// usable, as wasp's default balancer does): pick number `cursor` gets the
/// `cursor`-th of them, wrapping around.
fn round_robin(peers: &[Peer], cursor: u64) -> Option<usize> {
    let usable: Vec<usize> = (0..peers.len()).filter(|&i| peers[i].usable).collect();
    let choices = if usable.is_empty() {
        (0..peers.len()).collect()
    } else {
        usable
    };
    let len = u64::try_from(choices.len()).ok().filter(|&n| n > 0)?;
    Some(choices[(cursor % len) as usize])
}

wasp_sdk::export!(balancer: HeaderBalancer);

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(address: &str, usable: bool) -> Peer {
        Peer {
            address: address.into(),
            weight: 1,
            active: 0,
            usable,
            backup: false,
        }
    }

    fn head(headers: &str) -> RequestHead {
        RequestHead {
            headers: headers.into(),
            ..wasp_sdk::testing::head("/")
        }
    }

    fn pick(headers: &str, peers: &[Peer], cursor: u64) -> Option<u32> {
        HeaderBalancer::configure("{}")
            .unwrap()
            .pick(&head(headers), "up", peers, cursor, "")
    }

    #[test]
    fn header_names_the_peer_by_index_or_address() {
        let peers = [peer("a:1", true), peer("b:1", true), peer("c:1", true)];
        assert_eq!(pick("x-backend: 2", &peers, 0), Some(2));
        assert_eq!(pick("host: x\nX-Backend: b:1", &peers, 0), Some(1));
    }

    #[test]
    fn otherwise_round_robin_over_usable_peers() {
        let peers = [peer("a:1", true), peer("b:1", false), peer("c:1", true)];
        let picks: Vec<_> = (0..4).map(|c| pick("", &peers, c)).collect();
        assert_eq!(picks, vec![Some(0), Some(2), Some(0), Some(2)]);
        // Unknown, out of range or unusable names fall back too.
        assert_eq!(pick("x-backend: 9", &peers, 1), Some(2));
        assert_eq!(pick("x-backend: nope:1", &peers, 1), Some(2));
        assert_eq!(pick("x-backend: 1", &peers, 1), Some(2));
    }

    #[test]
    fn no_usable_peer_still_picks_and_no_peer_is_none() {
        let peers = [peer("a:1", false), peer("b:1", false)];
        assert_eq!(pick("", &peers, 1), Some(1));
        assert_eq!(pick("", &[], 0), None);
    }
}
