//! wasp's own accounting of the bytes its WebSocket relays hold for a peer:
//! what a connection read and could not pass on yet (the frame relay's
//! straddling frames, fragments and bytes the other peer has not taken; the
//! tunnel's pending bytes). A peer that does not read makes this grow until
//! backpressure stops reading the other side, so it is what bounds memory
//! per connection; `metrics` renders it as `wasp_relay_buffered_bytes` and
//! `wasp_relay_connection_buffered_max_bytes`.
//!
//! Cheap on the hot path: a relay tells its [`Held`] the new amount only
//! when it changed (a fast peer leaves it at zero), and that is a plain load
//! and store on a cell of the connection's own thread: no lock, no atomic
//! read-modify-write. Scraping sums the threads' cells.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

/// One process's (one `Metrics`') tallies, one per thread that ran a relay.
#[derive(Default)]
pub struct Buffers {
    tallies: Mutex<Vec<Arc<Tally>>>,
}

/// One thread's share. Written only by that thread (hence load + store),
/// read by whoever scrapes.
#[derive(Default)]
struct Tally {
    /// Bytes held now by this thread's connections. Signed: a connection
    /// that ended on another thread than it began would leave its thread's
    /// cell below zero; the sum is still right.
    held: AtomicI64,
    /// The most one of this thread's connections held at once.
    peak: AtomicU64,
}

/// The sums a scrape reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Bytes held by all relays now.
    pub held: u64,
    /// The most one connection held at once, since start.
    pub peak: u64,
}

thread_local! {
    /// This thread's tally in each live `Buffers` (a process has one; tests
    /// run several proxies in one process).
    static MINE: std::cell::RefCell<Vec<(Weak<Buffers>, Arc<Tally>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

impl Buffers {
    /// The accounting of a connection relayed on this thread. Once per
    /// connection: finds (or makes) this thread's tally.
    pub fn connection(self: &Arc<Self>) -> Held {
        let tally = MINE.with(|mine| {
            let mut mine = mine.borrow_mut();
            mine.retain(|(owner, _)| owner.strong_count() > 0);
            if let Some((_, tally)) = mine
                .iter()
                .find(|(owner, _)| std::ptr::eq(owner.as_ptr(), Arc::as_ptr(self)))
            {
                return tally.clone();
            }
            let tally = Arc::new(Tally::default());
            self.tallies
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(tally.clone());
            mine.push((Arc::downgrade(self), tally.clone()));
            tally
        });
        Held {
            tally,
            now: 0,
            peak: 0,
        }
    }

    /// Sums every thread's tally.
    pub fn totals(&self) -> Totals {
        let tallies = self.tallies.lock().unwrap_or_else(PoisonError::into_inner);
        let held: i64 = tallies.iter().map(|t| t.held.load(Ordering::Relaxed)).sum();
        let peak = tallies
            .iter()
            .map(|t| t.peak.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0);
        Totals {
            held: held.max(0) as u64,
            peak,
        }
    }
}

/// One connection's bytes held for its peers; dropping it gives them back.
pub struct Held {
    tally: Arc<Tally>,
    now: usize,
    peak: usize,
}

impl Held {
    /// The connection now holds `bytes` (both directions together).
    pub fn set(&mut self, bytes: usize) {
        if bytes == self.now {
            return;
        }
        let delta = bytes as i64 - self.now as i64;
        self.now = bytes;
        // Only this thread writes its tally: no read-modify-write needed.
        let held = &self.tally.held;
        held.store(held.load(Ordering::Relaxed) + delta, Ordering::Relaxed);
        if bytes > self.peak {
            self.peak = bytes;
            let peak = &self.tally.peak;
            if bytes as u64 > peak.load(Ordering::Relaxed) {
                peak.store(bytes as u64, Ordering::Relaxed);
            }
        }
    }

    /// The most this connection held at once.
    pub fn peak(&self) -> usize {
        self.peak
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.set(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_follow_connections_and_keep_the_peak() {
        let buffers = Arc::new(Buffers::default());
        let mut a = buffers.connection();
        let mut b = buffers.connection();
        a.set(1000);
        b.set(300);
        a.set(200);
        assert_eq!(
            buffers.totals(),
            Totals {
                held: 500,
                peak: 1000
            }
        );
        drop(a);
        assert_eq!(buffers.totals().held, 300);
        let other = Arc::new(Buffers::default());
        other.connection().set(5);
        assert_eq!(
            buffers.totals().held,
            300,
            "another proxy's bytes are its own"
        );
        drop(b);
        assert_eq!(
            buffers.totals(),
            Totals {
                held: 0,
                peak: 1000
            }
        );
    }

    #[test]
    fn threads_are_summed() {
        let buffers = Arc::new(Buffers::default());
        let mut here = buffers.connection();
        here.set(10);
        let there = buffers.clone();
        std::thread::spawn(move || {
            let mut held = there.connection();
            held.set(32);
            std::mem::forget(held);
        })
        .join()
        .unwrap();
        assert_eq!(buffers.totals(), Totals { held: 42, peak: 32 });
    }
}
