//! One daemon per config directory (and per state directory).
//!
//! Both directories are locked with `flock`; the state directory's `lock` file also records
//! the holder's pid so that a refused second instance can say who holds it. Locks vanish with
//! the process, so a killed daemon never leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// Held for the daemon's lifetime.
#[derive(Debug)]
pub struct InstanceLock {
    _config_dir: Flock<File>,
    state_file: Flock<File>,
    state_path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another p2pd{holder} is already running with {what} {}", path.display())]
    Held { what: &'static str, path: PathBuf, holder: String },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

fn lock(
    file: File,
    what: &'static str,
    path: &Path,
    holder: impl FnOnce() -> String,
) -> Result<Flock<File>, LockError> {
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| match e {
        Errno::EWOULDBLOCK => LockError::Held { what, path: path.to_path_buf(), holder: holder() },
        e => LockError::Io { path: path.to_path_buf(), source: io::Error::from_raw_os_error(e as i32) },
    })
}

impl InstanceLock {
    /// Locks `config_dir` (created if missing) and `state_dir/lock`.
    pub fn acquire(config_dir: &Path, state_dir: &Path) -> Result<InstanceLock, LockError> {
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LockError::Io { path, source }
        };
        let lock_path = state_dir.join("lock");
        let holder = || {
            let mut pid = String::new();
            let _ = File::open(&lock_path).and_then(|mut f| f.read_to_string(&mut pid));
            let pid = pid.trim();
            if pid.is_empty() { String::new() } else { format!(" (pid {pid})") }
        };
        std::fs::create_dir_all(config_dir).map_err(io_err(config_dir))?;
        let dir = File::open(config_dir).map_err(io_err(config_dir))?;
        let config_lock = lock(dir, "config directory", config_dir, holder)?;

        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        let state_lock = lock(file, "state directory", state_dir, holder)?;
        let mut lock = InstanceLock { _config_dir: config_lock, state_file: state_lock, state_path: lock_path };
        lock.record_pid()?;
        Ok(lock)
    }

    /// Writes this process's pid into the state directory's lock file: at start, and again
    /// after `--daemon` forked (the locks pass to the child; the pid written first was the
    /// parent's, which has exited).
    pub fn record_pid(&mut self) -> Result<(), LockError> {
        let io_err = |source| LockError::Io { path: self.state_path.clone(), source };
        self.state_file.set_len(0).map_err(io_err)?;
        self.state_file.rewind().map_err(io_err)?;
        writeln!(self.state_file, "{}", std::process::id()).map_err(io_err)
    }
}
