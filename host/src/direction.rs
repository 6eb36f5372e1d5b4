//! Which way a WebSocket message or a tunnelled byte travels: the one
//! direction type of the relays, the filter chain and the metrics. (The
//! WIT's own `direction` is the same two values at the plugin boundary.)

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ClientToUpstream,
    UpstreamToClient,
}

impl Direction {
    pub const ALL: [Direction; 2] = [Direction::ClientToUpstream, Direction::UpstreamToClient];

    /// Index into per-direction arrays (client → upstream first).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The other way.
    pub fn reverse(self) -> Direction {
        match self {
            Direction::ClientToUpstream => Direction::UpstreamToClient,
            Direction::UpstreamToClient => Direction::ClientToUpstream,
        }
    }

    /// The peer that sends what travels this way: `client` or `upstream`.
    pub fn sender(self) -> &'static str {
        match self {
            Direction::ClientToUpstream => "client",
            Direction::UpstreamToClient => "upstream",
        }
    }

    /// The metrics label: `client_to_upstream` or `upstream_to_client`.
    pub fn label(self) -> &'static str {
        match self {
            Direction::ClientToUpstream => "client_to_upstream",
            Direction::UpstreamToClient => "upstream_to_client",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}
