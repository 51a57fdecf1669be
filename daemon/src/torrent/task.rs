//! The torrent task: the only owner of a torrent's storage, verified-piece set and resume file.
//!
//! ```text
//!   start ──► checking ──► seeding ◄─────────┐
//!     │           │                           │ all pieces verified
//!     │           └──────► leeching ──────────┘
//!     └─► paused            (any) ──► error ──► (retry / verify / new settings) ──► start
//! ```
//! `Stop` is honoured in every state: the task flushes its resume state (or deletes it with
//! the data) and ends. Disk work runs on the blocking pool; between batches the task looks at
//! its command channel, so a long check can still be stopped promptly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use log::{info, warn};

use crate::bitfield::Bitfield;
use crate::control::protocol::TorrentState;
use crate::discovery::wire::{PeerRecord, PeerStatus};
use crate::state::{Loaded, StateKind};
use crate::storage::{Storage, StorageError};

use super::check::{self, CheckPlan};
use super::resume::{RESUME_VERSION, ResumeState};
use super::{Command, EffectiveSettings, StopMode, TorrentContext, TorrentShared, TorrentSpec};

/// Bytes hashed per blocking batch while checking.
const CHECK_BATCH_BYTES: u64 = 32 << 20;
/// How long to wait before retrying after a storage error that may go away (disk full).
const RETRY_AFTER: Duration = Duration::from_secs(10);

type Commands = async_channel::Receiver<Command>;
type Done = async_channel::Sender<Result<(), String>>;

/// Why the start-up phase ended early.
enum Interrupt {
    Stop { how: StopMode, done: Option<Done> },
    Failed { message: String, retry: bool },
}

/// What ended the active phase.
enum Next {
    Restart { full_check: bool },
    Stop { how: StopMode, done: Option<Done> },
}

struct Torrent {
    spec: TorrentSpec,
    ctx: TorrentContext,
    shared: Arc<TorrentShared>,
    storage: Option<Arc<Storage>>,
    /// Verified pieces (durable once a resume state recording them is saved).
    have: Bitfield,
    downloaded: u64,
    uploaded: u64,
    /// Members of the swarm as discovery learns them (while joined).
    swarm: Option<async_channel::Receiver<Vec<PeerRecord>>>,
    /// The status last announced to the swarm.
    announced: Option<PeerStatus>,
}

pub(super) async fn run(spec: TorrentSpec, ctx: TorrentContext, shared: Arc<TorrentShared>, commands: Commands) {
    let pieces = spec.descriptor.content.piece_count();
    let mut t = Torrent {
        spec,
        ctx,
        shared,
        storage: None,
        have: Bitfield::new(pieces),
        downloaded: 0,
        uploaded: 0,
        swarm: None,
        announced: None,
    };
    let mut full_check = false;
    loop {
        let started = t.start(&commands, full_check).await;
        let next = match started {
            Ok(()) => t.active(&commands).await,
            Err(Interrupt::Stop { how, done }) => Next::Stop { how, done },
            Err(Interrupt::Failed { message, retry }) => t.failed(&commands, message, retry).await,
        };
        match next {
            Next::Restart { full_check: f } => full_check = f,
            Next::Stop { how, done } => {
                let result = t.stop(how).await;
                if let Some(done) = done {
                    let _ = done.send(result).await;
                }
                return;
            }
        }
    }
}

impl Torrent {
    fn name(&self) -> &str {
        &self.shared.name
    }

    fn publish(&self, state: TorrentState, error: Option<String>) {
        let layout_done = self.bytes_done();
        let pieces_done = self.have.count() as u64;
        let (downloaded, uploaded) = (self.downloaded, self.uploaded);
        self.shared.update(|s| {
            if s.state != state {
                if state == TorrentState::Seeding {
                    s.completed_at = Some(Instant::now());
                }
                s.state = state;
            }
            s.error = error;
            s.pieces_done = pieces_done;
            s.bytes_done = layout_done;
            s.downloaded = downloaded;
            s.uploaded = uploaded;
        });
    }

    fn bytes_done(&self) -> u64 {
        let content = &self.spec.descriptor.content;
        self.have.ones().map(|i| content.piece_len(i)).sum()
    }

    /// Opens storage, loads resume state, checks what needs checking and gets ready to seed or
    /// fetch.
    async fn start(&mut self, commands: &Commands, full_check: bool) -> Result<(), Interrupt> {
        let content = self.spec.descriptor.content.clone();
        let data_dir = self.spec.settings.data_dir.clone();
        let storage = smol::unblock(move || Storage::open(&data_dir, &content))
            .await
            .map(Arc::new)
            .map_err(|e| Interrupt::Failed { retry: e.is_no_space(), message: e.to_string() })?;
        self.storage = Some(storage.clone());

        let resume = self.load_resume();
        if let Some(r) = &resume {
            self.downloaded = r.downloaded;
            self.uploaded = r.uploaded;
        }
        if self.spec.settings.paused {
            if self.swarm.take().is_some() {
                self.ctx.discovery.leave(self.spec.descriptor.info_hash).await;
                self.announced = None;
            }
            self.have = resume
                .as_ref()
                .and_then(|r| r.have(self.spec.descriptor.content.piece_count()))
                .unwrap_or_else(|| Bitfield::new(self.spec.descriptor.content.piece_count()));
            self.publish(TorrentState::Paused, None);
            return Ok(());
        }

        let plan = {
            let storage = storage.clone();
            let resume = if full_check { None } else { resume.clone() };
            smol::unblock(move || {
                let stamps = storage.stamps();
                let placement = storage.placement();
                check::plan(resume.as_ref(), storage.layout(), placement, &stamps, &|i| storage.piece_may_have_data(i))
            })
            .await
        };
        self.run_check(commands, &storage, plan, full_check).await?;

        let complete = self.have.is_complete();
        if complete {
            let s = storage.clone();
            smol::unblock(move || s.finish())
                .await
                .map_err(|e| Interrupt::Failed { retry: e.is_no_space(), message: e.to_string() })?;
            self.save_resume(true).await.map_err(|message| Interrupt::Failed { message, retry: true })?;
            info!("{}: complete and verified; seeding from {}", self.name(), storage.root_path().display());
            self.publish(TorrentState::Seeding, None);
            self.join_swarm(PeerStatus::Seeding).await;
        } else {
            let s = storage.clone();
            smol::unblock(move || s.prepare_download())
                .await
                .map_err(|e: StorageError| Interrupt::Failed { retry: e.is_no_space(), message: e.to_string() })?;
            // From here on data may be written: the saved state must say "not clean".
            self.save_resume(false).await.map_err(|message| Interrupt::Failed { message, retry: true })?;
            info!("{}: {} of {} pieces verified; waiting for peers", self.name(), self.have.count(), self.have.len());
            self.publish(TorrentState::Leeching, None);
            // Idle until we take part in the swarm (once its members are known).
            self.join_swarm(PeerStatus::Idle).await;
        }
        Ok(())
    }

    /// Joins the swarm (first time) or announces a new status.
    async fn join_swarm(&mut self, status: PeerStatus) {
        let hash = self.spec.descriptor.info_hash;
        if self.swarm.is_none() {
            self.ctx.discovery.join(hash, status, &self.spec.descriptor.bootstrap).await;
            self.swarm = Some(self.ctx.discovery.subscribe(hash).await);
        } else if self.announced != Some(status) {
            self.ctx.discovery.set_status(hash, status).await;
        }
        self.announced = Some(status);
    }

    /// Members of the swarm arrived.
    async fn on_swarm_members(&mut self, peers: Vec<PeerRecord>) {
        log::debug!("{}: {} swarm members known", self.name(), peers.len());
        if self.announced == Some(PeerStatus::Idle) && self.shared.live().state == TorrentState::Leeching {
            self.join_swarm(PeerStatus::Leeching).await;
        }
    }

    fn load_resume(&self) -> Option<ResumeState> {
        let hash = self.spec.descriptor.info_hash;
        match self.ctx.state.load::<ResumeState>(StateKind::Resume, Some(&hash)) {
            Loaded::Ok(r) if r.version == RESUME_VERSION && r.info_hash == hash => Some(r),
            Loaded::Ok(_) => {
                warn!("{}: resume state is for another version or torrent; rechecking", self.name());
                None
            }
            Loaded::Missing => None,
            Loaded::Quarantined { moved_to, reason } => {
                let line = format!(
                    "{}: resume state unreadable ({reason}); moved to {}; rechecking data",
                    self.name(),
                    moved_to.display()
                );
                warn!("{line}");
                self.ctx.report_warning(line);
                None
            }
        }
    }

    /// Hashes the planned pieces in batches, watching for commands between batches.
    async fn run_check(
        &mut self,
        commands: &Commands,
        storage: &Arc<Storage>,
        plan: CheckPlan,
        full_check: bool,
    ) -> Result<(), Interrupt> {
        self.have = plan.trusted;
        if plan.to_check.is_empty() {
            return Ok(());
        }
        self.publish(TorrentState::Checking, None);
        let _slot = self.ctx.check_slots.acquire_arc().await;
        let started = Instant::now();
        info!(
            "{}: checking {} pieces ({})",
            self.name(),
            plan.to_check.len(),
            if full_check { "full verify requested" } else { plan.reason }
        );
        let content = &self.spec.descriptor.content;
        let mut batches: Vec<Vec<usize>> = Vec::new();
        let mut bytes = 0;
        for &i in &plan.to_check {
            if batches.is_empty() || bytes >= CHECK_BATCH_BYTES {
                batches.push(Vec::new());
                bytes = 0;
            }
            bytes += content.piece_len(i);
            if let Some(last) = batches.last_mut() {
                last.push(i);
            }
        }
        let mut valid = 0usize;
        for batch in batches {
            while let Ok(cmd) = commands.try_recv() {
                match cmd {
                    Command::Stop { how, done } => return Err(Interrupt::Stop { how, done: Some(done) }),
                    Command::Settings(s) => self.spec.settings = s,
                    Command::Verify => {}
                }
            }
            let storage = storage.clone();
            let hashes: Vec<_> = batch.iter().map(|&i| content.pieces[i]).collect();
            let results = smol::unblock(move || {
                let mut buf = Vec::new();
                batch
                    .into_iter()
                    .zip(hashes)
                    .map(|(i, h)| storage.check_piece(i, &h, &mut buf).map(|ok| (i, ok)))
                    .collect::<Result<Vec<_>, StorageError>>()
            })
            .await
            .map_err(|e| Interrupt::Failed { retry: e.is_no_space(), message: e.to_string() })?;
            for (i, ok) in results {
                if ok {
                    self.have.set(i);
                    valid += 1;
                }
            }
            self.publish(TorrentState::Checking, None);
        }
        info!(
            "{}: checked {} pieces in {:.1}s: {} valid",
            self.name(),
            plan.to_check.len(),
            started.elapsed().as_secs_f64(),
            valid
        );
        Ok(())
    }

    /// Saves the resume state; `clean` only when no write can follow before the next save.
    async fn save_resume(&self, clean: bool) -> Result<(), String> {
        let Some(storage) = self.storage.clone() else { return Ok(()) };
        let state = self.ctx.state.clone();
        let hash = self.spec.descriptor.info_hash;
        let have = self.have.to_hex();
        let (downloaded, uploaded) = (self.downloaded, self.uploaded);
        let name = self.shared.name.clone();
        smol::unblock(move || {
            // The data the bitmap names must be durable before the bitmap is.
            storage.sync().map_err(|e| e.to_string())?;
            let resume = ResumeState {
                version: RESUME_VERSION,
                info_hash: hash,
                clean,
                placement: storage.placement(),
                have,
                stamps: storage.stamps(),
                downloaded,
                uploaded,
            };
            state
                .save(StateKind::Resume, Some(&hash), &resume)
                .map_err(|e| format!("{name}: cannot save resume state: {e}"))
        })
        .await
    }

    /// Seeding, leeching or paused: wait for instructions (and, joined, for swarm members).
    async fn active(&mut self, commands: &Commands) -> Next {
        loop {
            let swarm = self.swarm.clone();
            let woke = future::or(async { Ok(commands.recv().await) }, async {
                Err(match swarm {
                    Some(rx) => rx.recv().await.map_err(|_| ()),
                    None => future::pending().await,
                })
            })
            .await;
            let cmd = match woke {
                Ok(cmd) => cmd,
                Err(Ok(peers)) => {
                    self.on_swarm_members(peers).await;
                    continue;
                }
                Err(Err(())) => {
                    self.swarm = None;
                    continue;
                }
            };
            let Ok(cmd) = cmd else {
                return Next::Stop { how: StopMode::Suspend, done: None };
            };
            match cmd {
                Command::Stop { how, done } => return Next::Stop { how, done: Some(done) },
                Command::Verify => return Next::Restart { full_check: true },
                Command::Settings(settings) => {
                    if let Some(next) = self.apply(settings) {
                        return next;
                    }
                }
            }
        }
    }

    /// Applies new settings; returns `Some` if the torrent must restart to honour them.
    fn apply(&mut self, settings: EffectiveSettings) -> Option<Next> {
        let pause_changed = settings.paused != self.spec.settings.paused;
        self.spec.settings = settings;
        pause_changed.then_some(Next::Restart { full_check: false })
    }

    /// In `error`: wait for a retry (if the problem may pass), a verify, new settings or stop.
    async fn failed(&mut self, commands: &Commands, message: String, retry: bool) -> Next {
        warn!("{}: {message}", self.name());
        self.publish(TorrentState::Error, Some(message));
        let timeout = async {
            if retry {
                smol::Timer::after(RETRY_AFTER).await;
            } else {
                future::pending::<()>().await;
            }
            None
        };
        match future::or(async { Some(commands.recv().await) }, timeout).await {
            None => Next::Restart { full_check: false },
            Some(Err(_)) => Next::Stop { how: StopMode::Suspend, done: None },
            Some(Ok(Command::Stop { how, done })) => Next::Stop { how, done: Some(done) },
            Some(Ok(Command::Verify)) => Next::Restart { full_check: true },
            Some(Ok(Command::Settings(s))) => {
                self.apply(s);
                Next::Restart { full_check: false }
            }
        }
    }

    /// Leaves the swarm and flushes state (or deletes state, and maybe data) before the task
    /// ends.
    async fn stop(&mut self, how: StopMode) -> Result<(), String> {
        let hash = self.spec.descriptor.info_hash;
        if self.swarm.take().is_some() {
            self.ctx.discovery.leave(hash).await;
        }
        if how != StopMode::Suspend {
            let storage = match self.storage.clone() {
                Some(s) => Some(s),
                None if how == StopMode::DeleteData => {
                    let content = self.spec.descriptor.content.clone();
                    let dir = self.spec.settings.data_dir.clone();
                    smol::unblock(move || Storage::open(&dir, &content)).await.ok().map(Arc::new)
                }
                None => None,
            };
            let state = self.ctx.state.clone();
            let name = self.shared.name.clone();
            return smol::unblock(move || {
                if how == StopMode::DeleteData
                    && let Some(s) = storage
                {
                    s.delete_data().map_err(|e| format!("{name}: deleting data: {e}"))?;
                }
                // (Peer tables belong to discovery, which drops ours once we left.)
                state.remove(StateKind::Resume, Some(&hash)).map_err(|e| format!("{name}: removing state: {e}"))?;
                Ok(())
            })
            .await;
        }
        // Only a torrent that finished checking knows its verified set completely; otherwise the
        // previous resume state stays as it is (it is still true).
        if !matches!(self.shared.live().state, TorrentState::Leeching | TorrentState::Seeding) {
            return Ok(());
        }
        let result = self.save_resume(true).await;
        if let Err(e) = &result {
            warn!("{e}");
        }
        result
    }
}

impl TorrentContext {
    /// Records a line for `status` (node.state_warnings).
    pub fn report_warning(&self, line: String) {
        self.warnings.lock().unwrap_or_else(|p| p.into_inner()).push(line);
    }
}
