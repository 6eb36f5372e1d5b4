//! `room-router`: a wasp routing plugin written from scratch with `wasp-sdk`.
//!
//! Each chat room lives on one backend. A request under `/ws/` with a
//! `room` query parameter (`/ws/?room=lobby`) goes to one of the *shards*:
//! the `proxy` locations whose pattern starts with `/ws/` (e.g. `/ws/a/` →
//! upstream `room_a`, `/ws/b/` → `room_b`). The shard is chosen by rendezvous
//! hashing of the room over the shards' upstream names, so every request for
//! a room lands on the same upstream, in every process and after every
//! reload, and adding a shard moves only the rooms the new shard wins.
//!
//! Every other request is routed by the host's table: the `exact` location
//! equal to the path, else the longest prefix location, else 404. To stay
//! short this example ignores regex locations and server names (a listener's
//! first server answers) and matches the path as sent; wasp's default router
//! (`plugins/router`) does nginx's full matching.

use wasp_sdk::config::{Location, LocationAction, MatchKind, RouterConfig, Server};
use wasp_sdk::{Decision, ProxyTo, RequestHead, Response, Router, StaticFiles};

/// Requests under this prefix that name a `room` are routed by room.
const ROOM_PREFIX: &str = "/ws/";

/// The router: the host's table, kept as sent.
pub struct RoomRouter {
    servers: Vec<Server>,
}

impl Router for RoomRouter {
    fn configure(config: &str) -> Result<Self, String> {
        // The routing table wasp sends: `wasp_sdk::config` defines it.
        let table: RouterConfig = wasp_sdk::parse_config(config)?;
        // Refusing here keeps the previous version serving and names the mistake.
        if !table
            .servers
            .iter()
            .any(|server| shards(server).next().is_some())
        {
            return Err(format!(
                "no proxy location under {ROOM_PREFIX} to put rooms on"
            ));
        }
        Ok(RoomRouter {
            servers: table.servers,
        })
    }

    fn route(&mut self, head: &RequestHead) -> Decision {
        let server = self
            .servers
            .iter()
            .find(|server| server.listen.contains(&head.listener))
            // `configure` refused a table without servers: there is a first.
            .unwrap_or(&self.servers[0]);
        let target = match head.query.as_str() {
            "" => head.path.clone(),
            query => format!("{}?{query}", head.path),
        };
        let room = head.query_param("room").filter(|room| !room.is_empty());
        if let (true, Some(room)) = (head.path.starts_with(ROOM_PREFIX), room) {
            let best = shards(server).max_by_key(|(_, upstream)| score(upstream, room));
            if let Some((location, upstream)) = best {
                // The request target goes upstream unchanged: the shard's
                // pattern did not match it, so there is no prefix to replace.
                return proxy(location, upstream, target);
            }
        }
        let Some(location) = find(server, &head.path) else {
            return Decision::Respond(Response {
                status: 404,
                headers: Vec::new(),
                body: String::new(),
            });
        };
        match &location.action {
            LocationAction::Proxy { upstream, uri } => {
                let target = match uri {
                    Some(uri) => format!("{uri}{}", &target[location.pattern.len()..]),
                    None => target,
                };
                proxy(location, upstream, target)
            }
            LocationAction::Static => Decision::StaticFiles(StaticFiles {
                location: location.id,
                path: head.path.clone(),
            }),
            LocationAction::Return { response } => Decision::Respond(response.clone().into()),
        }
    }
}

/// The shards of `server`: its proxy locations under [`ROOM_PREFIX`], with
/// their upstream names.
fn shards(server: &Server) -> impl Iterator<Item = (&Location, &str)> {
    server
        .locations
        .iter()
        .filter_map(|location| match &location.action {
            LocationAction::Proxy { upstream, .. } if location.pattern.starts_with(ROOM_PREFIX) => {
                Some((location, upstream.as_str()))
            }
            _ => None,
        })
}

/// The location for `path`: an exact match, else the longest prefix.
fn find<'a>(server: &'a Server, path: &str) -> Option<&'a Location> {
    let locations = &server.locations;
    let exact = locations
        .iter()
        .find(|l| l.kind == MatchKind::Exact && l.pattern == path);
    exact.or_else(|| {
        locations
            .iter()
            .filter(|l| {
                matches!(l.kind, MatchKind::Prefix | MatchKind::PrefixStopRegex)
                    && path.starts_with(&l.pattern)
            })
            .max_by_key(|l| l.pattern.len())
    })
}

/// The rendezvous (highest random weight) score of `room` on `upstream`:
/// the shard with the highest score gets the room. Scores depend on the
/// upstream's name, not on the location's position, so reordering the
/// configuration moves no room.
fn score(upstream: &str, room: &str) -> u64 {
    // 64-bit FNV-1a: written out because std's `DefaultHasher` may change
    // between Rust releases, and rooms must not move when wasp is rebuilt.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in upstream
        .as_bytes()
        .iter()
        .chain(b"\0")
        .chain(room.as_bytes())
    {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Plain FNV-1a mixes too little for a fair contest (upstreams `room_a`,
    // `room_b`, `room_c` would get 28%, 30% and 42% of the rooms): murmur3's
    // 64-bit finalizer spreads every bit over the whole score.
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

fn proxy(location: &Location, upstream: &str, uri: String) -> Decision {
    Decision::Proxy(ProxyTo {
        location: location.id,
        upstream: upstream.to_owned(),
        uri,
        set_headers: Vec::new(),
    })
}

wasp_sdk::export!(router: RoomRouter);

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = r#"{"servers": [{"listen": ["127.0.0.1:8000"], "server_names": [], "locations": [
        {"id": 0, "kind": "prefix", "pattern": "/", "action": "static"},
        {"id": 1, "kind": "prefix", "pattern": "/ws/a/", "action": "proxy", "upstream": "room_a", "uri": null},
        {"id": 2, "kind": "prefix", "pattern": "/ws/b/", "action": "proxy", "upstream": "room_b", "uri": null},
        {"id": 3, "kind": "prefix", "pattern": "/ws/c/", "action": "proxy", "upstream": "room_c", "uri": "/chat/"},
        {"id": 4, "kind": "exact", "pattern": "/health", "action": "return",
         "return": {"status": 200, "headers": [], "body": "ok"}}
    ]}]}"#;

    fn route(path: &str, query: &str) -> Decision {
        let head = wasp_sdk::testing::head(&format!("{path}?{query}"));
        RoomRouter::configure(TABLE).unwrap().route(&head)
    }

    fn proxied(decision: Decision) -> (u32, String, String) {
        match decision {
            Decision::Proxy(to) => (to.location, to.upstream, to.uri),
            other => panic!("expected proxy, got {other:?}"),
        }
    }

    #[test]
    fn a_room_always_gets_the_same_shard_and_rooms_spread() {
        let mut seen = std::collections::HashSet::new();
        for n in 0..30 {
            let query = format!("room=r{n}");
            let (_, upstream, uri) = proxied(route("/ws/", &query));
            assert_eq!(proxied(route("/ws/", &query)).1, upstream);
            assert_eq!(uri, format!("/ws/?{query}"));
            seen.insert(upstream);
        }
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn other_requests_follow_the_table() {
        assert_eq!(
            proxied(route("/ws/b/x", "")),
            (2, "room_b".into(), "/ws/b/x".into())
        );
        assert_eq!(
            proxied(route("/ws/c/x", "q=1")),
            (3, "room_c".into(), "/chat/x?q=1".into())
        );
        assert!(matches!(route("/app.js", ""), Decision::StaticFiles(f) if f.location == 0));
        assert!(matches!(route("/health", ""), Decision::Respond(r) if r.body == "ok"));
        assert!(matches!(route("/ws/", "room="), Decision::StaticFiles(_)));
    }

    #[test]
    fn a_table_without_shards_is_refused() {
        let table = r#"{"servers": [{"listen": ["x:1"], "locations": []}]}"#;
        assert!(RoomRouter::configure(table).is_err());
    }
}
