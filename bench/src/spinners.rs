//! The `spinners` scenario: what a steady stream of abusive clients costs the well-behaved connections of the
//! same proxy. An abusive client opens a connection to a location whose filter spins on its one message (until
//! the proxy's per-call CPU deadline cuts the call off and closes the connection with 1011), then waits for the
//! close. The well-behaved connections echo at a fixed rate, exactly as `echo --rate` does, twice: alone, then
//! while abusive connections open at a steady rate (from their own source addresses). Both latency summaries
//! are reported, with what became of every abusive connection.

use std::{sync::Arc, time::Duration};

use anyhow::Result;
use futures_util::{SinkExt, StreamExt};
use tokio::{
    task::JoinSet,
    time::{Instant, MissedTickBehavior, interval, timeout_at},
};
use tokio_tungstenite::tungstenite::Message;

use crate::{
    cli::{EchoArgs, SpinnersArgs},
    connect::Target,
    echo,
    outcome::{AbuseCounts, Outcome, SpinnersOutcome},
};

/// How long an abusive connection waits for the target's answer to its message.
const FATE_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the two phases and reports them.
pub async fn run(args: &SpinnersArgs) -> Result<Outcome> {
    let echo_args = EchoArgs {
        target: args.target.clone(),
        connections: args.connections,
        in_flight: 1,
        size: args.size,
        duration: args.duration,
        warmup: args.warmup,
        rate: Some(args.rate),
    };
    let abusive = Arc::new(
        Target::resolve_from(&args.spin_url, args.target.sources, args.abuser_sources).await?,
    );

    let quiet = echo::measure(&echo_args).await?;
    // Abusers arrive from the start of the second phase's warm-up to the end of its measured window.
    let abuse = tokio::spawn(abuse(
        abusive,
        args.abusers_per_sec,
        args.spin_message.clone(),
        Instant::now() + args.warmup + args.duration,
    ));
    let abused = echo::measure(&echo_args).await?;
    let abusers = abuse.await??;
    Ok(Outcome::Spinners(Box::new(SpinnersOutcome {
        spin_url: args.spin_url.clone(),
        abusers_per_sec: args.abusers_per_sec,
        spin_message: args.spin_message.clone(),
        quiet,
        abused,
        abusers,
    })))
}

/// Opens `per_sec` abusive connections a second until `until`, each sending `message`, and counts their fates
/// once all have ended.
async fn abuse(
    target: Arc<Target>,
    per_sec: f64,
    message: String,
    until: Instant,
) -> Result<AbuseCounts> {
    let mut ticker = interval(Duration::from_secs_f64(1.0 / per_sec));
    // A late generator catches up, so the count per second stays the one asked for.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut abusers = JoinSet::new();
    for index in 0.. {
        if ticker.tick().await >= until {
            break;
        }
        let (target, message) = (target.clone(), message.clone());
        abusers.spawn(async move { abuser(&target, index, message).await });
    }
    let mut counts = AbuseCounts::default();
    while let Some(fate) = abusers.join_next().await {
        counts.count(fate?);
    }
    Ok(counts)
}

/// What became of one abusive connection.
#[derive(Debug, Clone, PartialEq)]
enum Fate {
    /// The target closed it with this code (`None`: a close frame without one).
    Closed(Option<u16>),
    /// The upgrade failed: refused, or no connection.
    Refused(String),
    /// The message came back, so nothing spun.
    Answered,
    /// No answer within [`FATE_TIMEOUT`], or the connection broke.
    Lost(String),
}

/// Opens connection `index`, sends `message` and waits for the target's answer.
async fn abuser(target: &Target, index: usize, message: String) -> Fate {
    let mut ws = match target.connect(index).await {
        Ok(ws) => ws,
        Err(e) => return Fate::Refused(format!("{e:#}")),
    };
    if let Err(e) = ws.send(Message::text(message)).await {
        return Fate::Lost(format!("sending: {e}"));
    }
    let deadline = Instant::now() + FATE_TIMEOUT;
    loop {
        match timeout_at(deadline, ws.next()).await {
            Err(_) => return Fate::Lost(format!("no answer within {FATE_TIMEOUT:?}")),
            Ok(Some(Ok(Message::Close(frame)))) => {
                // Send the reply tungstenite queued, completing the closing handshake.
                let _ = ws.flush().await;
                return Fate::Closed(frame.map(|f| f.code.into()));
            }
            Ok(Some(Ok(Message::Text(_) | Message::Binary(_)))) => {
                let _ = crate::connect::close(ws).await;
                return Fate::Answered;
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => return Fate::Lost(e.to_string()),
            Ok(None) => return Fate::Lost("connection ended without a close frame".into()),
        }
    }
}

impl AbuseCounts {
    fn count(&mut self, fate: Fate) {
        self.started += 1;
        match fate {
            Fate::Closed(Some(1011)) => self.closed_1011 += 1,
            Fate::Closed(code) => self.other(format!("closed with {code:?}")),
            Fate::Refused(reason) => {
                self.refused += 1;
                self.first_refused.get_or_insert(reason);
            }
            Fate::Answered => self.answered += 1,
            Fate::Lost(reason) => self.other(reason),
        }
    }

    fn other(&mut self, reason: String) {
        self.other += 1;
        self.first_other.get_or_insert(reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;
    use tokio_tungstenite::{
        accept_async,
        tungstenite::protocol::{CloseFrame, frame::coding::CloseCode},
    };

    /// A WebSocket server that closes every connection with `code` on its first message.
    async fn closing_server(code: u16) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut ws = accept_async(stream).await.unwrap();
                    ws.next().await;
                    let frame = CloseFrame {
                        code: CloseCode::from(code),
                        reason: "spun too long".into(),
                    };
                    let _ = ws.close(Some(frame)).await;
                    while ws.next().await.is_some() {}
                });
            }
        });
        url
    }

    #[tokio::test]
    async fn abusers_closed_with_1011_are_counted_as_such() {
        let target = Target::resolve(&closing_server(1011).await, 0)
            .await
            .unwrap();
        assert_eq!(
            abuser(&target, 0, "loop".into()).await,
            Fate::Closed(Some(1011))
        );
        let target = Target::resolve(&closing_server(1008).await, 0)
            .await
            .unwrap();
        assert_eq!(
            abuser(&target, 0, "loop".into()).await,
            Fate::Closed(Some(1008))
        );
    }

    #[test]
    fn fates_are_tallied() {
        let mut counts = AbuseCounts::default();
        for fate in [
            Fate::Closed(Some(1011)),
            Fate::Closed(Some(1011)),
            Fate::Closed(Some(1000)),
            Fate::Refused("503".into()),
            Fate::Answered,
            Fate::Lost("reset".into()),
        ] {
            counts.count(fate);
        }
        assert_eq!(
            (counts.started, counts.closed_1011, counts.refused),
            (6, 2, 1)
        );
        assert_eq!((counts.answered, counts.other), (1, 2));
        assert_eq!(counts.first_refused.as_deref(), Some("503"));
        assert_eq!(
            counts.first_other.as_deref(),
            Some("closed with Some(1000)")
        );
    }
}
