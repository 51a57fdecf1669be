//! Where torrents keep their content, and who may say where: the rules `add` and reload apply
//! before a torrent starts.
//!
//! - **One path, one torrent.** A torrent's content path is `DATA_DIR/NAME`, with
//!   `DATA_DIR/NAME.part` while incomplete, symbolic links resolved. Two torrents' paths may not
//!   be equal, and neither may lie inside the other (a torrent inside another's directory). The
//!   torrent already running keeps its path; the newcomer is refused, naming both.
//! - **Data roots.** A client other than root and the daemon's own user may choose a data
//!   directory (`add --data DIR`) only inside one of `data_roots` (both sides resolved, so
//!   neither `..` nor a symbolic link leads out).

use std::io;
use std::path::{Path, PathBuf};

use crate::config::locations::{normalize, resolve};
use crate::descriptor::InfoHash;
use crate::storage::PARTIAL_SUFFIX;

/// Where one torrent's content is (or will be), symbolic links resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentPath {
    /// `DATA_DIR/NAME`.
    pub complete: PathBuf,
    /// `DATA_DIR/NAME.part`.
    pub partial: PathBuf,
}

impl ContentPath {
    /// The content path of `name` in `data_dir` (absolute). Blocks on the filesystem (to
    /// resolve links); if that fails, the path is only normalized.
    pub fn resolve(data_dir: &Path, name: &str) -> ContentPath {
        let dir = resolve(data_dir).unwrap_or_else(|_| normalize(data_dir));
        ContentPath { complete: dir.join(name), partial: dir.join(format!("{name}{PARTIAL_SUFFIX}")) }
    }

    /// Whether the two torrents' content would meet: some name of one is a name of the other,
    /// or lies inside it. Returns the path of `other` that is in the way.
    pub fn overlap<'a>(&self, other: &'a ContentPath) -> Option<&'a Path> {
        for theirs in [&other.complete, &other.partial] {
            for ours in [&self.complete, &self.partial] {
                if ours.starts_with(theirs) || theirs.starts_with(ours) {
                    return Some(theirs);
                }
            }
        }
        None
    }
}

/// A torrent, for messages: `tc (945ba7abaeae)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TorrentLabel {
    pub name: String,
    pub info_hash: InfoHash,
}

impl std::fmt::Display for TorrentLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name, &self.info_hash.to_hex()[..12])
    }
}

/// A torrent that would put its content where another one keeps its own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "content path {} of {new} is already used by {existing} (torrents/{existing_file}{}); remove that \
     torrent first, or add this one with --data DIR elsewhere",
    path.display(),
    if existing_path == path { String::new() } else { format!(", at {}", existing_path.display()) }
)]
pub struct PathInUse {
    /// The newcomer's content path.
    pub path: PathBuf,
    pub new: TorrentLabel,
    pub existing: TorrentLabel,
    /// Where the existing torrent's content is (when not `path` itself).
    pub existing_path: PathBuf,
    pub existing_file: String,
}

/// A data directory a client may not use.
#[derive(Debug, thiserror::Error)]
pub enum DataDirRefused {
    #[error("--data {}: {source}", path.display())]
    Unresolvable { path: PathBuf, source: io::Error },
    #[error(
        "--data {}{} is outside the directories this client may use ({}); root may use any \
         directory, or list more in data_roots: in p2pd.yaml",
        requested.display(),
        if resolved == requested { String::new() } else { format!(" (which is {})", resolved.display()) },
        roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    OutsideRoots { requested: PathBuf, resolved: PathBuf, roots: Vec<PathBuf> },
}

/// Checks `requested` against `roots` for a restricted client; returns the resolved directory
/// to use (so that a link changed later cannot move the torrent out). Blocks on the filesystem.
pub fn check_data_dir(requested: &Path, roots: &[PathBuf]) -> Result<PathBuf, DataDirRefused> {
    let resolved =
        resolve(requested).map_err(|source| DataDirRefused::Unresolvable { path: requested.to_path_buf(), source })?;
    let inside = roots.iter().any(|root| resolve(root).is_ok_and(|root| resolved.starts_with(root)));
    if inside {
        Ok(resolved)
    } else {
        Err(DataDirRefused::OutsideRoots { requested: requested.to_path_buf(), resolved, roots: roots.to_vec() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(dir: &str, name: &str) -> ContentPath {
        ContentPath { complete: Path::new(dir).join(name), partial: Path::new(dir).join(format!("{name}.part")) }
    }

    #[test]
    fn paths_overlap_when_equal_partial_or_nested() {
        assert!(at("/d", "tc").overlap(&at("/d", "tc")).is_some());
        assert_eq!(at("/d", "tc.part").overlap(&at("/d", "tc")), Some(Path::new("/d/tc.part")));
        assert!(at("/d/tc", "x").overlap(&at("/d", "tc")).is_some(), "inside another torrent's directory");
        assert!(at("/d", "tc").overlap(&at("/d/tc/sub", "x")).is_some(), "around another torrent");
        assert!(at("/d", "tc.part2").overlap(&at("/d", "tc")).is_none());
        assert!(at("/d", "tcx").overlap(&at("/d", "tc")).is_none(), "components, not string prefixes");
        assert!(at("/e", "tc").overlap(&at("/d", "tc")).is_none());
    }

    #[test]
    fn data_dirs_must_resolve_inside_a_root() {
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        let root = base.join("data");
        std::fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("etc-link")).unwrap();
        let roots = vec![root.clone()];
        assert_eq!(check_data_dir(&root, &roots).unwrap(), root);
        assert_eq!(check_data_dir(&root.join("new/sub"), &roots).unwrap(), root.join("new/sub"));
        for outside in [PathBuf::from("/etc"), root.join("etc-link"), root.join("../data2"), root.join("x/../../etc")] {
            let e = check_data_dir(&outside, &roots).unwrap_err().to_string();
            assert!(e.contains("is outside the directories this client may use"), "{}: {e}", outside.display());
        }
        let e = check_data_dir(&root.join("etc-link/p2pd"), &roots).unwrap_err().to_string();
        assert!(e.contains("(which is /etc/p2pd)"), "{e}");
    }
}
