//! Per request: the server (by listener, then `Host`), the location (in
//! nginx's order), and the decision the location's action calls for.

use wasp_sdk::{Decision, ProxyTo, RequestHead, Response, StaticFiles};

use crate::path::RequestPath;
use crate::table::{Action, Location, Server, Table};

/// The outcome of the location search.
enum Found<'a> {
    Location(&'a Location),
    /// nginx's `auto_redirect`: 301 to the path with a `/` appended.
    Redirect,
    Nothing,
}

impl Table {
    pub(crate) fn route(&self, head: &RequestHead) -> Decision {
        let server = match self.listeners.get(head.listener.as_str()) {
            Some(names) => Some(&self.servers[names.select(head)]),
            None => self.servers.first(),
        };
        let Some(server) = server else {
            return respond(404, Vec::new());
        };
        let Some(path) = RequestPath::new(&head.path) else {
            return respond(400, Vec::new());
        };
        match server.find(path.normalized()) {
            Found::Location(location) => decide(location, &path, head),
            Found::Redirect => {
                let mut target = String::with_capacity(head.path.len() + head.query.len() + 2);
                path.push_from(0, &mut target);
                target.push('/');
                push_query(&head.query, &mut target);
                respond(301, vec![("location".into(), target)])
            }
            Found::Nothing => respond(404, Vec::new()),
        }
    }
}

impl Server {
    /// nginx's location search over the normalized path.
    fn find(&self, path: &[u8]) -> Found<'_> {
        if let Some(location) = self.exact.get(path) {
            return Found::Location(location);
        }
        let longest = self.prefixes.iter().find(|p| path.starts_with(&p.pattern));
        // A location named exactly like the path is a match, not a redirect.
        if self.redirects.contains(path) && longest.is_none_or(|p| p.pattern.len() != path.len()) {
            return Found::Redirect;
        }
        if let Some(prefix) = longest.filter(|p| p.stop_regex) {
            return Found::Location(&prefix.location);
        }
        if let Some(regex) = self.regexes.iter().find(|r| r.regex.is_match(path)) {
            return Found::Location(&regex.location);
        }
        longest.map_or(Found::Nothing, |p| Found::Location(&p.location))
    }
}

fn decide(location: &Location, path: &RequestPath, head: &RequestHead) -> Decision {
    match &location.action {
        Action::Proxy { upstream, rewrite } => {
            let extra = rewrite.as_ref().map_or(0, |r| r.with.len());
            let mut uri = String::with_capacity(head.path.len() + head.query.len() + 1 + extra);
            match rewrite {
                Some(rewrite) => {
                    uri.push_str(&rewrite.with);
                    path.push_from(rewrite.strip, &mut uri);
                }
                None => uri.push_str(&head.path),
            }
            push_query(&head.query, &mut uri);
            Decision::Proxy(ProxyTo {
                location: location.id,
                upstream: upstream.clone(),
                uri,
                set_headers: Vec::new(),
            })
        }
        Action::Static => Decision::StaticFiles(StaticFiles {
            location: location.id,
            path: head.path.clone(),
        }),
        Action::Return(response) => Decision::Respond(response.clone()),
    }
}

fn push_query(query: &str, out: &mut String) {
    if !query.is_empty() {
        out.push('?');
        out.push_str(query);
    }
}

fn respond(status: u16, headers: Vec<(String, String)>) -> Decision {
    Decision::Respond(Response {
        status,
        headers,
        body: String::new(),
    })
}
