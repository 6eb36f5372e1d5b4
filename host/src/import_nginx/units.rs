//! nginx's time and size values rewritten as wasp's units: nginx allows
//! sums such as `1h30m` and units wasp does not have (`w`, `M`, `y`).

/// nginx time (`3600s`, `1h30m`, `500ms`, `60`: seconds) as a wasp duration
/// (`"5400s"`, `"500ms"`).
pub fn duration(text: &str) -> Option<String> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut millis: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let number: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = match rest.as_bytes() {
            [b'm', b's', ..] => (1, 2),
            [b's', ..] => (1_000, 1),
            [b'm', ..] => (60_000, 1),
            [b'h', ..] => (3_600_000, 1),
            [b'd', ..] => (86_400_000, 1),
            [b'w', ..] => (7 * 86_400_000, 1),
            [b'M', ..] => (30 * 86_400_000, 1),
            [b'y', ..] => (365 * 86_400_000, 1),
            [] => (1_000, 0),
            _ => return None,
        };
        rest = &rest[len..];
        millis = millis.checked_add(number.checked_mul(unit)?)?;
    }
    Some(if millis.is_multiple_of(1_000) {
        format!("{}s", millis / 1_000)
    } else {
        format!("{millis}ms")
    })
}

/// nginx size (`16k`, `1m`, `1g`, bytes) as a wasp size: the same notation.
pub fn size(text: &str) -> Option<String> {
    let text = text.trim();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let unit = &text[digits..];
    (digits > 0 && matches!(unit, "" | "k" | "K" | "m" | "M" | "g" | "G")).then(|| text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_summed_and_written_in_seconds_or_milliseconds() {
        assert_eq!(duration("3600s").as_deref(), Some("3600s"));
        assert_eq!(duration("60").as_deref(), Some("60s"));
        assert_eq!(duration("1h30m").as_deref(), Some("5400s"));
        assert_eq!(duration("500ms").as_deref(), Some("500ms"));
        assert_eq!(duration("1s500ms").as_deref(), Some("1500ms"));
        assert_eq!(duration("1x"), None);
        assert_eq!(duration(""), None);
    }

    #[test]
    fn sizes_keep_nginx_notation() {
        assert_eq!(size("16k").as_deref(), Some("16k"));
        assert_eq!(size("1M").as_deref(), Some("1M"));
        assert_eq!(size("4096").as_deref(), Some("4096"));
        assert_eq!(size("k"), None);
        assert_eq!(size("1t"), None);
    }
}
