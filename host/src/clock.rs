//! A cheap clock for activity stamps.
//!
//! Relays stamp every message or chunk they move so that idle timeouts
//! count from the last one. `Instant::now()` reads the TSC through the vDSO
//! (~40 ns on a KVM guest, several per message); the coarse monotonic clock
//! is one load from the vDSO page, at the kernel tick's resolution (1–4 ms),
//! which is plenty for timeouts of seconds. nginx does the same with its
//! per-event-loop cached time.

use std::time::Duration;

/// Milliseconds on the coarse monotonic clock (same origin as `Instant`'s
/// clock, so differences are comparable to elapsed `Instant` time).
pub fn coarse_millis() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec; CLOCK_MONOTONIC_COARSE
    // exists on every Linux since 2.6.32.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut now) };
    now.tv_sec as u64 * 1000 + now.tv_nsec as u64 / 1_000_000
}

/// How long ago (by the coarse clock) a stamp from [`coarse_millis`] was taken.
pub fn since(stamp: u64) -> Duration {
    Duration::from_millis(coarse_millis().saturating_sub(stamp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coarse_time_moves_with_real_time() {
        let stamp = coarse_millis();
        let started = std::time::Instant::now();
        std::thread::sleep(Duration::from_millis(30));
        let measured = since(stamp);
        // The coarse clock lags by at most a tick (≤ 10 ms even at HZ=100).
        assert!(
            measured + Duration::from_millis(10) >= started.elapsed(),
            "{measured:?}"
        );
        assert!(
            measured <= started.elapsed() + Duration::from_millis(10),
            "{measured:?}"
        );
    }
}
