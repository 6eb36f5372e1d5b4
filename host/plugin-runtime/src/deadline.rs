//! CPU deadlines for plugin calls, robust against a busy machine.
//!
//! Epoch interruption measures wall-clock time: on a loaded host a healthy
//! call that was merely preempted would be killed. So when the epoch
//! deadline passes, this watch starts measuring the thread's CPU time and
//! grants another window; the call is interrupted only if it burned at
//! least half a window of CPU in that window (it is really spinning), or
//! after `MAX_WINDOWS` windows whatever the reason. Reading the thread's CPU
//! clock is a syscall, so it happens only on deadline hits, never per call.

use std::time::Duration;
use wasmtime::UpdateDeadline;

/// Hard bound on extensions: a call never outlives this many windows.
const MAX_WINDOWS: u32 = 50;

/// Per-store state of the deadline of the call in progress.
#[derive(Debug, Default)]
pub struct CpuDeadline {
    budget: Duration,
    ticks: u64,
    window_start: Option<Duration>,
    windows: u32,
}

impl CpuDeadline {
    /// Starts a call allowed `budget` of CPU, checked every `ticks` epochs.
    pub fn arm(&mut self, budget: Duration, ticks: u64) {
        *self = CpuDeadline {
            budget,
            ticks,
            window_start: None,
            windows: 0,
        };
    }

    /// Called by wasmtime each time the epoch deadline passes.
    pub fn on_deadline(&mut self) -> UpdateDeadline {
        self.decide(thread_cpu_time())
    }

    fn decide(&mut self, cpu_now: Duration) -> UpdateDeadline {
        self.windows += 1;
        let spinning = self
            .window_start
            .is_some_and(|start| cpu_now.saturating_sub(start) >= self.budget / 2);
        if spinning || self.windows > MAX_WINDOWS {
            return UpdateDeadline::Interrupt;
        }
        self.window_start = Some(cpu_now);
        UpdateDeadline::Continue(self.ticks)
    }
}

fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; this clock id is always
    // supported on Linux for the calling thread.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_spinning_call_is_interrupted_in_its_second_window() {
        let mut d = CpuDeadline::default();
        d.arm(ms(10), 10);
        assert!(matches!(d.decide(ms(100)), UpdateDeadline::Continue(10)));
        assert!(matches!(d.decide(ms(109)), UpdateDeadline::Interrupt));
    }

    #[test]
    fn a_preempted_call_gets_more_windows_but_not_forever() {
        let mut d = CpuDeadline::default();
        d.arm(ms(10), 10);
        let mut cpu = ms(100);
        for _ in 0..MAX_WINDOWS {
            assert!(matches!(d.decide(cpu), UpdateDeadline::Continue(10)));
            cpu += ms(1);
        }
        assert!(matches!(d.decide(cpu), UpdateDeadline::Interrupt));
    }

    #[test]
    fn the_thread_clock_advances_with_work() {
        let start = thread_cpu_time();
        let mut x = 0u64;
        while thread_cpu_time() - start < ms(2) {
            x = std::hint::black_box(x + 1);
        }
        assert!(x > 0);
    }
}
