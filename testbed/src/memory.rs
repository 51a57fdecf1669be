//! Cold memory: the floor and the swarm write into memory in the same state.
//!
//! On a virtual machine whose guest hands free memory back to its host (Linux's free page
//! reporting), the first write to a page handed back faults it in again from the host; the
//! guest sees that as CPU time in whatever copies into the page. Measured on the 2-vCPU
//! machine of issue 13: writing a GiB into tmpfs costs 0.38 core-s where the memory was freed
//! moments before, and 3.1–3.3 core-s beyond that. A scenario writes a copy of the content
//! per leecher (4 GiB in scenario 2), so how much of the machine's memory is still warm — a
//! previous run's, freed seconds before, is handed back at about 150 MiB a second — moved
//! both the floor's figure and p2pd's by as much as 2 core-s per GiB from run to run, and the
//! floor, which writes first, took whatever warm memory there was.
//!
//! So before the floor a scenario:
//! 1. **settles**: waits until the kernel has stopped handing memory back
//!    (`/sys/module/page_reporting/parameters/reported_kib` unchanged for [`QUIET`]; at most
//!    [`ColdMemory::settle_at_most`]; skipped where the file does not exist);
//! 2. **takes the warm rest** ([`Ballast`]): touches anonymous memory 64 MiB at a time,
//!    measuring each chunk's CPU, until [`COLD_RUN`] chunks in a row cost at least
//!    [`COLD_FACTOR`] × the cheapest one (cold), or [`ColdMemory::ballast_at_most`] — and holds
//!    it until the run ends.
//!
//! The benchmark scenarios do both ([`ColdMemory::BENCHMARK`]); a test may bound them tighter,
//! or skip them (`ScenarioSpec::cold_memory`).
//!
//! The floor then writes its copies into cold memory and keeps them (see [`crate::floor`]),
//! and the swarm writes into cold memory too. Both pay the machine's cold-write cost on every
//! byte they store; [`MemoryState`] records the warm and cold rates measured, so that a
//! reader can tell how much of a figure is the machine's memory rather than the software. On a
//! machine without the effect no chunk is ever cold and the ballast stops at its cap, having
//! cost about a second of CPU.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::cpu::thread_cpu_secs;

/// Where Linux counts the memory its free page reporting has handed back (KiB, cumulative).
pub const REPORTED_KIB: &str = "/sys/module/page_reporting/parameters/reported_kib";
/// Reporting is over when the counter has not moved for this long (it reports every 2 s).
pub const QUIET: Duration = Duration::from_secs(5);
/// Bytes touched per step of the ballast.
pub const CHUNK: usize = 64 << 20;
/// A chunk this many times dearer than the cheapest one was cold memory.
pub const COLD_FACTOR: f64 = 3.0;
/// Cold chunks in a row that end the ballast.
pub const COLD_RUN: usize = 4;

/// How far a scenario goes to make memory cold (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ColdMemory {
    /// The longest wait for free page reporting to end.
    pub settle_at_most: Duration,
    /// The most warm memory taken (also at most a quarter of what is available).
    pub ballast_at_most: u64,
}

impl ColdMemory {
    /// What the benchmark scenarios do: after a run that freed several GiB, reporting goes on
    /// for up to a minute; the warm rest found after it was 0.6–2.4 GiB here.
    pub const BENCHMARK: ColdMemory = ColdMemory { settle_at_most: Duration::from_secs(90), ballast_at_most: 4 << 30 };
}

/// What was done to the machine's memory before the floor, and what it showed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryState {
    /// Seconds waited for free page reporting to end (0 where the machine has none).
    pub settle_secs: f64,
    /// Whether reporting was still going on when the wait gave up.
    pub settle_timed_out: bool,
    /// Bytes taken: the warm rest, and the [`COLD_RUN`] cold chunks that showed it ended (or
    /// everything up to the cap).
    pub ballast_bytes: u64,
    /// Whether the ballast found cold memory (false: stopped at its cap).
    pub found_cold: bool,
    /// Core-seconds per GiB of touching the cheapest chunk (warm memory).
    pub warm_secs_per_gib: f64,
    /// Core-seconds per GiB of the last chunks touched (cold memory, when `found_cold`).
    pub cold_secs_per_gib: f64,
}

/// Waits until free page reporting stops handing memory back (see the module doc); returns
/// the seconds waited and whether it was still going at the limit. Returns at once where the
/// counter does not exist.
pub fn settle(quiet: Duration, at_most: Duration) -> (f64, bool) {
    let read = || std::fs::read_to_string(REPORTED_KIB).ok().and_then(|s| s.trim().parse::<u64>().ok());
    let started = Instant::now();
    let Some(mut last) = read() else { return (0.0, false) };
    let mut unchanged_since = Instant::now();
    while unchanged_since.elapsed() < quiet {
        if started.elapsed() >= at_most {
            return (started.elapsed().as_secs_f64(), true);
        }
        std::thread::sleep(Duration::from_millis(250));
        let now = read().unwrap_or(last);
        if now != last {
            last = now;
            unchanged_since = Instant::now();
        }
    }
    (started.elapsed().as_secs_f64(), false)
}

/// Warm memory held until dropped (see the module doc).
pub struct Ballast {
    chunks: Vec<Vec<u8>>,
}

impl Ballast {
    /// Touches memory `chunk` bytes at a time until it turns cold or `at_most` bytes.
    pub fn fill(chunk: usize, at_most: u64) -> (Ballast, MemoryState) {
        let page = page_size();
        let mut chunks = Vec::new();
        let mut costs: Vec<f64> = Vec::new();
        let mut cold_run = 0;
        while ((chunks.len() + 1) * chunk) as u64 <= at_most && cold_run < COLD_RUN {
            let start = thread_cpu_secs();
            let mut v = vec![0u8; chunk];
            // calloc'd memory is mapped lazily: writing a byte per page makes the kernel
            // provide (and zero) every page now.
            for byte in v.iter_mut().step_by(page) {
                *byte = 1;
            }
            // Opaque to the optimizer: the stores happen.
            std::hint::black_box(&mut v);
            let cost = thread_cpu_secs() - start;
            chunks.push(v);
            costs.push(cost);
            let cheapest = costs.iter().copied().fold(f64::INFINITY, f64::min);
            cold_run = if cost >= COLD_FACTOR * cheapest && cheapest > 0.0 { cold_run + 1 } else { 0 };
        }
        let per_gib = |secs: f64| secs * (1u64 << 30) as f64 / chunk as f64;
        let cheapest = costs.iter().copied().fold(f64::INFINITY, f64::min);
        let last: Vec<f64> = costs.iter().rev().take(COLD_RUN).copied().collect();
        let state = MemoryState {
            settle_secs: 0.0,
            settle_timed_out: false,
            ballast_bytes: (chunks.len() * chunk) as u64,
            found_cold: cold_run >= COLD_RUN,
            warm_secs_per_gib: if cheapest.is_finite() { per_gib(cheapest) } else { 0.0 },
            cold_secs_per_gib: if last.is_empty() {
                0.0
            } else {
                per_gib(last.iter().sum::<f64>() / last.len() as f64)
            },
        };
        (Ballast { chunks }, state)
    }

    pub fn bytes(&self) -> u64 {
        self.chunks.iter().map(|c| c.len() as u64).sum()
    }
}

/// Settles, then takes the warm rest of memory: both steps of the module doc.
pub fn make_cold(how: &ColdMemory) -> (Ballast, MemoryState) {
    let (settle_secs, settle_timed_out) = settle(QUIET, how.settle_at_most);
    let (ballast, state) = Ballast::fill(CHUNK, how.ballast_at_most.min(available_bytes() / 4));
    (ballast, MemoryState { settle_secs, settle_timed_out, ..state })
}

fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().map_or(4096, |p| p as usize)
}

/// `MemAvailable` from /proc/meminfo (0 when unreadable: no ballast then).
fn available_bytes() -> u64 {
    parse_mem_available(&std::fs::read_to_string(Path::new("/proc/meminfo")).unwrap_or_default()).unwrap_or(0)
}

pub fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_available_is_read_in_bytes() {
        let text = "MemTotal:       24000000 kB\nMemFree:        100 kB\nMemAvailable:   2048 kB\n";
        assert_eq!(parse_mem_available(text), Some(2 << 20));
        assert_eq!(parse_mem_available("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn a_ballast_holds_whole_chunks_up_to_its_cap() {
        let (ballast, state) = Ballast::fill(1 << 20, 5 << 20);
        assert!(ballast.bytes() <= 5 << 20 && ballast.bytes() >= 1 << 20, "{}", ballast.bytes());
        assert_eq!(ballast.bytes(), state.ballast_bytes);
        assert_eq!(ballast.bytes() % (1 << 20), 0);
        assert!(state.warm_secs_per_gib >= 0.0 && state.cold_secs_per_gib >= state.warm_secs_per_gib);
        let (none, empty) = Ballast::fill(1 << 20, 0);
        assert_eq!((none.bytes(), empty.ballast_bytes, empty.found_cold), (0, 0, false));
    }
}
