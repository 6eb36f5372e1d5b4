//! Durations, sizes and request rates as written in the configuration: the
//! SDK's parsers (plugins read sizes the same way), plus `proxy_buffers`.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, Visitor};
use wasp_sdk::units::parse_size;
pub use wasp_sdk::units::{Dur, Size, parse_rate};

/// `proxy_buffers`: a count and a size, written `"4 16k"`.
#[derive(Debug, Clone, Copy)]
pub struct Buffers(pub usize, pub Size);

impl<'de> Deserialize<'de> for Buffers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BuffersVisitor;
        impl Visitor<'_> for BuffersVisitor {
            type Value = Buffers;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a buffer count and size such as \"4 16k\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Buffers, E> {
                let invalid = || {
                    E::custom(format!(
                        "invalid buffers `{v}`: write a count and a size, e.g. \"4 16k\""
                    ))
                };
                let mut parts = v.split_whitespace();
                let (Some(count), Some(size), None) = (parts.next(), parts.next(), parts.next())
                else {
                    return Err(invalid());
                };
                let count: usize = count.parse().map_err(|_| invalid())?;
                if count == 0 {
                    return Err(E::custom("buffers needs at least one buffer"));
                }
                let size = parse_size(size).map_err(E::custom)?;
                Ok(Buffers(count, Size(size)))
            }
        }
        deserializer.deserialize_str(BuffersVisitor)
    }
}
