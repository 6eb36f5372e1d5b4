//! Hands the kernel back the memory glibc's allocator holds free.
//!
//! glibc keeps what is freed in the arena of the thread that allocated it,
//! for reuse, and returns memory to the kernel only from the top of a heap.
//! A burst of connections (a backend restart reconnecting thousands of
//! WebSockets at once) spreads long-lived allocations over new memory, and
//! the holes they leave when the burst's transient allocations are freed
//! stay resident. In the 30-minute soak wasp's resident memory rose by
//! ≈ 3 MiB at every backend restart while the memory in use stayed flat:
//! `malloc_stats` showed 111 MiB held by the allocator and 41 MiB in use.
//! `malloc_trim(0)` releases every free page wherever it lies (madvise), so
//! a thread of its own checks every [`PERIOD`] and trims when at least
//! [`FREE`] is held free. A trim walks the free chunks under each arena's
//! lock; on the worker threads that would stall connections, here it costs
//! them at most a short wait on a lock.
//!
//! Other allocators return memory by themselves (jemalloc's decay, for one)
//! but cost more memory at rest (mimalloc: +47 MiB at start, BENCHMARKS.md);
//! nginx avoids the problem with per-connection pools freed whole.

use std::time::Duration;

/// How often the trimmer looks.
pub const PERIOD: Duration = Duration::from_secs(10);
/// Free memory worth a trim.
pub const FREE: usize = 8 << 20;

/// Starts the trimmer thread (once per process; it runs until the process
/// ends). Nothing to do off glibc.
pub fn start() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let spawned = std::thread::Builder::new()
            .name("wasp-heap-trim".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(PERIOD);
                    trim_if_worth_it();
                }
            });
        if let Err(error) = spawned {
            tracing::warn!("no heap trimmer thread ({error}): freed memory stays resident");
        }
    }
}

/// What the allocator holds: bytes in use by the program (mmap'd blocks
/// included) and bytes it keeps free for reuse (resident until trimmed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub in_use: usize,
    pub free: usize,
}

/// The allocator's [`Usage`] (glibc only). It walks every arena's free
/// lists under their locks: for a scrape, not for a hot path.
pub fn usage() -> Option<Usage> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 takes no pointers and locks each arena it reads.
        let info = unsafe { libc::mallinfo2() };
        Some(Usage {
            in_use: info.uordblks + info.hblkhd,
            free: info.fordblks,
        })
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    None
}

/// Trims when the allocator holds at least [`FREE`] free; the bytes it held
/// free, when it trimmed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim_if_worth_it() -> Option<usize> {
    let free = usage()?.free;
    if free < FREE {
        return None;
    }
    let started = std::time::Instant::now();
    // SAFETY: malloc_trim takes no pointers and locks each arena it trims.
    unsafe { libc::malloc_trim(0) };
    tracing::debug!(
        free_mib = free >> 20,
        took_us = started.elapsed().as_micros() as u64,
        "returned free heap memory to the kernel"
    );
    Some(free)
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    fn rss_anon_kib() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[test]
    fn a_trim_returns_the_free_holes_between_live_allocations() {
        // On a thread of its own (an arena of its own, as a worker's).
        std::thread::spawn(|| {
            // 64 MiB in 4 KiB blocks, every page written; then 15 of every
            // 16 freed: 60 MiB of holes between live blocks, which glibc
            // keeps resident (only the top of a heap goes back by itself).
            let blocks: Vec<Vec<u8>> = (0..16_384).map(|i| vec![i as u8 | 1; 4096]).collect();
            let kept: Vec<Vec<u8>> = blocks.into_iter().step_by(16).collect();
            let before = rss_anon_kib();
            assert!(trim_if_worth_it().is_some_and(|free| free >= 48 << 20));
            let after = rss_anon_kib();
            // Other tests of this binary allocate meanwhile: a margin.
            assert!(
                before.saturating_sub(after) >= 32 << 10,
                "resident anonymous memory {before} KiB before the trim, {after} KiB after"
            );
            assert!(kept.iter().all(|block| block[0] & 1 == 1));
        })
        .join()
        .unwrap();
    }
}
