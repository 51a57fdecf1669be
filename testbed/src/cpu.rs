//! The machine's CPU use, from the first line of `/proc/stat`, to tell a run limited by its
//! links from one limited by the CPU.
//!
//! Busy time is everything but `idle` and `iowait`, over all cores together: a busy fraction
//! of 1.0 means every core was busy the whole interval.
//!
//! Also the CPU time of one process (`/proc/PID/stat`) or of the calling thread
//! (`getrusage(RUSAGE_THREAD)`), a process's peak RSS (`VmHWM`), and the arithmetic that turns
//! core-seconds into core-seconds per GiB moved.

use serde::{Deserialize, Serialize};

/// A run whose CPU was busier than this (all cores together) is called CPU-bound.
pub const CPU_BOUND_THRESHOLD: f64 = 0.85;

/// Bytes in a GiB: the unit of every "per GiB" figure.
pub const GIB: f64 = (1u64 << 30) as f64;

/// Core-seconds per GiB: `core_secs` spent moving `bytes`; `None` when nothing moved.
pub fn per_gib(core_secs: f64, bytes: u64) -> Option<f64> {
    (bytes > 0).then(|| core_secs / (bytes as f64 / GIB))
}

/// Clock ticks per second of `/proc/stat` and `/proc/PID/stat` (`USER_HZ`, 100 on Linux).
pub fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf reads a constant of the running system; no memory is passed.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// CPU time (user + system) the calling thread has used so far, in seconds.
pub fn thread_cpu_secs() -> f64 {
    match nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_THREAD) {
        Ok(usage) => {
            let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
            secs(usage.user_time()) + secs(usage.system_time())
        }
        Err(_) => 0.0,
    }
}

/// The peak resident set size of a process (`VmHWM`), in bytes; `None` once it is gone.
pub fn peak_rss_bytes(pid: i32) -> Option<u64> {
    parse_vm_hwm(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// The `VmHWM:` line of `/proc/PID/status` (in kB there), in bytes.
pub fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let mut fields = line.split_whitespace().skip(1);
    let kib: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") => Some(kib * 1024),
        _ => None,
    }
}

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

    /// Busy core-seconds between `earlier` and `self`: (busy share) × cores × seconds.
    pub fn busy_core_secs_since(self, earlier: CpuTimes) -> f64 {
        self.busy.saturating_sub(earlier.busy) as f64 / ticks_per_sec()
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
    fn peak_rss_is_read_in_bytes() {
        let status = "Name:\tp2pd\nVmPeak:\t  300000 kB\nVmHWM:\t    12345 kB\nVmRSS:\t    10000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(12345 * 1024));
        assert_eq!(parse_vm_hwm("VmHWM:\t 12 MB\n"), None);
        assert_eq!(parse_vm_hwm("Name: x\n"), None);
    }

    #[test]
    fn per_gib_divides_by_binary_gigabytes() {
        // 3 core-seconds moving 512 MiB: 6 core-seconds per GiB.
        assert_eq!(per_gib(3.0, 512 << 20), Some(6.0));
        assert_eq!(per_gib(1.5, 3 << 30), Some(0.5));
        assert_eq!(per_gib(1.0, 0), None);
    }

    #[test]
    fn machine_core_seconds_are_busy_ticks_over_the_tick_rate() {
        let hz = ticks_per_sec();
        let a = CpuTimes { busy: 1000, total: 5000 };
        let b = CpuTimes { busy: 1000 + 3 * hz as u64, total: 5000 + 4 * hz as u64 };
        // Three core-seconds busy out of four (two cores for two seconds).
        assert!((b.busy_core_secs_since(a) - 3.0).abs() < 1e-9);
        assert!((b.busy_since(a) - 0.75).abs() < 1e-9);
    }

    #[test]
    fn this_threads_cpu_time_grows_with_work() {
        let before = thread_cpu_secs();
        let mut x = 0u64;
        let started = std::time::Instant::now();
        while started.elapsed() < std::time::Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        assert!(thread_cpu_secs() > before, "{x}");
    }

    #[test]
    fn verdict_threshold() {
        assert_eq!(Verdict::from_busy_fraction(0.5), Verdict::LinkBound);
        assert_eq!(Verdict::from_busy_fraction(0.9), Verdict::CpuBound);
    }
}
