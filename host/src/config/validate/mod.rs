//! Semantic checks on the raw file shape, producing the typed [`Config`]
//! with defaults filled in. Every problem is recorded with its position and
//! checking goes on, so one run reports as many errors as it can.
//!
//! This file walks the file from the top; each section of the TOML has its
//! own file: `plugins` (`[plugins]`), `upstream` (`[upstreams.NAME]`),
//! `server` (`[[server]]`), `location` (`[[server.location]]`), `action`
//! (a location's `proxy_pass`, `root` or `return`) and `filters` (a
//! location's `filters`).

mod action;
mod cluster;
mod filters;
mod location;
mod plugins;
mod server;
mod upstream;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::raw::RawConfig;
use super::units::{Dur, Size};
use super::{AccessLog, Config, ConfigError, Diagnostic, Upstream, defaults, diagnostic};
use server::parse_listen;

/// Checks `raw` (parsed from `text`) and builds the configuration, or reports every problem found.
pub fn validate(raw: RawConfig, text: &str, source: &str) -> Result<Config, ConfigError> {
    let mut checker = Checker {
        text,
        source,
        errors: Vec::new(),
    };
    let config = checker.config(raw);
    if checker.errors.is_empty() {
        Ok(config)
    } else {
        checker
            .errors
            .sort_by_key(|error| (error.line, error.column));
        Err(ConfigError::Invalid(checker.errors))
    }
}

struct Checker<'a> {
    text: &'a str,
    source: &'a str,
    errors: Vec<Diagnostic>,
}

/// What a server's locations need to resolve `proxy_pass`.
struct Upstreams<'a> {
    declared: &'a BTreeSet<String>,
    all: &'a mut BTreeMap<String, Upstream>,
}

impl Checker<'_> {
    fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        let error = diagnostic(self.text, self.source, span.start, message.into());
        self.errors.push(error);
    }

    fn config(&mut self, raw: RawConfig) -> Config {
        let admin = raw.admin.and_then(|admin| {
            parse_listen(admin.get_ref())
                .map_err(|message| self.error(admin.span(), format!("admin: {message}")))
                .ok()
        });
        let max_connections = raw
            .max_connections
            .map_or(defaults::MAX_CONNECTIONS, |max| {
                self.at_least_one(&max, "max_connections");
                max.into_inner() as usize
            });
        let workers = raw.workers.map(|workers| {
            self.at_least_one(&workers, "workers");
            workers.into_inner() as usize
        });

        let declared: BTreeSet<String> = raw
            .upstreams
            .keys()
            .map(|name| name.get_ref().clone())
            .collect();
        let mut upstreams = BTreeMap::new();
        for (name, upstream) in raw.upstreams {
            let upstream = self.upstream(&name, upstream);
            upstreams.insert(name.into_inner(), upstream);
        }

        let access_log = raw
            .access_log
            .map_or_else(AccessLog::default, |setting| self.access_log(setting));
        if raw.server.is_empty() {
            self.error(
                0..0,
                "no [[server]] block: a configuration needs at least one",
            );
        }
        let mut next_id = 0;
        let mut shared_listen = HashMap::new();
        let mut servers = Vec::new();
        for server in raw.server {
            let mut resolve = Upstreams {
                declared: &declared,
                all: &mut upstreams,
            };
            servers.push(self.server(
                server,
                &mut next_id,
                &mut resolve,
                &mut shared_listen,
                &access_log,
            ));
        }

        Config {
            admin,
            max_connections,
            workers,
            shutdown_grace: dur(raw.shutdown_grace, defaults::SHUTDOWN_GRACE),
            log_format: raw.log_format.unwrap_or_default(),
            access_log,
            plugins: self.plugins(raw.plugins),
            upstreams,
            servers,
            cluster: raw.cluster.map(|cluster| self.cluster(cluster)),
        }
    }

    /// A value with nginx variables: each one wasp does not know is an
    /// error at the value, as `nginx -t` refuses an unknown variable.
    fn variables(&mut self, value: Spanned<String>) -> String {
        let span = value.span();
        let value = value.into_inner();
        for name in super::variables::unknown(&value) {
            self.error(span.clone(), format!("unknown variable `${name}`"));
        }
        value
    }

    fn at_least_one<T: Copy + Into<u64>>(&mut self, value: &Spanned<T>, what: &str) {
        if (*value.get_ref()).into() == 0 {
            self.error(value.span(), format!("{what} must be at least 1"));
        }
    }

    /// `access_log`: `off`, `stderr` or a file in a directory that exists
    /// (nginx would fail to open it at start; `wasp check` says so first).
    fn access_log(&mut self, setting: Spanned<String>) -> AccessLog {
        let span = setting.span();
        match setting.get_ref().as_str() {
            "off" => return AccessLog::Off,
            "stderr" => return AccessLog::Stderr,
            _ => {}
        }
        let path = self.non_empty_path(setting, "access_log");
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => std::path::Path::new("."),
        };
        if path.is_dir() {
            self.error(
                span,
                format!("access_log: `{}` is a directory", path.display()),
            );
        } else if !dir.is_dir() {
            self.error(
                span,
                format!(
                    "access_log: directory `{}` does not exist (nor does the file, then)",
                    dir.display()
                ),
            );
        }
        AccessLog::File(path)
    }

    fn path(&mut self, path: Option<Spanned<String>>, what: &str) -> Option<PathBuf> {
        path.map(|path| self.non_empty_path(path, what))
    }

    fn non_empty_path(&mut self, path: Spanned<String>, what: &str) -> PathBuf {
        if path.get_ref().trim().is_empty() {
            self.error(path.span(), format!("{what} must not be empty"));
        }
        PathBuf::from(path.into_inner())
    }
}

fn dur(value: Option<Dur>, default: Duration) -> Duration {
    value.map_or(default, |d| d.0)
}

fn size(value: Option<Size>, default: usize) -> usize {
    value.map_or(default, Size::bytes)
}
