//! Result files: one JSON document per run (everything measured, time series included), a
//! one-line markdown row per run, and the summary `README.md` of a results directory,
//! regenerated from every JSON result in it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::bound::MinDistributionTime;
use crate::cpu::Verdict;
use crate::floor::FloorResult;
use crate::memory::MemoryState;
use crate::units::{LinkRate, human_bytes};

/// Version of the result document; fields are only ever added within a version (results
/// written before a field existed read it as its default: absent, zero or empty).
pub const RESULT_SCHEMA_VERSION: u32 = 1;

/// Everything one run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    pub schema: u32,
    /// File name stem: `scenario-1`, or `--name`.
    pub name: String,
    /// What the run was, for a person (chart title).
    pub title: String,
    /// The command that reproduces it.
    pub command: String,
    /// The source it ran: the commit of the working tree the testbed ran in (`git rev-parse
    /// --short HEAD`, "+ uncommitted changes" when the tree differs); absent outside a clone
    /// and in older results.
    #[serde(default)]
    pub commit: Option<String>,
    /// Seconds since the Unix epoch when the leechers were released.
    pub started_unix_secs: u64,
    pub parameters: Parameters,
    pub bound: MinDistributionTime,
    pub outcome: Outcome,
    pub summary: Summary,
    /// The seed first, then the leechers.
    pub hosts: Vec<HostResult>,
    /// Busy fraction of the whole machine, per second of the run.
    pub cpu_series: Vec<CpuSample>,
    /// The floor, measured on the same content and filesystem before the leechers were
    /// released (see [`crate::floor`]); absent in results of older testbeds, or when it failed.
    #[serde(default)]
    pub floor: Option<FloorResult>,
    /// Why the floor is absent, when it failed.
    #[serde(default)]
    pub floor_error: Option<String>,
    /// The link floor: the same pipeline across the fleet, each host sending to the next over
    /// the fleet's links (see [`crate::floor::Route::Ring`]); absent in older results.
    #[serde(default)]
    pub link_floor: Option<FloorResult>,
    #[serde(default)]
    pub link_floor_error: Option<String>,
    /// What the memory was made before the floor, so that the floor and the swarm write into
    /// memory in the same state (see [`crate::memory`]); absent in older results.
    #[serde(default)]
    pub memory: Option<MemoryState>,
}

/// What was asked for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Parameters {
    pub content_bytes: u64,
    /// Files in the content directory; `None` for a single file.
    pub files: Option<u32>,
    pub leechers: usize,
    pub seed_upload: LinkRate,
    pub leecher_upload: LinkRate,
    pub leecher_download: Option<LinkRate>,
    pub piece_bytes: u64,
    pub pieces: u64,
    /// How the tbf qdiscs were set (see `shaping`).
    pub tbf: String,
    /// The leechers' adds were released one after another over this many seconds (leecher i
    /// of N at i × window / N); `None`: all at once.
    #[serde(default)]
    pub join_over_secs: Option<f64>,
    /// The filesystem holding the leechers' data, as statfs names it (`tmpfs`, `ext4`).
    #[serde(default)]
    pub filesystem: String,
    /// Where the data lived, in a sentence.
    #[serde(default)]
    pub storage: String,
    /// Seconds the fleet took to build (namespaces, links, shaping, images, daemons answering).
    #[serde(default)]
    pub fleet_build_secs: f64,
}

/// Whether the run completed and the bytes checked out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    /// Every leecher completed with byte-identical content.
    pub success: bool,
    /// Why not, in one paragraph.
    pub error: Option<String>,
}

/// The figures a person compares (seconds; ratios to T_min; multiples of F).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    /// From the release of the leechers to the last leecher complete.
    pub slowest_completion_secs: Option<f64>,
    pub median_completion_secs: Option<f64>,
    pub slowest_ratio: Option<f64>,
    pub median_ratio: Option<f64>,
    pub seed_uploaded_bytes: u64,
    /// Seed upload / F.
    pub seed_upload_multiple: f64,
    /// From each leecher's add to its first verified piece (daemon-measured).
    pub first_piece_median_secs: Option<f64>,
    pub first_piece_p99_secs: Option<f64>,
    /// Whole machine, from release to the last completion (1.0: every core busy).
    pub cpu_busy_fraction: f64,
    /// The part of the machine the p2pd daemons used over the same time; the rest went to
    /// the kernel's softirq work on their behalf, the testbed, and anything else running.
    #[serde(default)]
    pub p2pd_cpu_fraction: f64,
    pub verdict: Option<Verdict>,
    /// The leechers' last completion, each from its own add (`completed_secs`): with a rolling
    /// release, the longest any one leecher took.
    #[serde(default)]
    pub slowest_since_join_secs: Option<f64>,
    /// Content bytes delivered to all leechers (verified), the denominator of the per-GiB
    /// figures below (F × N for a run that completed).
    #[serde(default)]
    pub delivered_bytes: u64,
    /// Busy core-seconds of the whole machine over the run: busy share × cores × seconds.
    #[serde(default)]
    pub machine_cpu_secs: f64,
    /// `machine_cpu_secs` per GiB delivered.
    #[serde(default)]
    pub machine_cpu_secs_per_gib: Option<f64>,
    /// Core-seconds of every p2pd together over the run.
    #[serde(default)]
    pub p2pd_cpu_secs: f64,
    /// The seed's core-seconds per GiB it uploaded (compare the floor's sender).
    #[serde(default)]
    pub seed_cpu_secs_per_gib: Option<f64>,
    /// Each leecher's core-seconds per GiB it received (its uploads included): the median
    /// and the largest (compare the floor's receiver).
    #[serde(default)]
    pub leecher_cpu_secs_per_gib_median: Option<f64>,
    #[serde(default)]
    pub leecher_cpu_secs_per_gib_max: Option<f64>,
    /// `leecher_cpu_secs_per_gib_median` ÷ the floor receiver's core-seconds per GiB.
    #[serde(default)]
    pub leecher_to_floor: Option<f64>,
    /// `machine_cpu_secs_per_gib` ÷ (the floor receiver's + the floor sender's per GiB).
    #[serde(default)]
    pub machine_to_floor: Option<f64>,
    /// `machine_cpu_secs_per_gib` − (the floor receiver's + the floor sender's per GiB): what
    /// the swarm spent per GiB beyond the least, in core-seconds. Unlike the ratio it does not
    /// move with what the machine charges for the bytes both write (see [`crate::memory`]).
    #[serde(default)]
    pub machine_over_floor: Option<f64>,
    /// `machine_cpu_secs_per_gib` ÷ the link floor's machine core-seconds per GiB: against
    /// what moving the bytes once over the same links, hashing and writing them costs.
    #[serde(default)]
    pub machine_to_link_floor: Option<f64>,
    /// The testbed's own core-seconds over the run (its polling), part of the machine's.
    #[serde(default)]
    pub testbed_cpu_secs: f64,
    /// The largest peak RSS (VmHWM) of any daemon.
    #[serde(default)]
    pub max_rss_bytes: Option<u64>,
    /// Discovery datagrams (sent + received) per daemon: median and largest.
    #[serde(default)]
    pub discovery_datagrams_median: Option<f64>,
    #[serde(default)]
    pub discovery_datagrams_max: Option<u64>,
    /// Peer connections a daemon opened (`dialed`) and, of those, failed (`dial_failed`):
    /// median and largest per daemon.
    #[serde(default)]
    pub dials_median: Option<f64>,
    #[serde(default)]
    pub dials_max: Option<u64>,
    #[serde(default)]
    pub dial_failures_median: Option<f64>,
    #[serde(default)]
    pub dial_failures_max: Option<u64>,
    /// Dials the handshake timeout ended, over every daemon.
    #[serde(default)]
    pub dial_timeouts_total: u64,
    /// Accepted connections closed before reaching a torrent, over every daemon.
    #[serde(default)]
    pub incoming_dropped_total: u64,
    /// The longest the testbed took to read every daemon's status once (its poll): when far
    /// above the poll interval, the machine was too busy to answer, and `observed_complete_at_secs`
    /// and the samples are that coarse (completion times are the daemons' own).
    #[serde(default)]
    pub slowest_poll_secs: Option<f64>,
}

/// Discovery of one daemon since it started (`status`: `node.rpc` and `node.lookups`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DiscoveryCounts {
    /// Datagrams sent (retries included).
    pub sent: u64,
    /// Datagrams received.
    pub received: u64,
    /// Requests unanswered after every retry.
    pub timeouts: u64,
    /// Requests not handled because their source was over its rate limit.
    pub rate_limited: u64,
    /// Lookups made, and those that reached a node knowing the swarm.
    pub lookups: u64,
    pub lookups_found: u64,
}

/// Peer-wire connections of one daemon since it started: the daemon's own type (`status`:
/// `node.peer_connections`, see docs/CONTROL.md).
pub use p2pd::control::protocol::ConnectionCounters as ConnectionCounts;

/// One host's part.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostResult {
    /// `seed`, `leecher-01`, …
    pub label: String,
    pub address: String,
    pub upload: LinkRate,
    pub download: Option<LinkRate>,
    /// When this leecher's add was due to be released, on the run's clock (0 for every
    /// leecher when all are released at once).
    #[serde(default)]
    pub release_secs: Option<f64>,
    /// When the add request was sent and answered, from the release (leechers).
    pub add_sent_secs: Option<f64>,
    pub add_answered_secs: Option<f64>,
    /// Daemon-measured, from the torrent's start at add.
    pub first_piece_secs: Option<f64>,
    pub completed_secs: Option<f64>,
    /// The same on the run's clock: add answered + daemon time (an upper bound by the add's
    /// own latency, a few milliseconds).
    pub first_piece_at_secs: Option<f64>,
    pub completed_at_secs: Option<f64>,
    /// When the testbed's poll first saw it seeding (a cross-check, 100 ms resolution).
    pub observed_complete_at_secs: Option<f64>,
    pub uploaded: u64,
    pub downloaded: u64,
    /// Payload bytes this host sent to each peer, by label, from the daemon's per-connection
    /// counters sampled twice a second (`p2pctl peers`): lower bounds, since the last
    /// interval of each connection is missed; `uploaded` is the authority for the total.
    #[serde(default)]
    pub sent_to: BTreeMap<String, u64>,
    /// The daemon's CPU (user + system, `/proc/PID/stat`) over the run, core-seconds.
    #[serde(default)]
    pub cpu_secs: Option<f64>,
    /// `cpu_secs` per GiB: per GiB received for a leecher, per GiB uploaded for the seed.
    #[serde(default)]
    pub cpu_secs_per_gib: Option<f64>,
    /// The daemon's peak resident set size (VmHWM) at the end of the run.
    #[serde(default)]
    pub peak_rss_bytes: Option<u64>,
    /// Discovery datagrams since the daemon started (it lives for this run only).
    #[serde(default)]
    pub discovery: Option<DiscoveryCounts>,
    /// Peer connections since the daemon started.
    #[serde(default)]
    pub peer_connections: Option<ConnectionCounts>,
    /// Progress samples, kept where anything changed.
    pub samples: Vec<Sample>,
}

/// One poll of one host.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the leechers were released.
    pub t: f64,
    /// Bytes in verified pieces.
    pub done: u64,
    /// Payload bytes uploaded so far.
    pub up: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CpuSample {
    pub t: f64,
    pub busy: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{} is not a testbed result: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("cannot draw {}: {message}", path.display())]
    Chart { path: PathBuf, message: String },
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or("—".into(), |r| format!("{r:.2}×"))
}

fn fmt_secs(s: Option<f64>) -> String {
    s.map_or("—".into(), |s| if s < 1.0 { format!("{:.0} ms", s * 1000.0) } else { format!("{s:.2} s") })
}

/// The header of the summary table.
pub const TABLE_HEADER: &str = "| run | F | N | upload seed / leechers | T_min | slowest / T_min | median / T_min | seed upload / F | first piece median / p99 | CPU busy (p2pd) | verdict | command |\n|---|---|---|---|---|---|---|---|---|---|---|---|";

/// The header of the cost table: CPU per GiB against the floor, memory, discovery and
/// connections (see testbed/README.md, "CPU per GiB and the floor").
pub const COST_TABLE_HEADER: &str = "| run | data on | machine core-s / GiB delivered | floor receiver / sender core-s / GiB | leecher core-s / GiB received: median (max) | seed core-s / GiB sent | leecher ÷ floor receiver | machine ÷ floor (receiver + sender) | link floor: machine core-s / GiB | machine ÷ link floor | max RSS | discovery datagrams per daemon: median / max | dials per daemon: median / max | failed dials: median / max | handshake timeouts |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|";

fn fmt_figure(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("{v:.2}"))
}

fn fmt_count(median: Option<f64>, max: Option<u64>) -> String {
    match (median, max) {
        (Some(m), Some(x)) => format!("{m:.0} / {x}"),
        _ => "—".into(),
    }
}

impl RunResult {
    /// One row of the cost table.
    pub fn cost_row(&self) -> String {
        let s = &self.summary;
        let floor = self.floor.as_ref().map_or("—".to_string(), |f| {
            format!("{:.2} / {:.2}", f.receiver_cpu_secs_per_gib, f.sender_cpu_secs_per_gib)
        });
        let leechers = match (s.leecher_cpu_secs_per_gib_median, s.leecher_cpu_secs_per_gib_max) {
            (Some(m), Some(x)) => format!("{m:.2} ({x:.2})"),
            _ => "—".into(),
        };
        let ratio = |r: Option<f64>| r.map_or("—".into(), |r| format!("{r:.2}×"));
        let fs = if self.parameters.filesystem.is_empty() { "—" } else { self.parameters.filesystem.as_str() };
        format!(
            "| {} | {fs} | {} | {floor} | {leechers} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            self.name,
            fmt_figure(s.machine_cpu_secs_per_gib),
            fmt_figure(s.seed_cpu_secs_per_gib),
            ratio(s.leecher_to_floor),
            ratio(s.machine_to_floor),
            fmt_figure(self.link_floor.as_ref().and_then(FloorResult::machine_cpu_secs_per_gib)),
            ratio(s.machine_to_link_floor),
            s.max_rss_bytes.map_or("—".into(), |b| format!("{:.1} MiB", b as f64 / f64::from(1 << 20))),
            fmt_count(s.discovery_datagrams_median, s.discovery_datagrams_max),
            fmt_count(s.dials_median, s.dials_max),
            fmt_count(s.dial_failures_median, s.dial_failures_max),
            if s.max_rss_bytes.is_some() { s.dial_timeouts_total.to_string() } else { "—".into() },
        )
    }

    /// One row of the summary table.
    pub fn markdown_row(&self) -> String {
        let p = &self.parameters;
        let s = &self.summary;
        let content = match p.files {
            Some(k) => format!("{} in {k} files", human_bytes(p.content_bytes)),
            None => human_bytes(p.content_bytes),
        };
        let verdict = match (&s.verdict, self.outcome.success) {
            (Some(v), true) => v.as_str().to_string(),
            (_, _) => "**failed**".to_string(),
        };
        format!(
            "| {} | {content} | {} | {} / {} | {} | {} | {} | {:.2}× | {} / {} | {:.0} % ({:.0} %) | {verdict} | `{}`{} |",
            self.name,
            p.leechers,
            p.seed_upload,
            p.leecher_upload,
            fmt_secs(Some(self.bound.t_min_secs)),
            fmt_ratio(s.slowest_ratio),
            fmt_ratio(s.median_ratio),
            s.seed_upload_multiple,
            fmt_secs(s.first_piece_median_secs),
            fmt_secs(s.first_piece_p99_secs),
            s.cpu_busy_fraction * 100.0,
            s.p2pd_cpu_fraction * 100.0,
            self.command,
            self.commit.as_deref().map(|c| format!(" on {c}")).unwrap_or_default(),
        )
    }

    /// Who sent how much to whom, in MiB, as a text table (rows: senders).
    pub fn transfer_matrix(&self) -> String {
        let labels: Vec<&str> = self.hosts.iter().map(|h| h.label.as_str()).collect();
        let mut text = format!("{:>12}", "sent \\ to");
        for l in &labels {
            text.push_str(&format!(" {:>10}", l));
        }
        text.push_str(&format!(" {:>10} {:>10}\n", "total", "unsampled"));
        for h in &self.hosts {
            text.push_str(&format!("{:>12}", h.label));
            for l in &labels {
                match h.sent_to.get(*l) {
                    Some(b) => text.push_str(&format!(" {:>10.1}", *b as f64 / f64::from(1 << 20))),
                    None => text.push_str(&format!(" {:>10}", "·")),
                }
            }
            let sampled: u64 = h.sent_to.values().sum();
            let mib = |b: u64| b as f64 / (1 << 20) as f64;
            text.push_str(&format!(" {:>10.1} {:>10.1}\n", mib(h.uploaded), mib(h.uploaded.saturating_sub(sampled))));
        }
        text
    }

    /// Writes `DIR/NAME.json` and `DIR/NAME.svg`; returns their paths.
    pub fn write(&self, dir: &Path) -> Result<(PathBuf, PathBuf), ReportError> {
        std::fs::create_dir_all(dir).map_err(|source| ReportError::Write { path: dir.to_path_buf(), source })?;
        let json_path = dir.join(format!("{}.json", self.name));
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| ReportError::Parse { path: json_path.clone(), message: e.to_string() })?;
        std::fs::write(&json_path, text + "\n")
            .map_err(|source| ReportError::Write { path: json_path.clone(), source })?;
        let svg_path = dir.join(format!("{}.svg", self.name));
        crate::chart::draw(self, &svg_path)?;
        Ok((json_path, svg_path))
    }
}

/// Reads every `*.json` result in `dir` (sorted by name); files that are not results are
/// skipped with a note on stderr.
pub fn read_all(dir: &Path) -> Result<Vec<RunResult>, ReportError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ReportError::Read { path: dir.to_path_buf(), source })?;
    let mut paths: Vec<PathBuf> =
        entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "json")).collect();
    paths.sort();
    let mut results = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(|source| ReportError::Read { path: path.clone(), source })?;
        match serde_json::from_str::<RunResult>(&text) {
            Ok(r) => results.push(r),
            Err(e) => eprintln!("p2pd-testbed: skipping {}: not a result ({e})", path.display()),
        }
    }
    Ok(results)
}

/// Regenerates `DIR/README.md` from every result in `DIR`.
pub fn write_summary(dir: &Path) -> Result<PathBuf, ReportError> {
    let results = read_all(dir)?;
    let mut text = String::from(
        "# Fleet testbed results\n\n\
         Generated by `p2pd-testbed` from the JSON results beside this file (regenerated after every run;\n\
         do not edit by hand). Each row names the command that produced it; each run's chart is `NAME.svg`.\n\
         T_min is the Kumar–Ross minimum distribution time with every rate at TCP goodput\n\
         (1448/1514 of the tbf rate); see `testbed/README.md`. A run is CPU-bound when the machine was\n\
         more than 85 % busy.\n\n",
    );
    text.push_str(TABLE_HEADER);
    text.push('\n');
    for r in &results {
        text.push_str(&r.markdown_row());
        text.push('\n');
    }
    text.push_str(
        "\nCPU per GiB against the floor (a compiled pipeline that receives the content over loopback TCP,\n\
         SHA-256s each piece and writes it to the same filesystem, measured in the same run before the\n\
         leechers are released), memory, discovery and connections; `testbed/README.md` says what each\n\
         column is. \"—\": not measured (results of an older testbed) or not applicable.\n\n",
    );
    text.push_str(COST_TABLE_HEADER);
    text.push('\n');
    for r in &results {
        text.push_str(&r.cost_row());
        text.push('\n');
    }
    text.push_str("\nCharts:\n\n");
    for r in &results {
        text.push_str(&format!("- [{}]({}.svg) — {}\n", r.name, r.name, r.title));
    }
    let path = dir.join("README.md");
    std::fs::write(&path, text).map_err(|source| ReportError::Write { path: path.clone(), source })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A result written before issue 13 (scenario 5 as committed on 2e34f53): it must still
    /// load, with the new figures absent, so that `write_summary` keeps older rows.
    const BEFORE_ISSUE_13: &str = include_str!("../tests/data/result-schema1-before-issue13.json");

    #[test]
    fn a_result_from_before_the_cost_figures_still_loads() {
        let old: RunResult = serde_json::from_str(BEFORE_ISSUE_13).expect("an older result loads");
        assert_eq!(old.schema, RESULT_SCHEMA_VERSION);
        assert_eq!(old.name, "scenario-5");
        assert!(old.floor.is_none());
        assert_eq!(old.summary.machine_cpu_secs_per_gib, None);
        assert_eq!(old.parameters.join_over_secs, None);
        assert!(old.hosts.iter().all(|h| h.cpu_secs.is_none() && h.peer_connections.is_none()));
        let row = old.cost_row();
        assert!(row.starts_with("| scenario-5 | — | — | — |"), "{row}");
        assert_eq!(row.matches('|').count(), COST_TABLE_HEADER.lines().next().map_or(0, |h| h.matches('|').count()));
    }

    #[test]
    fn the_cost_row_shows_the_figures_and_both_ratios() {
        let mut r: RunResult = serde_json::from_str(BEFORE_ISSUE_13).expect("load");
        r.parameters.filesystem = "ext4".into();
        r.floor = Some(FloorResult {
            secs: 0.1,
            bytes: 16 << 20,
            pieces: 256,
            piece_length: 64 << 10,
            connections: 16,
            receiver_cpu_secs: 0.05,
            sender_cpu_secs: 0.025,
            receiver_cpu_secs_per_gib: 3.2,
            sender_cpu_secs_per_gib: 1.6,
            machine_cpu_secs: 0.08,
            background_cpu_secs: 0.0,
            filesystem: "ext4".into(),
        });
        let s = &mut r.summary;
        s.machine_cpu_secs_per_gib = Some(9.6);
        s.leecher_cpu_secs_per_gib_median = Some(6.4);
        s.leecher_cpu_secs_per_gib_max = Some(8.0);
        s.seed_cpu_secs_per_gib = Some(2.5);
        s.leecher_to_floor = Some(2.0);
        s.machine_to_floor = Some(2.0);
        s.max_rss_bytes = Some(12 << 20);
        s.discovery_datagrams_median = Some(140.0);
        s.discovery_datagrams_max = Some(900);
        s.dials_median = Some(7.0);
        s.dials_max = Some(15);
        s.dial_failures_median = Some(0.0);
        s.dial_failures_max = Some(2);
        s.dial_timeouts_total = 1;
        assert_eq!(
            r.cost_row(),
            "| scenario-5 | ext4 | 9.60 | 3.20 / 1.60 | 6.40 (8.00) | 2.50 | 2.00× | 2.00× | — | — | 12.0 MiB | 140 / 900 | 7 / 15 | 0 / 2 | 1 |"
        );
        // 0.05 core-s busy, 0.01 of it background: 0.04 for 8 MiB.
        r.link_floor = r.floor.clone().map(|f| FloorResult {
            machine_cpu_secs: 0.05,
            background_cpu_secs: 0.01,
            bytes: 8 << 20,
            ..f
        });
        r.summary.machine_to_link_floor = Some(1.92);
        assert!(r.cost_row().contains("| 2.00× | 2.00× | 5.12 | 1.92× | 12.0 MiB |"), "{}", r.cost_row());
    }
}
