//! The torrent task: the only owner of a torrent's storage, verified-piece set, resume file
//! and transfer engine.
//!
//! ```text
//!   start ──► checking ──► seeding ◄───────────────────────┐
//!     │           │                                         │ all pieces verified
//!     │           └──────► queued (waiting.rs) ──► leeching ───┘
//!     └─► paused            (any) ──► error ──► (retry / verify / new settings) ──► start
//! ```
//! `Stop` is honoured in every state: the task leaves the swarm, flushes its resume state (or
//! deletes it with the data) and ends. Disk work runs on the blocking pool; resume saves run as
//! background tasks (one at a time) so that syncing data never stalls transfers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use log::{info, warn};

use crate::bitfield::Bitfield;
use crate::control::protocol::TorrentState;
use crate::discovery::wire::{PeerRecord, PeerStatus};
use crate::hooks::HookEvent;
use crate::state::{Loaded, StateKind};
use crate::storage::claim::{self, Claims};
use crate::storage::{Storage, StorageError};
use crate::swarm::limiter::RateLimit;
use crate::swarm::{Engine, EngineEvent};
use crate::units::unix_now;

use super::check::{self, CheckPlan};
use super::resume::{RESUME_VERSION, ResumeState};
use super::{Command, EffectiveSettings, StateError, StopMode, TorrentContext, TorrentShared, TorrentSpec};

/// Bytes hashed per blocking batch while checking.
const CHECK_BATCH_BYTES: u64 = 32 << 20;
/// How long to wait before retrying after a storage error that may go away (disk full).
const RETRY_AFTER: Duration = Duration::from_secs(10);
/// How often status is published and newly verified pieces are made durable and recorded.
const TICK: Duration = Duration::from_secs(1);
/// Progress is also published as pieces verify, at most this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

mod waiting;
type Commands = super::mailbox::Inbox;
type Done = async_channel::Sender<Result<(), StateError>>;

/// Why the start-up phase ended early.
enum Interrupt {
    Stop {
        how: StopMode,
        done: Option<Done>,
    },
    Failed {
        message: String,
        retry: bool,
    },
    /// Paused during the check: start again (as paused).
    Paused,
}

/// What ended the active phase.
enum Next {
    Restart { full_check: bool },
    Stop { how: StopMode, done: Option<Done> },
    Failed { message: String, retry: bool },
}

struct Torrent {
    spec: TorrentSpec,
    ctx: TorrentContext,
    shared: Arc<TorrentShared>,
    storage: Option<Arc<Storage>>,
    /// Verified pieces (durable once a resume state recording them is saved).
    have: Bitfield,
    /// Payload bytes moved before the current engine started.
    downloaded: u64,
    uploaded: u64,
    /// Members of the swarm as discovery learns them (while joined).
    swarm: Option<async_channel::Receiver<Vec<PeerRecord>>>,
    /// The status last announced to the swarm.
    announced: Option<PeerStatus>,
    engine: Option<Engine>,
    upload: Arc<RateLimit>,
    download: Arc<RateLimit>,
    /// Pieces verified since the last resume save started.
    dirty: bool,
    /// The resume save in progress.
    saving: Option<smol::Task<Result<(), StateError>>>,
    /// When status was last published on a verified piece.
    progress_published: Instant,
    /// Whether this run has verified a piece fetched from a peer.
    fetched_any: bool,
    /// The state last published (the task's own record; the status cell is for readers).
    published: std::cell::Cell<TorrentState>,
    /// A full verify was asked for during a check that was not one: it runs next.
    verify_asked: bool,
    /// The place in the download line, then the turn to download while incomplete
    /// (`limits.max_active_downloads`, turn.rs).
    place: Option<super::queue::Place>,
    turn: Option<super::queue::Turn>,
    /// `on_error` ran for the current trouble (until a piece verifies or it seeds).
    error_hooked: bool,
    /// When the content was first complete here (Unix seconds): from the resume state, or
    /// set when it first seeds.
    completed_unix: std::cell::Cell<Option<u64>>,
    /// A download completed and `on_complete` has not been started yet (saved in the resume
    /// state, so that a stop in between does not lose it).
    complete_hook_due: bool,
    /// Whether the resume state on disk may say more than this task knows: only at its first
    /// start (later, the task's own state is ahead of the file's).
    first_start: bool,
}

pub(super) async fn run(spec: TorrentSpec, ctx: TorrentContext, shared: Arc<TorrentShared>, commands: Commands) {
    let pieces = spec.descriptor.content.piece_count();
    let upload = Arc::new(RateLimit::new(spec.settings.upload_rate));
    let download = Arc::new(RateLimit::new(spec.settings.download_rate));
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
        engine: None,
        upload,
        download,
        dirty: false,
        saving: None,
        progress_published: Instant::now(),
        fetched_any: false,
        published: std::cell::Cell::new(TorrentState::Checking),
        verify_asked: false,
        place: None,
        turn: None,
        error_hooked: false,
        completed_unix: std::cell::Cell::new(None),
        complete_hook_due: false,
        first_start: true,
    };
    let mut full_check = false;
    loop {
        let started = t.start(&commands, full_check).await;
        let next = match started {
            Ok(()) => t.active(&commands).await,
            Err(Interrupt::Stop { how, done }) => Next::Stop { how, done },
            Err(Interrupt::Failed { message, retry }) => Next::Failed { message, retry },
            Err(Interrupt::Paused) => Next::Restart { full_check: false },
        };
        let next = match next {
            Next::Failed { message, retry } => {
                t.stop_engine().await;
                // Close the content files while in error: the operator may need to unmount
                // and repair the filesystem.
                t.storage = None;
                t.failed(&commands, message, retry).await
            }
            other => other,
        };
        match next {
            Next::Restart { full_check: f } => {
                t.stop_engine().await;
                full_check = f;
            }
            Next::Stop { how, done } => {
                let result = t.stop(how).await;
                if let Some(done) = done {
                    let _ = done.send(result).await;
                }
                return;
            }
            Next::Failed { .. } => unreachable!("failures were handled above"),
        }
    }
}

impl Torrent {
    fn name(&self) -> &str {
        &self.shared.name
    }

    fn publish(&self, state: TorrentState, error: Option<String>) {
        let bytes_done = self.bytes_done();
        let pieces_done = self.have.count() as u64;
        let (engine_down, engine_up) = self.engine.as_ref().map(|e| e.totals()).unwrap_or((0, 0));
        let (down_rate, up_rate) = self.engine.as_ref().map(|e| e.rates()).unwrap_or((0, 0));
        let peers = self.engine.as_ref().map(|e| e.peer_views()).unwrap_or_default();
        let (downloaded, uploaded) = (self.downloaded + engine_down, self.uploaded + engine_up);
        self.published.set(state);
        if state == TorrentState::Seeding && self.completed_unix.get().is_none() {
            self.completed_unix.set(Some(unix_now()));
        }
        let completed_unix = self.completed_unix.get();
        self.shared.update(|s| {
            if s.state != state && state == TorrentState::Seeding {
                s.completed_at = Some(Instant::now());
            }
            s.state = state;
            s.error = error;
            s.pieces_done = pieces_done;
            s.bytes_done = bytes_done;
            s.downloaded = downloaded;
            s.uploaded = uploaded;
            s.download_rate = down_rate;
            s.upload_rate = up_rate;
            s.peers = peers;
            s.completed_unix = completed_unix;
        });
    }

    fn bytes_done(&self) -> u64 {
        let content = &self.spec.descriptor.content;
        self.have.ones().map(|i| content.piece_len(i)).sum()
    }

    fn state(&self) -> TorrentState {
        if self.have.is_complete() { TorrentState::Seeding } else { TorrentState::Leeching }
    }

    /// Opens storage, loads resume state, checks what needs checking and gets ready to seed or
    /// fetch.
    async fn start(&mut self, commands: &Commands, full_check: bool) -> Result<(), Interrupt> {
        // A place in the download line before anything waits: torrents started one after
        // another (at start-up) then rank in that line by their `queue` rank, not by whose
        // storage opened or whose check ended first. Given up once found complete or paused.
        if !self.spec.settings.paused && !self.have.is_complete() {
            self.take_place();
        }
        let content = self.spec.descriptor.content.clone();
        let data_dir = self.spec.settings.data_dir.clone();
        // Under the name where the root this torrent owns is, if it owns one (storage/claim.rs).
        let (claims, hash) = (Claims::new(self.ctx.state.root()), self.spec.descriptor.info_hash);
        let storage = smol::unblock(move || claim::open_owned(&claims, hash, &data_dir, &content))
            .await
            .map(Arc::new)
            .map_err(|e| Interrupt::Failed { retry: e.may_pass(), message: e.to_string() })?;
        self.storage = Some(storage.clone());
        {
            let (guard, s) = (self.ctx.content_guard.clone(), storage.clone());
            let (name, hash) = (self.spec.descriptor.content.name.clone(), self.spec.descriptor.info_hash);
            smol::unblock(move || guard(&s.data_dir_real_path(), &name, &hash))
                .await
                .map_err(|e| Interrupt::Failed { retry: false, message: e.to_string() })?;
        }

        let resume = self.load_resume();
        if let Some(r) = &resume {
            self.downloaded = r.downloaded;
            self.uploaded = r.uploaded;
            self.completed_unix.set(self.completed_unix.get().or(r.completed_at));
        }
        // A download in progress (or completed without its hook started) in an earlier run
        // has `on_complete` due when it completes; content added complete has no resume state
        // and no hook. Only at the task's first start: later (a verify, a resume) its own flag
        // is the truth, and the file may not have caught up with a hook started a moment ago.
        if std::mem::take(&mut self.first_start) {
            let pieces = self.spec.descriptor.content.piece_count();
            self.complete_hook_due |= resume.as_ref().is_some_and(|r| r.completion_pending(pieces));
        }
        if self.spec.settings.paused {
            self.place = None;
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
        // Pieces may be missing: keep this torrent's place in the download line while checking.
        if plan.trusted.is_complete() {
            self.place = None;
        } else {
            self.take_place();
        }
        // What the check looks at, so that a root replaced during it is not claimed as checked.
        let checked = {
            let s = storage.clone();
            smol::unblock(move || s.root_id())
                .await
                .map_err(|e| Interrupt::Failed { retry: e.may_pass(), message: e.to_string() })?
        };
        self.run_check(commands, &storage, plan, full_check).await?;

        // Nothing at the content path is renamed or written unless this torrent owns it
        // (storage/claim.rs): what is there and does not verify completely is left alone.
        let owned = {
            let (s, claims, hash) =
                (storage.clone(), Claims::new(self.ctx.state.root()), self.spec.descriptor.info_hash);
            let (verified, recorded) = (self.have.count(), resume.as_ref().map(|r| r.stamps.clone()));
            smol::unblock(move || s.claim(&claims, hash, verified, recorded.as_deref(), checked)).await
        };
        owned.map_err(|e| Interrupt::Failed { retry: e.may_pass(), message: e.to_string() })?;

        if self.have.is_complete() {
            self.place = None;
            let s = storage.clone();
            smol::unblock(move || s.finish())
                .await
                .map_err(|e| Interrupt::Failed { retry: e.may_pass(), message: e.to_string() })?;
            self.save_now(true).await.map_err(|e| Interrupt::Failed { message: e.to_string(), retry: true })?;
            info!("{}: complete and verified; seeding from {}", self.name(), storage.root_path().display());
            self.run_complete_hook().await;
        } else {
            // From here on this is a download: its completion runs `on_complete`, whichever
            // way it comes (here, or at a later start's check after an interruption).
            self.complete_hook_due = true;
            self.wait_turn(commands).await?;
            let s = storage.clone();
            smol::unblock(move || s.prepare_download())
                .await
                .map_err(|e: StorageError| Interrupt::Failed { retry: e.may_pass(), message: e.to_string() })?;
            // From here on data may be written: the saved state must say "not clean".
            self.save_now(false).await.map_err(|e| Interrupt::Failed { message: e.to_string(), retry: true })?;
            info!("{}: {} of {} pieces verified; fetching the rest", self.name(), self.have.count(), self.have.len());
        }
        self.engine = Some(Engine::new(
            self.ctx.swarm.clone(),
            self.spec.descriptor.info_hash,
            self.shared.name.clone(),
            Arc::new(self.spec.descriptor.content.pieces.clone()),
            storage,
            &self.have,
            self.upload.clone(),
            self.download.clone(),
            self.spec.settings.max_peers as usize,
        ));
        self.publish(self.state(), None);
        // Idle until the transfer starts (once members are known), or seeding.
        let status = if self.have.is_complete() { PeerStatus::Seeding } else { PeerStatus::Idle };
        self.join_swarm(status).await;
        Ok(())
    }

    /// Joins the swarm (first time) or announces a new status.
    async fn join_swarm(&mut self, status: PeerStatus) {
        let hash = self.spec.descriptor.info_hash;
        if self.swarm.is_none() {
            self.swarm = Some(self.ctx.discovery.join(hash, status, &self.spec.descriptor.bootstrap).await);
        } else if self.announced != Some(status) {
            self.ctx.discovery.set_status(hash, status).await;
        }
        self.announced = Some(status);
    }

    /// Members of the swarm arrived: connect to them, and take part.
    async fn on_swarm_members(&mut self, peers: Vec<PeerRecord>) {
        if let Some(e) = self.engine.as_mut() {
            e.add_candidates(peers);
        }
        if self.announced == Some(PeerStatus::Idle) && !self.have.is_complete() {
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
        if full_check {
            self.verify_asked = false;
        }
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
        let descriptor = self.spec.descriptor.clone();
        let content = &descriptor.content;
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
                    Command::Settings(s) => {
                        self.apply(s, commands);
                        if self.spec.settings.paused {
                            // The check is not lost either: it runs again once resumed.
                            self.verify_asked |= full_check;
                            return Err(Interrupt::Paused);
                        }
                    }
                    // Not lost: a partial check is followed by the full one asked for.
                    Command::Verify => self.verify_asked |= !full_check,
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
            .map_err(|e| Interrupt::Failed { retry: e.may_pass(), message: e.to_string() })?;
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

    /// The job that makes the data durable, then records the verified set.
    fn save_job(&self, clean: bool) -> Option<impl Future<Output = Result<(), StateError>> + Send + 'static> {
        let storage = self.storage.clone()?;
        let state = self.ctx.state.clone();
        let hash = self.spec.descriptor.info_hash;
        let have = self.have.to_hex();
        let (d, u) = self.engine.as_ref().map(|e| e.totals()).unwrap_or((0, 0));
        let (downloaded, uploaded) = (self.downloaded + d, self.uploaded + u);
        let name = self.shared.name.clone();
        let completed_at = self.completed_unix.get();
        let complete_hook_due = self.complete_hook_due;
        Some(smol::unblock(move || {
            // The data the bitmap names must be durable before the bitmap is.
            storage.sync().map_err(|source| StateError::Sync { name: name.clone(), source })?;
            let resume = ResumeState {
                version: RESUME_VERSION,
                info_hash: hash,
                clean,
                placement: storage.placement(),
                have,
                stamps: storage.stamps(),
                downloaded,
                uploaded,
                completed_at,
                complete_hook_due,
            };
            state.save(StateKind::Resume, Some(&hash), &resume).map_err(|source| StateError::Save { name, source })
        }))
    }

    /// Saves the resume state and waits; `clean` only when no write can follow before the next
    /// save.
    async fn save_now(&mut self, clean: bool) -> Result<(), StateError> {
        if let Some(previous) = self.saving.take() {
            let _ = previous.await;
        }
        self.dirty = false;
        match self.save_job(clean) {
            Some(job) => job.await,
            None => Ok(()),
        }
    }

    /// Starts a background save of newly verified pieces, unless one is running.
    async fn save_in_background(&mut self) {
        if let Some(task) = &self.saving {
            if !task.is_finished() {
                return;
            }
            if let Some(task) = self.saving.take()
                && let Err(e) = task.await
            {
                warn!("{e}");
                self.dirty = true;
            }
        }
        if self.dirty
            && let Some(job) = self.save_job(false)
        {
            self.dirty = false;
            self.saving = Some(self.ctx.executor.spawn(job));
        }
    }

    /// Seeding, leeching or paused: transfer, and wait for instructions.
    async fn active(&mut self, commands: &Commands) -> Next {
        // One timer, reset after it fires (not re-created per event: pieces verify by the
        // thousand per second).
        // A verify asked while paused waits for the resume.
        if !self.spec.settings.paused && std::mem::take(&mut self.verify_asked) {
            return Next::Restart { full_check: true };
        }
        let mut timer = smol::Timer::after(TICK);
        loop {
            enum Woke {
                Command(Result<Command, super::mailbox::Closed>),
                Members(Result<Vec<PeerRecord>, async_channel::RecvError>),
                Engine(EngineEvent),
                Tick,
            }
            let swarm = self.swarm.clone();
            let engine = self.engine.as_mut();
            let woke = future::or(
                async { Woke::Command(commands.recv().await) },
                future::or(
                    async {
                        match swarm {
                            Some(rx) => Woke::Members(rx.recv().await),
                            None => future::pending().await,
                        }
                    },
                    future::or(
                        async {
                            match engine {
                                Some(e) => Woke::Engine(e.next().await),
                                None => future::pending().await,
                            }
                        },
                        async {
                            (&mut timer).await;
                            Woke::Tick
                        },
                    ),
                ),
            )
            .await;
            match woke {
                Woke::Command(Err(_)) => return Next::Stop { how: StopMode::Suspend, done: None },
                Woke::Command(Ok(Command::Stop { how, done })) => return Next::Stop { how, done: Some(done) },
                Woke::Command(Ok(Command::Verify)) if self.spec.settings.paused => self.verify_asked = true,
                Woke::Command(Ok(Command::Verify)) => return Next::Restart { full_check: true },
                Woke::Command(Ok(Command::Settings(settings))) => {
                    let pause_changed = settings.paused != self.spec.settings.paused;
                    self.apply(settings, commands);
                    if pause_changed {
                        return Next::Restart { full_check: false };
                    }
                }
                Woke::Members(Ok(peers)) => self.on_swarm_members(peers).await,
                Woke::Members(Err(_)) => self.swarm = None,
                Woke::Engine(EngineEvent::Verified(piece)) => {
                    self.have.set(piece);
                    self.error_hooked = false;
                    self.dirty = true;
                    if !self.fetched_any {
                        self.fetched_any = true;
                        self.shared.update(|s| s.first_piece_at = Some(Instant::now()));
                    }
                    if self.have.is_complete() {
                        if let Err(next) = self.complete().await {
                            return next;
                        }
                    } else if self.progress_published.elapsed() >= PROGRESS_EVERY {
                        self.progress_published = Instant::now();
                        self.publish(self.state(), None);
                    }
                }
                Woke::Engine(EngineEvent::StorageFailed(e)) => {
                    let _ = self.save_now(false).await;
                    return Next::Failed { retry: e.may_pass(), message: e.to_string() };
                }
                Woke::Tick => {
                    timer.set_after(TICK);
                    self.save_in_background().await;
                    if self.engine.is_some() {
                        self.publish(self.state(), None);
                    }
                }
            }
        }
    }

    /// Every piece is verified: make it durable, move it into place, seed.
    async fn complete(&mut self) -> Result<(), Next> {
        let storage = self.storage.clone().ok_or(Next::Restart { full_check: false })?;
        let s = storage.clone();
        if let Err(e) = smol::unblock(move || s.finish()).await {
            return Err(Next::Failed { retry: e.may_pass(), message: e.to_string() });
        }
        // With the `fault-injection` feature, `P2PD_FAULT_KILL_AT_COMPLETION` SIGKILLs p2pd here:
        // the content in place, its completion not yet recorded (tests of `on_complete`).
        #[cfg(feature = "fault-injection")]
        if std::env::var_os("P2PD_FAULT_KILL_AT_COMPLETION").is_some() {
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
        self.completed_unix.set(Some(unix_now()));
        // Recorded with the completion: a stop (or a failed save) before the hook starts
        // leaves it due at the next start.
        self.complete_hook_due = true;
        if let Err(e) = self.save_now(true).await {
            return Err(Next::Failed { message: e.to_string(), retry: true });
        }
        info!("{}: complete and verified; seeding from {}", self.name(), storage.root_path().display());
        if let Some(e) = self.engine.as_mut() {
            e.on_complete();
        }
        self.run_complete_hook().await;
        self.turn = None;
        self.publish(TorrentState::Seeding, None);
        self.join_swarm(PeerStatus::Seeding).await;
        Ok(())
    }

    /// Starts `on_complete` if a completion's hook is due, and records at once that it ran
    /// (so a restart or a check right after is no new completion). At least once per
    /// completion: a kill between the two runs it again at the next start.
    async fn run_complete_hook(&mut self) {
        if std::mem::take(&mut self.complete_hook_due) {
            self.ctx.fire_hook(&self.spec, HookEvent::Complete, None);
            if let Err(e) = self.save_now(true).await {
                // Saved again at the next tick.
                self.dirty = true;
                warn!("{e}");
            }
        }
    }

    /// Applies new settings (same data directory) and publishes them.
    fn apply(&mut self, settings: EffectiveSettings, commands: &Commands) {
        self.upload.set(settings.upload_rate);
        self.download.set(settings.download_rate);
        if let Some(e) = self.engine.as_mut() {
            e.set_max_peers(settings.max_peers as usize);
        }
        self.shared.update(|s| s.settings = settings.clone());
        // Published first: until now the supervisor reads the request (mailbox.rs).
        commands.settled();
        self.spec.settings = settings;
    }

    /// Ends transfers (keeping the counters) before a restart or a failure.
    async fn stop_engine(&mut self) {
        (self.place, self.turn) = (None, None);
        if let Some(mut e) = self.engine.take() {
            let (d, u) = e.totals();
            self.downloaded += d;
            self.uploaded += u;
            e.shutdown();
        }
        if let Some(task) = self.saving.take() {
            let _ = task.await;
        }
    }

    /// Leaves the swarm and flushes state (or deletes state, and maybe data) before the task
    /// ends.
    async fn stop(&mut self, how: StopMode) -> Result<(), StateError> {
        let hash = self.spec.descriptor.info_hash;
        let state_now = self.published.get();
        self.stop_engine().await;
        if self.swarm.take().is_some() {
            self.ctx.discovery.leave(hash).await;
        }
        if how == StopMode::Forget {
            let state = self.ctx.state.clone();
            let name = self.shared.name.clone();
            return smol::unblock(move || {
                // (Peer tables belong to discovery, which drops ours once we left.)
                state.remove(StateKind::Resume, Some(&hash)).map_err(|source| StateError::Remove { name, source })
            })
            .await;
        }
        // Only a torrent that finished checking knows its verified set completely; otherwise the
        // previous resume state stays as it is (it is still true).
        if !matches!(state_now, TorrentState::Leeching | TorrentState::Seeding) {
            return Ok(());
        }
        let result = self.save_now(true).await;
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
