//! The shutdown signal every long-lived task waits on: connections (drain),
//! WebSockets (close with 1001), listeners, the admin listener, worker
//! threads and health checks.
//!
//! The owner keeps the `tokio::sync::watch::Sender<bool>` and sends `true`
//! to signal; tasks hold a [`Shutdown`] made from a receiver. A dropped
//! sender counts as the signal: the owner is gone, so nothing could ever
//! signal any more, and a task still waiting would outlive what it serves
//! (a health check probing for a configuration no longer loaded, a
//! connection of a proxy that no longer exists). Stopping is what the owner
//! would have asked for. The running proxy keeps its senders for its whole
//! life, so this matters only in teardown and tests.

use tokio::sync::watch;

/// The receiving side of a shutdown signal. Cheap to clone: each clone
/// waits on its own.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Resolves once the signal is given or its sender is dropped;
    /// at once if that already happened.
    pub async fn signalled(&mut self) {
        // An error means the sender is gone: signalled too (module docs).
        let _ = self.0.wait_for(|signalled| *signalled).await;
    }

    /// Whether [`signalled`](Self::signalled) would resolve at once.
    pub fn is_signalled(&self) -> bool {
        self.0.has_changed().is_err() || *self.0.borrow()
    }
}

impl From<watch::Receiver<bool>> for Shutdown {
    fn from(receiver: watch::Receiver<bool>) -> Self {
        Shutdown(receiver)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn signalled_by_the_sender_or_by_its_drop() {
        let (sender, receiver) = watch::channel(false);
        let mut shutdown = Shutdown::from(receiver);
        assert!(!shutdown.is_signalled());
        sender.send(true).unwrap();
        assert!(shutdown.is_signalled());
        shutdown.signalled().await;

        let (sender, receiver) = watch::channel(false);
        let mut shutdown = Shutdown::from(receiver);
        drop(sender);
        assert!(shutdown.is_signalled());
        shutdown.signalled().await;
    }
}
