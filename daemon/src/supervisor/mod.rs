//! The supervisor: the one owner of the set of running torrents and of the files in
//! `torrents/`.
//!
//! It runs as a single task fed by the control server's calls that change state (a bounded
//! channel) and by the [`Command`]s of the program running it (reload, shutdown: `main.rs`
//! sends them for signals), and handles them one at a time,
//! so add, remove and reload never race each other. It publishes every running torrent in [`DaemonShared`] for the control
//! server to read.
//!
//! Invariants:
//! - A torrent runs iff a file in `torrents/` that currently or last parsed validly names it,
//!   and no other file claimed its info hash or its content path first (by file name order
//!   at start-up; running torrents keep theirs on reload). See [`content`] for the rules on
//!   content paths and on which data directories a client may choose.
//! - Content is deleted only where the torrent owns it (`storage::claim`); a torrent's claim
//!   is forgotten when the torrent stops being managed, and at start-up when no torrent file
//!   names it (one deleted while p2pd was stopped).
//! - Only root and p2pd's own user may `add --adopt`; no content path meets p2pd's own state or
//!   configuration directory (see [`content`]).
//! - `add` replies only after the torrent file is durably written; `remove` only after it is
//!   durably deleted. Either survives SIGKILL right after the reply.
//! - An invalid file never stops a running torrent: its previous state is kept and the
//!   problem reported.

mod add;
pub mod content;
mod drain;
mod reload;
mod retention;
mod running;
mod settings;
mod watchdog;

pub use reload::scan_torrent_files;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use futures_lite::future;
use log::{error, info, warn};

use crate::config::torrent_entry::TorrentSettings;
use crate::config::{Config, Locations, TORRENTS_DIR};
use crate::control::access::Credentials;
use crate::control::protocol::{ErrorKind, ErrorReply, ReloadReport, RemovedReport, Response, TorrentRef};
use crate::control::server::{Change, ControlCall};
use crate::descriptor::{Descriptor, InfoHash};
use crate::hooks::{HookEvent, HookTorrent};
use crate::service::notify;
use crate::shared::DaemonShared;
use crate::state::atomic;
use crate::storage::claim::{self, ClaimError, Claims, Deletion};
use crate::torrent::{EffectiveSettings, StopMode, TorrentContext, TorrentHandle, TorrentSpec};
use crate::units::ByteRate;
use add::AddRequest;
use content::{ContentPath, InOwnDir, OwnDirs, PathInUse, TorrentLabel};
use running::Running;
use watchdog::fed_while;

/// What the program running the daemon asks of it (`main.rs` sends these for signals).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Re-read the configuration and `torrents/` (SIGHUP).
    Reload,
    /// Stop every torrent and return (SIGTERM, SIGINT).
    Shutdown,
}

/// What the supervisor knows about one file in `torrents/`.
#[derive(Debug, Clone)]
struct FileRecord {
    /// SHA-256 of the bytes last read; an unchanged file is not parsed again.
    fingerprint: [u8; 32],
    /// Settings from the last valid version of the file.
    settings: Option<TorrentSettings>,
    /// The problem with the current version, if it is not in effect.
    error: Option<String>,
}

pub struct Supervisor {
    locations: Locations,
    /// The configuration in effect (restart-only keys keep their start-up values).
    config: Config,
    /// `-v` count, added to `log_level`.
    verbosity: u8,
    ctx: TorrentContext,
    shared: Arc<DaemonShared>,
    /// The running torrents (the one map; it keeps `shared` in step).
    running: Running,
    /// Which content each torrent owns (`STATE/claims/`).
    claims: Claims,
    /// Every file seen in `torrents/`, by file name.
    files: BTreeMap<String, FileRecord>,
    /// The HTTP metrics endpoint, given a new socket when `metrics_listen` changes.
    metrics: crate::metrics::Endpoint,
    /// The drain in progress (`p2pctl drain`).
    drain: Option<drain::Drain>,
    /// Retention's measurement in flight and the problems it reported.
    retention: retention::RetentionRounds,
}

/// Why claims of removed torrents were not forgotten at start-up.
#[derive(Debug, thiserror::Error)]
enum SweepError {
    #[error("cannot read the torrents directory ({0})")]
    TorrentsDir(#[from] reload::ScanError),
    #[error("torrents/{file} cannot be read ({why}), and may name any torrent")]
    Unreadable { file: String, why: reload::FileError },
    #[error(transparent)]
    Claim(#[from] ClaimError),
}

fn failed(kind: ErrorKind, message: impl Into<String>) -> Response {
    Response::Error(ErrorReply { kind, message: message.into() })
}

impl Supervisor {
    pub fn new(
        locations: Locations,
        config: Config,
        verbosity: u8,
        ctx: TorrentContext,
        shared: Arc<DaemonShared>,
        metrics: crate::metrics::Endpoint,
    ) -> Supervisor {
        let claims = Claims::new(ctx.state.root());
        Supervisor {
            metrics,
            locations,
            config,
            verbosity,
            ctx,
            running: Running::new(shared.clone()),
            shared,
            claims,
            files: BTreeMap::new(),
            drain: None,
            retention: retention::RetentionRounds::new(),
        }
    }

    fn torrents_dir(&self) -> PathBuf {
        self.locations.config_dir.join(TORRENTS_DIR)
    }

    /// Loads `torrents/` at start-up and logs what happened.
    pub async fn load(&mut self) {
        // A crash in the middle of writing a torrent file leaves a temporary file (ours only:
        // the name carries the marker); the torrent file itself is the old or the new one.
        match crate::state::atomic::remove_stale_temporaries(&self.torrents_dir()) {
            Ok(0) => {}
            Ok(n) => info!("removed {n} temporary files left in {} by a crash", self.torrents_dir().display()),
            Err(e) => warn!("cannot clean temporary files in {}: {e}", self.torrents_dir().display()),
        }
        match self.claims.remove_stale_temporaries() {
            Ok(0) => {}
            Ok(n) => info!("removed {n} temporary claim files left by a crash"),
            Err(e) => warn!("cannot clean temporary claim files: {e}"),
        }
        let mut report = ReloadReport::default();
        self.sync_torrents(&mut report).await;
        for line in &report.rejected {
            error!("{line}");
        }
        self.forget_unnamed_claims().await;
        info!("managing {} torrents", self.running.len());
    }

    /// Forgets the claims on content of every info hash that no file in `torrents/` names: a
    /// torrent file deleted while p2pd was stopped leaves its claim behind, which would
    /// otherwise "own" whatever is put at that path later. Keeps every claim if a torrent file
    /// cannot be read (it may name any torrent).
    async fn forget_unnamed_claims(&self) {
        let (dir, claims) = (self.torrents_dir(), self.claims.clone());
        let swept = smol::unblock(move || {
            let mut named = BTreeSet::new();
            for (file, hash) in scan_torrent_files(&dir).map_err(SweepError::TorrentsDir)? {
                named.insert(hash.map_err(|why| SweepError::Unreadable { file, why })?);
            }
            Ok::<_, SweepError>(claims.retain(&named)?)
        })
        .await;
        match swept {
            Ok(forgotten) => {
                for (hash, on) in forgotten {
                    let on = on.map(|p| format!(" on {}", p.display())).unwrap_or_default();
                    info!(
                        "forgot the claim of torrent {}{on}: no file in torrents/ names it (removed while p2pd \
                         was stopped); what is there is no longer p2pd's",
                        &hash.to_hex()[..12]
                    );
                }
            }
            Err(e) => warn!("keeping every claim on content: {e}"),
        }
    }

    /// Handles control calls and commands, one at a time, until [`Command::Shutdown`] (or the
    /// command channel closes), then refuses further calls and stops every torrent. Commands go
    /// first: a stream of calls cannot hold up a shutdown.
    pub async fn run(
        mut self,
        calls: async_channel::Receiver<ControlCall>,
        commands: async_channel::Receiver<Command>,
    ) {
        enum Next {
            Call(ControlCall),
            Command(Command),
            Watchdog,
            Retention,
            Measured(retention::Measured),
            Drain,
        }
        // systemd's watchdog (`WatchdogSec=`) is fed from this loop, between requests and,
        // during one, for up to WATCHDOG_GRACE timeouts (a slow disk deleting a large tree
        // legitimately takes a while): a supervisor wedged longer (a hung disk, a bug) stops
        // feeding it, and systemd restarts p2pd.
        let watchdog = notify::watchdog_interval();
        let mut fed = std::time::Instant::now();
        let mut retention = smol::Timer::interval(retention::CHECK_EVERY);
        let mut drain_ticks = smol::Timer::interval(drain::CHECK_EVERY);
        if watchdog.is_some() {
            notify::watchdog();
        }
        loop {
            let due = async {
                match watchdog {
                    Some(every) => {
                        smol::Timer::at(fed + every).await;
                        Some(Next::Watchdog)
                    }
                    None => future::pending().await,
                }
            };
            let requests = future::or(async { commands.recv().await.ok().map(Next::Command) }, async {
                match calls.recv().await {
                    Ok(call) => Some(Next::Call(call)),
                    // The control server has stopped: only a command can come now.
                    Err(_) => future::pending().await,
                }
            });
            let draining = self.drain.is_some();
            let due = future::or(due, async {
                futures_lite::StreamExt::next(&mut retention).await;
                Some(Next::Retention)
            });
            let due = future::or(due, async { Some(Next::Measured(self.retention.measured().await)) });
            let due = future::or(due, async {
                if !draining {
                    future::pending::<()>().await;
                }
                futures_lite::StreamExt::next(&mut drain_ticks).await;
                Some(Next::Drain)
            });
            let next = future::or(due, requests).await;
            if watchdog.is_some_and(|every| fed.elapsed() >= every) {
                notify::watchdog();
                fed = std::time::Instant::now();
            }
            match next {
                Some(Next::Watchdog) => {}
                Some(Next::Retention) => self.start_retention_round(),
                Some(Next::Measured(m)) => fed_while(watchdog, self.finish_retention_round(m)).await,
                Some(Next::Drain) => {
                    if fed_while(watchdog, self.drain_done()).await {
                        break;
                    }
                }
                Some(Next::Call(call)) => {
                    let response = fed_while(watchdog, self.handle(call.change, call.client)).await;
                    match self.drain.as_mut().filter(|d| d.waiting) {
                        // A drain that waits is answered when it ends.
                        Some(d) => (d.waiting, d.reply) = (false, Some(call.reply)),
                        None => {
                            let _ = call.reply.send(response).await;
                        }
                    }
                }
                Some(Next::Command(Command::Reload)) if self.drain.is_some() => {
                    warn!("SIGHUP ignored: p2pd is draining (`p2pctl drain`) and stops when done");
                }
                Some(Next::Command(Command::Reload)) => {
                    let report = fed_while(watchdog, self.reload_notifying()).await;
                    log_report(&report);
                }
                Some(Next::Command(Command::Shutdown)) | None => break,
            }
        }
        self.shared.set_phase(crate::shared::Phase::Stopping);
        // Clients waiting with a change hear "shutting down" now, not after every torrent stopped
        // (a call dropped unanswered drops its reply channel).
        calls.close();
        while calls.try_recv().is_ok() {}
        self.shutdown().await;
        self.drain_answered().await;
    }

    async fn handle(&mut self, change: Change, client: Credentials) -> Response {
        let starts = match &change {
            Change::Add { .. } => Some("adds no torrents"),
            Change::Reload => Some("does not reload"),
            Change::Set { settings, .. } if settings.paused == Some(false) => Some("resumes no torrents"),
            Change::Set { settings, .. } if settings.paused == Some(true) => Some("pauses no torrents it seeds"),
            Change::Verify { .. } => Some("verifies no torrents (a failed piece would start a download)"),
            _ => None,
        };
        if let Some(refused) = starts.and_then(|what| self.refused_while_draining(what)) {
            return refused;
        }
        match change {
            Change::Add { descriptor, source, data_dir, adopt, cache } => {
                let request = AddRequest { descriptor, source, data_dir, adopt, cache, client };
                self.add(request).await.unwrap_or_else(Response::from)
            }
            Change::Remove { id, delete_data } => self.remove(&id, delete_data).await,
            Change::Reload => {
                let report = self.reload_notifying().await;
                log_report(&report);
                Response::Reloaded(report)
            }
            Change::Verify { id } => match self.shared.resolve(&id) {
                Ok(t) => {
                    if let Some(h) = self.running.get(&t.info_hash) {
                        h.verify();
                    }
                    info!("{}: full verify requested", t.name);
                    Response::Verifying(TorrentRef { info_hash: t.info_hash.to_hex(), name: t.name.clone() })
                }
                Err(e) => Response::Error(e),
            },
            Change::Set { id, settings } => self.set(&id, settings).await,
            Change::Drain { min_copies, timeout_secs, wait } => self.start_drain(min_copies, timeout_secs, wait).await,
        }
    }

    fn effective(&self, s: &TorrentSettings) -> EffectiveSettings {
        EffectiveSettings {
            data_dir: s.data_dir.clone().unwrap_or_else(|| self.locations.data_dir.clone()),
            paused: s.paused,
            download_rate: s.download_rate.unwrap_or(ByteRate::UNLIMITED),
            upload_rate: s.upload_rate.unwrap_or(ByteRate::UNLIMITED),
            max_peers: s.max_peers.unwrap_or(self.config.limits.max_peers_per_torrent),
            hooks: crate::config::hooks::HookCommands::resolve(&self.config.hooks, &s.hooks),
            queue_rank: s.queue.unwrap_or(u64::MAX),
            cache: s.cache,
        }
    }

    /// Where `settings` put `descriptor`'s content (resolving links on the blocking pool).
    async fn content_path(&self, settings: &TorrentSettings, descriptor: &Descriptor) -> ContentPath {
        let (dir, name) = (self.effective(settings).data_dir, descriptor.content.name.clone());
        smol::unblock(move || ContentPath::resolve(&dir, &name)).await
    }

    /// p2pd's own directories, which no content path may meet.
    fn own_dirs(&self) -> OwnDirs {
        OwnDirs {
            state_dir: self.locations.state_dir.clone(),
            config_dir: self.locations.config_dir.clone(),
            data_dir: self.locations.data_dir.clone(),
        }
    }

    /// Refuses a content path that meets p2pd's own directories (resolving them on the
    /// blocking pool).
    async fn check_own_dirs(&self, path: &ContentPath, label: &TorrentLabel) -> Result<(), Box<InOwnDir>> {
        let (path, label, own) = (path.clone(), label.clone(), self.own_dirs());
        smol::unblock(move || content::check_own_dirs(&path, &label, &own)).await
    }

    /// The running torrent (other than `except`) whose content path meets `path`.
    fn path_in_use(
        &self,
        path: &ContentPath,
        new: TorrentLabel,
        except: Option<InfoHash>,
    ) -> Result<(), Box<PathInUse>> {
        let Some((hash, theirs)) = self
            .running
            .paths()
            .filter(|(h, _)| Some(**h) != except && **h != new.info_hash)
            .find_map(|(h, p)| path.overlap(p).map(|theirs| (*h, theirs)))
        else {
            return Ok(());
        };
        let handle = self.running.get(&hash);
        Err(Box::new(PathInUse {
            path: path.complete.clone(),
            new,
            existing: TorrentLabel { name: handle.map(|h| h.shared.name.clone()).unwrap_or_default(), info_hash: hash },
            existing_path: theirs.to_path_buf(),
            existing_file: handle.map(|h| h.file().to_string()).unwrap_or_default(),
        }))
    }

    fn start_torrent(
        &mut self,
        file: &str,
        descriptor: Arc<Descriptor>,
        settings: &TorrentSettings,
        path: ContentPath,
    ) {
        let spec = TorrentSpec { descriptor, settings: self.effective(settings), file: file.to_string() };
        self.running.insert(TorrentHandle::start(spec, self.ctx.clone()), path);
    }

    async fn stop_torrent(&mut self, hash: &InfoHash, how: StopMode) -> Result<(), crate::torrent::StateError> {
        let Some(handle) = self.running.remove(hash) else { return Ok(()) };
        handle.stop(how).await
    }

    /// The `on_removed` hook of a running torrent and what it is told (taken before it stops).
    fn removed_hook(&self, hash: &InfoHash) -> Option<(crate::config::hooks::Argv, HookTorrent)> {
        let h = self.running.get(hash)?;
        let name = h.descriptor().content.name.clone();
        let torrent = HookTorrent { info_hash: *hash, data_path: h.data_dir().join(&name), name, error: None };
        Some((h.settings().hooks.on_removed, torrent))
    }

    /// Stops a torrent that is no longer managed: its state and its claim on the content go
    /// (problems are logged; the torrent is gone either way); the content stays.
    async fn forget_torrent(&mut self, hash: &InfoHash) {
        let removed_hook = self.removed_hook(hash);
        if let Err(e) = self.stop_torrent(hash, StopMode::Forget).await {
            warn!("{e}");
        }
        if let Some((argv, t)) = removed_hook {
            self.ctx.hooks.fire(HookEvent::Removed, &argv, t);
        }
        let (claims, hash) = (self.claims.clone(), *hash);
        if let Err(e) = smol::unblock(move || claims.remove(&hash)).await {
            warn!("cannot forget which content {hash} owned: {e}");
        }
    }

    async fn remove(&mut self, id: &str, delete_data: bool) -> Response {
        let torrent = match self.shared.resolve(id) {
            Ok(t) => t,
            Err(e) => return Response::Error(e),
        };
        let hash = torrent.info_hash;
        let Some((file, data_dir, descriptor)) =
            self.running.get(&hash).map(|h| (h.file().to_string(), h.data_dir(), h.descriptor().clone()))
        else {
            return failed(ErrorKind::NotFound, format!("no torrent matches `{id}`"));
        };
        let path = self.torrents_dir().join(&file);
        let removed = {
            let path = path.clone();
            smol::unblock(move || atomic::remove_durably(&path)).await
        };
        if let Err(e) = removed {
            return failed(
                ErrorKind::Failed,
                format!("cannot remove {}: {e}; the torrent keeps running", path.display()),
            );
        }
        self.files.remove(&file);
        let removed_hook = self.removed_hook(&hash);
        // Stopped first, so that nothing writes while the content is deleted; deleted only
        // where the torrent owns it.
        let stopped = self.stop_torrent(&hash, StopMode::Forget).await;
        let claims = self.claims.clone();
        let deletion = smol::unblock(move || {
            let (dir, content) = (&data_dir, &descriptor.content);
            if delete_data {
                claim::delete_owned(&claims, hash, dir, content).map(Some)
            } else {
                claims.remove(&hash).map(|()| None).map_err(|e| crate::storage::StorageError::Io {
                    context: e.path.display().to_string(),
                    source: e.source,
                })
            }
        })
        .await;
        let (data_deleted, data_kept, what) = match &deletion {
            Ok(Some(Deletion::Deleted)) => (true, None, ", data deleted".to_string()),
            Ok(Some(Deletion::Kept(why))) => (false, Some(why.clone()), format!(", {why}")),
            _ => (false, None, String::new()),
        };
        info!("{}: removed ({hash}){what}", torrent.name);
        if let Some((argv, t)) = removed_hook {
            self.ctx.hooks.fire(HookEvent::Removed, &argv, t);
        }
        // What went wrong is told to the client, in words.
        let result = stopped
            .map_err(|e| e.to_string())
            .and(deletion.map(|_| ()).map_err(|e| format!("{}: deleting data: {e}", torrent.name)));
        match result {
            Ok(()) => Response::Removed(RemovedReport {
                info_hash: hash.to_hex(),
                name: torrent.name.clone(),
                data_deleted,
                data_kept,
            }),
            Err(e) => failed(ErrorKind::Failed, format!("removed, but: {e}")),
        }
    }

    async fn reload_notifying(&mut self) -> ReloadReport {
        notify::reloading();
        // With the `fault-injection` feature, `P2PD_FAULT_RELOAD_HANGS` wedges the supervisor
        // in a reload (for tests of the watchdog).
        #[cfg(feature = "fault-injection")]
        if std::env::var_os("P2PD_FAULT_RELOAD_HANGS").is_some() {
            future::pending::<()>().await;
        }
        let report = self.reload().await;
        notify::ready(&self.shared.summary());
        report
    }

    async fn shutdown(&mut self) {
        info!("stopping {} torrents", self.running.len());
        // With the `fault-injection` feature, `P2PD_FAULT_STOP_DELAY_MS` holds the shutdown
        // here (for tests of `/ready` while stopping).
        #[cfg(feature = "fault-injection")]
        if let Some(ms) = std::env::var("P2PD_FAULT_STOP_DELAY_MS").ok().and_then(|v| v.parse().ok()) {
            smol::Timer::after(std::time::Duration::from_millis(ms)).await;
        }
        let stops: Vec<_> =
            self.running.drain().into_iter().map(|h| self.ctx.executor.spawn(h.stop(StopMode::Suspend))).collect();
        for stop in stops {
            if let Err(e) = stop.await {
                warn!("{e}");
            }
        }
    }
}

fn log_report(report: &ReloadReport) {
    for line in &report.applied {
        info!("reload: {line}");
    }
    for line in &report.needs_restart {
        warn!("reload: {line}");
    }
    for line in &report.rejected {
        error!("reload: {line}");
    }
    if report.applied.is_empty() && report.needs_restart.is_empty() && report.rejected.is_empty() {
        info!("reload: nothing changed");
    }
}
