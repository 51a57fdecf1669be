//! The supervisor: the one owner of the set of running torrents and of the files in
//! `torrents/`.
//!
//! It runs as a single task fed by a channel of [`Event`]s (control requests that change
//! state, reloads, shutdown) and handles them one at a time, so add, remove and reload never
//! race each other. It publishes every running torrent in [`DaemonShared`] for the control
//! server to read.
//!
//! Invariants:
//! - A torrent runs iff a file in `torrents/` that currently or last parsed validly names it,
//!   and no other file claimed its info hash first (by file name order at start-up).
//! - `add` replies only after the torrent file is durably written; `remove` only after it is
//!   durably deleted. Either survives SIGKILL right after the reply.
//! - An invalid file never stops a running torrent: its previous state is kept and the
//!   problem reported.

mod reload;

pub use reload::scan_torrent_files;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use log::{error, info, warn};
use sha2::{Digest, Sha256};

use crate::config::torrent_entry::{TorrentEntry, TorrentSettings};
use crate::config::{Config, Locations, TORRENTS_DIR};
use crate::control::protocol::{
    AddedReport, ErrorKind, ErrorReply, ReloadReport, RemovedReport, Request, Response, TorrentRef,
};
use crate::control::server::ControlCall;
use crate::descriptor::{Descriptor, InfoHash};
use crate::service::notify;
use crate::shared::DaemonShared;
use crate::state::atomic;
use crate::torrent::{EffectiveSettings, StopMode, TorrentContext, TorrentHandle, TorrentSpec};
use crate::units::ByteRate;

/// What the supervisor reacts to.
pub enum Event {
    Control(ControlCall),
    /// SIGHUP.
    Reload,
    /// SIGTERM or SIGINT.
    Shutdown,
}

/// What the supervisor knows about one file in `torrents/`.
#[derive(Debug, Clone)]
struct FileRecord {
    /// SHA-256 of the bytes last read; an unchanged file is not parsed again.
    fingerprint: [u8; 32],
    /// Settings from the last valid version of the file.
    settings: Option<TorrentSettings>,
    /// The torrent this file runs.
    running: Option<InfoHash>,
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
    torrents: BTreeMap<InfoHash, TorrentHandle>,
    /// Every file seen in `torrents/`, by file name.
    files: BTreeMap<String, FileRecord>,
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
    ) -> Supervisor {
        Supervisor { locations, config, verbosity, ctx, shared, torrents: BTreeMap::new(), files: BTreeMap::new() }
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
        let mut report = ReloadReport::default();
        self.sync_torrents(&mut report).await;
        for line in &report.rejected {
            error!("{line}");
        }
        info!("managing {} torrents", self.torrents.len());
    }

    /// Handles events until shutdown, then stops every torrent.
    pub async fn run(mut self, events: async_channel::Receiver<Event>) {
        while let Ok(event) = events.recv().await {
            match event {
                Event::Control(call) => {
                    let response = self.handle(call.request).await;
                    let _ = call.reply.send(response).await;
                }
                Event::Reload => {
                    let report = self.reload_notifying().await;
                    log_report(&report);
                }
                Event::Shutdown => break,
            }
        }
        self.shutdown().await;
    }

    async fn handle(&mut self, request: Request) -> Response {
        match request {
            Request::Add { descriptor, source, data_dir } => self.add(&descriptor, &source, data_dir).await,
            Request::Remove { id, delete_data } => self.remove(&id, delete_data).await,
            Request::Reload => {
                let report = self.reload_notifying().await;
                log_report(&report);
                Response::Reloaded(report)
            }
            Request::Verify { id } => match self.shared.resolve(&id) {
                Ok(t) => {
                    if let Some(h) = self.torrents.get(&t.info_hash) {
                        h.verify();
                    }
                    info!("{}: full verify requested", t.name);
                    Response::Verifying(TorrentRef { info_hash: t.info_hash.to_hex(), name: t.name.clone() })
                }
                Err(e) => Response::Error(e),
            },
            // Answered by the control server directly; kept for completeness.
            Request::Status { id } => {
                self.shared.status(id.as_deref()).map(|r| Response::Status(Box::new(r))).unwrap_or_else(Response::Error)
            }
            Request::Peers { id } => self.shared.peers(&id).map(Response::Peers).unwrap_or_else(Response::Error),
        }
    }

    fn effective(&self, s: &TorrentSettings) -> EffectiveSettings {
        EffectiveSettings {
            data_dir: s.data_dir.clone().unwrap_or_else(|| self.locations.data_dir.clone()),
            paused: s.paused,
            download_rate: s.download_rate.unwrap_or(ByteRate::UNLIMITED),
            upload_rate: s.upload_rate.unwrap_or(ByteRate::UNLIMITED),
            max_peers: s.max_peers.unwrap_or(self.config.limits.max_peers_per_torrent),
        }
    }

    fn start_torrent(&mut self, file: &str, descriptor: Arc<Descriptor>, settings: &TorrentSettings) {
        let spec = TorrentSpec { descriptor, settings: self.effective(settings), file: file.to_string() };
        let handle = TorrentHandle::start(spec, self.ctx.clone());
        let hash = handle.info_hash();
        self.shared.publish(handle.shared.clone());
        self.torrents.insert(hash, handle);
        if let Some(record) = self.files.get_mut(file) {
            record.running = Some(hash);
        }
    }

    async fn stop_torrent(&mut self, hash: &InfoHash, how: StopMode) -> Result<(), String> {
        let Some(handle) = self.torrents.remove(hash) else { return Ok(()) };
        self.shared.withdraw(hash);
        for record in self.files.values_mut() {
            if record.running == Some(*hash) {
                record.running = None;
            }
        }
        handle.stop(how).await
    }

    async fn add(&mut self, text: &str, source: &str, data_dir: Option<PathBuf>) -> Response {
        let descriptor = match Descriptor::parse(text) {
            Ok(d) => d,
            Err(e) => return failed(ErrorKind::Invalid, format!("{source}: {e}")),
        };
        let hash = descriptor.info_hash;
        if let Some(existing) = self.torrents.get(&hash) {
            return Response::Added(AddedReport {
                info_hash: hash.to_hex(),
                name: descriptor.content.name.clone(),
                already_present: true,
                file: self.torrents_dir().join(&existing.spec.file),
                data_dir: existing.spec.settings.data_dir.clone(),
            });
        }
        let data_dir = data_dir.unwrap_or_else(|| self.locations.data_dir.clone());
        if !data_dir.is_absolute() {
            return failed(ErrorKind::Invalid, format!("data directory `{}` must be absolute", data_dir.display()));
        }
        let entry = TorrentEntry {
            settings: TorrentSettings { data_dir: Some(data_dir.clone()), ..Default::default() },
            descriptor,
        };
        let file = entry.file_name();
        if let Some(record) = self.files.get(&file) {
            let why = record.error.clone().unwrap_or_else(|| "it names another torrent".into());
            return failed(
                ErrorKind::Failed,
                format!("torrents/{file} already exists and is not in effect ({why}); fix or remove it first"),
            );
        }
        let yaml = entry.to_yaml();
        let dir = self.torrents_dir();
        let target = dir.join(&file);
        let written = {
            let (target, bytes) = (target.clone(), yaml.clone().into_bytes());
            smol::unblock(move || {
                std::fs::create_dir_all(&dir)?;
                atomic::write_atomic_mode(&target, &bytes, 0o640)
            })
            .await
        };
        if let Err(e) = written {
            return failed(ErrorKind::Failed, format!("cannot write {}: {e}", target.display()));
        }
        self.files.insert(
            file.clone(),
            FileRecord {
                fingerprint: Sha256::digest(yaml.as_bytes()).into(),
                settings: Some(entry.settings.clone()),
                running: None,
                error: None,
            },
        );
        let name = entry.descriptor.content.name.clone();
        info!("{name}: added from {source} ({hash}), data in {}", data_dir.display());
        self.start_torrent(&file, Arc::new(entry.descriptor), &entry.settings);
        Response::Added(AddedReport { info_hash: hash.to_hex(), name, already_present: false, file: target, data_dir })
    }

    async fn remove(&mut self, id: &str, delete_data: bool) -> Response {
        let torrent = match self.shared.resolve(id) {
            Ok(t) => t,
            Err(e) => return Response::Error(e),
        };
        let hash = torrent.info_hash;
        let Some(file) = self.torrents.get(&hash).map(|h| h.spec.file.clone()) else {
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
        let how = if delete_data { StopMode::DeleteData } else { StopMode::Forget };
        let result = self.stop_torrent(&hash, how).await;
        info!("{}: removed ({hash}){}", torrent.name, if delete_data { ", data deleted" } else { "" });
        match result {
            Ok(()) => Response::Removed(RemovedReport {
                info_hash: hash.to_hex(),
                name: torrent.name.clone(),
                data_deleted: delete_data,
            }),
            Err(e) => failed(ErrorKind::Failed, format!("removed, but: {e}")),
        }
    }

    async fn reload_notifying(&mut self) -> ReloadReport {
        notify::reloading();
        let report = self.reload().await;
        notify::ready(&self.shared.summary());
        report
    }

    async fn shutdown(&mut self) {
        info!("stopping {} torrents", self.torrents.len());
        let handles: Vec<_> = std::mem::take(&mut self.torrents).into_values().collect();
        let stops: Vec<_> = handles
            .into_iter()
            .map(|h| {
                self.shared.withdraw(&h.info_hash());
                self.ctx.executor.spawn(h.stop(StopMode::Suspend))
            })
            .collect();
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
