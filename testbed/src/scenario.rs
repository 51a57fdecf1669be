//! A scenario: one seed plus N leechers in a fleet, run and measured.
//!
//! The flow, in order:
//! 1. build the fleet (host 0 is the seed) and write random content into the seed's data
//!    directory;
//! 2. `p2pctl create` the descriptor, naming the seed as its one bootstrap node;
//! 3. add it on the seed and wait until the seed is `seeding`;
//! 4. release every leecher's `add` at once (a [`Barrier`]; each thread holds its encoded
//!    request and its socket path), the release instant being t = 0;
//! 5. poll every daemon's status over its socket every [`POLL_INTERVAL`], recording progress
//!    and uploads, and the machine's CPU once a second, until every leecher is seeding, one
//!    fails, or the timeout passes;
//! 6. compare every leecher's content with the seed's, byte for byte;
//! 7. tear the fleet down, and return the [`RunResult`] (failed runs included: their curves
//!    show who waited for whom).
//!
//! Times of first piece and completion are the daemons' own (from each torrent's start at add
//! to the event), placed on the run's clock by adding when that host's add was answered.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime};

use p2pd::control::protocol::{PeerInfo, TorrentState, TorrentStatus};
use p2pd::descriptor::Descriptor;

use crate::binaries::Binaries;
use crate::bound::SwarmCapacity;
use crate::content::{self, ContentShape};
use crate::control::{ControlError, add_request};
use crate::cpu::{CpuTimes, Verdict, process_ticks};
use crate::fleet::{Fleet, FleetError, FleetSpec, HostSpec};
use crate::report::{CpuSample, HostResult, Outcome, Parameters, RunResult, Sample, Summary};
use crate::shaping;
use crate::stats::{median, percentile};
use crate::units::{LinkRate, human_bytes};

/// How often every daemon's status is read.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long after the last completion the final counters are read: p2pd publishes a seeding
/// torrent's counters once a second.
const COUNTERS_SETTLE: Duration = Duration::from_millis(1200);
/// How often a progress line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// One scenario.
#[derive(Debug, Clone)]
pub struct ScenarioSpec {
    /// File name stem of the results (`scenario-1`).
    pub name: String,
    /// One line for a person (the chart's title).
    pub title: String,
    /// The command that reproduces the run.
    pub command: String,
    pub content: ContentShape,
    pub leechers: usize,
    pub seed_upload: LinkRate,
    pub leecher_upload: LinkRate,
    /// Every leecher's download limit, if any.
    pub leecher_download: Option<LinkRate>,
    /// `p2pctl create --piece-size`; `None` for p2pctl's default.
    pub piece_bytes: Option<u64>,
    /// Give up after this long from the release; default 10 × T_min + 30 s.
    pub timeout: Option<Duration>,
    /// Keep the run directory (daemon logs and content).
    pub keep_run_dir: bool,
}

impl ScenarioSpec {
    pub fn capacity(&self) -> SwarmCapacity {
        SwarmCapacity {
            content_bytes: self.content.total_bytes(),
            seed_upload: self.seed_upload,
            leecher_uploads: vec![self.leecher_upload; self.leechers],
            leecher_downloads: vec![self.leecher_download; self.leechers],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error(transparent)]
    Fleet(#[from] FleetError),
    #[error(transparent)]
    Content(#[from] content::ContentError),
    #[error("p2pctl create failed: {0}")]
    Create(String),
    #[error("the descriptor p2pctl wrote is invalid: {0}")]
    Descriptor(String),
    #[error("the seed: {0}")]
    Seed(String),
    #[error("a scenario needs at least one leecher")]
    NoLeechers,
}

/// How often (in poll ticks) every host's per-peer counters are read.
const LEDGER_EVERY_TICKS: u32 = 5;

/// Bytes one host sent to each peer IP, summed over connections. The daemon reports the
/// counters of open connections only, and a connection closes once both ends are complete,
/// so the bytes of a connection's last sampling interval are missed: the totals are lower
/// bounds, and the per-host `uploaded` counter remains the authority.
#[derive(Debug, Default)]
struct TransferLedger {
    /// Peer IP → (bytes of earlier connections, bytes of the current one).
    peers: BTreeMap<String, (u64, u64)>,
}

impl TransferLedger {
    fn observe(&mut self, peers: &[PeerInfo]) {
        for peer in peers.iter().filter(|p| p.connected) {
            let ip = peer.address.rsplit_once(':').map_or(peer.address.as_str(), |(ip, _)| ip);
            let entry = self.peers.entry(ip.to_string()).or_default();
            if peer.uploaded < entry.1 {
                // A new connection: its counter started again from zero.
                entry.0 += entry.1;
            }
            entry.1 = peer.uploaded;
        }
    }

    fn totals(&self) -> impl Iterator<Item = (&str, u64)> {
        self.peers.iter().map(|(ip, (earlier, current))| (ip.as_str(), earlier + current))
    }
}

/// What the poll loop keeps per host.
#[derive(Debug, Default)]
struct HostTrack {
    samples: Vec<Sample>,
    last: Option<TorrentStatus>,
    observed_complete_at: Option<f64>,
    add_sent: Option<f64>,
    add_answered: Option<f64>,
}

impl HostTrack {
    fn record(&mut self, t: f64, status: TorrentStatus) {
        let sample = Sample { t, done: status.bytes_done, up: status.uploaded };
        // Keep a sample where something changed, and the one before it, so that flat
        // stretches stay flat in the chart.
        let changed = self.samples.last().is_none_or(|s| s.done != sample.done || s.up != sample.up);
        match self.samples.len() {
            n if n >= 2 && !changed && {
                let prev = self.samples[n - 2];
                let last = self.samples[n - 1];
                prev.done == last.done && prev.up == last.up
            } =>
            {
                self.samples[n - 1] = sample;
            }
            _ => self.samples.push(sample),
        }
        self.last = Some(status);
    }

    fn complete(&self) -> bool {
        self.last.as_ref().is_some_and(|s| s.state == TorrentState::Seeding && s.bytes_done == s.length)
    }
}

/// Runs one scenario; `log` receives progress lines.
pub fn run(spec: &ScenarioSpec, binaries: &Binaries, log: &mut dyn FnMut(&str)) -> Result<RunResult, ScenarioError> {
    if spec.leechers == 0 {
        return Err(ScenarioError::NoLeechers);
    }
    let bound = spec.capacity().min_distribution_time();
    let timeout = spec.timeout.unwrap_or_else(|| Duration::from_secs_f64(bound.t_min_secs * 10.0 + 30.0));
    let bytes = spec.content.total_bytes();
    let mut hosts = vec![HostSpec { label: "seed".into(), upload: spec.seed_upload, download: None }];
    for i in 1..=spec.leechers {
        hosts.push(HostSpec {
            label: format!("leecher-{i:02}"),
            upload: spec.leecher_upload,
            download: spec.leecher_download,
        });
    }
    log(&format!(
        "{}: {} hosts, {}, T_min {:.2} s ({:?} term); building the fleet",
        spec.name,
        hosts.len(),
        human_bytes(bytes),
        bound.t_min_secs,
        bound.binding
    ));
    let fleet_spec = FleetSpec {
        hosts,
        // Content on every host (.part files included), plus room for state and logs.
        scratch_bytes: bytes.saturating_mul(spec.leechers as u64 + 2) + (256 << 20),
        keep_run_dir: spec.keep_run_dir,
        // `P2PD_TESTBED_DEBUG` (with `--keep`) leaves debug-level daemon logs to read.
        log_level: if std::env::var_os("P2PD_TESTBED_DEBUG").is_some() { "debug" } else { "info" },
    };
    let mut fleet = Fleet::start(&fleet_spec, binaries)?;
    log(&format!("{}: fleet {} up; generating content on the seed", spec.name, fleet.prefix));

    // Content and descriptor.
    let name = match spec.content {
        ContentShape::File { .. } => "content.bin",
        ContentShape::Directory { .. } => "content",
    };
    let seed_data = fleet.hosts[0].daemon.data_dir();
    let source = content::generate(&seed_data, name, spec.content, 0x5eed)?;
    let desc_path = fleet.run_dir.join(format!("{name}.desc"));
    let descriptor_text =
        create_descriptor(binaries, &source, &desc_path, &fleet.hosts[0].listen().to_string(), spec.piece_bytes)?;
    let descriptor = Descriptor::parse(&descriptor_text).map_err(|e| ScenarioError::Descriptor(e.to_string()))?;
    let info_hash = descriptor.info_hash.to_hex();
    let add = add_request(&descriptor_text, &desc_path);

    // The seed.
    let seed_client = fleet.hosts[0].daemon.control();
    seed_client.add(&add).map_err(|e| ScenarioError::Seed(e.to_string()))?;
    let seed_deadline = Instant::now() + Duration::from_secs(120) + Duration::from_secs(bytes / (50 << 20));
    loop {
        match seed_client.torrent(&info_hash) {
            Ok(Some(t)) if t.state == TorrentState::Seeding => break,
            Ok(Some(t)) if t.state == TorrentState::Error => {
                return Err(ScenarioError::Seed(format!("torrent failed: {}", t.error.unwrap_or_default())));
            }
            Ok(_) => {}
            Err(e) => return Err(ScenarioError::Seed(e.to_string())),
        }
        if Instant::now() > seed_deadline {
            return Err(ScenarioError::Seed("not seeding after checking its content for 120 s".into()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    log(&format!(
        "{}: seed has {} in {} pieces of {}; releasing {} leechers",
        spec.name,
        human_bytes(bytes),
        descriptor.content.piece_count(),
        human_bytes(descriptor.content.piece_length),
        spec.leechers
    ));

    // Release the leechers at once.
    let barrier = Arc::new(Barrier::new(spec.leechers + 1));
    let (added_tx, added_rx) = mpsc::channel::<(usize, Result<(Instant, Instant), ControlError>)>();
    let mut threads = Vec::new();
    for (index, host) in fleet.hosts.iter().enumerate().skip(1) {
        let (barrier, client, add, tx) = (barrier.clone(), host.daemon.control(), add.clone(), added_tx.clone());
        threads.push(std::thread::spawn(move || {
            barrier.wait();
            let sent = Instant::now();
            let result = client.add(&add).map(|_| (sent, Instant::now()));
            let _ = tx.send((index, result));
        }));
    }
    drop(added_tx);
    let daemon_pids: Vec<i32> = fleet.hosts.iter().filter_map(|h| h.daemon.pid()).collect();
    let daemon_ticks = |pids: &[i32]| pids.iter().filter_map(|&p| process_ticks(p)).sum::<u64>();
    let p2pd_ticks_start = daemon_ticks(&daemon_pids);
    let cpu_start = CpuTimes::now();
    let started_unix_secs = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let t0 = Instant::now();
    barrier.wait();

    // Poll.
    let mut tracks: Vec<HostTrack> = (0..fleet.hosts.len()).map(|_| HostTrack::default()).collect();
    let mut ledgers: Vec<TransferLedger> = (0..fleet.hosts.len()).map(|_| TransferLedger::default()).collect();
    let mut cpu_series = Vec::new();
    let mut cpu_last = (cpu_start, 0.0);
    let mut failure: Option<String> = None;
    let mut next_progress = PROGRESS_EVERY;
    let mut tick = 0u32;
    let end = loop {
        let t = t0.elapsed().as_secs_f64();
        while let Ok((index, result)) = added_rx.try_recv() {
            match result {
                Ok((sent, answered)) => {
                    tracks[index].add_sent = Some(sent.duration_since(t0).as_secs_f64());
                    tracks[index].add_answered = Some(answered.duration_since(t0).as_secs_f64());
                }
                Err(e) => failure = Some(format!("{}: add failed: {e}", fleet.hosts[index].daemon.label)),
            }
        }
        for (index, host) in fleet.hosts.iter_mut().enumerate() {
            if let Some(status) = host.daemon.exited() {
                failure = Some(format!(
                    "{} ({}): p2pd exited with {status}; its log ends:\n{}",
                    host.daemon.label,
                    host.address,
                    host.daemon.log_tail(15)
                ));
                continue;
            }
            match host.daemon.control().torrent(&info_hash) {
                Ok(Some(status)) => {
                    if status.state == TorrentState::Error {
                        failure = Some(format!(
                            "{}: torrent failed: {}",
                            host.daemon.label,
                            status.error.clone().unwrap_or_default()
                        ));
                    }
                    let track = &mut tracks[index];
                    track.record(t, status);
                    if index > 0 && track.observed_complete_at.is_none() && track.complete() {
                        track.observed_complete_at = Some(t);
                    }
                }
                Ok(None) => {}
                // A daemon busy for a moment; a dead one is caught above.
                Err(_) => {}
            }
        }
        if tick % LEDGER_EVERY_TICKS == 0 {
            for (index, host) in fleet.hosts.iter().enumerate() {
                if let Ok(report) = host.daemon.control().peers(&info_hash) {
                    ledgers[index].observe(&report.peers);
                }
            }
        }
        if let Some(now) = CpuTimes::now()
            && let Some(last) = cpu_last.0
            && t - cpu_last.1 >= 1.0
        {
            cpu_series.push(CpuSample { t, busy: now.busy_since(last) });
            cpu_last = (Some(now), t);
        }
        let done = tracks.iter().skip(1).filter(|h| h.complete()).count();
        if t >= next_progress.as_secs_f64() {
            next_progress += PROGRESS_EVERY;
            let fractions: Vec<f64> = tracks.iter().skip(1).map(|h| fraction_done(h.last.as_ref())).collect();
            log(&format!(
                "{}: t={t:.1}s  complete {done}/{}  median {:.0} %  slowest {:.0} %",
                spec.name,
                spec.leechers,
                median(&fractions).unwrap_or(0.0) * 100.0,
                fractions.iter().copied().fold(1.0, f64::min) * 100.0
            ));
        }
        if failure.is_some() {
            break t;
        }
        if done == spec.leechers {
            break t;
        }
        if t > timeout.as_secs_f64() {
            let missing: Vec<String> = fleet
                .hosts
                .iter()
                .zip(&tracks)
                .skip(1)
                .filter(|(_, h)| !h.complete())
                .map(|(host, h)| {
                    let s = h.last.as_ref();
                    format!(
                        "{} ({}) {:.1} % [{}], {} peers",
                        host.daemon.label,
                        host.address,
                        fraction_done(s) * 100.0,
                        s.map_or("not added", |s| s.state.as_str()),
                        s.map_or(0, |s| s.peers)
                    )
                })
                .collect();
            failure = Some(format!(
                "timed out after {:.0} s (10 × T_min + 30 s) with {} of {} leechers unfinished: {}",
                timeout.as_secs_f64(),
                missing.len(),
                spec.leechers,
                missing.join("; ")
            ));
            break t;
        }
        tick += 1;
        let next = t0 + POLL_INTERVAL * tick;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    };
    let p2pd_ticks = daemon_ticks(&daemon_pids).saturating_sub(p2pd_ticks_start);
    let (cpu_busy, p2pd_cpu) = match (cpu_start, CpuTimes::now()) {
        (Some(a), Some(b)) if b.total > a.total => (b.busy_since(a), p2pd_ticks as f64 / (b.total - a.total) as f64),
        _ => (0.0, 0.0),
    };
    for thread in threads {
        let _ = thread.join();
    }
    // Final counters. A seeding torrent publishes its counters once a second, so wait for
    // one more publication before reading them (nothing is transferred any more).
    if failure.is_none() {
        std::thread::sleep(COUNTERS_SETTLE);
    }
    // They are placed at the last completion, when the transfer ended: drawn later, the
    // counters' catching up would look like uploads after the end.
    for (index, host) in fleet.hosts.iter().enumerate() {
        if let Ok(Some(status)) = host.daemon.control().torrent(&info_hash) {
            tracks[index].record(end, status);
        }
    }

    // Who sent what to whom (connections close once both ends are complete: sample the last).
    for (index, host) in fleet.hosts.iter().enumerate() {
        if let Ok(report) = host.daemon.control().peers(&info_hash) {
            ledgers[index].observe(&report.peers);
        }
    }
    let label_of_ip: Vec<(String, String)> =
        fleet.hosts.iter().map(|h| (h.address.to_string(), h.daemon.label.clone())).collect();
    let sent_to: Vec<BTreeMap<String, u64>> = ledgers
        .iter()
        .map(|ledger| {
            ledger
                .totals()
                .filter_map(|(ip, bytes)| {
                    let label = label_of_ip.iter().find(|(a, _)| a == ip).map(|(_, l)| l.clone())?;
                    (bytes > 0).then_some((label, bytes))
                })
                .collect()
        })
        .collect();

    // Bytes.
    if failure.is_none() {
        log(&format!("{}: all {} leechers complete at {end:.2} s; comparing content", spec.name, spec.leechers));
        for host in fleet.hosts.iter().skip(1) {
            if let Some(diff) = content::first_difference(&source, &host.daemon.data_dir().join(name))? {
                failure = Some(format!("{}: content differs from the seed's: {diff}", host.daemon.label));
                break;
            }
        }
    }
    if let Some(f) = &failure
        && spec.keep_run_dir
    {
        log(&format!("{}: failed ({f}); daemon logs kept in {}", spec.name, fleet.run_dir.display()));
    }

    let host_results: Vec<HostResult> = fleet
        .hosts
        .iter()
        .zip(tracks)
        .zip(sent_to)
        .enumerate()
        .map(|(index, ((host, track), sent_to))| {
            let last = track.last.as_ref();
            let first_piece_secs = last.and_then(|s| s.first_piece_secs);
            // The seed completed by checking, before the run; only leechers complete in it.
            let completed_secs = if index == 0 { None } else { last.and_then(|s| s.completed_secs) };
            let offset = track.add_answered;
            HostResult {
                label: host.daemon.label.clone(),
                address: host.address.to_string(),
                upload: host.upload,
                download: host.download,
                add_sent_secs: track.add_sent,
                add_answered_secs: track.add_answered,
                first_piece_secs,
                completed_secs,
                first_piece_at_secs: offset.zip(first_piece_secs).map(|(a, b)| a + b),
                completed_at_secs: offset.zip(completed_secs).map(|(a, b)| a + b),
                observed_complete_at_secs: track.observed_complete_at,
                uploaded: last.map_or(0, |s| s.uploaded),
                downloaded: last.map_or(0, |s| s.downloaded),
                sent_to,
                samples: track.samples,
            }
        })
        .collect();
    drop(fleet);

    let summary = summarize(&host_results, bytes, bound.t_min_secs, (cpu_busy, p2pd_cpu), failure.is_none());
    let desc_piece = descriptor.content.piece_length;
    let burst = shaping::TokenBucket::for_rate(spec.leecher_upload);
    Ok(RunResult {
        schema: crate::report::RESULT_SCHEMA_VERSION,
        name: spec.name.clone(),
        title: spec.title.clone(),
        command: spec.command.clone(),
        started_unix_secs,
        parameters: Parameters {
            content_bytes: bytes,
            files: match spec.content {
                ContentShape::Directory { files, .. } => Some(files),
                ContentShape::File { .. } => None,
            },
            leechers: spec.leechers,
            seed_upload: spec.seed_upload,
            leecher_upload: spec.leecher_upload,
            leecher_download: spec.leecher_download,
            piece_bytes: desc_piece,
            pieces: descriptor.content.piece_count() as u64,
            tbf: format!(
                "burst max({} ms of rate, {} B) (leechers: {} B), latency {} ms",
                shaping::BURST_MILLIS,
                shaping::MIN_BURST_BYTES,
                burst.burst_bytes,
                burst.latency_millis
            ),
        },
        bound,
        outcome: Outcome { success: failure.is_none(), error: failure },
        summary,
        hosts: host_results,
        cpu_series,
    })
}

fn fraction_done(status: Option<&TorrentStatus>) -> f64 {
    status.map_or(0.0, |s| if s.length == 0 { 1.0 } else { s.bytes_done as f64 / s.length as f64 })
}

/// The summary figures from per-host results.
/// `cpu` is (machine busy fraction, p2pd's fraction).
fn summarize(hosts: &[HostResult], content_bytes: u64, t_min: f64, cpu: (f64, f64), success: bool) -> Summary {
    let (cpu_busy, p2pd_cpu) = cpu;
    let leechers = &hosts[1.min(hosts.len())..];
    let completions: Vec<f64> = leechers.iter().filter_map(|h| h.completed_at_secs).collect();
    let all_completed = completions.len() == leechers.len() && !leechers.is_empty();
    let slowest = all_completed.then(|| completions.iter().copied().fold(0.0, f64::max));
    let median_completion = if all_completed { median(&completions) } else { None };
    let first_pieces: Vec<f64> = leechers.iter().filter_map(|h| h.first_piece_secs).collect();
    let seed_uploaded = hosts.first().map_or(0, |h| h.uploaded);
    Summary {
        slowest_completion_secs: slowest,
        median_completion_secs: median_completion,
        slowest_ratio: slowest.map(|s| s / t_min),
        median_ratio: median_completion.map(|s| s / t_min),
        seed_uploaded_bytes: seed_uploaded,
        seed_upload_multiple: seed_uploaded as f64 / content_bytes.max(1) as f64,
        first_piece_median_secs: median(&first_pieces),
        first_piece_p99_secs: percentile(&first_pieces, 99.0),
        cpu_busy_fraction: cpu_busy,
        p2pd_cpu_fraction: p2pd_cpu,
        verdict: success.then(|| Verdict::from_busy_fraction(cpu_busy)),
    }
}

/// Runs `p2pctl create`; returns the descriptor text.
/// Runs `p2pctl create` for `source` into `out` with one bootstrap node; returns the text.
pub fn create_descriptor(
    binaries: &Binaries,
    source: &Path,
    out: &Path,
    bootstrap: &str,
    piece_bytes: Option<u64>,
) -> Result<String, ScenarioError> {
    let mut command = Command::new(&binaries.p2pctl);
    command.arg("create").arg(source).arg("-o").arg(out).args(["--bootstrap", bootstrap]);
    if let Some(piece) = piece_bytes {
        command.args(["--piece-size", &piece.to_string()]);
    }
    let output = command
        .output()
        .map_err(|e| ScenarioError::Create(format!("cannot run {}: {e}", binaries.p2pctl.display())))?;
    if !output.status.success() {
        return Err(ScenarioError::Create(String::from_utf8_lossy(&output.stderr).trim().to_string()));
    }
    std::fs::read_to_string(out).map_err(|e| ScenarioError::Create(format!("cannot read {}: {e}", out.display())))
}

/// Where results go by default: `bench/results/testbed` under the current directory.
pub fn default_results_dir() -> PathBuf {
    PathBuf::from("bench/results/testbed")
}
