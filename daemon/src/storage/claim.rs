//! Which content a torrent owns: the durable record that tells p2pd's files from an
//! operator's.
//!
//! A torrent owns the content at `DATA_DIR/NAME` (and `NAME.part`) only once one of these
//! happened, and a [`Claim`] saying so is durable (`STATE/claims/<info hash>.state`, written
//! atomically *before* the first byte is written there):
//! - **created**: nothing was at either name when the torrent first prepared to write;
//! - **verified**: every piece of what was there matched the descriptor;
//! - **adopted**: the operator said so (`p2pctl add --adopt`);
//! - **recorded**: the torrent's own resume state, from before claims existed, describes the
//!   files exactly as they are (same sizes and modification times).
//!
//! Without a claim, p2pd never renames, writes or deletes anything at that path: content that
//! is there and does not verify completely is reported ([`ForeignContent`]) and left alone.
//! A claim names the data directory it was made in (symbolic links resolved), so moving a
//! torrent to another directory does not carry it along.
//!
//! The torrent task makes claims ([`Storage::claim`]) between checking and writing; the
//! supervisor makes the `adopted` ones and removes claims when a torrent stops being managed.
//! Both write whole files atomically; a claim is only ever replaced by one for the same path.

use std::io;
use std::path::{Path, PathBuf};

use log::warn;
use serde::{Deserialize, Serialize};

use super::dir::{Dir, EntryKind};
use super::{FileStamp, Placement, Storage, StorageError};
use crate::config::locations::resolve;
use crate::descriptor::{Content, InfoHash};
use crate::state::{atomic, format};

/// Directory of claims inside the state directory.
pub const CLAIMS_DIR: &str = "claims";
/// Version of the claim body.
pub const CLAIM_VERSION: u32 = 1;
/// Tag of claim files in their state header.
const CLAIM_TAG: &str = "claim";
/// Largest claim file read (a claim is a few hundred bytes).
const MAX_CLAIM_BYTES: u64 = 64 << 10;

/// How a torrent came to own its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimKind {
    Created,
    Verified,
    Adopted,
    Recorded,
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
}

impl Claim {
    /// A claim by `info_hash` on `name` in `data_dir` (resolved here).
    pub fn new(info_hash: InfoHash, data_dir: &Path, name: &str, how: ClaimKind) -> io::Result<Claim> {
        Ok(Claim { version: CLAIM_VERSION, info_hash, data_dir: resolve(data_dir)?, name: name.to_string(), how })
    }

    /// Whether this claim is on `name` in `data_dir`.
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
        self.dir.join(format!("{hash}.state"))
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

impl Storage {
    /// Makes sure this torrent owns its content path before anything is written there (see
    /// the module doc). `verified` is how many pieces the check found valid; `recorded` the
    /// file stamps of the torrent's resume state, if it has one. Blocks on disk I/O.
    pub fn claim(
        &self,
        claims: &Claims,
        info_hash: InfoHash,
        verified: usize,
        recorded: Option<&[Option<FileStamp>]>,
    ) -> Result<(), StorageError> {
        let data_dir = self.data_dir.path();
        if claims.load(&info_hash).is_some_and(|c| c.covers(data_dir, &self.name)) {
            return Ok(());
        }
        let total = self.layout.piece_count();
        let how = if verified == total {
            ClaimKind::Verified
        } else if recorded.is_some_and(|r| r.iter().any(Option::is_some) && r == self.stamps().as_slice()) {
            ClaimKind::Recorded
        } else if let Some(found) = self.found()? {
            return Err(StorageError::Foreign(ForeignContent {
                path: data_dir.join(self.root_name(found)),
                id: info_hash.to_hex()[..12].to_string(),
                matched: verified,
                total,
            }));
        } else {
            ClaimKind::Created
        };
        let claim = Claim::new(info_hash, data_dir, &self.name, how)
            .map_err(|source| StorageError::Io { context: format!("data directory {}", data_dir.display()), source })?;
        claims.save(&claim).map_err(|e| StorageError::Io {
            context: format!(
                "{} (recording that this torrent owns {})",
                e.path.display(),
                data_dir.join(&self.name).display()
            ),
            source: e.source,
        })
    }

    /// Where anything (of any kind) is at the content's final or partial name, final first.
    fn found(&self) -> Result<Option<Placement>, StorageError> {
        for placement in [Placement::Final, Placement::Partial] {
            let name = self.root_name(placement);
            let kind = self.data_dir.entry_kind(&name).map_err(|source| StorageError::Io {
                context: self.data_dir.path().join(&name).display().to_string(),
                source,
            })?;
            if kind.is_some() {
                return Ok(Some(placement));
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
/// it (a claim covers it); then, in any case, forgets the claim. Blocks on disk I/O.
pub fn delete_owned(
    claims: &Claims,
    info_hash: InfoHash,
    data_dir: &Path,
    content: &Content,
) -> Result<Deletion, StorageError> {
    let owned = claims.load(&info_hash).is_some_and(|c| c.covers(data_dir, &content.name));
    let result = if !owned {
        Ok(Deletion::Kept(format!(
            "kept {}: this torrent never created, verified or adopted it",
            data_dir.join(&content.name).display()
        )))
    } else if !data_dir.is_dir() {
        Ok(Deletion::Kept(format!("{} does not exist", data_dir.display())))
    } else {
        Storage::open(data_dir, content).and_then(|s| s.delete_data()).map(|()| Deletion::Deleted)
    };
    claims.remove(&info_hash).map_err(|e| StorageError::Io {
        context: format!("forgetting the owner of {}", content.name),
        source: e.source,
    })?;
    result
}

/// Whether a regular file (the only kind p2pd writes) is at `name` in `dir`.
pub(super) fn is_regular_file(dir: &Dir, name: &str) -> io::Result<bool> {
    Ok(dir.entry_kind(name)? == Some(EntryKind::File))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::descriptor::create::PieceHasher;
    use crate::descriptor::{ContentKind, FileEntry, RelPath};

    fn content(name: &str, bytes: &[u8]) -> Content {
        let mut h = PieceHasher::new(16 << 10);
        h.update(bytes);
        Content {
            kind: ContentKind::File,
            name: name.into(),
            piece_length: 16 << 10,
            files: vec![FileEntry::new(RelPath::root(), bytes.len() as u64)],
            pieces: h.finish(),
            total_length: bytes.len() as u64,
            empty_dirs: Vec::new(),
        }
    }

    #[test]
    fn claims_round_trip_and_cover_only_their_path() {
        let state = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let claims = Claims::new(state.path());
        let h = InfoHash([7; 32]);
        assert_eq!(claims.load(&h), None);
        let claim = Claim::new(h, data.path(), "tc", ClaimKind::Created).unwrap();
        claims.save(&claim).unwrap();
        let loaded = claims.load(&h).unwrap();
        assert_eq!(loaded, claim);
        assert!(loaded.covers(data.path(), "tc"));
        assert!(!loaded.covers(data.path(), "other"));
        assert!(!loaded.covers(state.path(), "tc"));
        // The same directory through a symbolic link is the same directory.
        let link = state.path().join("link");
        std::os::unix::fs::symlink(data.path(), &link).unwrap();
        assert!(loaded.covers(&link, "tc"));
        claims.remove(&h).unwrap();
        assert_eq!(claims.load(&h), None);
        claims.remove(&h).unwrap();
    }

    #[test]
    fn a_damaged_claim_is_moved_aside_and_owns_nothing() {
        let state = tempfile::tempdir().unwrap();
        let claims = Claims::new(state.path());
        let h = InfoHash([8; 32]);
        claims.save(&Claim::new(h, state.path(), "x", ClaimKind::Adopted).unwrap()).unwrap();
        let path = claims.path(&h);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(claims.load(&h), None);
        assert!(!path.exists());
        assert_eq!(std::fs::read_dir(state.path().join(CLAIMS_DIR)).unwrap().count(), 1, "kept as evidence");
    }

    /// The ownership rule: nothing there → created; everything verifies → verified; anything
    /// else → foreign, and the storage is left exactly as it was.
    #[test]
    fn foreign_content_is_refused_and_left_alone() {
        let state = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let claims = Claims::new(state.path());
        let bytes = vec![3u8; 40_000];
        let c = content("tc", &bytes);
        let h = InfoHash([9; 32]);

        std::fs::write(data.path().join("tc"), b"an operator's notes").unwrap();
        let s = Storage::open(data.path(), &c).unwrap();
        let e = s.claim(&claims, h, 0, None).unwrap_err();
        let message = e.to_string();
        assert!(message.contains(&format!("{} is already there", data.path().join("tc").display())), "{message}");
        assert!(message.contains("0 of 3 pieces match") && message.contains("--adopt"), "{message}");
        assert!(matches!(e, StorageError::Foreign(_)) && !e.may_pass());
        assert_eq!(claims.load(&h), None);
        assert_eq!(std::fs::read(data.path().join("tc")).unwrap(), b"an operator's notes");
        // A partial match is not enough.
        assert!(matches!(s.claim(&claims, h, 2, None), Err(StorageError::Foreign(_))));
        // A complete match is.
        s.claim(&claims, h, 3, None).unwrap();
        assert_eq!(claims.load(&h).unwrap().how, ClaimKind::Verified);

        // Nothing there: the torrent creates it.
        let empty = tempfile::tempdir().unwrap();
        let s = Storage::open(empty.path(), &c).unwrap();
        let h2 = InfoHash([10; 32]);
        s.claim(&claims, h2, 0, None).unwrap();
        assert_eq!(claims.load(&h2).unwrap().how, ClaimKind::Created);
    }

    /// A torrent from before claims: its resume state's stamps vouch for its `.part`, as long
    /// as the files are exactly as it recorded them.
    #[test]
    fn a_resume_state_that_matches_the_files_vouches_for_them() {
        let state = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let claims = Claims::new(state.path());
        let c = content("tc", &[5u8; 40_000]);
        std::fs::write(data.path().join("tc.part"), [5u8; 20_000]).unwrap();
        let s = Storage::open(data.path(), &c).unwrap();
        let stamps = s.stamps();
        let (h1, h2) = (InfoHash([12; 32]), InfoHash([13; 32]));
        let other = vec![Some(FileStamp { length: 20_000, mtime_ns: 1 })];
        assert!(matches!(s.claim(&claims, h1, 1, Some(&other)), Err(StorageError::Foreign(_))));
        s.claim(&claims, h2, 1, Some(&stamps)).unwrap();
        assert_eq!(claims.load(&h2).unwrap().how, ClaimKind::Recorded);
    }

    /// `delete_data` removes regular files at the layout's paths where the content is now, and
    /// nothing else: not a link or a FIFO put at a layout path, not a `NAME.part` beside it.
    #[test]
    fn deletion_removes_only_regular_files_of_the_layout() {
        let data = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let (a, b) = (vec![1u8; 20_000], vec![2u8; 10_000]);
        let mut h = PieceHasher::new(16 << 10);
        h.update(&a);
        h.update(&b);
        let c = Content {
            kind: ContentKind::Directory,
            name: "d".into(),
            piece_length: 16 << 10,
            files: vec![
                FileEntry::new("a".parse().unwrap(), 20_000),
                FileEntry::new("sub/b".parse().unwrap(), 10_000),
                FileEntry::new("sub/f".parse().unwrap(), 0),
            ],
            pieces: h.finish(),
            total_length: 30_000,
            empty_dirs: Vec::new(),
        };
        std::fs::create_dir_all(data.path().join("d/sub")).unwrap();
        std::fs::write(data.path().join("d/a"), &a).unwrap();
        std::fs::write(outside.path().join("target"), b"outside").unwrap();
        std::os::unix::fs::symlink(outside.path().join("target"), data.path().join("d/sub/b")).unwrap();
        nix::unistd::mkfifo(&data.path().join("d/sub/f"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        std::fs::write(data.path().join("d.part"), b"someone else's").unwrap();
        let s = Storage::open(data.path(), &c).unwrap();
        s.delete_data().unwrap();
        assert!(!data.path().join("d/a").exists());
        assert!(data.path().join("d/sub/b").symlink_metadata().unwrap().file_type().is_symlink());
        assert!(data.path().join("d/sub/f").exists());
        assert_eq!(std::fs::read(outside.path().join("target")).unwrap(), b"outside");
        assert_eq!(std::fs::read(data.path().join("d.part")).unwrap(), b"someone else's");
    }

    #[test]
    fn deletion_needs_a_claim() {
        let state = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let claims = Claims::new(state.path());
        let bytes = vec![4u8; 20_000];
        let c = content("f.bin", &bytes);
        let h = InfoHash([11; 32]);
        std::fs::write(data.path().join("f.bin"), &bytes).unwrap();
        let kept = delete_owned(&claims, h, data.path(), &c).unwrap();
        assert!(matches!(kept, Deletion::Kept(ref why) if why.contains("never created, verified or adopted")));
        assert!(data.path().join("f.bin").exists());
        claims.save(&Claim::new(h, data.path(), "f.bin", ClaimKind::Verified).unwrap()).unwrap();
        assert_eq!(delete_owned(&claims, h, data.path(), &c).unwrap(), Deletion::Deleted);
        assert!(!data.path().join("f.bin").exists());
        assert_eq!(claims.load(&h), None, "the claim goes with the content");
    }
}
