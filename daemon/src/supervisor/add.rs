//! `p2pctl add`: a descriptor becomes a torrent file in `torrents/` (written durably before the
//! answer) and a running torrent; `--adopt` records that the torrent owns what is at its
//! content path. The rules on content paths and data directories are in [`super::content`].

use std::path::PathBuf;
use std::sync::Arc;

use log::info;
use sha2::{Digest, Sha256};

use super::content::{self, DataDirRefused, InOwnDir, PathInUse, TorrentLabel};
use super::{FileRecord, Supervisor, failed};
use crate::config::torrent_entry::{TorrentEntry, TorrentSettings};
use crate::control::access::Credentials;
use crate::control::protocol::{AddedReport, ErrorKind, Response};
use crate::descriptor::{Descriptor, DescriptorError, InfoHash};
use crate::state::atomic;
use crate::storage::claim::{Claim, ClaimError, ClaimKind};

/// Why `add` was refused.
#[derive(Debug, thiserror::Error)]
pub(super) enum AddError {
    #[error("{source_name}: {error}")]
    Descriptor { source_name: String, error: DescriptorError },
    #[error("data directory `{}` must be absolute", .0.display())]
    RelativeDataDir(PathBuf),
    #[error(transparent)]
    DataDir(#[from] DataDirRefused),
    #[error(transparent)]
    PathInUse(#[from] Box<PathInUse>),
    #[error(transparent)]
    OwnDir(#[from] Box<InOwnDir>),
    #[error(
        "--adopt from {who} refused: only root and p2pd's own user ({daemon_user}) may adopt content, \
         since adopted content becomes the torrent's to overwrite, cut and delete; add it without \
         --adopt (content that verifies completely, at its described length, is taken as it is), or \
         run p2pctl as root or {daemon_user}"
    )]
    AdoptRefused { who: String, daemon_user: String },
    #[error("torrents/{file} already exists and is not in effect ({why}); fix or remove it first")]
    FileNotInEffect { file: String, why: String },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot record the adoption of {}: {source}", path.display())]
    Adopt { path: PathBuf, source: ClaimError },
}

impl AddError {
    fn kind(&self) -> ErrorKind {
        match self {
            AddError::Descriptor { .. } | AddError::RelativeDataDir(_) | AddError::OwnDir(_) => ErrorKind::Invalid,
            AddError::DataDir(_) | AddError::AdoptRefused { .. } => ErrorKind::Refused,
            AddError::PathInUse(_)
            | AddError::FileNotInEffect { .. }
            | AddError::Write { .. }
            | AddError::Adopt { .. } => ErrorKind::Failed,
        }
    }
}

impl From<AddError> for Response {
    fn from(e: AddError) -> Response {
        failed(e.kind(), e.to_string())
    }
}

/// What `add` was asked to do.
pub(super) struct AddRequest {
    pub descriptor: String,
    pub source: String,
    pub data_dir: Option<PathBuf>,
    pub adopt: bool,
    pub cache: bool,
    pub client: Credentials,
}

/// A user, for messages: `user nobody (uid 65534)`, or `uid 65534` without a name.
fn user_label(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => format!("user {} (uid {uid})", u.name),
        _ => format!("uid {uid}"),
    }
}

impl Supervisor {
    pub(super) async fn add(&mut self, request: AddRequest) -> Result<Response, AddError> {
        let AddRequest { descriptor: text, source, data_dir, adopt, cache, client } = request;
        // Up to 16 MiB of YAML: parsed off the one network thread (see `runtime::run`).
        let descriptor = smol::unblock(move || Descriptor::parse(&text))
            .await
            .map_err(|error| AddError::Descriptor { source_name: source.clone(), error })?;
        let hash = descriptor.info_hash;
        let label = TorrentLabel { name: descriptor.content.name.clone(), info_hash: hash };
        // Before anything else, for a torrent already running too.
        if adopt && !client.may_adopt() {
            let uid = nix::unistd::Uid::effective();
            let daemon_user = match nix::unistd::User::from_uid(uid) {
                Ok(Some(u)) => u.name,
                _ => format!("uid {uid}"),
            };
            let refused = AddError::AdoptRefused { who: user_label(client.uid), daemon_user };
            info!("add {label} from uid {} (pid {}) refused: {refused}", client.uid, client.pid);
            return Err(refused);
        }
        if let Some(existing) = self.running.get(&hash) {
            let (data_dir, name) = (existing.data_dir(), descriptor.content.name.clone());
            let adopted = adopt && self.adopt_running(hash, &data_dir, &name).await?;
            if adopted {
                info!("{label}: adopted what is at {}; checking it again", data_dir.join(&name).display());
                if let Some(h) = self.running.get(&hash) {
                    h.verify();
                }
            }
            let (existing, is_cache) = self
                .running
                .get(&hash)
                .map(|h| (h.file().to_string(), h.shared.live().settings.cache))
                .unwrap_or_default();
            return Ok(Response::Added(AddedReport {
                info_hash: hash.to_hex(),
                name,
                already_present: true,
                file: self.torrents_dir().join(existing),
                data_dir,
                adopted,
                cache: Some(is_cache),
            }));
        }
        let data_dir = match data_dir {
            None => self.locations.data_dir.clone(),
            Some(d) if !d.is_absolute() => return Err(AddError::RelativeDataDir(d)),
            Some(d) if client.may_use_any_directory() => d,
            Some(d) => {
                let roots = self.locations.data_roots.clone();
                let checked = smol::unblock(move || content::check_data_dir(&d, &roots)).await;
                if let Err(e) = &checked {
                    info!("add {label} from uid {} (pid {}) refused: {e}", client.uid, client.pid);
                }
                checked?
            }
        };
        let entry = TorrentEntry {
            settings: TorrentSettings {
                data_dir: Some(data_dir.clone()),
                // The download queue goes in the order torrents were added.
                queue: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .ok()
                    .and_then(|d| u64::try_from(d.as_millis()).ok()),
                cache,
                ..Default::default()
            },
            descriptor,
        };
        let path = self.content_path(&entry.settings, &entry.descriptor).await;
        self.check_own_dirs(&path, &label).await?;
        self.path_in_use(&path, label.clone(), None)?;
        let file = entry.file_name();
        if let Some(record) = self.files.get(&file) {
            let why = record.error.clone().unwrap_or_else(|| "it names another torrent".into());
            return Err(AddError::FileNotInEffect { file, why });
        }
        if adopt {
            self.save_adoption(hash, &data_dir, &entry.descriptor.content.name).await?;
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
        if let Err(source) = written {
            if adopt {
                let claims = self.claims.clone();
                let _ = smol::unblock(move || claims.remove(&hash)).await;
            }
            return Err(AddError::Write { path: target, source });
        }
        self.files.insert(
            file.clone(),
            FileRecord {
                fingerprint: Sha256::digest(yaml.as_bytes()).into(),
                settings: Some(entry.settings.clone()),
                error: None,
            },
        );
        let name = entry.descriptor.content.name.clone();
        let adopting = if adopt { ", adopting what is there" } else { "" };
        let caching = if cache { ", as cache (may be evicted)" } else { "" };
        info!("{name}: added from {source} ({hash}), data in {}{adopting}{caching}", data_dir.display());
        self.start_torrent(&file, Arc::new(entry.descriptor), &entry.settings, path);
        Ok(Response::Added(AddedReport {
            info_hash: hash.to_hex(),
            name,
            already_present: false,
            file: target,
            data_dir,
            adopted: adopt,
            cache: Some(cache),
        }))
    }

    /// Records that torrent `hash` owns whatever is at `name` in `data_dir` (`--adopt`).
    async fn save_adoption(&self, hash: InfoHash, data_dir: &std::path::Path, name: &str) -> Result<(), AddError> {
        let (claims, dir, name) = (self.claims.clone(), data_dir.to_path_buf(), name.to_string());
        let path = data_dir.join(&name);
        smol::unblock(move || {
            let claim = Claim::new(hash, &dir, &name, ClaimKind::Adopted)
                .map_err(|source| ClaimError { path: dir.clone(), source })?;
            claims.save(&claim)
        })
        .await
        .map_err(|source| AddError::Adopt { path, source })
    }

    /// `add --adopt` of a torrent already running: adopts what is at its content path unless
    /// that is the root it owns already; returns whether it adopted.
    async fn adopt_running(&self, hash: InfoHash, data_dir: &std::path::Path, name: &str) -> Result<bool, AddError> {
        let (claims, dir, n) = (self.claims.clone(), data_dir.to_path_buf(), name.to_string());
        let owned = smol::unblock(move || claims.owns(&hash, &dir, &n)).await;
        if owned {
            return Ok(false);
        }
        self.save_adoption(hash, data_dir, name).await?;
        Ok(true)
    }
}
