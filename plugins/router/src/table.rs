//! The routing table: the host's [`RouterConfig`], checked and compiled
//! once in `configure` into the structures `select` walks for every request.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use regex::bytes::{Regex, RegexBuilder};
use wasp_sdk::Response;
use wasp_sdk::config::{self, LocationAction, MatchKind, RouterConfig};

use crate::names::{self, Names};

/// Everything `route` needs, indexed for it.
pub(crate) struct Table {
    /// Servers in configuration order: the first also takes requests from
    /// a listener no server lists.
    pub(crate) servers: Vec<Server>,
    /// Per listen address (as written in the configuration), its servers' names.
    pub(crate) listeners: HashMap<String, Names>,
}

/// One server's locations, grouped by how nginx looks them up. Patterns are
/// bytes because they are compared with the percent-decoded path.
pub(crate) struct Server {
    /// `=` locations by path: an exact match ends the search.
    pub(crate) exact: HashMap<Box<[u8]>, Location>,
    /// Prefix and `^~` locations, longest first, so the first that matches
    /// is nginx's longest match.
    pub(crate) prefixes: Vec<Prefix>,
    /// `~` and `~*` locations in configuration order: the first match wins.
    pub(crate) regexes: Vec<RegexLocation>,
    /// Patterns of proxied prefix and exact locations ending in `/`, without
    /// that slash: nginx redirects a request for exactly that path to the
    /// path with the slash (its `auto_redirect`).
    pub(crate) redirects: HashSet<Box<[u8]>>,
}

pub(crate) struct Prefix {
    pub(crate) pattern: Box<[u8]>,
    /// `^~`: when this is the longest prefix, regexes are not tried.
    pub(crate) stop_regex: bool,
    pub(crate) location: Location,
}

pub(crate) struct RegexLocation {
    pub(crate) regex: Regex,
    pub(crate) location: Location,
}

pub(crate) struct Location {
    /// The host's location number, echoed in the decision.
    pub(crate) id: u32,
    pub(crate) action: Action,
}

pub(crate) enum Action {
    Proxy {
        upstream: String,
        rewrite: Option<Rewrite>,
    },
    Static,
    Return(Response),
}

/// `proxy_pass` with a URI part: the matched prefix is replaced by `with`.
pub(crate) struct Rewrite {
    /// Length of the matched prefix (the location's pattern).
    pub(crate) strip: usize,
    pub(crate) with: String,
}

impl Table {
    /// Parses and compiles the routing table; an error names the faulty
    /// server or location so the operator can find it.
    pub(crate) fn parse(config: &str) -> Result<Self, String> {
        let table: RouterConfig = wasp_sdk::parse_config(config)?;
        let mut servers = Vec::with_capacity(table.servers.len());
        let mut listeners: HashMap<String, Names> = HashMap::new();
        for (index, server) in table.servers.into_iter().enumerate() {
            let server_names =
                names::parse(&server.server_names).map_err(|e| format!("server {index}: {e}"))?;
            for listen in server.listen {
                listeners
                    .entry(listen)
                    .or_insert_with(|| Names::new(index))
                    .add(index, &server_names);
            }
            servers.push(Server::compile(server.locations)?);
        }
        listeners.values_mut().for_each(Names::finish);
        Ok(Table { servers, listeners })
    }
}

impl Server {
    fn compile(locations: Vec<config::Location>) -> Result<Self, String> {
        let mut server = Server {
            exact: HashMap::new(),
            prefixes: Vec::new(),
            regexes: Vec::new(),
            redirects: HashSet::new(),
        };
        for config::Location {
            id,
            kind,
            pattern,
            action,
        } in locations
        {
            let is_regex = matches!(kind, MatchKind::Regex | MatchKind::RegexNoCase);
            let proxied = matches!(action, LocationAction::Proxy { .. });
            if let Some(bare) = pattern.strip_suffix('/')
                && proxied
                && !is_regex
                && !bare.is_empty()
            {
                server.redirects.insert(bare.as_bytes().into());
            }
            // nginx refuses a URI part in regex locations; the contract says
            // their requests go upstream unchanged, so no rewrite is kept.
            let strip = (!is_regex).then_some(pattern.len());
            let location = Location {
                id,
                action: Action::compile(action, strip),
            };
            match kind {
                MatchKind::Exact => match server.exact.entry(pattern.into_bytes().into()) {
                    Entry::Occupied(taken) => {
                        let pattern = String::from_utf8_lossy(taken.key());
                        return Err(format!("location {id}: duplicate location \"= {pattern}\""));
                    }
                    Entry::Vacant(slot) => {
                        slot.insert(location);
                    }
                },
                MatchKind::Prefix | MatchKind::PrefixStopRegex => server.prefixes.push(Prefix {
                    pattern: pattern.into_bytes().into(),
                    stop_regex: kind == MatchKind::PrefixStopRegex,
                    location,
                }),
                MatchKind::Regex | MatchKind::RegexNoCase => {
                    let regex = RegexBuilder::new(&pattern)
                        .case_insensitive(kind == MatchKind::RegexNoCase)
                        .build()
                        .map_err(|e| format!("location {id}: invalid regex {pattern:?}: {e}"))?;
                    server.regexes.push(RegexLocation { regex, location });
                }
            }
        }
        // Equal patterns end up side by side, where the duplicate check finds them.
        server.prefixes.sort_by(|a, b| {
            b.pattern
                .len()
                .cmp(&a.pattern.len())
                .then_with(|| a.pattern.cmp(&b.pattern))
        });
        // nginx refuses `/a` twice, and `/a` next to `^~ /a`, as duplicates.
        if let Some(pair) = server
            .prefixes
            .windows(2)
            .find(|p| p[0].pattern == p[1].pattern)
        {
            let pattern = String::from_utf8_lossy(&pair[1].pattern);
            let ids = (pair[0].location.id, pair[1].location.id);
            return Err(format!(
                "locations {} and {}: duplicate location {pattern:?}",
                ids.0.min(ids.1),
                ids.0.max(ids.1)
            ));
        }
        Ok(server)
    }
}

impl Action {
    /// `strip` is the length of the path a match consumes, for prefix and
    /// exact locations only.
    fn compile(action: LocationAction, strip: Option<usize>) -> Self {
        match action {
            LocationAction::Proxy { upstream, uri } => Action::Proxy {
                upstream,
                rewrite: uri.zip(strip).map(|(with, strip)| Rewrite { strip, with }),
            },
            LocationAction::Static => Action::Static,
            LocationAction::Return { response } => Action::Return(response.into()),
        }
    }
}
