//! Reload: bring the running daemon in line with `p2pd.yaml` and `torrents/`.
//!
//! Untouched torrents are not interrupted: an unchanged file (same bytes) is not even parsed
//! again, and a torrent restarts only when its info hash or data directory changes. Settings
//! that can change live (rates, limits, pause) are handed to the running torrent.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::content::TorrentLabel;
use super::{FileRecord, Supervisor};
use crate::config::torrent_entry::TorrentEntry;
use crate::config::{Config, TORRENTS_DIR};
use crate::control::access::AccessPolicy;
use crate::control::protocol::ReloadReport;
use crate::control::server;
use crate::descriptor::{DESCRIPTOR_YAML_LIMITS, Descriptor, InfoHash};
use crate::state::atomic::TEMP_MARKER;
use crate::torrent::StopMode;
use crate::yaml;

/// One file of `torrents/` as read from disk.
struct Scanned {
    name: String,
    content: Result<String, yaml::ReadError>,
}

/// The torrents directory could not be listed.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", dir.display())]
pub struct ScanError {
    dir: std::path::PathBuf,
    source: std::io::Error,
}

/// What is wrong with one torrent file.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error(transparent)]
    Read(#[from] yaml::ReadError),
    #[error(transparent)]
    Parse(#[from] crate::config::torrent_entry::TorrentEntryError),
}

/// Reads every `*.yaml` file of `dir` (not hidden, not temporaries), sorted by name.
fn scan(dir: &Path) -> Result<Vec<Scanned>, ScanError> {
    let unreadable = |source| ScanError { dir: dir.to_path_buf(), source };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(unreadable(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(unreadable)?;
        let Ok(name) = entry.file_name().into_string() else { continue };
        if name.starts_with('.') || !name.ends_with(".yaml") || name.contains(TEMP_MARKER) {
            continue;
        }
        let content = yaml::read_bounded(&entry.path(), DESCRIPTOR_YAML_LIMITS.max_bytes);
        out.push(Scanned { name, content });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// A torrent file's name and its info hash, or what is wrong with it.
pub type FileCheck = (String, Result<InfoHash, FileError>);

/// Validates every torrent file of `dir` (for `p2pd --check-config`).
pub fn scan_torrent_files(dir: &Path) -> Result<Vec<FileCheck>, ScanError> {
    Ok(scan(dir)?
        .into_iter()
        .map(|s| {
            let parsed =
                s.content.map_err(FileError::from).and_then(|t| Ok(TorrentEntry::parse(&t).map(|e| e.info_hash())?));
            (s.name, parsed)
        })
        .collect())
}

impl Supervisor {
    /// Re-reads `p2pd.yaml` and `torrents/`.
    pub(super) async fn reload(&mut self) -> ReloadReport {
        let mut report = ReloadReport::default();
        let dir = self.locations.config_dir.clone();
        match smol::unblock(move || Config::load(&dir)).await {
            Ok(new) => self.apply_config(new, &mut report).await,
            Err(e) => report.rejected.push(format!("{e}; keeping the previous configuration")),
        }
        self.sync_torrents(&mut report).await;
        report
    }

    async fn apply_config(&mut self, mut new: Config, report: &mut ReloadReport) {
        let old = self.config.clone();
        macro_rules! restart_only {
            ($field:ident, $show:expr) => {
                if new.$field != old.$field {
                    report.needs_restart.push(format!(
                        "{}: {} → {} (restart p2pd to apply)",
                        stringify!($field),
                        $show(&old.$field),
                        $show(&new.$field)
                    ));
                    new.$field = old.$field.clone();
                }
            };
        }
        let path =
            |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string()).unwrap_or("(default)".into());
        // Port 0 asks for any free port: the address it got is the one in effect (shown as
        // such), and a configuration now naming it changes nothing.
        let in_effect = self.shared.node.listen;
        if new.listen != old.listen && new.listen != in_effect {
            report.needs_restart.push(format!("listen: {in_effect} → {} (restart p2pd to apply)", new.listen));
        }
        new.listen = old.listen;
        restart_only!(state_dir, path);
        restart_only!(control_socket, path);
        restart_only!(syslog, |b: &bool| b.to_string());
        restart_only!(syslog_socket, path);

        if new.log_level != old.log_level {
            log::set_max_level(new.log_level.raised(self.verbosity).to_filter());
            report.applied.push(format!("log_level: {:?} → {:?}", old.log_level, new.log_level).to_lowercase());
        }
        if new.control_group != old.control_group {
            let show = |g: &Option<String>| g.clone().unwrap_or_else(|| "(none)".into());
            match AccessPolicy::new(new.control_group.as_deref()) {
                Ok(policy) => {
                    if let Some(gid) = policy.group_gid()
                        && let Err(e) = server::set_group(&self.locations.control_socket, gid)
                    {
                        report.rejected.push(format!(
                            "control_group: cannot give the socket to group {}: {e}; keeping {}",
                            show(&new.control_group),
                            show(&old.control_group)
                        ));
                        new.control_group = old.control_group.clone();
                    } else {
                        self.shared.set_access(policy);
                        report.applied.push(format!(
                            "control_group: {} → {}",
                            show(&old.control_group),
                            show(&new.control_group)
                        ));
                    }
                }
                Err(e) => {
                    report.rejected.push(format!("{e}; keeping {}", show(&old.control_group)));
                    new.control_group = old.control_group.clone();
                }
            }
        }
        if new.data_dir != old.data_dir || new.data_roots != old.data_roots {
            let env = crate::config::locations::Environment::current();
            let resolved = crate::config::Locations::resolve(&self.locations.config_dir, &new, &env);
            if resolved.data_dir != self.locations.data_dir {
                report.applied.push(format!(
                    "data_dir: {} → {} (torrents without their own data_dir use it)",
                    self.locations.data_dir.display(),
                    resolved.data_dir.display()
                ));
                self.locations.data_dir = resolved.data_dir;
            }
            if resolved.data_roots != self.locations.data_roots {
                let show = |roots: &[std::path::PathBuf]| {
                    roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", ")
                };
                report.applied.push(format!(
                    "data_roots: [{}] → [{}]",
                    show(&self.locations.data_roots),
                    show(&resolved.data_roots)
                ));
                self.locations.data_roots = resolved.data_roots;
            }
        }
        if new.limits != old.limits {
            let sw = &self.ctx.swarm;
            sw.upload.set(new.limits.upload_rate);
            sw.download.set(new.limits.download_rate);
            sw.max_connections.store(new.limits.max_peers as usize, std::sync::atomic::Ordering::SeqCst);
            sw.upload_slots.store(new.limits.upload_slots as usize, std::sync::atomic::Ordering::SeqCst);
            sw.registry.set_max_per_ip(new.limits.max_connections_per_ip as usize);
            sw.in_flight.set(new.limits.max_in_flight_per_peer.0, new.limits.max_in_flight_per_torrent.0);
            self.ctx.queue.set_limit(new.limits.max_active_downloads);
            report.applied.push(format!("limits: {}", describe_limits(&old, &new)));
        }
        if new.metrics_listen != old.metrics_listen {
            new.metrics_listen = self.move_metrics_endpoint(old.metrics_listen, new.metrics_listen, report).await;
        }
        if new.hooks.timeout_secs != old.hooks.timeout_secs || new.hooks.max_concurrent != old.hooks.max_concurrent {
            self.ctx.hooks.configure(&new.hooks);
            report.applied.push(format!(
                "hooks: timeout_secs {} → {}, max_concurrent {} → {}",
                old.hooks.timeout_secs, new.hooks.timeout_secs, old.hooks.max_concurrent, new.hooks.max_concurrent
            ));
        }
        if new.retention != old.retention {
            let (o, n) = (&old.retention, &new.retention);
            report.applied.push(format!(
                "retention: high_water {} → {}, low_water {} → {}, min_seed_time {} → {}",
                o.high_water, n.high_water, o.low_water, n.low_water, o.min_seed_time, n.min_seed_time
            ));
        }
        if new.bootstrap != old.bootstrap {
            report.applied.push(format!("bootstrap: {} addresses", new.bootstrap.len()));
        }
        self.config = new;
    }

    /// Moves the metrics endpoint from `old` to `new` (`metrics_listen` changed); returns the
    /// address it listens on now: `new`, or `old` when `new` cannot be bound.
    async fn move_metrics_endpoint(
        &self,
        old: Option<SocketAddr>,
        new: Option<SocketAddr>,
        report: &mut ReloadReport,
    ) -> Option<SocketAddr> {
        use crate::metrics::http::bind;
        let show = |a: Option<SocketAddr>| a.map(|a| a.to_string()).unwrap_or_else(|| "(off)".into());
        let mut socket = new.map(bind).transpose();
        // Another address on the same port: the old socket holds the port, so it is closed
        // first, and bound again if the new one still cannot be.
        if let (Err(e), Some(old_addr), Some(new_addr)) = (&socket, old, new)
            && e.kind() == std::io::ErrorKind::AddrInUse
            && old_addr.port() == new_addr.port()
        {
            self.metrics.close().await;
            socket = bind(new_addr).map(Some);
            if let Err(e) = &socket
                && let Err(again) = bind(old_addr).map(|back| self.metrics.replace(Some(back)))
            {
                report.rejected.push(format!(
                    "metrics_listen: cannot listen on {new_addr}: {e}, nor on {old_addr} again: {again}; \
                     the metrics endpoint is off"
                ));
                return None;
            }
        }
        match socket {
            Ok(socket) => {
                self.metrics.replace(socket);
                report.applied.push(format!("metrics_listen: {} → {}", show(old), show(new)));
                new
            }
            Err(e) => {
                report.rejected.push(format!(
                    "metrics_listen: cannot listen on {}: {e}; keeping {}",
                    show(new),
                    show(old)
                ));
                old
            }
        }
    }

    /// Makes the running torrents match `torrents/`.
    pub(super) async fn sync_torrents(&mut self, report: &mut ReloadReport) {
        let dir = self.locations.config_dir.join(TORRENTS_DIR);
        let scanned = match smol::unblock(move || scan(&dir)).await {
            Ok(s) => s,
            Err(e) => {
                report.rejected.push(format!("cannot read the torrents directory: {e}; keeping every torrent as is"));
                return;
            }
        };

        // Files that disappeared: stop what they ran.
        let present: BTreeSet<&str> = scanned.iter().map(|s| s.name.as_str()).collect();
        let gone: Vec<String> = self.files.keys().filter(|n| !present.contains(n.as_str())).cloned().collect();
        for name in gone {
            self.files.remove(&name);
            if let Some(hash) = self.running.run_by(&name) {
                let torrent = self.running.get(&hash).map(|h| h.shared.name.clone()).unwrap_or_default();
                self.forget_torrent(&hash).await;
                report.applied.push(format!("stopped {torrent} ({}): torrents/{name} was removed", short(&hash)));
            }
        }

        for file in scanned {
            let name = file.name;
            let text = match file.content {
                Ok(t) => t,
                Err(e) => {
                    self.reject(&name, [0; 32], format!("torrents/{name}: {e}"), report);
                    continue;
                }
            };
            let fingerprint: [u8; 32] = Sha256::digest(text.as_bytes()).into();
            let unchanged = self.files.get(&name).is_some_and(|r| r.fingerprint == fingerprint && r.error.is_none());
            if unchanged {
                self.refresh_settings(&name, report).await;
                continue;
            }
            match TorrentEntry::parse(&text) {
                Ok(entry) => self.accept(&name, fingerprint, entry, report).await,
                Err(e) => self.reject(&name, fingerprint, format!("torrents/{name}: {e}"), report),
            }
        }
    }

    fn reject(&mut self, name: &str, fingerprint: [u8; 32], message: String, report: &mut ReloadReport) {
        let record =
            self.files.entry(name.to_string()).or_insert(FileRecord { fingerprint, settings: None, error: None });
        record.fingerprint = fingerprint;
        let kept = if self.running.run_by(name).is_some() { " (the torrent keeps running as before)" } else { "" };
        record.error = Some(message.clone());
        report.rejected.push(format!("{message}{kept}"));
    }

    /// A file whose current version is valid.
    async fn accept(&mut self, name: &str, fingerprint: [u8; 32], entry: TorrentEntry, report: &mut ReloadReport) {
        let hash = entry.info_hash();
        let previous = self.running.run_by(name);
        if let Some(other) = self.running.get(&hash).map(|h| h.file().to_string()).filter(|other| other != name) {
            self.reject(
                name,
                fingerprint,
                format!("torrents/{name}: torrent {} is already managed by torrents/{other}", short(&hash)),
                report,
            );
            return;
        }
        // A new torrent may not take a content path another one uses (the one running keeps it).
        let path = if previous == Some(hash) {
            None
        } else {
            let path = self.content_path(&entry.settings, &entry.descriptor).await;
            let label = TorrentLabel { name: entry.descriptor.content.name.clone(), info_hash: hash };
            if let Err(e) = self.check_own_dirs(&path, &label).await {
                self.reject(name, fingerprint, format!("torrents/{name}: {e}"), report);
                return;
            }
            if let Err(e) = self.path_in_use(&path, label, previous) {
                self.reject(name, fingerprint, format!("torrents/{name}: {e}"), report);
                return;
            }
            Some(path)
        };
        let record = FileRecord { fingerprint, settings: Some(entry.settings.clone()), error: None };
        self.files.insert(name.to_string(), record);
        match (previous, path) {
            (Some(old), _) if old == hash => self.refresh_settings(name, report).await,
            (_, None) => {}
            (Some(old), Some(path)) => {
                self.forget_torrent(&old).await;
                self.start_torrent(name, Arc::new(entry.descriptor.clone()), &entry.settings, path);
                report.applied.push(format!(
                    "torrents/{name} now names {} ({}); stopped {}",
                    entry.descriptor.content.name,
                    short(&hash),
                    short(&old)
                ));
            }
            (None, Some(path)) => {
                let descriptor: Arc<Descriptor> = Arc::new(entry.descriptor);
                report.applied.push(format!(
                    "started {} ({}) from torrents/{name}",
                    descriptor.content.name,
                    short(&hash)
                ));
                self.start_torrent(name, descriptor, &entry.settings, path);
            }
        }
    }

    /// Gives a running torrent the settings its file (and the config defaults) now imply:
    /// live when possible, by restarting it when its data directory changed.
    pub(super) async fn refresh_settings(&mut self, name: &str, report: &mut ReloadReport) {
        let Some(record) = self.files.get(name).cloned() else { return };
        let (Some(hash), Some(settings)) = (self.running.run_by(name), record.settings) else { return };
        let wanted = self.effective(&settings);
        let Some(handle) = self.running.get(&hash) else { return };
        let current = handle.settings();
        if current == wanted {
            return;
        }
        let torrent = handle.shared.name.clone();
        if current.data_dir != wanted.data_dir {
            let descriptor = handle.descriptor().clone();
            let path = self.content_path(&settings, &descriptor).await;
            let label = TorrentLabel { name: torrent.clone(), info_hash: hash };
            let refused = match self.check_own_dirs(&path, &label).await {
                Err(e) => Some(e.to_string()),
                Ok(()) => self.path_in_use(&path, label, Some(hash)).err().map(|e| e.to_string()),
            };
            if let Some(e) = refused {
                report
                    .rejected
                    .push(format!("torrents/{name}: {e} ({torrent} keeps running in {})", current.data_dir.display()));
                return;
            }
            let _ = self.stop_torrent(&hash, StopMode::Suspend).await;
            self.start_torrent(name, descriptor, &settings, path);
            report.applied.push(format!(
                "{torrent}: data directory {} → {} (restarted)",
                current.data_dir.display(),
                wanted.data_dir.display()
            ));
        } else {
            let changes = describe_settings(&current, &wanted);
            handle.apply_settings(wanted);
            report.applied.push(format!("{torrent}: {changes}"));
        }
    }
}

fn short(hash: &InfoHash) -> String {
    hash.to_hex()[..12].to_string()
}

fn describe_settings(old: &crate::torrent::EffectiveSettings, new: &crate::torrent::EffectiveSettings) -> String {
    let mut parts = Vec::new();
    if old.paused != new.paused {
        parts.push(if new.paused { "paused".to_string() } else { "resumed".to_string() });
    }
    if old.download_rate != new.download_rate {
        parts.push(format!("download_rate {} → {}", old.download_rate, new.download_rate));
    }
    if old.upload_rate != new.upload_rate {
        parts.push(format!("upload_rate {} → {}", old.upload_rate, new.upload_rate));
    }
    if old.max_peers != new.max_peers {
        parts.push(format!("max_peers {} → {}", old.max_peers, new.max_peers));
    }
    if old.queue_rank != new.queue_rank {
        parts.push("moved in the download queue".to_string());
    }
    if old.cache != new.cache {
        parts.push(if new.cache { "cache (may be evicted)" } else { "not cache" }.to_string());
    }
    for (event, o, n) in [
        ("on_complete", &old.hooks.on_complete, &new.hooks.on_complete),
        ("on_error", &old.hooks.on_error, &new.hooks.on_error),
        ("on_removed", &old.hooks.on_removed, &new.hooks.on_removed),
    ] {
        if o != n {
            let show = |a: &Vec<String>| if a.is_empty() { "(none)".to_string() } else { a.join(" ") };
            parts.push(format!("hooks.{event} {} → {}", show(o), show(n)));
        }
    }
    parts.join(", ")
}

fn describe_limits(old: &Config, new: &Config) -> String {
    let (o, n) = (&old.limits, &new.limits);
    let mut parts = Vec::new();
    if o.download_rate != n.download_rate {
        parts.push(format!("download_rate {} → {}", o.download_rate, n.download_rate));
    }
    if o.upload_rate != n.upload_rate {
        parts.push(format!("upload_rate {} → {}", o.upload_rate, n.upload_rate));
    }
    if o.max_peers != n.max_peers {
        parts.push(format!("max_peers {} → {}", o.max_peers, n.max_peers));
    }
    if o.max_active_downloads != n.max_active_downloads {
        parts.push(format!("max_active_downloads {} → {}", o.max_active_downloads, n.max_active_downloads));
    }
    if o.max_peers_per_torrent != n.max_peers_per_torrent {
        parts.push(format!("max_peers_per_torrent {} → {}", o.max_peers_per_torrent, n.max_peers_per_torrent));
    }
    if o.upload_slots != n.upload_slots {
        parts.push(format!("upload_slots {} → {}", o.upload_slots, n.upload_slots));
    }
    if o.max_connections_per_ip != n.max_connections_per_ip {
        parts.push(format!("max_connections_per_ip {} → {}", o.max_connections_per_ip, n.max_connections_per_ip));
    }
    if o.max_in_flight_per_peer != n.max_in_flight_per_peer {
        parts.push(format!("max_in_flight_per_peer {} → {}", o.max_in_flight_per_peer, n.max_in_flight_per_peer));
    }
    if o.max_in_flight_per_torrent != n.max_in_flight_per_torrent {
        parts.push(format!(
            "max_in_flight_per_torrent {} → {}",
            o.max_in_flight_per_torrent, n.max_in_flight_per_torrent
        ));
    }
    parts.join(", ")
}
