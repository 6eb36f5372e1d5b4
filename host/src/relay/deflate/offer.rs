//! Negotiating permessage-deflate (RFC 7692 §5, §7.1) on each leg of a
//! filtered WebSocket, from `Sec-WebSocket-Extensions` values: the answer
//! to the client's offers, the offer to the upstream and the check of its
//! answer. Each leg is negotiated on its own; the relay translates.
//!
//! Parsed by hand: the header is a short `name; param[=value]` list and no
//! maintained crate parses it apart from a whole WebSocket handshake.

use super::LegDeflate;

const NAME: &str = "permessage-deflate";

/// What wasp offers the upstream: no context takeover either way, so no
/// connection keeps a deflate context (see the module comment of `deflate`).
pub fn upstream_offer() -> &'static str {
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
}

/// The first of the client's offers (`values`: its `Sec-WebSocket-Extensions`
/// headers) wasp accepts, with the answer for the 101; `None` when none is
/// permessage-deflate with valid parameters. The answer always asks the
/// client for `client_no_context_takeover` (§7.1.1.2 lets a server ask),
/// and accepts `server_no_context_takeover` and `server_max_window_bits`
/// (wasp never takes its context over and can deflate with any window).
pub fn answer_client<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Option<(LegDeflate, String)> {
    values
        .into_iter()
        .flat_map(|value| value.split(','))
        .find_map(|offer| {
            let params = parse(offer)?.ok()?;
            let mut answer = format!("{NAME}; client_no_context_takeover");
            if params.server_no_context_takeover {
                answer.push_str("; server_no_context_takeover");
            }
            if let Some(bits) = params.server_max_window_bits {
                answer.push_str(&format!("; server_max_window_bits={bits}"));
            }
            let leg = LegDeflate {
                // A value is the most the client will use (§7.1.2.2).
                peer_window: params.client_max_window_bits.flatten().unwrap_or(15),
                relay_window: params.server_max_window_bits.unwrap_or(15),
            };
            Some((leg, answer))
        })
}

/// What the upstream's answer (`values`: the 101's `Sec-WebSocket-Extensions`)
/// to [`upstream_offer`] means: `None` without compression; an error for an
/// answer that is not an acceptance of that offer (§7.1: the handshake fails).
pub fn upstream_answer<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Result<Option<LegDeflate>, &'static str> {
    let mut answers = values
        .into_iter()
        .flat_map(|value| value.split(','))
        .filter(|answer| !answer.trim().is_empty());
    let Some(answer) = answers.next() else {
        return Ok(None);
    };
    if answers.next().is_some() {
        return Err("the upstream accepted more than one extension");
    }
    let params = parse(answer).ok_or("the upstream accepted an extension wasp did not offer")??;
    if !params.server_no_context_takeover {
        return Err("the upstream accepted permessage-deflate without server_no_context_takeover");
    }
    Ok(Some(LegDeflate {
        peer_window: params.server_max_window_bits.unwrap_or(15),
        relay_window: params.client_max_window_bits.flatten().unwrap_or(15),
    }))
}

/// One permessage-deflate offer or answer's parameters.
#[derive(Debug, Default, PartialEq, Eq)]
struct Params {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: the parameter without a value (an offer's "I can limit").
    client_max_window_bits: Option<Option<u8>>,
}

/// `None`: another extension; `Some(Err)`: permessage-deflate with
/// parameters §7 says to refuse (unknown, repeated or out of range).
fn parse(element: &str) -> Option<Result<Params, &'static str>> {
    let mut parts = element.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case(NAME) {
        return None;
    }
    let mut params = Params::default();
    for part in parts {
        let (name, value) = match part.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
            None => (part, None),
        };
        let bits = || {
            value
                .and_then(|v| v.parse::<u8>().ok())
                .filter(|bits| (8..=15).contains(bits))
        };
        let fresh = match (name.to_ascii_lowercase().as_str(), value) {
            ("server_no_context_takeover", None) => {
                !std::mem::replace(&mut params.server_no_context_takeover, true)
            }
            ("client_no_context_takeover", None) => {
                !std::mem::replace(&mut params.client_no_context_takeover, true)
            }
            ("server_max_window_bits", Some(_)) => match bits() {
                Some(bits) => params.server_max_window_bits.replace(bits).is_none(),
                None => return Some(Err("server_max_window_bits out of 8..15")),
            },
            ("client_max_window_bits", None) => {
                params.client_max_window_bits.replace(None).is_none()
            }
            ("client_max_window_bits", Some(_)) => match bits() {
                Some(bits) => params.client_max_window_bits.replace(Some(bits)).is_none(),
                None => return Some(Err("client_max_window_bits out of 8..15")),
            },
            _ => return Some(Err("unknown permessage-deflate parameter")),
        };
        if !fresh {
            return Some(Err("a permessage-deflate parameter given twice"));
        }
    }
    Some(Ok(params))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leg(peer_window: u8, relay_window: u8) -> LegDeflate {
        LegDeflate {
            peer_window,
            relay_window,
        }
    }

    #[test]
    fn a_browser_offer_is_accepted_without_context_takeover() {
        let (negotiated, answer) =
            answer_client(["permessage-deflate; client_max_window_bits"]).unwrap();
        assert_eq!(negotiated, leg(15, 15));
        assert_eq!(answer, "permessage-deflate; client_no_context_takeover");
    }

    #[test]
    fn window_and_takeover_parameters_are_honoured() {
        let offer = "permessage-deflate; server_no_context_takeover; server_max_window_bits=9; \
                     client_max_window_bits=\"10\"";
        let (negotiated, answer) = answer_client([offer]).unwrap();
        assert_eq!(negotiated, leg(10, 9));
        assert_eq!(
            answer,
            "permessage-deflate; client_no_context_takeover; server_no_context_takeover; \
             server_max_window_bits=9"
        );
    }

    #[test]
    fn the_first_valid_offer_wins_and_bad_ones_are_skipped() {
        let offers = [
            "x-webkit-deflate-frame",
            "permessage-deflate; server_max_window_bits=16, permessage-deflate; foo",
            "permessage-deflate; server_max_window_bits=12, permessage-deflate",
        ];
        assert_eq!(answer_client(offers).unwrap().0, leg(15, 12));
        assert_eq!(
            answer_client([
                "permessage-deflate; server_no_context_takeover; server_no_context_takeover"
            ]),
            None
        );
        assert_eq!(
            answer_client(["permessage-deflate; client_max_window_bits=7"]),
            None
        );
        assert_eq!(answer_client([]), None);
    }

    #[test]
    fn the_upstream_answer_is_checked() {
        assert_eq!(upstream_answer([]), Ok(None));
        assert_eq!(
            upstream_answer([
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
            ]),
            Ok(Some(leg(15, 15)))
        );
        assert_eq!(
            upstream_answer([
                "permessage-deflate;server_no_context_takeover;server_max_window_bits=11;client_max_window_bits=9"
            ]),
            Ok(Some(leg(11, 9)))
        );
        assert!(upstream_answer(["permessage-deflate"]).is_err());
        assert!(upstream_answer(["x-other"]).is_err());
        assert!(
            upstream_answer(["permessage-deflate; server_no_context_takeover; bogus"]).is_err()
        );
        assert!(
            upstream_answer([
                "permessage-deflate; server_no_context_takeover, permessage-deflate; server_no_context_takeover"
            ])
            .is_err()
        );
    }
}
