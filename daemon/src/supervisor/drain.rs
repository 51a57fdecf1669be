//! Draining (`p2pctl drain`): taking a node out of the fleet without making a swarm lose its
//! last seeds.
//!
//! When a drain begins, every torrent that is not seeding stops (its state saved, so it
//! resumes when p2pd next starts) and nothing new starts: `add` and `reload` are refused. The
//! seeding torrents keep seeding; once a second, each one's other complete copies are counted
//! (`DaemonShared::complete_copies`) and published in `status` (`node.drain`). When every one
//! has `min_copies` of them, or the timeout passes, the supervisor's loop ends and p2pd stops
//! cleanly (exit status 0, so systemd leaves the unit stopped).

use std::time::{Duration, Instant};

use log::{info, warn};

use super::Supervisor;
use crate::control::protocol::{DrainReport, DrainTorrent, ErrorKind, Response, TorrentRef, TorrentState};
use crate::torrent::StopMode;

/// How often a drain counts copies.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Most copies a drain may wait for.
pub const MAX_MIN_COPIES: u32 = 10_000;
/// Longest drain timeout: a year.
pub const MAX_TIMEOUT_SECS: u64 = 366 * 24 * 3600;

/// A drain in progress.
#[derive(Debug)]
pub(super) struct Drain {
    min_copies: u32,
    deadline: Option<Instant>,
    stopped: Vec<TorrentRef>,
    /// The request that began it waits for the end, and its answer channel is not taken yet.
    pub(super) waiting: bool,
    /// Where to send the final report (a waiting request's answer).
    pub(super) reply: Option<async_channel::Sender<Response>>,
}

impl Supervisor {
    /// `drain`: stops what is not seeding and starts counting copies.
    pub(super) async fn start_drain(&mut self, min_copies: u32, timeout_secs: Option<u64>, wait: bool) -> Response {
        if self.drain.is_some() {
            return super::failed(ErrorKind::Failed, "p2pd is already draining (see `p2pctl status`)");
        }
        if min_copies > MAX_MIN_COPIES {
            return super::failed(
                ErrorKind::Failed,
                format!("--min-copies {min_copies} is above the maximum ({MAX_MIN_COPIES})"),
            );
        }
        if timeout_secs.is_some_and(|t| t > MAX_TIMEOUT_SECS) {
            return super::failed(ErrorKind::Failed, "--timeout is longer than a year");
        }
        let not_seeding: Vec<_> = self
            .running
            .handles()
            .filter(|h| h.shared.live().state != TorrentState::Seeding)
            .map(|h| (h.info_hash(), TorrentRef { info_hash: h.info_hash().to_hex(), name: h.shared.name.clone() }))
            .collect();
        for (hash, _) in &not_seeding {
            if let Err(e) = self.stop_torrent(hash, StopMode::Suspend).await {
                warn!("drain: {e}");
            }
        }
        let not_seeding: Vec<TorrentRef> = not_seeding.into_iter().map(|(_, t)| t).collect();
        let timeout = timeout_secs.map(|s| format!("{s} s")).unwrap_or_else(|| "none".into());
        info!(
            "drain: starting no downloads ({} stopped); seeding {} torrents until each has {min_copies} other \
             complete copies (timeout: {timeout}), then stopping",
            not_seeding.len(),
            self.running.len()
        );
        self.drain = Some(Drain {
            min_copies,
            deadline: timeout_secs.map(|s| Instant::now() + Duration::from_secs(s)),
            stopped: not_seeding,
            waiting: wait,
            reply: None,
        });
        Response::Draining(self.drain_report())
    }

    /// Where the drain stands now (call only while draining).
    fn drain_report(&self) -> DrainReport {
        let (min_copies, deadline, stopped) = match &self.drain {
            Some(d) => (d.min_copies, d.deadline, d.stopped.clone()),
            None => (0, None, Vec::new()),
        };
        let torrents = self
            .running
            .handles()
            .filter(|h| h.shared.live().state == TorrentState::Seeding)
            .map(|h| DrainTorrent {
                info_hash: h.info_hash().to_hex(),
                name: h.shared.name.clone(),
                copies: self.shared.complete_copies(&h.shared),
            })
            .collect();
        let seconds_left = deadline.map(|d| d.saturating_duration_since(Instant::now()).as_secs());
        DrainReport { min_copies, seconds_left, torrents, stopped, done: false }
    }

    /// Counts copies and publishes them; true when the drain is over (every torrent has its
    /// copies, or the time is up) and p2pd should stop.
    pub(super) fn drain_done(&mut self) -> bool {
        let Some(drain) = &self.drain else { return false };
        let timed_out = drain.deadline.is_some_and(|d| Instant::now() >= d);
        let mut report = self.drain_report();
        report.done = report.satisfied() || timed_out;
        self.shared.publish_drain(report.clone());
        if report.done
            && let Some(reply) = self.drain.as_mut().and_then(|d| d.reply.take())
        {
            let _ = reply.try_send(Response::Draining(report.clone()));
        }
        if report.satisfied() {
            info!("drain: every seeding torrent has at least {} other complete copies; stopping", report.min_copies);
            return true;
        }
        if timed_out {
            let short: Vec<String> = report
                .torrents
                .iter()
                .filter(|t| t.copies < report.min_copies)
                .map(|t| format!("{} ({} of {})", t.name, t.copies, report.min_copies))
                .collect();
            warn!("drain: timed out; stopping although these have too few other complete copies: {}", short.join(", "));
            return true;
        }
        false
    }

    /// Why a change is refused while draining, if one is in progress.
    pub(super) fn refused_while_draining(&self, what: &str) -> Option<Response> {
        self.drain.as_ref().map(|_| {
            super::failed(
                ErrorKind::Failed,
                format!("p2pd is draining (`p2pctl drain`): it {what}; it stops when done"),
            )
        })
    }
}
