//! CPU time a target's processes spent while a scenario was measured, read from `/proc`: what the proxy itself
//! costs per message or handshake. Throughput ratios mix in the load generator's and the backend's share of the
//! machine; CPU per operation does not, so it is the steadier figure for comparing proxies.

use std::{fs, io};

use serde::{Deserialize, Serialize};

use crate::rss::{descendants, stat_field};

/// The target's CPU time per operation in the measured window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CpuUse {
    pub user_us_per_op: f64,
    pub system_us_per_op: f64,
}

impl CpuUse {
    pub fn total_us_per_op(&self) -> f64 {
        self.user_us_per_op + self.system_us_per_op
    }
}

/// User and system CPU time of a process tree at one moment, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuSample {
    user_ticks: u64,
    system_ticks: u64,
}

impl CpuSample {
    /// Sums `utime` and `stime` (every thread's) over the roots and their descendants.
    pub fn take(roots: &[u32]) -> io::Result<CpuSample> {
        let mut sample = CpuSample {
            user_ticks: 0,
            system_ticks: 0,
        };
        for pid in descendants(roots)? {
            // A process may exit between the scan and the read; its time is then no longer counted anywhere.
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let (user, system) = parse_times(&stat)
                .ok_or_else(|| io::Error::other(format!("unreadable /proc/{pid}/stat")))?;
            sample.user_ticks += user;
            sample.system_ticks += system;
        }
        Ok(sample)
    }

    /// The CPU time from this sample to `later`, per operation (`None` without operations).
    pub fn per_op(&self, later: &CpuSample, ops: u64, ticks_per_sec: u64) -> Option<CpuUse> {
        if ops == 0 || ticks_per_sec == 0 {
            return None;
        }
        let per_op = |ticks: u64| ticks as f64 * 1e6 / ticks_per_sec as f64 / ops as f64;
        Some(CpuUse {
            user_us_per_op: per_op(later.user_ticks.saturating_sub(self.user_ticks)),
            system_us_per_op: per_op(later.system_ticks.saturating_sub(self.system_ticks)),
        })
    }
}

/// Samples the processes' CPU time at `from` and at `until`: spawn it as the scenario starts. `None` without
/// processes to measure.
pub async fn sample_window(
    pids: Vec<u32>,
    from: tokio::time::Instant,
    until: tokio::time::Instant,
) -> io::Result<Option<(CpuSample, CpuSample)>> {
    if pids.is_empty() {
        return Ok(None);
    }
    tokio::time::sleep_until(from).await;
    let start = CpuSample::take(&pids)?;
    tokio::time::sleep_until(until).await;
    Ok(Some((start, CpuSample::take(&pids)?)))
}

/// The CPU use per operation between the samples of [`sample_window`].
pub fn per_op(window: Option<(CpuSample, CpuSample)>, ops: u64) -> Option<CpuUse> {
    let (start, end) = window?;
    start.per_op(&end, ops, ticks_per_sec())
}

/// Clock ticks per second of `/proc`'s CPU times (`USER_HZ`, 100 on Linux).
pub fn ticks_per_sec() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).unwrap_or(100)
}

/// `utime` and `stime` (fields 14 and 15) of a `/proc/PID/stat` line.
fn parse_times(stat: &str) -> Option<(u64, u64)> {
    Some((
        stat_field(stat, 14)?.parse().ok()?,
        stat_field(stat, 15)?.parse().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_read_after_the_command_name() {
        let stat =
            "4242 (nginx: worker) S 4241 4241 1 0 -1 4194624 1510 0 0 0 731 298 0 0 20 0 1 0";
        assert_eq!(parse_times(stat), Some((731, 298)));
        assert_eq!(parse_times("7 (a) b) c) R 1"), None);
    }

    #[test]
    fn per_op_divides_the_difference() {
        let before = CpuSample {
            user_ticks: 100,
            system_ticks: 50,
        };
        let after = CpuSample {
            user_ticks: 130,
            system_ticks: 250,
        };
        // 30 and 200 ticks of 10 ms over 1,000 operations: 300 µs and 2,000 µs each.
        let cpu = before.per_op(&after, 1_000, 100).unwrap();
        assert_eq!((cpu.user_us_per_op, cpu.system_us_per_op), (300.0, 2_000.0));
        assert_eq!(cpu.total_us_per_op(), 2_300.0);
        assert_eq!(before.per_op(&after, 0, 100), None);
    }

    #[test]
    fn own_process_uses_cpu() {
        let me = [std::process::id()];
        let before = CpuSample::take(&me).unwrap();
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(50) {
            std::hint::black_box(spin.elapsed());
        }
        let after = CpuSample::take(&me).unwrap();
        let cpu = before.per_op(&after, 1, ticks_per_sec()).unwrap();
        assert!(cpu.total_us_per_op() > 0.0, "{cpu:?}");
    }
}
