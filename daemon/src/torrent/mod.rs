//! One torrent's life: open its storage, check what is on disk, then seed or fetch.
//!
//! Each torrent is one task ([`task`]) that owns all of the torrent's mutable state — storage,
//! the verified-piece set, its resume file — and is driven by [`Command`]s from the supervisor.
//! What the outside may read is published in [`TorrentShared`]: what never changes while the
//! task runs (descriptor, its file in `torrents/`, data directory) and a status cell behind a
//! `std::sync::Mutex` that the task updates and the control server copies. The lock is never
//! held across an `.await` or any I/O, so `p2pctl status` never waits on a torrent's disk.
//!
//! The task owns its settings: the supervisor asks for new ones through the mailbox, the task
//! applies them and publishes what it runs with; [`TorrentHandle::settings`] reads that (or
//! the request not yet applied), so the supervisor keeps no copy of its own.

pub mod check;
mod mailbox;
pub mod queue;
pub mod resume;
mod task;

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_lite::FutureExt;
use smol::lock::Semaphore;

use crate::control::protocol::{TorrentState, TorrentStatus};
use crate::descriptor::{Descriptor, InfoHash};
use crate::discovery::driver::DiscoveryHandle;
use crate::hooks::{HookEvent, HookTorrent};
use crate::state::StateDir;
use crate::swarm::SwarmContext;
use crate::units::ByteRate;

/// A torrent's settings after the daemon's defaults are applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveSettings {
    pub data_dir: PathBuf,
    pub paused: bool,
    pub download_rate: ByteRate,
    pub upload_rate: ByteRate,
    pub max_peers: u32,
    /// The programs run on its events.
    pub hooks: crate::config::hooks::HookCommands,
    /// Its place in the download queue (lower first; see [`queue`]).
    pub queue_rank: u64,
    /// It may be evicted (`retention:`).
    pub cache: bool,
}

/// Everything needed to run a torrent.
#[derive(Debug, Clone)]
pub struct TorrentSpec {
    pub descriptor: Arc<Descriptor>,
    pub settings: EffectiveSettings,
    /// Name of its file in `torrents/`.
    pub file: String,
}

impl TorrentSpec {
    /// The command of this torrent's hook for `event` (empty: none) and what it is told.
    pub fn hook(&self, event: HookEvent, error: Option<String>) -> (&crate::config::hooks::Argv, HookTorrent) {
        let hooks = &self.settings.hooks;
        let argv = match event {
            HookEvent::Complete => &hooks.on_complete,
            HookEvent::Error => &hooks.on_error,
            HookEvent::Removed => &hooks.on_removed,
        };
        let content = &self.descriptor.content;
        let torrent = HookTorrent {
            info_hash: self.descriptor.info_hash,
            name: content.name.clone(),
            data_path: self.settings.data_dir.join(&content.name),
            error,
        };
        (argv, torrent)
    }
}

/// Daemon-wide services a torrent task uses.
#[derive(Clone)]
pub struct TorrentContext {
    /// Where tasks are spawned (the daemon owns it).
    pub executor: Arc<smol::Executor<'static>>,
    pub state: StateDir,
    /// Limits how many torrents hash their data at once (disk and SHA are shared).
    pub check_slots: Arc<Semaphore>,
    /// Problems with state files, shown in `status` (`node.state_warnings`).
    pub warnings: Arc<Mutex<Vec<String>>>,
    /// Finding and announcing to the swarm.
    pub discovery: DiscoveryHandle,
    /// The transfer engines' shared parts (peer port, global limits).
    pub swarm: SwarmContext,
    /// Refuses content that would meet p2pd's own files — given where the opened data
    /// directory really is, the content name and the info hash — with the sentence to show.
    /// `add` and reload check the configured path; this is checked at every start, since a
    /// directory on that path can be swapped for a symbolic link afterwards.
    pub content_guard: ContentGuard,
    /// Runs the operator's programs on torrents' events.
    pub hooks: crate::hooks::Hooks,
    /// Turns to download (`limits.max_active_downloads`).
    pub queue: queue::DownloadQueue,
}

impl TorrentContext {
    /// Runs `spec`'s hook for `event`, if it has one (in the background).
    pub fn fire_hook(&self, spec: &TorrentSpec, event: HookEvent, error: Option<String>) {
        let (argv, torrent) = spec.hook(event, error);
        self.hooks.fire(event, argv, torrent);
    }
}

/// Why a torrent's state could not be made durable, saved or removed (each names the torrent).
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{name}: cannot make the data durable: {source}")]
    Sync { name: String, source: crate::storage::StorageError },
    #[error("{name}: cannot save resume state: {source}")]
    Save { name: String, source: std::io::Error },
    #[error("{name}: removing state: {source}")]
    Remove { name: String, source: std::io::Error },
}

/// See [`TorrentContext::content_guard`].
pub type ContentGuard = Arc<
    dyn Fn(&std::path::Path, &str, &InfoHash) -> Result<(), Box<crate::supervisor::content::InOwnDir>> + Send + Sync,
>;

/// Instructions from the supervisor.
#[derive(Debug)]
pub enum Command {
    /// Recheck every piece.
    Verify,
    /// New settings (same data directory).
    Settings(EffectiveSettings),
    /// Stop, then reply. The torrent's state is flushed, or deleted if it is being removed
    /// (`forget`); `delete_data` also deletes its content.
    Stop { how: StopMode, done: async_channel::Sender<Result<(), StateError>> },
}

/// What happens to a stopping torrent's state and data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// The daemon is stopping: save state for the next start.
    Suspend,
    /// The torrent is no longer managed: delete its resume and peer state, keep the data.
    /// (Deleting the data is the supervisor's, and only for content the torrent owns.)
    Forget,
}

/// The part of a torrent's state that others may read.
#[derive(Debug)]
pub struct TorrentShared {
    pub info_hash: InfoHash,
    pub descriptor: Arc<Descriptor>,
    /// Name of its file in `torrents/`.
    pub file: String,
    /// When this task started (for `running_secs`).
    pub started: Instant,
    pub name: String,
    pub length: u64,
    pub pieces_total: u64,
    status: Mutex<LiveStatus>,
}

/// Mutable status published by the torrent task.
#[derive(Debug, Clone)]
pub struct LiveStatus {
    pub state: TorrentState,
    pub error: Option<String>,
    pub pieces_done: u64,
    pub bytes_done: u64,
    pub downloaded: u64,
    pub uploaded: u64,
    pub download_rate: u64,
    pub upload_rate: u64,
    /// Connected and banned peers.
    pub peers: Vec<crate::swarm::PeerView>,
    /// The settings the task runs with (its data directory never changes while it runs).
    pub settings: EffectiveSettings,
    /// When this run first verified a piece fetched from a peer.
    pub first_piece_at: Option<Instant>,
    /// When this run reached `seeding`.
    pub completed_at: Option<Instant>,
    /// When the content was first complete and verified here (Unix seconds; kept in the
    /// resume state across restarts).
    pub completed_unix: Option<u64>,
}

impl TorrentShared {
    fn new(spec: &TorrentSpec) -> TorrentShared {
        let c = &spec.descriptor.content;
        TorrentShared {
            info_hash: spec.descriptor.info_hash,
            descriptor: spec.descriptor.clone(),
            file: spec.file.clone(),
            started: Instant::now(),
            name: c.name.clone(),
            length: c.total_length,
            pieces_total: c.pieces.len() as u64,
            status: Mutex::new(LiveStatus {
                state: TorrentState::Checking,
                error: None,
                pieces_done: 0,
                bytes_done: 0,
                downloaded: 0,
                uploaded: 0,
                download_rate: 0,
                upload_rate: 0,
                peers: Vec::new(),
                settings: spec.settings.clone(),
                first_piece_at: None,
                completed_at: None,
                completed_unix: None,
            }),
        }
    }

    /// Changes the published status.
    pub fn update(&self, f: impl FnOnce(&mut LiveStatus)) {
        // The cell holds plain values: a panic elsewhere cannot leave it half-updated.
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s);
    }

    /// A copy of the published status.
    pub fn live(&self) -> LiveStatus {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The status as the control protocol reports it.
    pub fn snapshot(&self) -> TorrentStatus {
        let s = self.live();
        let remaining = self.length.saturating_sub(s.bytes_done);
        let eta_secs = (s.state == TorrentState::Leeching && s.download_rate > 0).then(|| remaining / s.download_rate);
        TorrentStatus {
            info_hash: self.info_hash.to_hex(),
            name: self.name.clone(),
            state: s.state,
            length: self.length,
            bytes_done: s.bytes_done,
            pieces_done: s.pieces_done,
            pieces_total: self.pieces_total,
            peers: s.peers.iter().filter(|p| p.link.is_some()).count() as u32,
            download_rate: s.download_rate,
            upload_rate: s.upload_rate,
            downloaded: s.downloaded,
            uploaded: s.uploaded,
            eta_secs,
            error: s.error,
            running_secs: self.started.elapsed().as_secs(),
            first_piece_secs: s.first_piece_at.map(|t| t.duration_since(self.started).as_secs_f64()),
            completed_secs: s.completed_at.map(|t| t.duration_since(self.started).as_secs_f64()),
            cache: s.settings.cache,
            completed_at: s.completed_unix,
            data_dir: s.settings.data_dir,
            file: self.file.clone(),
        }
    }
}

/// A bug in one torrent's task ends that torrent only: it shows as `error` with what happened,
/// leaves its swarm, and the supervisor can still stop or remove it (the panic is not carried
/// to it). What the task held (engine, files) is dropped with its future.
async fn contain_panic(shared: &TorrentShared, discovery: &DiscoveryHandle, why: String) {
    let message = format!(
        "internal error: this torrent's task panicked ({why}); this is a bug in p2pd, please report it. \
         Restart p2pd (or remove and add the torrent again) to resume"
    );
    log::error!("{}: {message}", shared.name);
    shared.update(|s| {
        s.state = TorrentState::Error;
        s.error = Some(message);
        s.peers.clear();
        (s.download_rate, s.upload_rate) = (0, 0);
    });
    discovery.leave(shared.info_hash).await;
}

/// The supervisor's handle on a running torrent task.
pub struct TorrentHandle {
    pub shared: Arc<TorrentShared>,
    commands: mailbox::Outbox,
    task: smol::Task<()>,
}

impl TorrentHandle {
    /// Starts the torrent's task.
    pub fn start(spec: TorrentSpec, ctx: TorrentContext) -> TorrentHandle {
        let shared = Arc::new(TorrentShared::new(&spec));
        let (tx, rx) = mailbox::mailbox();
        let (executor, discovery, published) = (ctx.executor.clone(), ctx.discovery.clone(), shared.clone());
        // The whole body guarded too: dropping what the panic left behind could panic again.
        let task = executor.spawn(crate::tasks::logging_panics("torrent", async move {
            let run = AssertUnwindSafe(async {
                // With the `fault-injection` feature, `P2PD_FAULT_PANIC_TORRENT=NAME` makes the
                // task of the torrent named NAME panic as it starts (tests of containing a bug).
                #[cfg(feature = "fault-injection")]
                if std::env::var("P2PD_FAULT_PANIC_TORRENT").is_ok_and(|n| n == published.name) {
                    panic!("fault injection (P2PD_FAULT_PANIC_TORRENT)");
                }
                task::run(spec, ctx, published.clone(), rx).await
            });
            if let Err(payload) = run.catch_unwind().await {
                contain_panic(&published, &discovery, crate::tasks::panic_message(&*payload)).await;
            }
        }));
        TorrentHandle { shared, commands: tx, task }
    }

    pub fn info_hash(&self) -> InfoHash {
        self.shared.info_hash
    }

    pub fn descriptor(&self) -> &Arc<Descriptor> {
        &self.shared.descriptor
    }

    /// Name of its file in `torrents/`.
    pub fn file(&self) -> &str {
        &self.shared.file
    }

    /// The settings the torrent runs with, or the latest asked for and not yet applied.
    pub fn settings(&self) -> EffectiveSettings {
        // The request first: the task publishes what it applied before it clears the request,
        // so this order never sees settings older than the latest asked.
        self.commands.asked_settings().unwrap_or_else(|| self.shared.live().settings)
    }

    /// The data directory it runs in (fixed for the life of the task).
    pub fn data_dir(&self) -> PathBuf {
        self.shared.live().settings.data_dir
    }

    /// Asks for a full recheck.
    pub fn verify(&self) {
        self.commands.send(Command::Verify);
    }

    /// Applies new settings that keep the data directory.
    pub fn apply_settings(&self, settings: EffectiveSettings) {
        debug_assert_eq!(settings.data_dir, self.data_dir(), "a new data directory needs a new task");
        self.commands.send(Command::Settings(settings));
    }

    /// Stops the task after it has flushed (or deleted) its state; returns any error it hit.
    pub async fn stop(self, how: StopMode) -> Result<(), StateError> {
        let (done_tx, done_rx) = async_channel::bounded(1);
        self.commands.send(Command::Stop { how, done: done_tx });
        // Our side goes now: a task that is gone (or goes before taking the stop) drops the
        // mailbox with it, and so the reply's sender, so the wait below cannot hang.
        drop(self.commands);
        let result = done_rx.recv().await.unwrap_or(Ok(()));
        self.task.await;
        result
    }
}
