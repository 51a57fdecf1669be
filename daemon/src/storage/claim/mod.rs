//! Which content a torrent owns: the durable record that tells p2pd's files from an
//! operator's.
//!
//! A torrent owns the content at `DATA_DIR/NAME` (and `NAME.part`) only once one of these
//! happened, and a [`Claim`] saying so is durable (`STATE/claims/<info hash>.state`, written
//! atomically *before* the first byte is written there):
//! - **created**: nothing was at either name when the torrent first prepared to write;
//! - **verified**: every piece of what was there matched the descriptor, and no file was longer
//!   than described (verification hashes the described bytes only: an operator's file that
//!   merely starts with them is not this torrent's content, see [`LongerThanDescribed`]);
//! - **adopted**: the operator said so (`p2pctl add --adopt`, which only root and p2pd's own
//!   user may ask for);
//! - **recorded**: the torrent's own resume state, from before claims existed, describes the
//!   files exactly as they are (same sizes and modification times).
//!
//! A claim is on one content *root* (the file or directory at `NAME` or `NAME.part`), not on a
//! name: once the root exists, the claim records its identity ([`EntryId`]: inode number with
//! birth time, or device; the renames between `NAME.part` and `NAME` keep it). A claim covers
//! what is on disk only while the data directory is the one it was made in (symbolic links
//! resolved) and the root found there is the one it recorded. Anything else — the root deleted
//! and something new put there, an operator's file at the other name — is looked at like
//! content found for the first time (verified, or left alone). A claim that records no root
//! yet (made before the torrent created its root, or by `add --adopt`) covers nothing on disk,
//! except an empty root (a crash came between creating it and recording it: nothing to lose)
//! and, for an adopted claim, whatever is there (the operator said so).
//!
//! Without a claim that covers it, p2pd never renames, writes, cuts or deletes anything at that
//! path: content that is there and does not verify completely is reported
//! ([`ForeignContent`]) and left alone. [`delete_owned`] deletes only the root whose identity
//! the claim recorded, under whichever name it is now; when in doubt it deletes nothing and
//! says why.
//!
//! Who writes claims, each time replacing the whole file atomically: the torrent task
//! ([`Storage::claim`]) between checking and writing — a new claim, or one replacing a claim
//! that no longer covers what is there (the torrent moved to another data directory, its root
//! gone or replaced), or the same claim with the identity of the root it just created or
//! found adopted; the supervisor writes `adopted` claims (replacing any claim of that torrent),
//! removes a torrent's claim when it stops being managed, and at start-up removes the claims
//! no torrent file names ([`Claims::retain`]).

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use log::{info, warn};
use serde::{Deserialize, Serialize};

use super::dir::{Access, Dir, EntryId, EntryKind};
use super::{FileStamp, Placement, Storage, StorageError};
use crate::config::locations::resolve;
use crate::descriptor::{Content, ContentKind, InfoHash};
use crate::state::{atomic, format};

/// Directory of claims inside the state directory.
pub const CLAIMS_DIR: &str = "claims";
/// Version of the claim body. Claims written before roots were recorded have no `root`.
pub const CLAIM_VERSION: u32 = 1;
/// Tag of claim files in their state header.
const CLAIM_TAG: &str = "claim";
/// Largest claim file read (a claim is a few hundred bytes).
const MAX_CLAIM_BYTES: u64 = 64 << 10;
/// Suffix of claim files.
const CLAIM_SUFFIX: &str = ".state";

/// How a torrent came to own its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimKind {
    Created,
    Verified,
    Adopted,
    Recorded,
}

impl ClaimKind {
    /// The verb, for messages: "this torrent created …".
    fn verb(self) -> &'static str {
        match self {
            ClaimKind::Created => "created",
            ClaimKind::Verified => "verified",
            ClaimKind::Adopted => "adopted",
            ClaimKind::Recorded => "downloaded",
        }
    }
}

/// A torrent's durable claim on `DATA_DIR/NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub version: u32,
    pub info_hash: InfoHash,
    /// The data directory, symbolic links resolved.
    pub data_dir: PathBuf,
    /// The content's name in it (the partial name is `NAME.part`).
    pub name: String,
    pub how: ClaimKind,
    /// The content root this claim is on, once it exists (see the module doc).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<EntryId>,
}

impl Claim {
    /// A claim by `info_hash` on `name` in `data_dir` (resolved here), recording no root yet.
    pub fn new(info_hash: InfoHash, data_dir: &Path, name: &str, how: ClaimKind) -> io::Result<Claim> {
        Ok(Claim {
            version: CLAIM_VERSION,
            info_hash,
            data_dir: resolve(data_dir)?,
            name: name.to_string(),
            how,
            root: None,
        })
    }

    /// Whether this claim is on `name` in `data_dir` (whatever is there now: see
    /// [`Claims::owns`]).
    pub fn covers(&self, data_dir: &Path, name: &str) -> bool {
        self.name == name && resolve(data_dir).is_ok_and(|d| d == self.data_dir)
    }
}

/// Why a claim could not be recorded or removed.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct ClaimError {
    pub path: PathBuf,
    pub source: io::Error,
}

/// The claims of every torrent (`STATE/claims/`).
#[derive(Debug, Clone)]
pub struct Claims {
    dir: PathBuf,
}

impl Claims {
    pub fn new(state_dir: &Path) -> Claims {
        Claims { dir: state_dir.join(CLAIMS_DIR) }
    }

    fn path(&self, hash: &InfoHash) -> PathBuf {
        self.dir.join(format!("{hash}{CLAIM_SUFFIX}"))
    }

    /// The claim of `hash`, if any. An unreadable claim file is moved aside (logged) and
    /// counts as no claim: the content is then verified again before it is trusted.
    pub fn load(&self, hash: &InfoHash) -> Option<Claim> {
        use std::io::Read;
        let path = self.path(hash);
        let mut bytes = Vec::new();
        match std::fs::File::open(&path).and_then(|f| f.take(MAX_CLAIM_BYTES).read_to_end(&mut bytes)) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                warn!("{}: cannot read: {e}; treating the content as not owned", path.display());
                return None;
            }
        }
        let parsed = format::decode(CLAIM_TAG, &bytes)
            .map_err(|e| e.to_string())
            .and_then(|body| serde_json::from_slice::<Claim>(body).map_err(|e| e.to_string()))
            .and_then(|c| {
                if c.version == CLAIM_VERSION && c.info_hash == *hash {
                    Ok(c)
                } else {
                    Err("for another torrent".into())
                }
            });
        match parsed {
            Ok(claim) => Some(claim),
            Err(reason) => {
                let moved =
                    atomic::quarantine(&path).map(|p| p.display().to_string()).unwrap_or_else(|e| e.to_string());
                warn!(
                    "{}: unreadable claim ({reason}); moved to {moved}; the content will be verified again",
                    path.display()
                );
                None
            }
        }
    }

    /// Records `claim` durably.
    pub fn save(&self, claim: &Claim) -> Result<(), ClaimError> {
        let path = self.path(&claim.info_hash);
        let body = serde_json::to_vec(claim).unwrap_or_else(|e| unreachable!("claims serialize: {e}"));
        crate::state::create_private_dir(&self.dir)
            .and_then(|()| atomic::write_atomic(&path, &format::encode(CLAIM_TAG, &body)))
            .map_err(|source| ClaimError { path, source })
    }

    /// Deletes the temporary files an interrupted save left (at start-up).
    pub fn remove_stale_temporaries(&self) -> io::Result<usize> {
        atomic::remove_stale_temporaries(&self.dir)
    }

    /// Forgets the claim of `hash` (durably; none is fine).
    pub fn remove(&self, hash: &InfoHash) -> Result<(), ClaimError> {
        let path = self.path(hash);
        atomic::remove_durably(&path).map_err(|source| ClaimError { path, source })
    }

    /// Whether the claim of `hash` covers `name` in `data_dir` *and* what is there now (at
    /// either name) is the root it recorded. Blocks on the filesystem.
    pub fn owns(&self, hash: &InfoHash, data_dir: &Path, name: &str) -> bool {
        let Some(root) = self.load(hash).filter(|c| c.covers(data_dir, name)).and_then(|c| c.root) else {
            return false;
        };
        let Ok(dir) = Dir::open(data_dir, false) else { return false };
        AtNames::read(&dir, name).is_ok_and(|found| !found.holding(&root).is_empty())
    }

    /// Removes every claim whose info hash is not in `keep`, durably, and returns what each
    /// one was on (if it could be read). At start-up, `keep` is every info hash a torrent file
    /// names: a claim outlives its torrent when `torrents/X.yaml` is deleted while p2pd is
    /// stopped, and would otherwise "own" whatever is put at that path later. Files in the
    /// directory that are not claims (quarantined ones, for instance) are left alone.
    pub fn retain(&self, keep: &BTreeSet<InfoHash>) -> Result<Vec<(InfoHash, Option<PathBuf>)>, ClaimError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(ClaimError { path: self.dir.clone(), source }),
        };
        let mut forgotten = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| ClaimError { path: self.dir.clone(), source })?;
            let Some(hash) = entry.file_name().to_str().and_then(claim_file_hash) else { continue };
            if keep.contains(&hash) {
                continue;
            }
            let on = self.load(&hash).map(|c| c.data_dir.join(c.name));
            self.remove(&hash)?;
            forgotten.push((hash, on));
        }
        forgotten.sort_by_key(|(h, _)| *h);
        Ok(forgotten)
    }
}

/// The info hash a claim file is named after (`<64 hex digits>.state`), if it is one.
fn claim_file_hash(name: &str) -> Option<InfoHash> {
    let hex = name.strip_suffix(CLAIM_SUFFIX)?;
    let mut bytes = [0u8; 32];
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| hex::decode_to_slice(hex, &mut bytes).ok())
        .flatten()
        .map(|()| InfoHash(bytes))
}

/// Content at a torrent's path that the torrent does not own and that did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{} is already there and is not this torrent's content ({matched} of {total} pieces match); \
     p2pd leaves it untouched. Remove or move it away and run `p2pctl verify {id}`, add the \
     descriptor with --adopt to let p2pd take it over (differing bytes are overwritten), or add it \
     with --data DIR elsewhere",
    path.display()
)]
pub struct ForeignContent {
    pub path: PathBuf,
    /// The torrent's info hash (a unique prefix), for the command to run.
    pub id: String,
    pub matched: usize,
    pub total: usize,
}

/// Content at a torrent's path that the torrent does not own, whose every piece verifies, but
/// with a file longer than the descriptor says: its first bytes are the published ones and the
/// rest is someone's (a log appended to, say). Cutting it would lose those bytes, so it is not
/// taken without `--adopt`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{} is {found} bytes, longer than the {described} bytes the descriptor describes: the first \
     {described} bytes match, but the file is not this torrent's content as it is, and p2pd \
     leaves it untouched. Add the descriptor with --adopt to let p2pd cut it to {described} bytes \
     and seed it, move it away and run `p2pctl verify {id}`, or add it with --data DIR elsewhere",
    path.display()
)]
pub struct LongerThanDescribed {
    /// The first file found longer than described.
    pub path: PathBuf,
    /// The torrent's info hash (a unique prefix), for the command to run.
    pub id: String,
    pub found: u64,
    pub described: u64,
}

/// The identities of what is at a content's final and partial names.
#[derive(Debug, Clone, Copy, Default)]
struct AtNames {
    complete: Option<EntryId>,
    partial: Option<EntryId>,
}

impl AtNames {
    fn read(dir: &Dir, name: &str) -> Result<AtNames, StorageError> {
        let id = |n: &str| {
            dir.entry_id(n)
                .map_err(|source| StorageError::Io { context: dir.path().join(n).display().to_string(), source })
        };
        Ok(AtNames { complete: id(name)?, partial: id(&format!("{name}{}", super::PARTIAL_SUFFIX))? })
    }

    fn get(&self, placement: Placement) -> Option<EntryId> {
        match placement {
            Placement::Final => self.complete,
            Placement::Partial => self.partial,
        }
    }

    fn is_empty(&self) -> bool {
        self.complete.is_none() && self.partial.is_none()
    }

    /// The names that hold `root` (two only if an operator hard-linked them).
    fn holding(&self, root: &EntryId) -> Vec<Placement> {
        [Placement::Final, Placement::Partial]
            .into_iter()
            .filter(|p| self.get(*p).is_some_and(|id| id.same_as(root)))
            .collect()
    }
}

/// Opens a torrent's storage where its claim says its own content root is — under the partial
/// name if that is where the recorded root is, even with something else at the final name (an
/// operator's file put there before the download could be moved into place) — or, without
/// such a claim, as [`Storage::open`] does. Blocks on disk I/O.
pub fn open_owned(
    claims: &Claims,
    info_hash: InfoHash,
    data_dir: &Path,
    content: &Content,
) -> Result<Storage, StorageError> {
    let root = claims.load(&info_hash).filter(|c| c.covers(data_dir, &content.name)).and_then(|c| c.root);
    let at = root.and_then(|root| {
        let dir = Dir::open(data_dir, false).ok()?;
        match AtNames::read(&dir, &content.name).ok()?.holding(&root)[..] {
            [one] => Some(one),
            _ => None,
        }
    });
    match at {
        Some(placement) => Storage::open_at(data_dir, content, placement),
        None => Storage::open(data_dir, content),
    }
}

impl Storage {
    /// Makes sure this torrent owns its content path before anything is written there (see
    /// the module doc). `verified` is how many pieces the check found valid; `recorded` the
    /// file stamps of the torrent's resume state, if it has one; `checked` the identity of the
    /// root that check looked at ([`Storage::root_id`], taken before it): a root replaced
    /// meanwhile is not what was verified, and nothing is claimed. When nothing is there,
    /// creates the (empty) content root under the partial name and records its identity.
    /// Blocks on disk I/O.
    pub fn claim(
        &self,
        claims: &Claims,
        info_hash: InfoHash,
        verified: usize,
        recorded: Option<&[Option<FileStamp>]>,
        checked: Option<EntryId>,
    ) -> Result<(), StorageError> {
        let data_dir = self.data_dir.path();
        let placement = self.placement();
        let names = AtNames::read(&self.data_dir, &self.name)?;
        let here = names.get(placement);
        let shown = data_dir.join(self.root_name(placement));
        let same = match (checked, here) {
            (Some(a), Some(b)) => a.same_as(&b),
            (a, b) => a.is_none() && b.is_none(),
        };
        if !same {
            return Err(StorageError::Io {
                context: shown.display().to_string(),
                source: io::Error::other(format!(
                    "was replaced while p2pd was checking it; nothing was taken: run `p2pctl verify {}` to \
                     check it again",
                    &info_hash.to_hex()[..12]
                )),
            });
        }
        if let Some(previous) = claims.load(&info_hash).filter(|c| c.covers(data_dir, &self.name)) {
            let empty = || {
                self.data_dir
                    .is_empty_entry(&self.root_name(placement))
                    .map_err(|source| StorageError::Io { context: shown.display().to_string(), source })
            };
            match (previous.root, here) {
                (Some(root), Some(id)) if root.same_as(&id) => return Ok(()),
                // Claimed, root not made yet (or a crash came before it was recorded).
                (None, None) => return self.create_root(claims, previous),
                (None, Some(id)) if previous.how == ClaimKind::Adopted => {
                    return self.save_claim(claims, &Claim { root: Some(id), ..previous });
                }
                (None, Some(id))
                    if previous.how == ClaimKind::Created && placement == Placement::Partial && empty()? =>
                {
                    return self.save_claim(claims, &Claim { root: Some(id), ..previous });
                }
                (Some(_), None) => info!(
                    "{}: the content this torrent {} is gone; it starts afresh",
                    data_dir.join(&self.name).display(),
                    previous.how.verb()
                ),
                (_, Some(_)) => warn!(
                    "{}: not the content this torrent {} (moved away or replaced since, or never recorded); \
                     looking at it as content found there",
                    shown.display(),
                    previous.how.verb()
                ),
            }
        }
        let total = self.layout.piece_count();
        let id = || info_hash.to_hex()[..12].to_string();
        let how = if verified == total {
            if let Some((path, found, described)) = self.longer_than_described()? {
                return Err(StorageError::TooLong(LongerThanDescribed { path, id: id(), found, described }));
            }
            ClaimKind::Verified
        } else if recorded.is_some_and(|r| r.iter().any(Option::is_some) && r == self.stamps().as_slice()) {
            ClaimKind::Recorded
        } else if !names.is_empty() {
            let found = if names.complete.is_some() { Placement::Final } else { Placement::Partial };
            return Err(StorageError::Foreign(ForeignContent {
                path: data_dir.join(self.root_name(found)),
                id: id(),
                matched: verified,
                total,
            }));
        } else {
            ClaimKind::Created
        };
        let claim = Claim::new(info_hash, data_dir, &self.name, how)
            .map_err(|source| StorageError::Io { context: format!("data directory {}", data_dir.display()), source })?;
        match here {
            Some(id) => self.save_claim(claims, &Claim { root: Some(id), ..claim }),
            None => {
                self.save_claim(claims, &claim)?;
                self.create_root(claims, claim)
            }
        }
    }

    /// Records `claim` (errors name the claim file and the content).
    fn save_claim(&self, claims: &Claims, claim: &Claim) -> Result<(), StorageError> {
        claims.save(claim).map_err(|e| StorageError::Io {
            context: format!(
                "{} (recording that this torrent owns {})",
                e.path.display(),
                self.data_dir.path().join(&self.name).display()
            ),
            source: e.source,
        })
    }

    /// Creates the empty content root under the partial name (a file or a directory),
    /// durably, and records its identity in `claim`. Called only with a durable claim and
    /// nothing at either name; if something appeared at the partial name since, it is not
    /// taken: creation fails (`AlreadyExists`), and the identity recorded is always that of the
    /// entry this call created.
    fn create_root(&self, claims: &Claims, claim: Claim) -> Result<(), StorageError> {
        let name = self.root_name(Placement::Partial);
        let path = self.data_dir.path().join(&name);
        let created = match self.kind {
            ContentKind::File => self.data_dir.create_new_file(&name),
            ContentKind::Directory => self.data_dir.create_new_dir(&name),
        };
        let id = created
            .and_then(|id| self.data_dir.sync().map(|()| id))
            .map_err(|source| StorageError::Io { context: path.display().to_string(), source })?;
        self.save_claim(claims, &Claim { root: Some(id), ..claim })
    }

    /// The identity of what is at the content path under this storage's name now (`None` if
    /// nothing is): taken before a check, and given back to [`Storage::claim`] after it.
    pub fn root_id(&self) -> Result<Option<EntryId>, StorageError> {
        Ok(AtNames::read(&self.data_dir, &self.name)?.get(self.placement()))
    }

    /// The first file longer than described: its path, its length and the described one.
    fn longer_than_described(&self) -> Result<Option<(PathBuf, u64, u64)>, StorageError> {
        let placement = self.placement();
        for (i, (_, length)) in self.files.iter().enumerate() {
            let path = || self.display_path(placement, i);
            let Some(file) = self.file(i, Access::Read).map_err(|e| super::io_ctx(path())(e))? else { continue };
            let found = file.metadata().map_err(super::io_ctx(path()))?.len();
            if found > *length {
                return Ok(Some((PathBuf::from(path()), found, *length)));
            }
        }
        Ok(None)
    }
}

/// What `remove --delete-data` did with a torrent's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deletion {
    /// The files of the torrent's layout were deleted (and directories left empty by that).
    Deleted,
    /// Nothing was deleted, for this reason (one line).
    Kept(String),
}

/// Deletes the content of torrent `info_hash` in `data_dir` if, and only if, the torrent owns
/// it: a claim covers the path and recorded a root, and exactly one of the two names holds that
/// root now (that one is deleted, whatever is at the other). Otherwise deletes nothing and says
/// why. Then, in any case, forgets the claim. Blocks on disk I/O.
pub fn delete_owned(
    claims: &Claims,
    info_hash: InfoHash,
    data_dir: &Path,
    content: &Content,
) -> Result<Deletion, StorageError> {
    let result = deletion(claims.load(&info_hash), data_dir, content);
    claims.remove(&info_hash).map_err(|e| StorageError::Io {
        context: format!("forgetting the owner of {}", content.name),
        source: e.source,
    })?;
    result
}

fn deletion(claim: Option<Claim>, data_dir: &Path, content: &Content) -> Result<Deletion, StorageError> {
    let path = data_dir.join(&content.name);
    let Some(claim) = claim.filter(|c| c.covers(data_dir, &content.name)) else {
        return Ok(Deletion::Kept(format!(
            "kept {}: this torrent never created, verified or adopted it",
            path.display()
        )));
    };
    if !data_dir.is_dir() {
        return Ok(Deletion::Kept(format!("{} does not exist", data_dir.display())));
    }
    let dir = Dir::open(data_dir, false)
        .map_err(|source| StorageError::Io { context: format!("data directory {}", data_dir.display()), source })?;
    let names = AtNames::read(&dir, &content.name)?;
    if names.is_empty() {
        return Ok(Deletion::Deleted);
    }
    let partial = data_dir.join(format!("{}{}", content.name, super::PARTIAL_SUFFIX));
    let there = || {
        [(names.complete, &path), (names.partial, &partial)]
            .into_iter()
            .filter(|(id, _)| id.is_some())
            .map(|(_, p)| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" and ")
    };
    let Some(root) = claim.root else {
        return Ok(Deletion::Kept(format!(
            "kept {}: p2pd has no record of which file or directory there is this torrent's (it {} the \
             path but had not recorded its content yet); delete it by hand if it is not someone else's",
            there(),
            claim.how.verb()
        )));
    };
    match names.holding(&root)[..] {
        [placement] => {
            Storage::open_at(data_dir, content, placement).and_then(|s| s.delete_data()).map(|()| Deletion::Deleted)
        }
        [] => Ok(Deletion::Kept(format!(
            "kept {}: not what this torrent {} there (moved away or replaced since)",
            there(),
            claim.how.verb()
        ))),
        _ => Ok(Deletion::Kept(format!(
            "kept {}: both names lead to this torrent's content (hard links); p2pd deletes one unambiguous copy only",
            there()
        ))),
    }
}

/// Whether a regular file (the only kind p2pd writes) is at `name` in `dir`.
pub(super) fn is_regular_file(dir: &Dir, name: &str) -> io::Result<bool> {
    Ok(dir.entry_kind(name)? == Some(EntryKind::File))
}

#[cfg(test)]
mod tests;
