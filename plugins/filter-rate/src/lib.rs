//! `rate`: a token bucket per connection on client → upstream messages.
//! Each connection starts with `burst` tokens, gains `per_second` tokens a
//! second up to `burst`, and spends one per message; a message finding no
//! token closes the connection with 1008 or is dropped. Upstream → client
//! messages are never limited.
//!
//! Configuration: `{ "per_second": 10, "burst": 10, "action": "close" }`;
//! `per_second` is required and may be fractional (`0.5` = one message
//! every two seconds), `burst` defaults to `per_second` rounded up, and
//! `action` is `close` (default) or `drop`.
//!
//! A bucket is the connection's state in its filter instance, so it starts
//! full again when the connection moves to a new instance (a reload, or
//! another connection's message broke the old one).

use wasp_sdk::{Action, CloseFrame, Direction, Filter, Message, RequestHead};

/// What happens to a message over the rate.
#[derive(serde::Deserialize, Clone, Copy, Default, PartialEq, Debug)]
#[serde(rename_all = "lowercase")]
enum OverRate {
    /// Close the connection with 1008 (policy violation).
    #[default]
    Close,
    /// Swallow the message and keep the connection.
    Drop,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    per_second: f64,
    #[serde(default)]
    burst: Option<u32>,
    #[serde(default)]
    action: OverRate,
}

/// The bucket's shape, shared by every connection.
#[derive(Clone, Copy, Debug)]
struct Limit {
    /// Tokens gained per millisecond.
    per_ms: f64,
    /// Most tokens a bucket holds: the messages allowed back to back.
    burst: f64,
}

/// One connection's bucket. Pure: the caller supplies the time, so the
/// logic is testable natively where the host clock is unavailable.
#[derive(Debug)]
pub struct Bucket {
    tokens: f64,
    /// When `tokens` was last brought up to date.
    last_ms: u64,
}

impl Bucket {
    /// A bucket that can take a full burst right away.
    fn full(limit: Limit, now_ms: u64) -> Self {
        Bucket {
            tokens: limit.burst,
            last_ms: now_ms,
        }
    }

    /// Refills for the time elapsed since the last call, then spends one
    /// token if there is one. Returns whether the message may pass.
    fn take(&mut self, limit: Limit, now_ms: u64) -> bool {
        // A clock stepping backwards refills nothing rather than underflowing.
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.last_ms = self.last_ms.max(now_ms);
        self.tokens = (self.tokens + elapsed as f64 * limit.per_ms).min(limit.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The filter: the limit and what to do over it.
pub struct Rate {
    limit: Limit,
    over: OverRate,
}

impl Rate {
    /// Decides on a client → upstream message arriving at `now_ms` on the
    /// connection whose bucket is `bucket`.
    fn admit(&self, bucket: &mut Bucket, now_ms: u64) -> Action {
        if bucket.take(self.limit, now_ms) {
            return Action::Forward;
        }
        match self.over {
            OverRate::Close => Action::Close(CloseFrame {
                code: 1008,
                reason: "rate limit exceeded".into(),
            }),
            OverRate::Drop => Action::Drop,
        }
    }
}

impl Filter for Rate {
    type Connection = Bucket;

    fn configure(config: &str) -> Result<Self, String> {
        let config: Config = wasp_sdk::parse_config(config)?;
        if !(config.per_second.is_finite() && config.per_second > 0.0) {
            return Err(format!(
                "per_second must be above 0, not {}",
                config.per_second
            ));
        }
        // A bucket under one token would never let a message through.
        let burst = match config.burst {
            Some(0) => return Err("burst must be at least 1".into()),
            Some(burst) => burst,
            // Saturating float-to-int cast; `per_second > 0` makes it >= 1.
            None => config.per_second.ceil() as u32,
        };
        Ok(Rate {
            limit: Limit {
                per_ms: config.per_second / 1000.0,
                burst: f64::from(burst),
            },
            over: config.action,
        })
    }

    fn on_open(&mut self, _conn: u64, _head: &RequestHead) -> Bucket {
        Bucket::full(self.limit, wasp_sdk::host::now_ms())
    }

    fn on_message(&mut self, bucket: &mut Bucket, dir: Direction, _msg: Message) -> Action {
        match dir {
            Direction::UpstreamToClient => Action::Forward,
            Direction::ClientToUpstream => self.admit(bucket, wasp_sdk::host::now_ms()),
        }
    }
}

wasp_sdk::export!(filter: Rate);

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(config: &str) -> Rate {
        Rate::configure(config).unwrap()
    }

    /// How many of `n` messages sent at `now_ms` with `bucket` pass.
    fn passed(f: &Rate, bucket: &mut Bucket, now_ms: u64, n: usize) -> usize {
        (0..n)
            .filter(|_| matches!(f.admit(bucket, now_ms), Action::Forward))
            .count()
    }

    #[test]
    fn a_burst_passes_then_the_rate_applies() {
        let f = filter(r#"{"per_second": 10, "burst": 5}"#);
        let mut bucket = Bucket::full(f.limit, 1_000);
        assert_eq!(passed(&f, &mut bucket, 1_000, 8), 5);
        // 10 per second: one token every 100 ms.
        assert_eq!(passed(&f, &mut bucket, 1_099, 1), 0);
        assert_eq!(passed(&f, &mut bucket, 1_100, 2), 1);
        assert_eq!(passed(&f, &mut bucket, 1_350, 5), 2);
        // A long pause refills no more than the burst.
        assert_eq!(passed(&f, &mut bucket, 60_000, 10), 5);
    }

    #[test]
    fn over_the_rate_closes_with_1008_by_default() {
        let f = filter(r#"{"per_second": 1}"#);
        let mut bucket = Bucket::full(f.limit, 0);
        assert!(matches!(f.admit(&mut bucket, 0), Action::Forward));
        match f.admit(&mut bucket, 0) {
            Action::Close(frame) => {
                assert_eq!(frame.code, 1008);
                assert_eq!(frame.reason, "rate limit exceeded");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn over_the_rate_drops_when_asked() {
        let f = filter(r#"{"per_second": 1, "action": "drop"}"#);
        let mut bucket = Bucket::full(f.limit, 0);
        assert!(matches!(f.admit(&mut bucket, 0), Action::Forward));
        assert!(matches!(f.admit(&mut bucket, 0), Action::Drop));
        // Dropped messages spend nothing: the next token comes on time.
        assert!(matches!(f.admit(&mut bucket, 1_000), Action::Forward));
    }

    #[test]
    fn burst_defaults_to_per_second_rounded_up() {
        assert_eq!(filter(r#"{"per_second": 10}"#).limit.burst, 10.0);
        assert_eq!(filter(r#"{"per_second": 0.5}"#).limit.burst, 1.0);
        let f = filter(r#"{"per_second": 0.5}"#);
        let mut bucket = Bucket::full(f.limit, 0);
        assert_eq!(passed(&f, &mut bucket, 0, 3), 1);
        assert_eq!(passed(&f, &mut bucket, 1_999, 1), 0);
        assert_eq!(passed(&f, &mut bucket, 2_000, 1), 1);
    }

    #[test]
    fn connections_have_their_own_buckets() {
        // Keeping each connection's bucket from open to close is the SDK's
        // part (`wasp_sdk::export!`); here, one bucket spends nothing of
        // another's.
        let f = filter(r#"{"per_second": 2}"#);
        let (mut first, mut second) = (Bucket::full(f.limit, 0), Bucket::full(f.limit, 0));
        assert_eq!(passed(&f, &mut first, 0, 5), 2);
        assert_eq!(passed(&f, &mut second, 0, 5), 2);
        // A new bucket (a reopened connection) starts full.
        assert_eq!(passed(&f, &mut Bucket::full(f.limit, 0), 0, 5), 2);
    }

    #[test]
    fn the_host_clock_paces_each_connection_from_its_open() {
        use wasp_sdk::testing::{TestFilter, TestHost, head};
        let host = TestHost::new();
        let mut rate = TestFilter::<Rate>::configure(r#"{"per_second": 2}"#).unwrap();
        let first = rate.open(&head("/ws"));
        let passes = |rate: &mut TestFilter<Rate>, conn| {
            matches!(rate.client_text(conn, "hi"), Action::Forward)
        };
        assert!(passes(&mut rate, first) && passes(&mut rate, first));
        assert!(
            !passes(&mut rate, first),
            "a third message in the same millisecond"
        );
        // Another connection has its own bucket, full.
        let second = rate.open(&head("/ws"));
        assert!(passes(&mut rate, second) && passes(&mut rate, second));
        // Half a second at 2 per second: one token back.
        host.advance(500);
        assert!(passes(&mut rate, second));
        assert!(!passes(&mut rate, second));
    }

    #[test]
    fn upstream_messages_are_not_limited() {
        let mut f = filter(r#"{"per_second": 1}"#);
        let mut bucket = Bucket::full(f.limit, 0);
        for _ in 0..10 {
            let msg = Message::Text("hi".into());
            assert!(matches!(
                f.on_message(&mut bucket, Direction::UpstreamToClient, msg),
                Action::Forward
            ));
        }
        // Not a token spent.
        assert_eq!(bucket.tokens, 1.0);
    }

    #[test]
    fn a_clock_going_backwards_refills_nothing() {
        let f = filter(r#"{"per_second": 1}"#);
        let mut bucket = Bucket::full(f.limit, 10_000);
        assert_eq!(passed(&f, &mut bucket, 10_000, 1), 1);
        assert_eq!(passed(&f, &mut bucket, 5_000, 1), 0);
        assert_eq!(passed(&f, &mut bucket, 10_999, 1), 0);
        assert_eq!(passed(&f, &mut bucket, 11_000, 1), 1);
    }

    #[test]
    fn bad_configs_are_refused() {
        for bad in [
            "",
            "{}",
            r#"{"per_second": 0}"#,
            r#"{"per_second": -1}"#,
            r#"{"per_second": "10"}"#,
            r#"{"per_second": 10, "burst": 0}"#,
            r#"{"per_second": 10, "burst": -1}"#,
            r#"{"per_second": 10, "action": "ban"}"#,
            r#"{"per_second": 10, "window": 1}"#,
        ] {
            assert!(Rate::configure(bad).is_err(), "{bad} accepted");
        }
    }
}
