//! Retention: evicting cache torrents to keep their filesystems below `retention.high_water`
//! (`config::retention`).
//!
//! [`plan`] is the policy, pure: for each filesystem fuller than the high-water mark, the
//! eligible torrents on it, least recently completed first, until what they hold brings it
//! down to the low-water mark. [`Supervisor::start_retention_round`] gathers the facts (which
//! torrents are cache and complete) and measures their filesystems and whether p2pd owns their
//! data on the blocking pool, off the supervisor's path (a hung network filesystem never holds
//! up a request); [`Supervisor::finish_retention_round`] gets the measurement as a run-loop
//! event and evicts what the plan names, as `p2pctl remove --delete-data` would.
//!
//! Invariants: only torrents marked `cache`; only complete ones (seeding, or paused with every
//! piece), completed at least `min_seed_time` ago; only where p2pd owns the content (it wrote
//! or verified it: `storage::claim`), so an eviction always frees what it counts; each
//! filesystem on its own. Every eviction is logged, counted and runs `on_removed`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_lite::future;
use log::{debug, info, warn};

use super::Supervisor;
use crate::config::retention::Retention;
use crate::control::protocol::{Response, TorrentState};
use crate::descriptor::InfoHash;
use crate::torrent::TorrentHandle;
use crate::units::{human_bytes, unix_now};

/// How often the filesystems of cache torrents are measured.
pub const CHECK_EVERY: Duration = Duration::from_secs(10);
/// A measurement still running after this long (a hung network filesystem) is reported; no
/// second one starts while it runs.
const MEASURE_PATIENCE: Duration = Duration::from_secs(30);

/// Retention's own state in the supervisor: the measurement in flight, and the problems
/// already reported (each is logged as a warning once, then at debug level while it lasts).
#[derive(Debug)]
pub(super) struct RetentionRounds {
    /// When the measurement in flight started.
    measuring_since: Option<Instant>,
    /// Whether a measurement overdue was reported.
    overdue_reported: bool,
    reported: BTreeSet<String>,
    results: (async_channel::Sender<Measured>, async_channel::Receiver<Measured>),
}

impl RetentionRounds {
    pub(super) fn new() -> RetentionRounds {
        RetentionRounds {
            measuring_since: None,
            overdue_reported: false,
            reported: BTreeSet::new(),
            results: async_channel::bounded(1),
        }
    }

    /// The next measurement, when one finishes (for the supervisor's loop).
    pub(super) async fn measured(&self) -> Measured {
        match self.results.1.recv().await {
            Ok(m) => m,
            // Never: the sender lives in `self`.
            Err(_) => future::pending().await,
        }
    }
}

/// A finished measurement: each filesystem's usage, the torrents p2pd owns the content of, and
/// what could not be measured.
#[derive(Debug)]
pub(super) struct Measured {
    usage: BTreeMap<u64, Usage>,
    candidates: Vec<Candidate>,
    problems: Vec<String>,
}

/// How full one filesystem is, as `df` counts it: `used` of `size` (used plus what is
/// available to p2pd; blocks reserved for root are in neither).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub size: u64,
    pub used: u64,
}

impl Usage {
    /// Whether more than `share` of it is used.
    fn above(self, share: crate::config::retention::Percent) -> bool {
        self.used > share.of(self.size)
    }

    /// How full, in percent (for the log: `90.9`, never rounded down to the mark).
    fn percent(self) -> f64 {
        self.used as f64 * 100.0 / self.size.max(1) as f64
    }
}

/// A complete cache torrent whose data p2pd owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub hash: InfoHash,
    /// The filesystem its content is on (`st_dev`).
    pub filesystem: u64,
    /// When it completed, in seconds since 1970.
    pub completed_at: u64,
    /// Content bytes an eviction frees.
    pub bytes: u64,
}

/// What [`plan`] evicts, with the facts for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eviction {
    pub hash: InfoHash,
    pub bytes: u64,
    pub completed_at: u64,
    /// How full its filesystem was.
    pub usage: Usage,
}

/// The torrents to evict now: on each filesystem more than `high_water` full, the candidates
/// completed at least `min_seed_time` before `now`, least recently completed first, until the
/// bytes they hold bring it to `low_water` or below (or none is left).
pub fn plan(policy: &Retention, now: u64, usage: &BTreeMap<u64, Usage>, candidates: &[Candidate]) -> Vec<Eviction> {
    let min_seed = policy.min_seed_time.0.as_secs();
    let mut ordered: Vec<&Candidate> =
        candidates.iter().filter(|c| now.saturating_sub(c.completed_at) >= min_seed).collect();
    ordered.sort_by_key(|c| (c.completed_at, c.hash));
    let mut evictions = Vec::new();
    for (filesystem, &fs) in usage {
        if !fs.above(policy.high_water) {
            continue;
        }
        let target = policy.low_water.of(fs.size);
        let mut used = fs.used;
        for c in ordered.iter().filter(|c| c.filesystem == *filesystem) {
            if used <= target {
                break;
            }
            used = used.saturating_sub(c.bytes);
            evictions.push(Eviction { hash: c.hash, bytes: c.bytes, completed_at: c.completed_at, usage: fs });
        }
    }
    evictions
}

/// A cache torrent that is complete, as the supervisor sees it.
struct Complete {
    hash: InfoHash,
    data_dir: PathBuf,
    name: String,
    bytes: u64,
    completed_at: u64,
}

/// A cache torrent with every piece, seeding or paused: one retention may evict.
fn evictable(h: &TorrentHandle) -> bool {
    let live = h.shared.live();
    let whole = live.state == TorrentState::Seeding
        || (live.state == TorrentState::Paused && live.pieces_done == h.shared.pieces_total);
    live.settings.cache && whole
}

/// The filesystems of `torrents`' data directories and which of the torrents p2pd owns the
/// content of (blocking).
fn measure(torrents: Vec<Complete>, claims: crate::storage::claim::Claims) -> Measured {
    let (mut usage, mut candidates, mut problems) = (BTreeMap::new(), Vec::new(), Vec::new());
    for t in torrents {
        let filesystem = match nix::sys::stat::stat(&t.data_dir) {
            Ok(st) => st.st_dev,
            Err(e) => {
                problems.push(format!("{}: {e}", t.data_dir.display()));
                continue;
            }
        };
        if let std::collections::btree_map::Entry::Vacant(slot) = usage.entry(filesystem) {
            match filesystem_usage(&t.data_dir) {
                Ok(u) => {
                    slot.insert(u);
                }
                Err(e) => {
                    problems.push(format!("{}: {e}", t.data_dir.display()));
                    continue;
                }
            }
        }
        if claims.owns(&t.hash, &t.data_dir, &t.name) {
            candidates.push(Candidate { hash: t.hash, filesystem, completed_at: t.completed_at, bytes: t.bytes });
        }
    }
    Measured { usage, candidates, problems }
}

// The block counts are 32 bits wide on some targets.
#[allow(clippy::useless_conversion)]
fn filesystem_usage(dir: &std::path::Path) -> nix::Result<Usage> {
    let s = nix::sys::statvfs::statvfs(dir)?;
    let block = u64::from(s.fragment_size());
    let used = u64::from(s.blocks()).saturating_sub(u64::from(s.blocks_free())).saturating_mul(block);
    let available = u64::from(s.blocks_available()).saturating_mul(block);
    Ok(Usage { size: used.saturating_add(available), used })
}

/// `3h 5m`, `40s`: how long ago, for the log.
fn ago(secs: u64) -> String {
    match secs {
        s if s >= 3600 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

impl Supervisor {
    /// Starts a retention round (every [`CHECK_EVERY`]): measures the filesystems of the
    /// complete cache torrents in the background; [`Supervisor::finish_retention_round`] gets
    /// the result.
    pub(super) fn start_retention_round(&mut self) {
        if self.drain.is_some() {
            // A draining node keeps its seeds until others hold copies.
            return;
        }
        if let Some(since) = self.retention.measuring_since {
            if since.elapsed() >= MEASURE_PATIENCE && !self.retention.overdue_reported {
                self.retention.overdue_reported = true;
                warn!(
                    "retention: measuring the cache torrents' filesystems has taken over {MEASURE_PATIENCE:?} \
                     (a hung filesystem?); no eviction until it ends"
                );
            }
            return;
        }
        let complete: Vec<Complete> = self
            .running
            .handles()
            .filter_map(|h| {
                let live = h.shared.live();
                evictable(h).then(|| Complete {
                    hash: h.info_hash(),
                    data_dir: live.settings.data_dir.clone(),
                    name: h.shared.name.clone(),
                    bytes: h.shared.length,
                    // Seeding always has a time (the task sets it); a paused torrent restored
                    // from an older state file may not: counted as completed now.
                    completed_at: live.completed_unix.unwrap_or_else(unix_now),
                })
            })
            .collect();
        if complete.is_empty() {
            return;
        }
        self.retention.measuring_since = Some(Instant::now());
        let (claims, results) = (self.claims.clone(), self.retention.results.0.clone());
        self.ctx
            .executor
            .spawn(async move {
                let measured = smol::unblock(move || measure(complete, claims)).await;
                let _ = results.send(measured).await;
            })
            .detach();
    }

    /// Ends a retention round with its measurement: evicts what [`plan`] names.
    pub(super) async fn finish_retention_round(&mut self, measured: Measured) {
        self.retention.overdue_reported = false;
        if self.retention.measuring_since.take().is_some_and(|s| s.elapsed() >= MEASURE_PATIENCE) {
            // What it read may be long gone: the next round measures again.
            warn!(
                "retention: measuring the cache torrents' filesystems took over {MEASURE_PATIENCE:?}; its result is \
                 dropped as stale (while measuring stays this slow, nothing is evicted)"
            );
            return;
        }
        let Measured { usage, candidates, problems } = measured;
        let problems: BTreeSet<String> = problems.into_iter().collect();
        for p in &problems {
            if self.retention.reported.contains(p) {
                debug!("retention: cannot measure {p}");
            } else {
                warn!("retention: cannot measure {p}; its torrents are not evicted while this lasts");
            }
        }
        self.retention.reported = problems;
        if self.drain.is_some() {
            return;
        }
        let now = unix_now();
        for e in plan(&self.config.retention, now, &usage, &candidates) {
            let Some(h) = self.running.get(&e.hash) else { continue };
            // Measured a moment ago: still a complete cache torrent?
            if !evictable(h) {
                continue;
            }
            let (name, dir) = (h.shared.name.clone(), h.data_dir());
            info!(
                "retention: evicting {name} ({}, {}, completed {} ago): the filesystem of {} is {:.1}% full, \
                 above retention.high_water {}",
                e.hash,
                human_bytes(e.bytes),
                ago(now.saturating_sub(e.completed_at)),
                dir.display(),
                e.usage.percent(),
                self.config.retention.high_water
            );
            match self.remove(&e.hash.to_hex(), true).await {
                Response::Removed(r) if r.data_deleted => {
                    self.shared.evictions.count.fetch_add(1, Ordering::Relaxed);
                    self.shared.evictions.bytes.fetch_add(e.bytes, Ordering::Relaxed);
                }
                Response::Removed(r) => warn!("retention: {name}: removed, but its data was kept: {:?}", r.data_kept),
                Response::Error(err) => warn!("retention: evicting {name}: {}", err.message),
                other => warn!("retention: evicting {name}: unexpected outcome {other:?}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::retention::{Percent, Span};

    fn policy(min_seed_secs: u64) -> Retention {
        Retention {
            high_water: Percent(90),
            low_water: Percent(80),
            min_seed_time: Span(Duration::from_secs(min_seed_secs)),
        }
    }

    fn candidate(n: u8, filesystem: u64, completed_at: u64, bytes: u64) -> Candidate {
        Candidate { hash: InfoHash([n; 32]), filesystem, completed_at, bytes }
    }

    fn hashes(e: &[Eviction]) -> Vec<u8> {
        e.iter().map(|e| e.hash.0[0]).collect()
    }

    #[test]
    fn below_the_high_water_mark_nothing_goes() {
        let usage = BTreeMap::from([(1, Usage { size: 100, used: 90 })]);
        assert!(plan(&policy(0), 1000, &usage, &[candidate(1, 1, 0, 50)]).is_empty(), "90% is not above 90%");
    }

    #[test]
    fn least_recently_completed_first_down_to_the_low_water_mark() {
        let usage = BTreeMap::from([(1, Usage { size: 100, used: 95 })]);
        let c = [candidate(1, 1, 300, 10), candidate(2, 1, 100, 10), candidate(3, 1, 200, 10)];
        // 95 → 85 (still above 80) → 75: the two completed longest ago.
        assert_eq!(hashes(&plan(&policy(0), 1000, &usage, &c)), vec![2, 3]);
    }

    #[test]
    fn too_recently_completed_torrents_stay_even_if_the_disk_stays_full() {
        let usage = BTreeMap::from([(1, Usage { size: 100, used: 99 })]);
        let c = [candidate(1, 1, 950, 30), candidate(2, 1, 400, 5)];
        assert_eq!(hashes(&plan(&policy(100), 1000, &usage, &c)), vec![2], "1 completed 50 s ago, under 100 s");
    }

    #[test]
    fn each_filesystem_is_its_own() {
        let usage = BTreeMap::from([(1, Usage { size: 100, used: 50 }), (2, Usage { size: 1000, used: 950 })]);
        let c = [candidate(1, 1, 0, 40), candidate(2, 2, 10, 200), candidate(3, 2, 5, 100)];
        // Filesystem 1 is half empty; on 2, 950 → 850 (above 800) → 650.
        assert_eq!(hashes(&plan(&policy(0), 1000, &usage, &c)), vec![3, 2]);
    }

    #[test]
    fn usage_is_counted_as_df_does() {
        let u = Usage { size: 200, used: 181 };
        assert!(u.above(Percent(90)) && !u.above(Percent(91)));
        assert_eq!(format!("{:.1}", u.percent()), "90.5");
        assert_eq!(Usage { size: 0, used: 0 }.percent(), 0.0);
        assert_eq!(ago(7500), "2h 5m");
        assert_eq!(ago(59), "59s");
    }
}
