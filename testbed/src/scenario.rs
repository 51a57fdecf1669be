//! A scenario: one seed plus N leechers in a fleet, run and measured.
//!
//! The flow, in order:
//! 1. build the fleet (host 0 is the seed; each host's data on tmpfs or its own ext4) and
//!    write random content into the seed's data directory;
//! 2. `p2pctl create` the descriptor, naming the seed as its one bootstrap node;
//! 3. add it on the seed and wait until the seed is `seeding`;
//! 4. put the machine's memory in a known state ([`crate::memory`]: free page reporting
//!    settled, the warm rest taken) and run the floor ([`crate::floor`]) on the seed's
//!    content, a copy per leecher, writing to the same kind of filesystem, while the leechers
//!    are still idle; its copies stay until the end;
//! 5. release the leechers' `add`s: all at once (a [`Barrier`]; each thread holds its encoded
//!    request and its socket path), or one after another over a window ([`release_offsets`]);
//!    the first release is t = 0;
//! 6. poll every daemon's status over its socket every [`poll_interval`], recording progress
//!    and uploads, and the machine's CPU once a second, until every leecher is seeding, one
//!    fails, or the timeout passes; the machine's and every daemon's CPU are read at t = 0
//!    and at the end;
//! 7. read every daemon's final counters (status: torrent, discovery datagrams, peer
//!    connections) and peak RSS; compare every leecher's content with the seed's, byte for
//!    byte;
//! 8. tear the fleet down, and return the [`RunResult`] (failed runs included: their curves
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

use p2pd::control::protocol::{NodeStatus, PeerInfo, TorrentState, TorrentStatus};
use p2pd::descriptor::Descriptor;

use crate::binaries::Binaries;
use crate::bound::SwarmCapacity;
use crate::content::{self, ContentShape};
use crate::control::{ControlError, PendingAnswer, add_request, peers_request, status_request};
use crate::cpu::{CpuTimes, Verdict, peak_rss_bytes, per_gib, process_ticks, ticks_per_sec};
use crate::fleet::{Fleet, FleetError, FleetSpec, HostSpec};
use crate::floor::{self, FloorResult};
use crate::memory::{self, ColdMemory};
use crate::report::{
    ConnectionCounts, CpuSample, DiscoveryCounts, HostResult, Outcome, Parameters, RunResult, Sample, Summary,
};
use crate::shaping;
use crate::stats::{median, percentile};
use crate::units::{LinkRate, human_bytes};
use crate::volume::{self, Filesystem};

/// How often every daemon's status is read in a fleet of up to [`POLL_HOSTS_AT_FULL_RATE`]
/// hosts.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Above this many hosts the poll slows down in proportion (see [`poll_interval`]).
pub const POLL_HOSTS_AT_FULL_RATE: usize = 20;

/// The poll interval for a fleet of `hosts`: [`POLL_INTERVAL`] up to
/// [`POLL_HOSTS_AT_FULL_RATE`] hosts, then longer in proportion, so that the testbed asks the
/// machine for at most 200 status answers a second however large the fleet (each costs the
/// daemon and the testbed a few hundred microseconds; completion times are the daemons' own
/// and do not depend on it).
pub fn poll_interval(hosts: usize) -> Duration {
    let scaled = POLL_INTERVAL.as_secs_f64() * hosts as f64 / POLL_HOSTS_AT_FULL_RATE as f64;
    POLL_INTERVAL.max(Duration::from_secs_f64(scaled))
}

/// When each of `leechers` leechers' add is released, from the first: all at 0 without a
/// window; with one, leecher i (from 0) at i × window / leechers, so that they join one
/// after another as a deploy tool rolling over a fleet would.
pub fn release_offsets(leechers: usize, join_over: Option<Duration>) -> Vec<Duration> {
    match join_over {
        None => vec![Duration::ZERO; leechers],
        Some(window) => (0..leechers).map(|i| window.mul_f64(i as f64 / leechers as f64)).collect(),
    }
}

/// The commit of the source tree this testbed was built from (the clone holding its crate),
/// "+ uncommitted changes" when the source differs from it, "(tree state unknown)" when git
/// cannot tell; `None` outside a git clone. Results the testbed writes are not source: a run
/// of `scenario all` dirties them itself. Runs as root on a tree another user owns, hence
/// `safe.directory`.
pub fn source_commit() -> Option<String> {
    let tree = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent()?.to_path_buf();
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(&tree)
            .args(["-c", "safe.directory=*"])
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--short", "HEAD"])?;
    Some(match git(&["status", "--porcelain", "--untracked-files=no", "--", ":(top)", ":(top,exclude)bench/results"]) {
        Some(changes) if changes.is_empty() => commit,
        Some(_) => format!("{commit} + uncommitted changes"),
        None => format!("{commit} (tree state unknown)"),
    })
}

/// Seconds of the slowest host's upload each stream of the link floor moves (whole pieces, at
/// least one).
const LINK_FLOOR_SECS: u64 = 2;

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
    /// Release the leechers one after another over this window ([`release_offsets`]);
    /// `None`: all at once.
    pub join_over: Option<Duration>,
    /// What holds each host's data directory.
    pub filesystem: Filesystem,
    /// Put memory in the same state for the floor and the swarm first ([`crate::memory`]);
    /// `None`: as it is (quicker; the CPU figures vary more from run to run).
    pub cold_memory: Option<ColdMemory>,
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
    /// The node part of the last status read (at the end).
    node: Option<NodeStatus>,
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
    let offsets = release_offsets(spec.leechers, spec.join_over);
    let last_release = offsets.last().copied().unwrap_or_default();
    let timeout =
        spec.timeout.unwrap_or_else(|| Duration::from_secs_f64(bound.t_min_secs * 10.0 + 30.0) + last_release);
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
        "{}: {} hosts, {}, T_min {:.2} s ({:?} term), data on {}; building the fleet",
        spec.name,
        hosts.len(),
        human_bytes(bytes),
        bound.t_min_secs,
        bound.binding,
        spec.filesystem
    ));
    let fleet_spec = FleetSpec {
        hosts,
        scratch_bytes: match spec.filesystem {
            // Content on every host (.part files included), the floors' copies (one per
            // leecher, and at most as many again for the link floor), plus room for state and
            // logs.
            Filesystem::Tmpfs => bytes.saturating_mul(3 * spec.leechers as u64 + 4) + (256 << 20),
            // Only state and logs: the data is on the images.
            Filesystem::Ext4 => 256 << 20,
        },
        keep_run_dir: spec.keep_run_dir,
        // `P2PD_TESTBED_DEBUG` (with `--keep`) leaves debug-level daemon logs to read.
        log_level: if std::env::var_os("P2PD_TESTBED_DEBUG").is_some() { "debug" } else { "info" },
        filesystem: spec.filesystem,
        volume_bytes: volume::image_bytes(bytes),
        floor_volume_bytes: volume::image_bytes(bytes.saturating_mul(2 * spec.leechers as u64 + 1)),
    };
    let mut fleet = Fleet::start(&fleet_spec, binaries)?;
    log(&format!(
        "{}: fleet {} up in {:.1} s ({}); generating content on the seed",
        spec.name, fleet.prefix, fleet.build_secs, fleet.filesystem
    ));

    // Content and descriptor.
    let name = match spec.content {
        ContentShape::File { .. } => "content.bin",
        ContentShape::Directory { .. } => "content",
    };
    let seed_data = fleet.hosts[0].daemon.data_dir();
    let source = content::generate(&seed_data, name, spec.content, 0x5eed)?;
    if spec.filesystem == Filesystem::Ext4 {
        // Written back now rather than during the floor or the run.
        volume::sync_filesystem(&seed_data).map_err(|e| ScenarioError::Seed(e.to_string()))?;
    }
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

    // Memory in the same state for the floor and the swarm (see crate::memory): the ballast is
    // held until the run ends.
    let (_ballast, memory_state) = spec.cold_memory.as_ref().map(memory::make_cold).unzip();
    if let Some(m) = &memory_state {
        log(&format!(
            "{}: memory: settled in {:.1} s{}; {} of warm memory taken ({:.2} core-s/GiB warm, {:.2} {})",
            spec.name,
            m.settle_secs,
            if m.settle_timed_out { " (still reporting at the limit)" } else { "" },
            human_bytes(m.ballast_bytes),
            m.warm_secs_per_gib,
            m.cold_secs_per_gib,
            if m.found_cold { "cold" } else { "at the cap: no cold memory found" }
        ));
    }

    // The floor, before any leecher has work to do: a copy per leecher, the volume the swarm
    // writes. What the floors write stays until the fleet is torn down, so that the swarm
    // writes into memory as cold as theirs (see crate::floor).
    let floor_out = fleet.floor_dir.join("loopback");
    let copies = floor::Route::Loopback { copies: spec.leechers.max(1) };
    let (floor, floor_error) = match floor::run_over(&descriptor.content, &source, &floor_out, &copies) {
        Ok(f) => {
            log(&format!(
                "{}: floor on {} ({} copies, {}): receiver {:.2} core-s/GiB, sender {:.2} core-s/GiB ({:.2} s)",
                spec.name,
                f.filesystem,
                f.connections,
                human_bytes(f.bytes),
                f.receiver_cpu_secs_per_gib,
                f.sender_cpu_secs_per_gib,
                f.secs
            ));
            (Some(f), None)
        }
        Err(e) => {
            log(&format!("{}: the floor failed: {e}", spec.name));
            (None, Some(e.to_string()))
        }
    };

    // The link floor: the same pipeline across the fleet at once, each host sending to the
    // next over the shaped links, for about LINK_FLOOR_SECS of the slowest host's upload.
    let (link_floor, link_floor_error) = if fleet.hosts.len() >= 2 {
        let slowest = fleet.hosts.iter().map(|h| h.upload.bytes_per_sec()).min().unwrap_or(0);
        let route = floor::Route::Ring {
            hosts: fleet
                .hosts
                .iter()
                .map(|h| floor::RingHost { netns: h.namespace.clone(), ip: h.address.into() })
                .collect(),
            max_bytes: slowest.saturating_mul(LINK_FLOOR_SECS),
        };
        let result = floor::run_over(&descriptor.content, &source, &fleet.floor_dir.join("ring"), &route);
        match result {
            Ok(f) => {
                log(&format!(
                    "{}: link floor ({} over {} streams of the fleet's links, {:.2} s): machine {:.2} core-s/GiB",
                    spec.name,
                    human_bytes(f.bytes),
                    fleet.hosts.len(),
                    f.secs,
                    f.machine_cpu_secs_per_gib().unwrap_or(0.0)
                ));
                (Some(f), None)
            }
            Err(e) => {
                log(&format!("{}: the link floor failed: {e}", spec.name));
                (None, Some(e.to_string()))
            }
        }
    } else {
        (None, None)
    };

    log(&format!(
        "{}: seed has {} in {} pieces of {}; releasing {} leechers{}",
        spec.name,
        human_bytes(bytes),
        descriptor.content.piece_count(),
        human_bytes(descriptor.content.piece_length),
        spec.leechers,
        spec.join_over.map(|w| format!(" one after another over {:.1} s", w.as_secs_f64())).unwrap_or_default()
    ));

    // Release the leechers: every thread waits at the barrier, then until its offset from t0.
    let barrier = Arc::new(Barrier::new(spec.leechers + 1));
    let release_clock = Arc::new(std::sync::OnceLock::<Instant>::new());
    let (added_tx, added_rx) = mpsc::channel::<(usize, Result<(Instant, Instant), ControlError>)>();
    let mut threads = Vec::new();
    for ((index, host), offset) in fleet.hosts.iter().enumerate().skip(1).zip(offsets.iter().copied()) {
        let (barrier, clock, client, add, tx) =
            (barrier.clone(), release_clock.clone(), host.daemon.control(), add.clone(), added_tx.clone());
        threads.push(std::thread::spawn(move || {
            barrier.wait();
            if let Some(wait) = clock.get().and_then(|t0| (*t0 + offset).checked_duration_since(Instant::now())) {
                std::thread::sleep(wait);
            }
            let sent = Instant::now();
            let result = client.add(&add).map(|_| (sent, Instant::now()));
            let _ = tx.send((index, result));
        }));
    }
    drop(added_tx);
    let daemon_pids: Vec<Option<i32>> = fleet.hosts.iter().map(|h| h.daemon.pid()).collect();
    let daemon_ticks_start: Vec<Option<u64>> = daemon_pids.iter().map(|p| p.and_then(process_ticks)).collect();
    let testbed_pid = std::process::id() as i32;
    let testbed_ticks_start = process_ticks(testbed_pid);
    let cpu_start = CpuTimes::now();
    let started_unix_secs = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let t0 = Instant::now();
    let _ = release_clock.set(t0);
    barrier.wait();

    // Poll.
    let poll_every = poll_interval(fleet.hosts.len());
    let mut tracks: Vec<HostTrack> = (0..fleet.hosts.len()).map(|_| HostTrack::default()).collect();
    let mut ledgers: Vec<TransferLedger> = (0..fleet.hosts.len()).map(|_| TransferLedger::default()).collect();
    let mut cpu_series = Vec::new();
    let mut cpu_last = (cpu_start, 0.0);
    let mut failure: Option<String> = None;
    let mut next_progress = PROGRESS_EVERY;
    let mut tick = 0u32;
    let mut slowest_sweep = 0.0f64;
    let status_request = status_request();
    let peers_request = peers_request(&info_hash);
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
        let sweep_started = Instant::now();
        // Ask every daemon before reading any answer (see crate::control).
        let asked: Vec<_> = fleet.hosts.iter().map(|h| h.daemon.control().send(&status_request)).collect();
        for ((index, host), asked) in fleet.hosts.iter_mut().enumerate().zip(asked) {
            if let Some(status) = host.daemon.exited() {
                failure = Some(format!(
                    "{} ({}): p2pd exited with {status}; its log ends:\n{}",
                    host.daemon.label,
                    host.address,
                    host.daemon.log_tail(15)
                ));
                continue;
            }
            let status = asked
                .and_then(PendingAnswer::status)
                .map(|report| report.torrents.into_iter().find(|t| t.info_hash == info_hash));
            match status {
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
        if tick.is_multiple_of(LEDGER_EVERY_TICKS) {
            let asked: Vec<_> = fleet.hosts.iter().map(|h| h.daemon.control().send(&peers_request)).collect();
            for (ledger, asked) in ledgers.iter_mut().zip(asked) {
                if let Ok(report) = asked.and_then(PendingAnswer::peers) {
                    ledger.observe(&report.peers);
                }
            }
        }
        slowest_sweep = slowest_sweep.max(sweep_started.elapsed().as_secs_f64());
        if let Some(now) = CpuTimes::now()
            && let Some(last) = cpu_last.0
            && t - cpu_last.1 >= 1.0
        {
            cpu_series.push(CpuSample { t, busy: now.busy_since(last) });
            cpu_last = (Some(now), t);
        }
        let done = tracks.iter().skip(1).filter(|h| h.complete()).count();
        if t >= next_progress.as_secs_f64() {
            while next_progress.as_secs_f64() <= t {
                next_progress += PROGRESS_EVERY;
            }
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
                "timed out after {:.0} s with {} of {} leechers unfinished: {}",
                timeout.as_secs_f64(),
                missing.len(),
                spec.leechers,
                missing.join("; ")
            ));
            break t;
        }
        tick += 1;
        // Behind schedule (a slow sweep), the next sweep starts after a pause, not at once.
        let next = (t0 + poll_every * tick).max(Instant::now() + poll_every / 4);
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    };
    let hz = ticks_per_sec();
    let daemon_cpu_secs: Vec<Option<f64>> = daemon_pids
        .iter()
        .zip(&daemon_ticks_start)
        .map(|(pid, start)| {
            let now = pid.and_then(process_ticks)?;
            Some(now.saturating_sub((*start)?) as f64 / hz)
        })
        .collect();
    let testbed_cpu_secs = process_ticks(testbed_pid)
        .zip(testbed_ticks_start)
        .map_or(0.0, |(now, start)| now.saturating_sub(start) as f64 / hz);
    let machine = match (cpu_start, CpuTimes::now()) {
        (Some(a), Some(b)) if b.total > a.total => {
            let p2pd_ticks: f64 = daemon_cpu_secs.iter().flatten().sum::<f64>() * hz;
            MachineCpu {
                busy_fraction: b.busy_since(a),
                p2pd_fraction: p2pd_ticks / (b.total - a.total) as f64,
                core_secs: b.busy_core_secs_since(a),
                testbed_core_secs: testbed_cpu_secs,
            }
        }
        _ => MachineCpu { testbed_core_secs: testbed_cpu_secs, ..MachineCpu::default() },
    };
    if slowest_sweep > poll_every.as_secs_f64() {
        log(&format!(
            "{}: the slowest poll of every daemon took {slowest_sweep:.2} s (interval {:.2} s): the machine was too busy to answer sooner",
            spec.name,
            poll_every.as_secs_f64()
        ));
    }
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
    let asked: Vec<_> = fleet.hosts.iter().map(|h| h.daemon.control().send(&status_request)).collect();
    for (track, asked) in tracks.iter_mut().zip(asked) {
        if let Ok(report) = asked.and_then(PendingAnswer::status) {
            if let Some(status) = report.torrents.into_iter().find(|t| t.info_hash == info_hash) {
                track.record(end, status);
            }
            track.node = Some(report.node);
        }
    }
    let peak_rss: Vec<Option<u64>> = daemon_pids.iter().map(|p| p.and_then(peak_rss_bytes)).collect();

    // Who sent what to whom (connections close once both ends are complete: sample the last).
    let asked: Vec<_> = fleet.hosts.iter().map(|h| h.daemon.control().send(&peers_request)).collect();
    for (ledger, asked) in ledgers.iter_mut().zip(asked) {
        if let Ok(report) = asked.and_then(PendingAnswer::peers) {
            ledger.observe(&report.peers);
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
            let uploaded = last.map_or(0, |s| s.uploaded);
            let cpu_secs = daemon_cpu_secs[index];
            // The seed's work is what it sends; a leecher's, what it takes in (and passes on).
            let moved = if index == 0 { uploaded } else { last.map_or(0, |s| s.bytes_done) };
            HostResult {
                label: host.daemon.label.clone(),
                address: host.address.to_string(),
                upload: host.upload,
                download: host.download,
                release_secs: (index > 0).then(|| offsets[index - 1].as_secs_f64()),
                add_sent_secs: track.add_sent,
                add_answered_secs: track.add_answered,
                first_piece_secs,
                completed_secs,
                first_piece_at_secs: offset.zip(first_piece_secs).map(|(a, b)| a + b),
                completed_at_secs: offset.zip(completed_secs).map(|(a, b)| a + b),
                observed_complete_at_secs: track.observed_complete_at,
                uploaded,
                downloaded: last.map_or(0, |s| s.downloaded),
                sent_to,
                cpu_secs,
                cpu_secs_per_gib: cpu_secs.and_then(|c| per_gib(c, moved)),
                peak_rss_bytes: peak_rss[index],
                discovery: track.node.as_ref().map(|n| DiscoveryCounts {
                    sent: n.rpc.sent,
                    received: n.rpc.received,
                    timeouts: n.rpc.timeouts,
                    rate_limited: n.rpc.rate_limited,
                    lookups: n.lookups.completed,
                    lookups_found: n.lookups.found,
                }),
                peer_connections: track.node.as_ref().map(|n| n.peer_connections),
                samples: track.samples,
            }
        })
        .collect();
    let (filesystem, storage, fleet_build_secs) = (fleet.filesystem.clone(), fleet.storage.clone(), fleet.build_secs);
    let teardown_started = Instant::now();
    drop(fleet);
    log(&format!("{}: fleet torn down in {:.1} s", spec.name, teardown_started.elapsed().as_secs_f64()));

    let mut summary = summarize(&host_results, bytes, bound.t_min_secs, machine, floor.as_ref(), failure.is_none());
    summary.machine_to_link_floor = summary
        .machine_cpu_secs_per_gib
        .zip(link_floor.as_ref().and_then(FloorResult::machine_cpu_secs_per_gib))
        .map(|(m, f)| m / f);
    summary.slowest_poll_secs = Some(slowest_sweep);
    let desc_piece = descriptor.content.piece_length;
    let burst = shaping::TokenBucket::for_rate(spec.leecher_upload);
    Ok(RunResult {
        schema: crate::report::RESULT_SCHEMA_VERSION,
        name: spec.name.clone(),
        title: spec.title.clone(),
        command: spec.command.clone(),
        commit: source_commit(),
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
            join_over_secs: spec.join_over.map(|w| w.as_secs_f64()),
            filesystem,
            storage,
            fleet_build_secs,
        },
        bound,
        outcome: Outcome { success: failure.is_none(), error: failure },
        summary,
        hosts: host_results,
        cpu_series,
        floor,
        floor_error,
        link_floor,
        link_floor_error,
        memory: memory_state,
    })
}

fn fraction_done(status: Option<&TorrentStatus>) -> f64 {
    status.map_or(0.0, |s| if s.length == 0 { 1.0 } else { s.bytes_done as f64 / s.length as f64 })
}

/// The machine's CPU over a run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MachineCpu {
    /// Busy share of all cores (1.0: every core busy throughout).
    pub busy_fraction: f64,
    /// The daemons' share of all cores.
    pub p2pd_fraction: f64,
    /// Busy core-seconds: busy share × cores × seconds.
    pub core_secs: f64,
    /// The testbed's own core-seconds.
    pub testbed_core_secs: f64,
}

/// The summary figures from per-host results, the machine's CPU and the floor.
pub fn summarize(
    hosts: &[HostResult],
    content_bytes: u64,
    t_min: f64,
    machine: MachineCpu,
    floor: Option<&FloorResult>,
    success: bool,
) -> Summary {
    let leechers = &hosts[1.min(hosts.len())..];
    let completions: Vec<f64> = leechers.iter().filter_map(|h| h.completed_at_secs).collect();
    let all_completed = completions.len() == leechers.len() && !leechers.is_empty();
    let slowest = all_completed.then(|| completions.iter().copied().fold(0.0, f64::max));
    let median_completion = if all_completed { median(&completions) } else { None };
    let own_times: Vec<f64> = leechers.iter().filter_map(|h| h.completed_secs).collect();
    let first_pieces: Vec<f64> = leechers.iter().filter_map(|h| h.first_piece_secs).collect();
    let seed_uploaded = hosts.first().map_or(0, |h| h.uploaded);

    // What the leechers hold at the end: F × N when every one completed.
    let delivered: u64 = leechers.iter().map(|h| h.samples.last().map_or(0, |s| s.done)).sum();
    let machine_per_gib = per_gib(machine.core_secs, delivered);
    let leecher_per_gib: Vec<f64> = leechers.iter().filter_map(|h| h.cpu_secs_per_gib).collect();
    let leecher_median = median(&leecher_per_gib);
    let floor_receiver = floor.map(|f| f.receiver_cpu_secs_per_gib).filter(|&r| r > 0.0);
    let floor_both = floor.map(FloorResult::both_cpu_secs_per_gib).filter(|&r| r > 0.0);

    let datagrams: Vec<u64> = hosts.iter().filter_map(|h| h.discovery).map(|d| d.sent + d.received).collect();
    let connections: Vec<ConnectionCounts> = hosts.iter().filter_map(|h| h.peer_connections).collect();
    let dials: Vec<u64> = connections.iter().map(|c| c.dialed).collect();
    let failures: Vec<u64> = connections.iter().map(|c| c.dial_failed).collect();
    let as_f64 = |v: &[u64]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();

    Summary {
        slowest_completion_secs: slowest,
        median_completion_secs: median_completion,
        slowest_ratio: slowest.map(|s| s / t_min),
        median_ratio: median_completion.map(|s| s / t_min),
        seed_uploaded_bytes: seed_uploaded,
        seed_upload_multiple: seed_uploaded as f64 / content_bytes.max(1) as f64,
        first_piece_median_secs: median(&first_pieces),
        first_piece_p99_secs: percentile(&first_pieces, 99.0),
        cpu_busy_fraction: machine.busy_fraction,
        p2pd_cpu_fraction: machine.p2pd_fraction,
        verdict: success.then(|| Verdict::from_busy_fraction(machine.busy_fraction)),
        slowest_since_join_secs: (all_completed && !own_times.is_empty())
            .then(|| own_times.iter().copied().fold(0.0, f64::max)),
        delivered_bytes: delivered,
        machine_cpu_secs: machine.core_secs,
        machine_cpu_secs_per_gib: machine_per_gib,
        p2pd_cpu_secs: hosts.iter().filter_map(|h| h.cpu_secs).sum(),
        seed_cpu_secs_per_gib: hosts.first().and_then(|h| h.cpu_secs_per_gib),
        leecher_cpu_secs_per_gib_median: leecher_median,
        leecher_cpu_secs_per_gib_max: leecher_per_gib.iter().copied().reduce(f64::max),
        leecher_to_floor: leecher_median.zip(floor_receiver).map(|(p, f)| p / f),
        machine_to_floor: machine_per_gib.zip(floor_both).map(|(m, f)| m / f),
        machine_over_floor: machine_per_gib.zip(floor_both).map(|(m, f)| m - f),
        machine_to_link_floor: None,
        testbed_cpu_secs: machine.testbed_core_secs,
        max_rss_bytes: hosts.iter().filter_map(|h| h.peak_rss_bytes).max(),
        discovery_datagrams_median: median(&as_f64(&datagrams)),
        discovery_datagrams_max: datagrams.iter().copied().max(),
        dials_median: median(&as_f64(&dials)),
        dials_max: dials.iter().copied().max(),
        dial_failures_median: median(&as_f64(&failures)),
        dial_failures_max: failures.iter().copied().max(),
        dial_timeouts_total: connections.iter().map(|c| c.dial_timed_out).sum(),
        incoming_dropped_total: connections.iter().map(|c| c.incoming_dropped).sum(),
        slowest_poll_secs: None,
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_once_releases_everyone_at_zero() {
        assert_eq!(release_offsets(3, None), vec![Duration::ZERO; 3]);
        assert!(release_offsets(0, Some(Duration::from_secs(5))).is_empty());
    }

    #[test]
    fn a_rolling_release_spreads_the_leechers_over_the_window() {
        let offsets = release_offsets(4, Some(Duration::from_secs(2)));
        let millis: Vec<u128> = offsets.iter().map(Duration::as_millis).collect();
        assert_eq!(millis, [0, 500, 1000, 1500]);
        // Scenario 6: 63 leechers over 5 s, one every 79 ms, the last before the window ends.
        let fleet = release_offsets(63, Some(Duration::from_secs(5)));
        assert_eq!(fleet[0], Duration::ZERO);
        assert!(fleet.windows(2).all(|w| w[1] > w[0]));
        assert!((fleet[1].as_secs_f64() - 5.0 / 63.0).abs() < 1e-9);
        assert!(fleet[62] < Duration::from_secs(5));
    }

    #[test]
    fn the_poll_slows_down_only_for_large_fleets() {
        assert_eq!(poll_interval(9), POLL_INTERVAL);
        assert_eq!(poll_interval(20), POLL_INTERVAL);
        assert_eq!(poll_interval(64), Duration::from_millis(320));
        assert_eq!(poll_interval(128), Duration::from_millis(640));
    }

    fn host(label: &str, done: u64, uploaded: u64, cpu_secs: f64, per_gib: Option<f64>) -> HostResult {
        HostResult {
            label: label.into(),
            address: "10.77.0.1".into(),
            upload: LinkRate(1),
            download: None,
            release_secs: None,
            add_sent_secs: None,
            add_answered_secs: Some(0.01),
            first_piece_secs: Some(0.1),
            completed_secs: Some(2.0),
            first_piece_at_secs: Some(0.11),
            completed_at_secs: Some(2.01),
            observed_complete_at_secs: None,
            uploaded,
            downloaded: done,
            sent_to: BTreeMap::new(),
            cpu_secs: Some(cpu_secs),
            cpu_secs_per_gib: per_gib,
            peak_rss_bytes: Some(10 << 20),
            discovery: Some(DiscoveryCounts { sent: 10, received: 20, ..Default::default() }),
            peer_connections: Some(ConnectionCounts {
                dialed: 4,
                dial_failed: 1,
                dial_timed_out: 1,
                ..Default::default()
            }),
            samples: vec![Sample { t: 2.0, done, up: uploaded }],
        }
    }

    #[test]
    fn cpu_per_gib_is_core_seconds_over_what_all_leechers_received_and_is_set_against_the_floor() {
        const F: u64 = 512 << 20;
        let hosts = vec![
            host("seed", F, F, 1.0, per_gib(1.0, F)),
            host("leecher-01", F, F / 2, 2.0, per_gib(2.0, F)),
            host("leecher-02", F, F / 2, 3.0, per_gib(3.0, F)),
            host("leecher-03", F, 0, 5.0, per_gib(5.0, F)),
        ];
        // Two cores 75 % busy for 8 s: 12 core-seconds for 1.5 GiB delivered.
        let machine = MachineCpu { busy_fraction: 0.75, p2pd_fraction: 0.7, core_secs: 12.0, testbed_core_secs: 0.2 };
        let floor = FloorResult {
            secs: 0.5,
            bytes: F,
            pieces: 128,
            piece_length: 4 << 20,
            connections: 1,
            receiver_cpu_secs: 1.0,
            sender_cpu_secs: 0.5,
            receiver_cpu_secs_per_gib: 2.0,
            sender_cpu_secs_per_gib: 1.0,
            machine_cpu_secs: 1.6,
            background_cpu_secs: 0.0,
            filesystem: "tmpfs".into(),
        };
        let s = summarize(&hosts, F, 1.0, machine, Some(&floor), true);
        assert_eq!(s.delivered_bytes, 3 * F);
        assert_eq!(s.machine_cpu_secs_per_gib, Some(8.0));
        assert_eq!(s.p2pd_cpu_secs, 11.0);
        // Per leecher: 4, 6 and 10 core-s per GiB received; the seed 2 per GiB sent.
        assert_eq!(s.leecher_cpu_secs_per_gib_median, Some(6.0));
        assert_eq!(s.leecher_cpu_secs_per_gib_max, Some(10.0));
        assert_eq!(s.seed_cpu_secs_per_gib, Some(2.0));
        // 6 ÷ the receiver's 2; 8 ÷ (2 + 1).
        assert_eq!(s.leecher_to_floor, Some(3.0));
        assert!((s.machine_to_floor.expect("machine ratio") - 8.0 / 3.0).abs() < 1e-12);
        assert_eq!(s.testbed_cpu_secs, 0.2);
        assert_eq!(s.max_rss_bytes, Some(10 << 20));
        assert_eq!((s.discovery_datagrams_median, s.discovery_datagrams_max), (Some(30.0), Some(30)));
        assert_eq!((s.dials_median, s.dials_max, s.dial_failures_max), (Some(4.0), Some(4), Some(1)));
        assert_eq!(s.dial_timeouts_total, 4);
        assert_eq!(s.slowest_since_join_secs, Some(2.0));

        let without_floor = summarize(&hosts, F, 1.0, machine, None, true);
        assert_eq!((without_floor.leecher_to_floor, without_floor.machine_to_floor), (None, None));
        let nothing_delivered: Vec<HostResult> =
            hosts.iter().map(|h| HostResult { samples: Vec::new(), ..h.clone() }).collect();
        assert_eq!(summarize(&nothing_delivered, F, 1.0, machine, Some(&floor), false).machine_cpu_secs_per_gib, None);
    }
}
