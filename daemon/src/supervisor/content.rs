//! Where torrents keep their content, and who may say where: the rules `add` and reload apply
//! before a torrent starts.
//!
//! - **One path, one torrent.** A torrent's content path is `DATA_DIR/NAME`, with
//!   `DATA_DIR/NAME.part` while incomplete, symbolic links resolved. Two torrents' paths may not
//!   be equal, and neither may lie inside the other (a torrent inside another's directory). The
//!   torrent already running keeps its path; the newcomer is refused, naming both.
//! - **p2pd's own directories are not content.** No torrent's content path may be, contain, or
//!   lie inside the state directory or the configuration directory (for any client, and for
//!   torrent files), so that a torrent cannot write, rename or delete p2pd's claims, resume
//!   state or torrent files. The one exception is content inside `data_dir` where `data_dir`
//!   is itself a subdirectory of one of them (the default `STATE_DIR/data`). The rule is on the
//!   content path, not on the data directory alone: `--data /home/u` is fine with the state in
//!   `/home/u/.local/state/p2pd`, unless the content is named `.local`.
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

/// The directories of p2pd's own files, and `data_dir` (see the module doc).
#[derive(Debug, Clone)]
pub struct OwnDirs {
    pub state_dir: PathBuf,
    pub config_dir: PathBuf,
    pub data_dir: PathBuf,
}

/// A torrent whose content would meet p2pd's own files.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "content path {} of {torrent} {relation} p2pd's {what} {}; p2pd keeps content apart from its \
     own files: use a data directory outside it",
    path.display(),
    dir.display()
)]
pub struct InOwnDir {
    /// The content path (or its partial name) that meets `dir`.
    pub path: PathBuf,
    pub torrent: TorrentLabel,
    /// "is", "lies inside" or "contains".
    pub relation: &'static str,
    /// "state directory" or "configuration directory".
    pub what: &'static str,
    pub dir: PathBuf,
}

/// Checks `path` against p2pd's own directories. Blocks on the filesystem (to resolve them).
pub fn check_own_dirs(path: &ContentPath, torrent: &TorrentLabel, own: &OwnDirs) -> Result<(), Box<InOwnDir>> {
    let resolved = |p: &Path| resolve(p).unwrap_or_else(|_| normalize(p));
    let data_dir = resolved(&own.data_dir);
    for (what, dir) in [("state directory", &own.state_dir), ("configuration directory", &own.config_dir)] {
        let dir = resolved(dir);
        // The default data directory, STATE_DIR/data: what is inside it is content.
        let data_dir_inside = data_dir.starts_with(&dir) && data_dir != dir;
        for ours in [&path.complete, &path.partial] {
            let relation = if *ours == dir {
                "is"
            } else if ours.starts_with(&dir) {
                if data_dir_inside && ours.starts_with(&data_dir) && *ours != data_dir {
                    continue;
                }
                "lies inside"
            } else if dir.starts_with(ours) {
                "contains"
            } else {
                continue;
            };
            return Err(Box::new(InOwnDir { path: ours.clone(), torrent: torrent.clone(), relation, what, dir }));
        }
    }
    Ok(())
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
    fn content_stays_out_of_p2pds_own_directories() {
        let own = OwnDirs {
            state_dir: "/var/lib/p2pd".into(),
            config_dir: "/etc/p2pd".into(),
            data_dir: "/var/lib/p2pd/data".into(),
        };
        let label = TorrentLabel { name: "x".into(), info_hash: InfoHash([1; 32]) };
        let check = |dir: &str, name: &str| check_own_dirs(&at(dir, name), &label, &own).map_err(|e| e.to_string());
        let fine =
            [("/var/lib/p2pd/data", "tc"), ("/var/lib/p2pd/data/sub", "tc"), ("/srv", "tc"), ("/var/lib", "other")];
        for (dir, name) in fine {
            assert_eq!(check(dir, name), Ok(()), "{dir}/{name}");
        }
        let cases = [
            ("/var/lib/p2pd", "claims", "lies inside p2pd's state directory /var/lib/p2pd;"),
            ("/var/lib/p2pd/claims", "tc", "lies inside p2pd's state directory /var/lib/p2pd;"),
            ("/var/lib/p2pd", "data", "lies inside p2pd's state directory /var/lib/p2pd;"),
            ("/var/lib", "p2pd", "is p2pd's state directory /var/lib/p2pd;"),
            ("/", "var", "contains p2pd's state directory /var/lib/p2pd;"),
            ("/etc/p2pd", "torrents", "lies inside p2pd's configuration directory /etc/p2pd;"),
        ];
        for (dir, name, relation) in cases {
            let e = check(dir, name).unwrap_err();
            let path = Path::new(dir).join(name);
            assert!(e.starts_with(&format!("content path {} of x (", path.display())), "{dir}/{name}: {e}");
            assert!(e.contains(&format!(") {relation}")), "{dir}/{name}: {e}");
        }
        // The partial name counts too.
        let own_part = OwnDirs { state_dir: "/var/lib/tc.part".into(), ..own.clone() };
        let e = check_own_dirs(&at("/var/lib", "tc"), &label, &own_part).unwrap_err().to_string();
        assert!(e.starts_with("content path /var/lib/tc.part of x ("), "{e}");
        let e = check("/etc", "p2pd").unwrap_err();
        assert_eq!(
            e,
            format!(
                "content path /etc/p2pd of x ({}) is p2pd's configuration directory /etc/p2pd; p2pd keeps content \
                 apart from its own files: use a data directory outside it",
                &InfoHash([1; 32]).to_hex()[..12]
            )
        );
        // data_dir configured as the state directory itself: no exception.
        let own = OwnDirs { data_dir: "/var/lib/p2pd".into(), ..own };
        assert!(check_own_dirs(&at("/var/lib/p2pd", "tc"), &label, &own).is_err());
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
