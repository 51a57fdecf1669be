//! Draining (`p2pctl drain`): taking a node out of the fleet without making a swarm lose its
//! last seeds.
//!
//! When a drain begins, every torrent that downloads (or waits in the queue to) stops, its
//! state saved so that it resumes when p2pd next starts, and nothing new starts: `add`,
//! `reload`, `resume`, `pause` and `verify` are refused. The torrents it waits for are fixed
//! then: every one not downloading and not paused (one still checking counts once it seeds;
//! one found incomplete is stopped too). Discovery announces the node as `draining` to every
//! member of its swarms (`Node::drain`). Once a second each torrent's other complete copies
//! are counted (`DaemonShared::complete_copies`: members that acknowledged the drain and seed,
//! never one draining too) and published in `status` (`node.drain`); a torrent that is not
//! seeding has none. When every one has `min_copies` of them, or the
//! timeout passes, the supervisor's loop ends and p2pd stops cleanly (exit status 0, so
//! systemd leaves the unit stopped).

use std::time::{Duration, Instant};

use log::{info, warn};

use super::Supervisor;
use crate::control::protocol::{DrainReport, DrainTorrent, ErrorKind, Response, TorrentRef, TorrentState};
use crate::descriptor::InfoHash;
use crate::torrent::StopMode;

/// How often a drain counts copies.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Most copies a drain may wait for.
pub const MAX_MIN_COPIES: u32 = 10_000;
/// Longest wait for a drain's final report to be written before p2pd stops (a report fits the
/// socket's buffer: it is written at once unless the daemon is starved).
const ANSWER_PATIENCE: Duration = Duration::from_secs(5);
/// Longest drain timeout: a year.
pub const MAX_TIMEOUT_SECS: u64 = 366 * 24 * 3600;

/// A drain in progress.
#[derive(Debug)]
pub(super) struct Drain {
    min_copies: u32,
    deadline: Option<Instant>,
    /// The torrents it waits for, fixed when it began: every one not downloading and not
    /// paused (a checking one counts once it seeds; one that fails or stops seeding stays short).
    waited: Vec<(InfoHash, String)>,
    /// Torrents stopped because they were downloading (their state saved).
    stopped: Vec<TorrentRef>,
    /// The request that began it waits for the end, and its answer channel is not taken yet.
    pub(super) waiting: bool,
    /// Where to send the final report (a waiting request's answer).
    pub(super) reply: Option<async_channel::Sender<Response>>,
    /// The final report's channel once it is sent: closed when the answer is written.
    answered: Option<async_channel::Sender<Response>>,
}

/// Downloading, or waiting to: what a drain stops.
fn downloading(state: TorrentState) -> bool {
    matches!(state, TorrentState::Leeching | TorrentState::Queued)
}

impl Supervisor {
    /// `drain`: stops what downloads and starts counting copies.
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
        if timeout_secs.is_some_and(|t| t == 0 || t > MAX_TIMEOUT_SECS) {
            return super::failed(ErrorKind::Failed, "--timeout must be from 1 second to a year");
        }
        let waited = self
            .running
            .handles()
            .filter(|h| {
                let state = h.shared.live().state;
                !downloading(state) && state != TorrentState::Paused
            })
            .map(|h| (h.info_hash(), h.shared.name.clone()))
            .collect();
        let timeout = timeout_secs.map(|s| format!("{s} s")).unwrap_or_else(|| "none".into());
        self.drain = Some(Drain {
            min_copies,
            deadline: timeout_secs.map(|s| Instant::now() + Duration::from_secs(s)),
            waited,
            stopped: Vec::new(),
            waiting: wait,
            reply: None,
            answered: None,
        });
        self.stop_downloads().await;
        // Every member of its swarms hears of it, so that no node draining at the same time
        // counts this one as a copy (and this one counts only members that heard it).
        self.ctx.discovery.drain().await;
        let d = self.drain.as_ref().map(|d| (d.stopped.len(), d.waited.len())).unwrap_or_default();
        info!(
            "drain: starting no downloads ({} stopped); seeding {} torrents until each has {min_copies} other \
             complete copies (timeout: {timeout}), then stopping",
            d.0, d.1
        );
        Response::Draining(self.drain_report())
    }

    /// Stops every torrent that downloads (a checking torrent may turn out incomplete).
    async fn stop_downloads(&mut self) {
        let now: Vec<_> = self
            .running
            .handles()
            .filter(|h| downloading(h.shared.live().state))
            .map(|h| (h.info_hash(), TorrentRef { info_hash: h.info_hash().to_hex(), name: h.shared.name.clone() }))
            .collect();
        for (hash, t) in now {
            if let Err(e) = self.stop_torrent(&hash, StopMode::Suspend).await {
                warn!("drain: {e}");
            }
            info!("drain: {} stopped (incomplete; it resumes when p2pd next starts)", t.name);
            if let Some(d) = self.drain.as_mut() {
                d.waited.retain(|(h, _)| *h != hash);
                d.stopped.push(t);
            }
        }
    }

    /// Where the drain stands now (call only while draining).
    fn drain_report(&self) -> DrainReport {
        let Some(d) = &self.drain else {
            return DrainReport {
                min_copies: 0,
                seconds_left: None,
                torrents: Vec::new(),
                stopped: Vec::new(),
                done: false,
            };
        };
        let torrents = d
            .waited
            .iter()
            .map(|(hash, name)| {
                // Only a torrent seeding here counts its copies: one checking, failed or gone
                // stays short.
                let copies = self
                    .running
                    .get(hash)
                    .filter(|h| h.shared.live().state == TorrentState::Seeding)
                    .map(|h| self.shared.complete_copies(&h.shared))
                    .unwrap_or(0);
                DrainTorrent { info_hash: hash.to_hex(), name: name.clone(), copies }
            })
            .collect();
        let seconds_left = d.deadline.map(|d| d.saturating_duration_since(Instant::now()).as_secs());
        DrainReport { min_copies: d.min_copies, seconds_left, torrents, stopped: d.stopped.clone(), done: false }
    }

    /// Counts copies and publishes them; true when the drain is over (every torrent has its
    /// copies, or the time is up) and p2pd should stop.
    pub(super) async fn drain_done(&mut self) -> bool {
        if self.drain.is_none() {
            return false;
        }
        self.stop_downloads().await;
        let timed_out = self.drain.as_ref().and_then(|d| d.deadline).is_some_and(|d| Instant::now() >= d);
        let mut report = self.drain_report();
        report.done = report.satisfied() || timed_out;
        self.shared.publish_drain(report.clone());
        if report.done
            && let Some(d) = self.drain.as_mut()
            && let Some(reply) = d.reply.take()
        {
            let _ = reply.try_send(Response::Draining(report.clone()));
            d.answered = Some(reply);
        }
        if report.satisfied() {
            if report.torrents.is_empty() {
                info!("drain: nothing to seed; stopping");
            } else {
                info!(
                    "drain: every seeding torrent has at least {} other complete copies; stopping",
                    report.min_copies
                );
            }
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

    /// Waits (at most [`ANSWER_PATIENCE`]) until the final report of a drain that ended has been
    /// written to the client that waits for it, so that p2pd does not stop before.
    pub(super) async fn drain_answered(&mut self) {
        let Some(answered) = self.drain.as_mut().and_then(|d| d.answered.take()) else { return };
        let deadline = Instant::now() + ANSWER_PATIENCE;
        while !answered.is_closed() && Instant::now() < deadline {
            smol::Timer::after(Duration::from_millis(10)).await;
        }
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
