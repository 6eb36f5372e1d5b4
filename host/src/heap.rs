//! The host's memory allocator, jemalloc, and what it reports.
//!
//! Why not glibc's: a burst of connections (a backend restart reconnecting
//! thousands of WebSockets at once) interleaves the connections' long-lived
//! allocations with the handshakes' short-lived buffers. glibc returns
//! memory to the kernel only from the top of a heap, so the holes the burst
//! leaves stay resident: the 30-minute soak grew by ≈ 3 MiB per backend
//! restart with the memory in use flat, and a `malloc_trim` thread only
//! narrowed the swing (BENCHMARKS.md, "Soak"). jemalloc keeps each size
//! class in slabs of its own, so a burst's buffers fill slabs the survivors
//! do not share, and its background thread returns pages unused for the
//! decay time (10 s) without any call from here.
//!
//! The allocator is set here, in the library, so that every binary and test
//! linking the host runs on the allocator production runs on. The fuzz
//! targets do not link this crate and keep the system allocator, which the
//! sanitizers instrument.

use tikv_jemalloc_ctl::{epoch, stats};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// What the allocator holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Bytes the program has allocated and not freed.
    pub in_use: usize,
    /// Resident bytes beyond those: pages freed but not yet returned (they
    /// go back after the decay time), partly used slabs, and jemalloc's
    /// own metadata.
    pub free: usize,
}

/// The allocator's [`Usage`], refreshed (jemalloc caches its statistics
/// until asked for a new epoch). It merges every arena's counters under
/// their locks: for a scrape, not for a hot path.
pub fn usage() -> Option<Usage> {
    epoch::advance().ok()?;
    let in_use = stats::allocated::read().ok()?;
    let resident = stats::resident::read().ok()?;
    Some(Usage {
        in_use,
        free: resident.saturating_sub(in_use),
    })
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::time::{Duration, Instant};

    fn rss_anon_kib() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[test]
    fn the_background_thread_returns_freed_holes_between_live_allocations() {
        assert_eq!(tikv_jemalloc_ctl::background_thread::read(), Ok(true));
        // 64 MiB in 4 KiB blocks, every page written; then 15 of every 16
        // freed: 60 MiB of holes between live blocks, the shape a burst of
        // handshakes leaves behind, which glibc kept resident.
        let blocks: Vec<Vec<u8>> = (0..16_384).map(|i| vec![i as u8 | 1; 4096]).collect();
        let peak = rss_anon_kib();
        let kept: Vec<Vec<u8>> = blocks.into_iter().step_by(16).collect();
        // No call returns them: the background thread does, once they have
        // been unused for the decay time. Other tests of this binary
        // allocate meanwhile: a margin below the 60 MiB.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let now = rss_anon_kib();
            if peak.saturating_sub(now) >= 32 << 10 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "resident anonymous memory {peak} KiB at the peak, still {now} KiB a minute after freeing 60 MiB"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(kept.iter().all(|block| block[0] & 1 == 1));
    }
}
