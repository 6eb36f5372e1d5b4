//! Durations, sizes and request rates as wasp's configuration writes them,
//! parsed by one set of functions in the host (the TOML file) and in plugins
//! (their JSON configuration), with serde wrappers whose errors say what was
//! expected.
//!
//! Surrounding whitespace is ignored; anything else beside the digits and
//! the unit is an error (no sign, no fraction, no space inside).

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, Visitor};

const DURATION_HINT: &str = "use a number with ms, s, m, h or d (e.g. \"500ms\", \"60s\", \"1h\"); a bare integer is seconds";
const SIZE_HINT: &str =
    "use a number with k, m or g (e.g. \"16k\", \"1m\"); a bare integer is bytes";

/// Parses `500ms`, `60s`, `5m`, `1h`, `1d` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration `{text}`: {DURATION_HINT}");
    let (number, unit) = split_number(text.trim()).ok_or_else(invalid)?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(invalid()),
    };
    number
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration `{text}` is too large"))
}

/// Parses `16k`, `1m`, `1g` (powers of 1024, either case) or a bare number of bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let invalid = || format!("invalid size `{text}`: {SIZE_HINT}");
    let (number, unit) = split_number(text.trim()).ok_or_else(invalid)?;
    let shift = match unit {
        "" => 0,
        "k" | "K" => 10,
        "m" | "M" => 20,
        "g" | "G" => 30,
        _ => return Err(invalid()),
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("size `{text}` is too large"))
}

/// Parses an nginx `limit_req` rate, `10r/s` or `60r/m`, into requests per second.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let invalid = || format!("invalid rate `{text}`: use \"Nr/s\" or \"Nr/m\" (e.g. \"10r/s\")");
    let (number, unit) = split_number(text.trim()).ok_or_else(invalid)?;
    let per_second = match unit {
        "r/s" => number as f64,
        "r/m" => number as f64 / 60.0,
        _ => return Err(invalid()),
    };
    if number == 0 {
        return Err(format!("rate `{text}` must be more than zero"));
    }
    Ok(per_second)
}

/// Splits leading ASCII digits from the unit suffix; `None` when there are
/// no digits (`u64::from_str` alone would accept a leading `+`).
fn split_number(text: &str) -> Option<(u64, &str)> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let number = text[..digits].parse().ok()?;
    Some((number, &text[digits..]))
}

/// A bare number of seconds, within the same range as `"Ns"` so that a
/// configuration rendered with `"Ns"` parses back.
fn seconds(secs: u64) -> Result<Duration, String> {
    parse_duration(&secs.to_string())
}

/// A duration field: `"60s"` (see [`parse_duration`]) or a bare number of
/// seconds.
#[derive(Debug, Clone, Copy)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurVisitor;
        impl Visitor<'_> for DurVisitor {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"60s\" or a number of seconds")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dur, E> {
                seconds(v).map(Dur).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dur, E> {
                let v = u64::try_from(v)
                    .map_err(|_| E::custom(format!("a duration cannot be negative (got {v})")))?;
                self.visit_u64(v)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
                parse_duration(v).map(Dur).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(DurVisitor)
    }
}

/// A size field in bytes: `"16k"` (see [`parse_size`]) or a bare number of
/// bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl Size {
    /// The size as `usize`, saturating (only matters on 32-bit targets).
    pub fn bytes(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as \"16k\" or a number of bytes")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom(format!("a size cannot be negative (got {v})")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                parse_size(v).map(Size).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("3600s"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("42"), Ok(Duration::from_secs(42)));
        assert_eq!(
            parse_duration("10 seconds").unwrap_err(),
            format!("invalid duration `10 seconds`: {DURATION_HINT}")
        );
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("99999999999999999d").is_err());
    }

    #[test]
    fn sizes_are_bytes_or_powers_of_1024() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert_eq!(parse_size("16k"), Ok(16 * 1024));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size(" 2G "), Ok(2 << 30));
        assert_eq!(
            parse_size("16kb").unwrap_err(),
            format!("invalid size `16kb`: {SIZE_HINT}")
        );
        for bad in [
            "",
            "k",
            "+5",
            "-5",
            "1.5k",
            "5 k",
            "5kb",
            "5t",
            "99999999999g",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn sizes_deserialize_from_numbers_and_strings() {
        #[derive(serde::Deserialize)]
        struct Limit {
            max: Size,
        }
        let max = |json: &str| crate::parse_config::<Limit>(json).map(|l| l.max.0);
        assert_eq!(max(r#"{"max": 100}"#), Ok(100));
        assert_eq!(max(r#"{"max": "16k"}"#), Ok(16 << 10));
        for bad in [
            r#"{"max": -1}"#,
            r#"{"max": 1.5}"#,
            r#"{"max": "lots"}"#,
            r#"{"max": true}"#,
        ] {
            assert!(max(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("10r/s"), Ok(10.0));
        assert_eq!(parse_rate("60r/m"), Ok(1.0));
        assert!(parse_rate("10/s").is_err());
        assert!(parse_rate("0r/s").is_err());
    }
}
