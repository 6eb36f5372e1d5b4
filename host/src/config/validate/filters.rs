//! A location's `filters`: built-in names or `.wasm` paths, each with its
//! `config` table (handed to the filter as JSON) and failure mode.

use toml::Spanned;

use super::Checker;
use crate::config::FilterSpec;
use crate::config::raw::{FailMode, RawFilter, Shorthand};
use crate::plugins::embedded;

impl Checker<'_> {
    pub(super) fn filter(&mut self, filter: Spanned<Shorthand<RawFilter>>) -> FilterSpec {
        let span = filter.span();
        let Shorthand(raw) = filter.into_inner();
        if !raw.plugin.ends_with(".wasm") && !builtin_filters().any(|name| name == raw.plugin) {
            let builtins: Vec<&str> = builtin_filters().collect();
            self.error(
                span.clone(),
                format!(
                    "unknown filter `{}`: use {} or a path to a .wasm file",
                    raw.plugin,
                    builtins.join(", ")
                ),
            );
        }
        let table = toml::Value::Table(raw.config.unwrap_or_default());
        let config = toml_to_json(table).unwrap_or_else(|| {
            self.error(
                span,
                "filter config cannot contain nan or inf: JSON has no such numbers",
            );
            serde_json::Value::Null
        });
        FilterSpec {
            plugin: raw.plugin,
            config,
            fail_open: matches!(raw.fail, Some(FailMode::Open)),
        }
    }
}

/// The built-in filters: the embedded plugins named `filter-NAME`
/// (`plugins/filter-NAME`), as the site loads them.
fn builtin_filters() -> impl Iterator<Item = &'static str> {
    embedded::NAMES
        .iter()
        .filter_map(|name| name.strip_prefix("filter-"))
}

/// A filter's `config` table as JSON (datetimes become their TOML text);
/// `None` when it holds a non-finite float, which JSON cannot express.
fn toml_to_json(value: toml::Value) -> Option<serde_json::Value> {
    use serde_json::Value as Json;
    Some(match value {
        toml::Value::String(s) => Json::String(s),
        toml::Value::Integer(i) => Json::from(i),
        toml::Value::Float(f) => Json::Number(serde_json::Number::from_f64(f)?),
        toml::Value::Boolean(b) => Json::Bool(b),
        toml::Value::Datetime(d) => Json::String(d.to_string()),
        toml::Value::Array(items) => {
            Json::Array(items.into_iter().map(toml_to_json).collect::<Option<_>>()?)
        }
        toml::Value::Table(table) => Json::Object(
            table
                .into_iter()
                .map(|(key, value)| Some((key, toml_to_json(value)?)))
                .collect::<Option<_>>()?,
        ),
    })
}
