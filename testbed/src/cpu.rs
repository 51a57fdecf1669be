//! The machine's CPU use, from the first line of `/proc/stat`, to tell a run limited by its
//! links from one limited by the CPU.
//!
//! Busy time is everything but `idle` and `iowait`, over all cores together: a busy fraction
//! of 1.0 means every core was busy the whole interval.

use serde::{Deserialize, Serialize};

/// A run whose CPU was busier than this (all cores together) is called CPU-bound.
pub const CPU_BOUND_THRESHOLD: f64 = 0.85;

/// Cumulative CPU time since boot, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    pub busy: u64,
    pub total: u64,
}

impl CpuTimes {
    /// Reads `/proc/stat` now; `None` where it cannot be read.
    pub fn now() -> Option<CpuTimes> {
        parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// The busy fraction between `earlier` and `self` (0 when no time passed).
    pub fn busy_since(self, earlier: CpuTimes) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 { 0.0 } else { self.busy.saturating_sub(earlier.busy) as f64 / total as f64 }
    }
}

/// Parses the aggregate `cpu` line: user nice system idle iowait irq softirq steal (guest time
/// is already counted in user).
pub fn parse_proc_stat(text: &str) -> Option<CpuTimes> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line.split_whitespace().skip(1).take(8).map(|f| f.parse().ok()).collect::<Option<_>>()?;
    if fields.len() < 5 {
        return None;
    }
    let total: u64 = fields.iter().sum();
    let idle = fields[3] + fields[4];
    Some(CpuTimes { busy: total - idle, total })
}

/// CPU time (user + system, in the same clock ticks as `/proc/stat`) a process has used so
/// far; `None` once it is gone.
pub fn process_ticks(pid: i32) -> Option<u64> {
    parse_process_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Fields 14 and 15 (utime, stime) of `/proc/PID/stat`, counted after the `)` that ends the
/// command name (which may itself hold spaces and parentheses).
pub fn parse_process_stat(text: &str) -> Option<u64> {
    let after_name = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after_name starts at field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Link-bound or CPU-bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    LinkBound,
    CpuBound,
}

impl Verdict {
    pub fn from_busy_fraction(busy: f64) -> Verdict {
        if busy > CPU_BOUND_THRESHOLD { Verdict::CpuBound } else { Verdict::LinkBound }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::LinkBound => "link-bound",
            Verdict::CpuBound => "CPU-bound",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_aggregate_line_is_read() {
        let text = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\n";
        let t = parse_proc_stat(text).expect("parse");
        assert_eq!(t, CpuTimes { busy: 150, total: 1000 });
        let later = CpuTimes { busy: 250, total: 1200 };
        assert!((later.busy_since(t) - 0.5).abs() < 1e-12);
        assert_eq!(parse_proc_stat("intr 1 2 3"), None);
    }

    #[test]
    fn process_times_are_read_after_the_name() {
        let text = "4242 (p2pd (x) y) S 1 4242 4242 0 -1 4194560 500 0 0 0 170 30 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_process_stat(text), Some(200));
        assert_eq!(parse_process_stat("garbage"), None);
    }

    #[test]
    fn verdict_threshold() {
        assert_eq!(Verdict::from_busy_fraction(0.5), Verdict::LinkBound);
        assert_eq!(Verdict::from_busy_fraction(0.9), Verdict::CpuBound);
    }
}
