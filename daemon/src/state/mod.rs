//! The state directory: everything the daemon remembers between runs.
//!
//! ```text
//! STATE_DIR/
//!   lock                 instance lock (holds the pid of the running daemon)
//!   node.state           node identity
//!   resume/<hash>.state  per-torrent progress (verified-piece bitmap)
//!   peers/<hash>.state   per-swarm peer tables (discovery)
//!   routing.state        discovery routing table
//! ```
//!
//! Every `.state` file is a [`format`](mod@format) header (kind, length, SHA-256) followed by a JSON body,
//! and is replaced only through [`atomic::write_atomic`]. A file that fails its checksum or
//! does not parse is moved aside (`*.corrupt-<time>`), reported in `status`, and the daemon
//! carries on from empty state for that file — never silently overwriting the evidence.

pub mod atomic;
pub mod format;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::descriptor::InfoHash;

/// Largest state file read, in bytes (a resume bitmap of the largest torrent is 32 KiB).
pub const MAX_STATE_BYTES: usize = 64 << 20;

/// One kind of state file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateKind {
    Node,
    Resume,
    Peers,
    Routing,
}

impl StateKind {
    pub fn tag(self) -> &'static str {
        match self {
            StateKind::Node => "node",
            StateKind::Resume => "resume",
            StateKind::Peers => "peers",
            StateKind::Routing => "routing",
        }
    }
}

/// The result of loading a state file.
#[derive(Debug)]
pub enum Loaded<T> {
    /// No such file: first run, or nothing saved yet.
    Missing,
    Ok(T),
    /// The file was unreadable and has been moved to `moved_to`.
    Quarantined {
        moved_to: PathBuf,
        reason: String,
    },
}

/// Handle to the state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Creates the directory layout (mode 0700) and removes temporaries left by a crash.
    pub fn open(root: &Path) -> io::Result<StateDir> {
        for dir in [root.to_path_buf(), root.join("resume"), root.join("peers")] {
            create_private_dir(&dir)?;
            atomic::remove_stale_temporaries(&dir)?;
        }
        Ok(StateDir { root: root.to_path_buf() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of the state file of `kind` (for `Resume` and `Peers`, of one torrent).
    pub fn path(&self, kind: StateKind, torrent: Option<&InfoHash>) -> PathBuf {
        match (kind, torrent) {
            (StateKind::Node, _) => self.root.join("node.state"),
            (StateKind::Routing, _) => self.root.join("routing.state"),
            (StateKind::Resume, Some(h)) => self.root.join("resume").join(format!("{h}.state")),
            (StateKind::Peers, Some(h)) => self.root.join("peers").join(format!("{h}.state")),
            (k, None) => unreachable!("{} state is per torrent", k.tag()),
        }
    }

    /// Loads and checks a state file; an unreadable one is quarantined.
    pub fn load<T: DeserializeOwned>(&self, kind: StateKind, torrent: Option<&InfoHash>) -> Loaded<T> {
        let path = self.path(kind, torrent);
        load_file(&path, kind)
    }

    /// Saves a state file atomically.
    pub fn save<T: Serialize>(&self, kind: StateKind, torrent: Option<&InfoHash>, value: &T) -> io::Result<()> {
        let body = serde_json::to_vec(value).map_err(io::Error::other)?;
        atomic::write_atomic(&self.path(kind, torrent), &format::encode(kind.tag(), &body))
    }

    /// Saves an already serialized JSON body atomically.
    pub fn save_raw(&self, kind: StateKind, torrent: Option<&InfoHash>, body: &[u8]) -> io::Result<()> {
        atomic::write_atomic(&self.path(kind, torrent), &format::encode(kind.tag(), body))
    }

    /// Removes a state file durably.
    pub fn remove(&self, kind: StateKind, torrent: Option<&InfoHash>) -> io::Result<()> {
        atomic::remove_durably(&self.path(kind, torrent))
    }
}

/// Loads one state file of `kind` from `path`.
pub fn load_file<T: DeserializeOwned>(path: &Path, kind: StateKind) -> Loaded<T> {
    let bytes = match read_limited(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Loaded::Missing,
        Err(e) => return quarantine_with(path, format!("cannot read: {e}")),
    };
    match decode_file(&bytes, kind) {
        Ok(value) => Loaded::Ok(value),
        Err(reason) => quarantine_with(path, reason.to_string()),
    }
}

/// Why a state file's bytes do not decode.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The header or checksum is wrong.
    #[error(transparent)]
    Format(#[from] format::FormatError),
    #[error("body does not parse: {0}")]
    Body(#[from] serde_json::Error),
}

/// Decodes the bytes of a state file of `kind` (pure: header, checksum, then the JSON body).
pub fn decode_file<T: DeserializeOwned>(bytes: &[u8], kind: StateKind) -> Result<T, DecodeError> {
    let body = format::decode(kind.tag(), bytes)?;
    Ok(serde_json::from_slice::<T>(body)?)
}

fn quarantine_with<T>(path: &Path, reason: String) -> Loaded<T> {
    match atomic::quarantine(path) {
        Ok(moved_to) => Loaded::Quarantined { moved_to, reason },
        Err(e) => Loaded::Quarantined {
            moved_to: path.to_path_buf(),
            reason: format!("{reason}; moving it aside also failed: {e}"),
        },
    }
}

fn read_limited(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let file = fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_STATE_BYTES as u64 + 1).read_to_end(&mut bytes)?;
    if bytes.len() > MAX_STATE_BYTES {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "larger than the state file limit"));
    }
    Ok(bytes)
}

/// Creates a directory (and parents) with mode 0700 for the new ones.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// The state files of format version 1 as a daemon wrote them (`tests/fixtures/state-v1/`, from
/// two daemons that shared one torrent: b3c5b869…, 7 pieces). Every loader has a test that reads
/// its file: a change of format must keep reading these (or say why not, and keep a fixture of
/// the new one). The returned path is a copy in a temporary directory: a loader that fails
/// moves the file aside, and must never move the committed one.
#[cfg(test)]
pub(crate) fn fixture(name: &str) -> (tempfile::TempDir, PathBuf) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/state-v1").join(name);
    let dir = tempfile::tempdir().expect("tempdir");
    let to = dir.path().join(name);
    fs::copy(&from, &to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    (dir, to)
}

/// The info hash of the fixtures' torrent.
#[cfg(test)]
pub(crate) const FIXTURE_HASH: &str = "b3c5b869a28566de4d6220766a60dc3455a80b320884c4233c9c02cad2fbafa3";

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        n: u32,
    }

    #[test]
    fn save_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        assert!(matches!(state.load::<Sample>(StateKind::Node, None), Loaded::Missing));
        state.save(StateKind::Node, None, &Sample { n: 7 }).unwrap();
        assert!(matches!(state.load::<Sample>(StateKind::Node, None), Loaded::Ok(Sample { n: 7 })));
    }

    #[test]
    fn damaged_files_are_quarantined_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let h = InfoHash([1; 32]);
        state.save(StateKind::Resume, Some(&h), &Sample { n: 7 }).unwrap();
        let path = state.path(StateKind::Resume, Some(&h));
        let full = fs::read(&path).unwrap();
        for damaged in [Vec::new(), full[..full.len() / 2].to_vec(), vec![0u8; full.len()], b"garbage".to_vec()] {
            fs::write(&path, &damaged).unwrap();
            match state.load::<Sample>(StateKind::Resume, Some(&h)) {
                Loaded::Quarantined { moved_to, .. } => {
                    assert_eq!(fs::read(&moved_to).unwrap(), damaged);
                    assert!(!path.exists());
                }
                other => panic!("expected quarantine, got {other:?}"),
            }
        }
    }
}
