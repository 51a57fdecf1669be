//! Where the `p2pd` and `p2pctl` executables are.
//!
//! By default they are beside the testbed's own executable (`target/release` or
//! `target/debug`, which `cargo build --workspace` fills); `--bin-dir` or `P2PD_BIN_DIR` name
//! another directory. Tests look in `target/<profile>/`, the parent of their own `deps/`.

use std::path::{Path, PathBuf};

/// The environment variable that names the directory holding `p2pd` and `p2pctl`.
pub const BIN_DIR_ENV: &str = "P2PD_BIN_DIR";

/// The two executables a fleet runs.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub p2pd: PathBuf,
    pub p2pctl: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum BinariesError {
    #[error("{} not found; build them first: cargo build --release --workspace (or name their directory with --bin-dir / {BIN_DIR_ENV})", .0.display())]
    Missing(PathBuf),
    #[error("cannot find the testbed's own executable to look beside it: {0}")]
    OwnPath(std::io::Error),
}

impl Binaries {
    /// `p2pd` and `p2pctl` in `dir`, both checked to exist.
    pub fn in_dir(dir: &Path) -> Result<Binaries, BinariesError> {
        let found = Binaries { p2pd: dir.join("p2pd"), p2pctl: dir.join("p2pctl") };
        for path in [&found.p2pd, &found.p2pctl] {
            if !path.is_file() {
                return Err(BinariesError::Missing(path.clone()));
            }
        }
        Ok(found)
    }

    /// `dir` if given, else beside the running executable.
    pub fn locate(dir: Option<&Path>) -> Result<Binaries, BinariesError> {
        match dir {
            Some(dir) => Binaries::in_dir(dir),
            None => {
                let exe = std::env::current_exe().map_err(BinariesError::OwnPath)?;
                let dir = exe.parent().unwrap_or(Path::new("."));
                Binaries::in_dir(dir)
            }
        }
    }

    /// For integration tests: `target/<profile>/`, the parent of the test's `deps/` directory.
    pub fn beside_test_executable() -> Result<Binaries, BinariesError> {
        if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
            return Binaries::in_dir(Path::new(&dir));
        }
        let exe = std::env::current_exe().map_err(BinariesError::OwnPath)?;
        let deps = exe.parent().unwrap_or(Path::new("."));
        let profile_dir =
            if deps.file_name().is_some_and(|n| n == "deps") { deps.parent().unwrap_or(deps) } else { deps };
        Binaries::in_dir(profile_dir)
    }
}
