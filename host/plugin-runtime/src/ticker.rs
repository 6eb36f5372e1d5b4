//! The epoch ticker: advances the engine's epoch once per tick so that
//! calls past their deadline are interrupted (see `deadline`).
//!
//! It only needs to run while plugin code runs. A proxy relaying raw
//! tunnels, or idle, calls no plugin for long stretches, and a thread
//! waking a thousand times a second then costs CPU and power for nothing.
//! So the ticker sleeps once no call started for `IDLE_TICKS` ticks and none
//! is running, and the next call wakes it. A call pays two uncontended
//! atomic adds (the count of running calls: a call that loops must never
//! find the ticker asleep, whatever its budget) and, in steady use, one
//! relaxed load.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use wasmtime::Engine;

/// Granularity of CPU deadlines: the epoch advances once per tick.
pub const TICK: Duration = Duration::from_millis(1);

/// Ticks without a call after which the ticker sleeps.
const IDLE_TICKS: u32 = 100;

/// Shared between the ticker thread and the callers.
#[derive(Default)]
pub struct Ticker {
    /// A call started since the ticker last looked.
    active: AtomicBool,
    /// Calls running now.
    running: AtomicUsize,
    /// The ticker sleeps (or is about to) until a call wakes it.
    sleeping: AtomicBool,
    wake_lock: Mutex<()>,
    wake: Condvar,
}

impl Ticker {
    /// Starts the ticker thread for `engine`; it ends when the engine is dropped.
    pub fn start(engine: &Engine) -> Arc<Ticker> {
        let weak = engine.weak();
        Ticker::start_with(move || weak.upgrade().map(|e| e.increment_epoch()).is_some())
    }

    /// Runs `tick` every [`TICK`] while calls happen, until it returns false.
    fn start_with(tick: impl Fn() -> bool + Send + 'static) -> Arc<Ticker> {
        let ticker = Arc::new(Ticker::default());
        let this = ticker.clone();
        std::thread::Builder::new()
            .name("wasp-epoch".into())
            .spawn(move || {
                let mut quiet = 0;
                while tick() {
                    std::thread::sleep(TICK);
                    let busy = this.running.load(Ordering::SeqCst) > 0;
                    quiet = if this.active.swap(false, Ordering::Relaxed) || busy {
                        0
                    } else {
                        quiet + 1
                    };
                    if quiet >= IDLE_TICKS {
                        this.sleep_until_called();
                        quiet = 0;
                    }
                }
            })
            .expect("spawning the epoch ticker thread");
        ticker
    }

    /// Called as a plugin call is armed: keeps the ticker awake, or wakes
    /// it, until the returned guard is dropped as the call ends.
    pub fn call_starting(&self) -> Running<'_> {
        self.running.fetch_add(1, Ordering::SeqCst);
        self.wake_if_asleep();
        Running(self)
    }

    fn wake_if_asleep(&self) {
        if self.active.load(Ordering::Relaxed) {
            return;
        }
        // Paired with `sleep_until_called`: either the ticker sees `active`
        // before it sleeps, or this sees `sleeping` and wakes it.
        self.active.store(true, Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst) {
            let _guard = self.wake_lock.lock().unwrap();
            self.sleeping.store(false, Ordering::SeqCst);
            self.wake.notify_one();
        }
    }

    fn sleep_until_called(&self) {
        let mut guard = self.wake_lock.lock().unwrap();
        self.sleeping.store(true, Ordering::SeqCst);
        if self.active.load(Ordering::SeqCst) || self.running.load(Ordering::SeqCst) > 0 {
            self.sleeping.store(false, Ordering::SeqCst);
            return;
        }
        while self.sleeping.load(Ordering::SeqCst) {
            guard = self.wake.wait(guard).unwrap();
        }
    }

    /// Whether the ticker is asleep (tests).
    #[cfg(test)]
    fn is_sleeping(&self) -> bool {
        self.sleeping.load(Ordering::SeqCst)
    }
}

/// A call in progress: the ticker stays awake until it is dropped.
#[must_use = "the call counts as running until this is dropped"]
pub struct Running<'a>(&'a Ticker);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
        let started = Instant::now();
        while !condition() {
            assert!(started.elapsed() < Duration::from_secs(10), "{what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn sleeps_without_calls_and_the_next_call_wakes_it() {
        let ticks = Arc::new(AtomicUsize::new(0));
        let counted = ticks.clone();
        let ticker = Ticker::start_with(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            true
        });
        wait_for("the ticker sleeps when no call runs", || {
            ticker.is_sleeping()
        });
        let asleep_at = ticks.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            ticks.load(Ordering::SeqCst),
            asleep_at,
            "no ticks while asleep"
        );

        drop(ticker.call_starting());
        assert!(!ticker.is_sleeping(), "a call wakes the ticker at once");
        wait_for("ticks resume", || {
            ticks.load(Ordering::SeqCst) > asleep_at + 5
        });
        // Calls keep it awake.
        for _ in 0..(2 * IDLE_TICKS) {
            drop(ticker.call_starting());
            assert!(!ticker.is_sleeping());
            std::thread::sleep(TICK);
        }
    }

    #[test]
    fn a_call_that_runs_longer_than_the_idle_ticks_keeps_it_awake() {
        let ticks = Arc::new(AtomicUsize::new(0));
        let counted = ticks.clone();
        let ticker = Ticker::start_with(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            true
        });
        let running = ticker.call_starting();
        let started = ticks.load(Ordering::SeqCst);
        // Three times the idle ticks into one call, the epoch still moves.
        wait_for("ticks go on through a long call", || {
            ticks.load(Ordering::SeqCst) > started + 3 * IDLE_TICKS as usize
        });
        assert!(!ticker.is_sleeping());
        drop(running);
        wait_for("the ticker sleeps once the call ended", || {
            ticker.is_sleeping()
        });
    }
}
