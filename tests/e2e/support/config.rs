//! [`ConfigBuilder`]: a test's wasp configuration written as calls instead of
//! TOML text copied between tests. It builds TOML tables and serialises them
//! with the `toml` crate, so values are quoted and escaped as TOML wants.
//!
//! ```ignore
//! let text = ConfigBuilder::new()
//!     .upstream("app", |u| u.server(backend.addr).set("balance", "ip_hash"))
//!     .location("/ws/", |l| l.proxy_pass("app").filters(r#"[{ plugin = "max-size" }]"#))
//!     .build();
//! ```
//!
//! Every server listens on `127.0.0.1:0`, as [`super::start_proxy`] expects.
//! Tests whose point is a literal TOML text keep it as text.

use std::fmt::Display;
use std::path::Path;
use toml::{Table, Value};

/// A whole configuration: top-level settings, `[plugins]`, `[upstreams.*]`
/// and `[[server]]`s.
#[derive(Default)]
pub struct ConfigBuilder {
    top: Table,
    servers: Vec<Table>,
}

/// One `[[server]]`.
pub struct Server(Table);

/// One `[[server.location]]`.
pub struct Location(Table);

/// One `[upstreams.NAME]`.
pub struct Upstream(Table);

/// A `key = value` setting of a table, for the builders that are one table.
macro_rules! settings {
    ($($builder:ident),*) => {$(
        impl $builder {
            /// Sets `key = value` (a string, number, boolean, array or table).
            pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
                self.0.insert(key.into(), value.into());
                self
            }
        }
    )*};
}
settings!(Server, Location, Upstream);

impl ConfigBuilder {
    pub fn new() -> ConfigBuilder {
        ConfigBuilder::default()
    }

    /// Sets a top-level `key = value` (`admin`, `shutdown_grace`, ...).
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.top.insert(key.into(), value.into());
        self
    }

    /// `[plugins] role = "wasm"`: a `.wasm` file in place of a default plugin.
    pub fn plugin(mut self, role: &str, wasm: &Path) -> Self {
        let plugins = table(&mut self.top, "plugins");
        plugins.insert(role.into(), wasm.display().to_string().into());
        self
    }

    /// `[plugins] key = value`: one of the sandbox's limits.
    pub fn plugin_limit(mut self, key: &str, value: impl Into<Value>) -> Self {
        table(&mut self.top, "plugins").insert(key.into(), value.into());
        self
    }

    /// `[upstreams.name]`, filled in by `upstream`.
    pub fn upstream(mut self, name: &str, upstream: impl FnOnce(Upstream) -> Upstream) -> Self {
        let Upstream(settings) = upstream(Upstream(Table::new()));
        table(&mut self.top, "upstreams").insert(name.into(), settings.into());
        self
    }

    /// A `[[server]]` listening on `127.0.0.1:0`, filled in by `server`.
    pub fn server(mut self, server: impl FnOnce(Server) -> Server) -> Self {
        self.servers.push(server(Server::new()).0);
        self
    }

    /// A location `path` on the last server (a first server when there is
    /// none yet), filled in by `location`.
    pub fn location(mut self, path: &str, location: impl FnOnce(Location) -> Location) -> Self {
        if self.servers.is_empty() {
            self.servers.push(Server::new().0);
        }
        let last = self.servers.last_mut().expect("a server");
        push_location(last, path, location);
        self
    }

    /// The configuration as TOML text, for [`super::start_proxy`] or a file.
    pub fn build(mut self) -> String {
        let servers = self.servers.into_iter().map(Value::Table).collect();
        self.top.insert("server".into(), Value::Array(servers));
        toml::to_string(&self.top).expect("a configuration serialises")
    }
}

impl Server {
    fn new() -> Server {
        Server(Table::new()).set("listen", "127.0.0.1:0")
    }

    /// A `[[server.location]]` at `path`, filled in by `location`.
    pub fn location(mut self, path: &str, location: impl FnOnce(Location) -> Location) -> Self {
        push_location(&mut self.0, path, location);
        self
    }
}

impl Location {
    /// `proxy_pass = "http://{target}"`: an address, an upstream's name, with
    /// or without a URI.
    pub fn proxy_pass(self, target: impl Display) -> Self {
        self.set("proxy_pass", format!("http://{target}"))
    }

    /// `filters = chain`, the chain written as in a configuration file
    /// (`[{ plugin = "redact", config = { words = ["darn"] } }]`).
    pub fn filters(self, chain: &str) -> Self {
        self.set("filters", toml_value(chain))
    }

    /// `filters = ["wasm"]`: one filter, the component in the file `wasm`.
    pub fn filter_file(self, wasm: &Path) -> Self {
        self.set("filters", vec![wasm.display().to_string()])
    }

    /// `return = { status, body }`: the location answers by itself.
    pub fn returns(self, status: u16, body: &str) -> Self {
        let mut answer = Table::new();
        answer.insert("status".into(), i64::from(status).into());
        answer.insert("body".into(), body.into());
        self.set("return", answer)
    }
}

impl Upstream {
    /// A server of the upstream, by address only.
    pub fn server(self, address: impl Display) -> Self {
        self.push_server(address.to_string().into())
    }

    /// Each of `addresses` as a server of the upstream.
    pub fn servers<A: Display>(self, addresses: impl IntoIterator<Item = A>) -> Self {
        addresses.into_iter().fold(self, Upstream::server)
    }

    /// A server of the upstream with its own settings, written as a TOML
    /// inline table (`{ weight = 5 }`); `address` is added to them.
    pub fn server_with(self, address: impl Display, settings: &str) -> Self {
        let Value::Table(mut server) = toml_value(settings) else {
            panic!("server settings {settings:?} are not an inline table")
        };
        server.insert("address".into(), address.to_string().into());
        self.push_server(server.into())
    }

    fn push_server(mut self, server: Value) -> Self {
        array(&mut self.0, "servers").push(server);
        self
    }
}

/// A TOML value written as text (an inline table, an array...).
pub fn toml_value(text: &str) -> Value {
    text.parse()
        .unwrap_or_else(|e| panic!("not a TOML value: {text}: {e}"))
}

/// Appends a location `path`, filled in by `location`, to `server`.
fn push_location(server: &mut Table, path: &str, location: impl FnOnce(Location) -> Location) {
    let Location(settings) = location(Location(Table::new()).set("path", path));
    array(server, "location").push(settings.into());
}

/// The table `key` of `parent`, created empty when missing.
fn table<'a>(parent: &'a mut Table, key: &str) -> &'a mut Table {
    match parent.entry(key).or_insert(Value::Table(Table::new())) {
        Value::Table(table) => table,
        other => panic!("`{key}` is {other}, not a table"),
    }
}

/// The array `key` of `parent`, created empty when missing.
fn array<'a>(parent: &'a mut Table, key: &str) -> &'a mut Vec<Value> {
    match parent.entry(key).or_insert(Value::Array(Vec::new())) {
        Value::Array(array) => array,
        other => panic!("`{key}` is {other}, not an array"),
    }
}
