//! Result files: one JSON document per run (everything measured, time series included), a
//! one-line markdown row per run, and the summary `README.md` of a results directory,
//! regenerated from every JSON result in it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::bound::MinDistributionTime;
use crate::cpu::Verdict;
use crate::units::{LinkRate, human_bytes};

/// Version of the result document; fields are only ever added within a version.
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
}

/// One host's part.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostResult {
    /// `seed`, `leecher-01`, …
    pub label: String,
    pub address: String,
    pub upload: LinkRate,
    pub download: Option<LinkRate>,
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

impl RunResult {
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
            "| {} | {content} | {} | {} / {} | {} | {} | {} | {:.2}× | {} / {} | {:.0} % ({:.0} %) | {verdict} | `{}` |",
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
    text.push_str("\nCharts:\n\n");
    for r in &results {
        text.push_str(&format!("- [{}]({}.svg) — {}\n", r.name, r.name, r.title));
    }
    let path = dir.join("README.md");
    std::fs::write(&path, text).map_err(|source| ReportError::Write { path: path.clone(), source })?;
    Ok(path)
}
