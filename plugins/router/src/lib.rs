//! wasp's default router: picks the server and the location of each request
//! the way nginx does, from the routing table the host sends to `configure`
//! ([`wasp_sdk::config::RouterConfig`]).
//!
//! `configure` does all the work it can do once: it groups servers by listen
//! address, hashes exact paths, sorts prefixes longest first and compiles
//! regexes, so that `route` is a handful of comparisons and allocates little
//! beyond its answer.

mod names;
mod path;
mod select;
mod table;

use wasp_sdk::{Decision, RequestHead, Router};

/// The router plugin: the compiled routing table.
pub struct NginxRouter(table::Table);

impl Router for NginxRouter {
    fn configure(config: &str) -> Result<Self, String> {
        table::Table::parse(config).map(NginxRouter)
    }

    fn route(&mut self, head: &RequestHead) -> Decision {
        self.0.route(head)
    }
}

wasp_sdk::export!(router: NginxRouter);
