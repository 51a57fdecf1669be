//! `p2pctl pause`, `resume` and `set`: a torrent's settings changed by request, recorded in its
//! file in `torrents/` first (atomically, so a reload or a restart keeps them), then applied
//! live the way a reload applies an edited file.
//!
//! Invariant: after an answer, the file, the supervisor's record of it (so a reload sees no
//! change to apply again) and the running torrent agree; when the file cannot be written,
//! nothing changed.

use sha2::{Digest, Sha256};

use super::{FileRecord, Supervisor, failed};
use crate::config::torrent_entry::{TorrentEntry, TorrentSettings};
use crate::control::protocol::{ErrorKind, ReloadReport, Response, SettingsChange, UpdatedReport};
use crate::state::atomic;
use crate::units::ByteRate;

/// `settings` with `change` made; `first` is the queue place before every other torrent's.
fn changed(mut settings: TorrentSettings, change: &SettingsChange, first: u64) -> TorrentSettings {
    // A torrent's own limit of "unlimited" is no limit of its own: the key is left out.
    let own = |rate: ByteRate| (rate != ByteRate::UNLIMITED).then_some(rate);
    if let Some(paused) = change.paused {
        settings.paused = paused;
    }
    if let Some(rate) = change.download_rate {
        settings.download_rate = own(rate);
    }
    if let Some(rate) = change.upload_rate {
        settings.upload_rate = own(rate);
    }
    if let Some(n) = change.max_peers {
        settings.max_peers = Some(n);
    }
    if change.priority && settings.queue.is_none_or(|q| q > first) {
        settings.queue = Some(first);
    }
    settings
}

impl Supervisor {
    pub(super) async fn set(&mut self, id: &str, change: SettingsChange) -> Response {
        let torrent = match self.shared.resolve(id) {
            Ok(t) => t,
            Err(e) => return Response::Error(e),
        };
        let hash = torrent.info_hash;
        let Some(handle) = self.running.get(&hash) else {
            return failed(ErrorKind::NotFound, format!("no torrent matches `{id}`"));
        };
        let (file, descriptor) = (handle.file().to_string(), handle.descriptor().clone());
        let path = self.torrents_dir().join(&file);
        let report = |changes| {
            Response::Updated(UpdatedReport {
                info_hash: hash.to_hex(),
                name: torrent.name.clone(),
                changes,
                file: path.clone(),
            })
        };
        if change.is_empty() {
            return failed(ErrorKind::Invalid, "nothing to set: name at least one setting");
        }
        let Some(record) = self.files.get(&file).cloned() else {
            return failed(ErrorKind::Failed, format!("torrents/{file} is not known; run `p2pctl reload` first"));
        };
        if let Some(e) = &record.error {
            // The file on disk is not the one in effect: writing it would throw the operator's
            // edit away, and applying to it would apply to something else.
            return failed(
                ErrorKind::Failed,
                format!("torrents/{file} has an error ({e}); fix it and reload before changing settings"),
            );
        }
        // The file as it is now: an edit not yet reloaded is the operator's, never overwritten.
        let on_disk = {
            let path = path.clone();
            smol::unblock(move || std::fs::read(&path)).await
        };
        match on_disk {
            Ok(bytes) if <[u8; 32]>::from(Sha256::digest(&bytes)) == record.fingerprint => {}
            Ok(_) => {
                return failed(
                    ErrorKind::Failed,
                    format!(
                        "torrents/{file} changed since it was last read; run `p2pctl reload` first, then try again"
                    ),
                );
            }
            Err(e) => return failed(ErrorKind::Failed, format!("cannot read {}: {e}", path.display())),
        }
        let old = record.settings.clone().unwrap_or_default();
        // Before every other torrent (ties go by info hash, so strictly before).
        let first = self
            .files
            .iter()
            .filter(|(name, _)| **name != file)
            .filter_map(|(_, r)| r.settings.as_ref()?.queue)
            .min()
            .map_or(0, |q| q.saturating_sub(1));
        let new = changed(old.clone(), &change, first);
        if new == old {
            return report(Vec::new());
        }
        let entry = TorrentEntry { settings: new.clone(), descriptor: (*descriptor).clone() };
        let text = entry.to_yaml();
        let written = {
            let (target, bytes) = (path.clone(), text.clone().into_bytes());
            smol::unblock(move || atomic::write_atomic_mode(&target, &bytes, 0o640)).await
        };
        if let Err(e) = written {
            return failed(ErrorKind::Failed, format!("cannot write {}: {e}; nothing changed", path.display()));
        }
        let fingerprint: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        self.files.insert(file.clone(), FileRecord { fingerprint, settings: Some(new), error: None });
        let mut applied = ReloadReport::default();
        self.refresh_settings(&file, &mut applied).await;
        for line in &applied.applied {
            log::info!("set: {line}");
        }
        if !applied.rejected.is_empty() {
            return failed(ErrorKind::Failed, applied.rejected.join("; "));
        }
        report(applied.applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_touches_only_what_it_names_and_unlimited_drops_the_key() {
        let old = TorrentSettings {
            data_dir: Some("/d".into()),
            paused: false,
            download_rate: Some(ByteRate(Some(1000))),
            upload_rate: Some(ByteRate(Some(2000))),
            max_peers: None,
            hooks: Default::default(),
            queue: None,
            cache: true,
        };
        let change = SettingsChange {
            paused: Some(true),
            download_rate: Some(ByteRate::UNLIMITED),
            max_peers: Some(7),
            ..SettingsChange::default()
        };
        let new = changed(old.clone(), &change, 0);
        assert!(new.paused);
        assert_eq!(new.download_rate, None);
        assert_eq!(new.upload_rate, old.upload_rate, "not named, not touched");
        assert_eq!(new.max_peers, Some(7));
        assert_eq!(new.data_dir, old.data_dir);
        assert!(new.cache);
    }
}
