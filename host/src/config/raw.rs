//! The configuration file's shape as serde reads it: every field optional
//! where the file may omit it (`validate` applies the `defaults`), spans
//! kept on the fields that semantic checks point at.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

use super::Balance;
use super::LogFormat;
use super::units::{Dur, Size};

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub admin: Option<Spanned<String>>,
    pub max_connections: Option<Spanned<u32>>,
    pub workers: Option<Spanned<u32>>,
    pub shutdown_grace: Option<Dur>,
    pub log_format: Option<LogFormat>,
    pub access_log: Option<Spanned<String>>,
    #[serde(default)]
    pub plugins: RawPlugins,
    #[serde(default)]
    pub upstreams: BTreeMap<Spanned<String>, RawUpstream>,
    #[serde(default)]
    pub server: Vec<Spanned<RawServer>>,
    pub cluster: Option<Spanned<RawCluster>>,
}

/// `[cluster]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub redis: Spanned<String>,
    pub instance: Option<Spanned<String>>,
    pub timeout: Option<Spanned<Dur>>,
    pub retry: Option<Spanned<Dur>>,
}

/// `[plugins]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlugins {
    pub router: Option<Spanned<String>>,
    pub balancer: Option<Spanned<String>>,
    pub origin: Option<Spanned<String>>,
    pub call_timeout: Option<Spanned<Dur>>,
    pub call_timeout_per_mib: Option<Spanned<Dur>>,
    pub ban_after_overruns: Option<Spanned<u32>>,
    pub ban_time: Option<Spanned<Dur>>,
    pub memory_limit: Option<Size>,
    pub instances: Option<Spanned<u32>>,
    pub cache_dir: Option<Spanned<String>>,
}

/// `[upstreams.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub balance: Option<Spanned<Balance>>,
    pub hash_key: Option<Spanned<String>>,
    pub consistent: Option<Spanned<bool>>,
    pub next_upstream_tries: Option<u32>,
    pub servers: Spanned<Vec<Spanned<Shorthand<RawUpstreamServer>>>>,
    pub health: Option<RawHealth>,
    pub keepalive: Option<Spanned<u32>>,
    pub keepalive_timeout: Option<Spanned<Dur>>,
    pub keepalive_requests: Option<Spanned<u32>>,
}

/// One entry of an upstream's `servers`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamServer {
    pub address: String,
    pub weight: Option<Spanned<u32>>,
    pub max_fails: Option<u32>,
    pub fail_timeout: Option<Dur>,
    pub backup: Option<bool>,
    pub down: Option<bool>,
}

impl FromShorthand for RawUpstreamServer {
    const EXPECTING: &str = "a \"host:port\" string or a table with `address`";
    fn from_shorthand(address: String) -> Self {
        RawUpstreamServer {
            address,
            weight: None,
            max_fails: None,
            fail_timeout: None,
            backup: None,
            down: None,
        }
    }
}

/// An upstream's `health` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub path: Spanned<String>,
    pub interval: Option<Dur>,
    pub rise: Option<Spanned<u32>>,
    pub fall: Option<Spanned<u32>>,
    pub websocket: Option<bool>,
}

/// `[[server]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<Spanned<StringList>>,
    pub server_name: Option<Spanned<StringList>>,
    pub tls: Option<RawTls>,
    pub redirect_http: Option<Spanned<bool>>,
    pub http2: Option<Spanned<bool>>,
    pub client_header_timeout: Option<Spanned<Dur>>,
    pub client_body_timeout: Option<Spanned<Dur>>,
    pub client_max_body_size: Option<Size>,
    pub max_header_size: Option<Spanned<Size>>,
    pub strict_websocket: Option<bool>,
    pub access_log: Option<Spanned<String>>,
    pub reuse_port: Option<Spanned<bool>>,
    #[serde(default)]
    pub location: Vec<RawLocation>,
}

/// A server's `tls` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

/// `[[server.location]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLocation {
    pub path: Spanned<String>,
    pub proxy_pass: Option<Spanned<String>>,
    pub root: Option<Spanned<String>>,
    #[serde(rename = "return")]
    pub return_: Option<Spanned<RawReturn>>,
    pub index: Option<Spanned<StringList>>,
    pub try_files: Option<Spanned<StringList>>,
    pub set_headers: Option<Headers>,
    pub connect_timeout: Option<Dur>,
    pub read_timeout: Option<Dur>,
    pub send_timeout: Option<Dur>,
    pub buffer_size: Option<Size>,
    /// nginx's `proxy_buffers`, refused with the reason (see
    /// `validate/location.rs`), whatever its value.
    pub buffers: Option<Spanned<toml::Value>>,
    pub limit_conn: Option<Spanned<u32>>,
    pub limit_conn_key: Option<Spanned<String>>,
    pub limit_conn_status: Option<Spanned<i64>>,
    pub limit_req: Option<RawLimitReq>,
    pub origins: Option<Vec<Spanned<String>>>,
    pub allow_missing_origin: Option<bool>,
    pub filters: Option<Vec<Spanned<Shorthand<RawFilter>>>>,
    pub max_message_size: Option<Size>,
    pub websocket_deflate: Option<bool>,
    pub proxy_ssl_verify: Option<Spanned<bool>>,
    pub proxy_ssl_trusted_certificate: Option<Spanned<String>>,
    pub proxy_ssl_server_name: Option<Spanned<bool>>,
    pub proxy_ssl_name: Option<Spanned<String>>,
    pub proxy_ssl_certificate: Option<Spanned<String>>,
    pub proxy_ssl_certificate_key: Option<Spanned<String>>,
}

/// A location's `return` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReturn {
    pub status: Spanned<i64>,
    pub location: Option<String>,
    pub body: Option<String>,
}

/// A location's `limit_req` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimitReq {
    pub rate: Spanned<String>,
    pub burst: Option<u32>,
    pub key: Option<Spanned<String>>,
}

/// One entry of a location's `filters`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFilter {
    pub plugin: String,
    pub config: Option<toml::Table>,
    pub fail: Option<FailMode>,
}

impl FromShorthand for RawFilter {
    const EXPECTING: &str = "a filter name or a table with `plugin`";
    fn from_shorthand(plugin: String) -> Self {
        RawFilter {
            plugin,
            config: None,
            fail: None,
        }
    }
}

/// What a filter's failure (trap, deadline) does to its connection.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    Closed,
    Open,
}

/// A table that may also be written as a single string (`"127.0.0.1:8081"`, `"json"`).
pub trait FromShorthand: DeserializeOwned {
    /// Described in "invalid type" errors.
    const EXPECTING: &str;
    /// Builds the value from its string form.
    fn from_shorthand(text: String) -> Self;
}

/// Either form of a [`FromShorthand`] value.
#[derive(Debug)]
pub struct Shorthand<T>(pub T);

impl<'de, T: FromShorthand> Deserialize<'de> for Shorthand<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ShorthandVisitor<T>(PhantomData<T>);
        impl<'de, T: FromShorthand> Visitor<'de> for ShorthandVisitor<T> {
            type Value = Shorthand<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(T::EXPECTING)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Shorthand(T::from_shorthand(v.to_owned())))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(Shorthand)
            }
        }
        deserializer.deserialize_any(ShorthandVisitor(PhantomData))
    }
}

/// A string or a list of strings (`listen`, `server_name`, `index`, `try_files`).
#[derive(Debug)]
pub struct StringList(pub Vec<String>);

impl<'de> Deserialize<'de> for StringList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor;
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = StringList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StringList, E> {
                Ok(StringList(vec![v.to_owned()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StringList, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(StringList(items))
            }
        }
        deserializer.deserialize_any(ListVisitor)
    }
}

/// `set_headers = { Name = "value", ... }` in the order written.
#[derive(Debug)]
pub struct Headers(pub Vec<(Spanned<String>, String)>);

impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HeadersVisitor;
        impl<'de> Visitor<'de> for HeadersVisitor {
            type Value = Headers;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a table of header names to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Headers, A::Error> {
                let mut headers: Vec<(Spanned<String>, String)> = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    headers.push(entry);
                }
                // toml hands tables over sorted by key; the key spans give back the written order.
                headers.sort_by_key(|(name, _)| name.span().start);
                Ok(Headers(headers))
            }
        }
        deserializer.deserialize_map(HeadersVisitor)
    }
}
