//! Durations, sizes and request rates as written in the configuration: the
//! SDK's parsers, so plugins read sizes the same way.

pub use wasp_sdk::units::{Dur, Size, parse_rate};
