//! p2pd-testbed — real p2pd swarms on one machine, measured against the best any system
//! could do.
//!
//! The testbed builds a *fleet*: one network namespace per host, each with its own address and
//! an upload limit (`tc tbf`), all on one bridge in a namespace of their own, and a real `p2pd`
//! in every host. A *scenario* puts content on one seed, has every leecher add the descriptor
//! at the same moment (or one after another over a window), records who had what when, checks
//! the bytes, and compares the slowest leecher with the Kumar–Ross minimum distribution time,
//! and the CPU spent per GiB with the *floor*: a bare pipeline doing the least any leecher must
//! do, on the same machine and filesystem. The `demo` does the same on loopback without root,
//! with progress bars.
//!
//! Modules, from pure to I/O:
//! - [`units`]: link rates and sizes as the command line spells them;
//! - [`bound`]: the minimum distribution time and TCP goodput of a tbf rate (pure);
//! - [`stats`]: median and percentiles (pure);
//! - [`shaping`]: tbf parameters for a rate (pure) and the `tc` arguments;
//! - [`binaries`]: where `p2pd` and `p2pctl` are;
//! - [`control`]: one request, one response on a daemon's control socket;
//! - [`daemon`]: one `p2pd` process with its own directories;
//! - [`teardown`]: cleanup on every exit path (drop, SIGINT/SIGTERM, `cleanup` subcommand);
//! - [`fleet`]: hosts in network namespaces on a bridge, a daemon in each;
//! - [`content`]: random content and byte-for-byte comparison;
//! - [`cpu`]: machine CPU use from `/proc/stat`, a process's or a thread's CPU time, peak RSS,
//!   core-seconds per GiB;
//! - [`volume`]: where each host's data lives (tmpfs, or an ext4 image per host);
//! - [`floor`]: receive, SHA-256 and write the content without p2pd, its CPU measured;
//! - [`scenario`]: one seed plus N leechers, run and measured;
//! - [`presets`]: the benchmark scenarios (1–5 of issue 5, 6 of issue 13);
//! - [`report`]: result files (JSON), the summary table, and [`chart`]: the SVG picture.
//!
//! The binary (`src/bin/p2pd-testbed/`) adds the command line and the loopback `demo`.

pub mod binaries;
pub mod bound;
pub mod chart;
pub mod content;
pub mod control;
pub mod cpu;
pub mod daemon;
pub mod fleet;
pub mod floor;
pub mod memory;
pub mod presets;
pub mod report;
pub mod scenario;
pub mod shaping;
pub mod stats;
pub mod teardown;
pub mod units;
pub mod volume;
