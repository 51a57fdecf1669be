//! Crash-safe file replacement and quarantine of unreadable files.
//!
//! [`write_atomic`] is the only way the daemon replaces a durable file: write a temporary file
//! in the same directory (`O_EXCL`, mode 0600 unless asked otherwise), `fsync` it, `rename` it
//! over the target, `fsync` the directory. After SIGKILL or power loss at any instant the target
//! is the old or the new version, never a mix; a leftover temporary file is removed by
//! [`remove_stale_temporaries`] at the next start.
//!
//! With the `fault-injection` feature, `P2PD_FAULT=abort_after:<step>` (step one of
//! `write_tmp`, `fsync_file`, `rename`, `fsync_dir`; optionally `:<substring of the target
//! path>`) aborts the process right after that step, so tests can check every crash point.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Marks temporary files; nothing else the daemon writes contains it.
pub const TEMP_MARKER: &str = ".p2pd-tmp.";

/// The steps of an atomic write, in order (names used by fault injection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    WriteTmp,
    FsyncFile,
    Rename,
    FsyncDir,
}

impl Step {
    #[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
    fn name(self) -> &'static str {
        match self {
            Step::WriteTmp => "write_tmp",
            Step::FsyncFile => "fsync_file",
            Step::Rename => "rename",
            Step::FsyncDir => "fsync_dir",
        }
    }
}

#[cfg(feature = "fault-injection")]
fn fault_point(step: Step, target: &Path) {
    let Ok(spec) = std::env::var("P2PD_FAULT") else { return };
    let Some(rest) = spec.strip_prefix("abort_after:") else { return };
    let (wanted, filter) = rest.split_once(':').unwrap_or((rest, ""));
    if wanted == step.name() && target.to_string_lossy().contains(filter) {
        eprintln!("p2pd: fault injection: aborting after {} of {}", step.name(), target.display());
        std::process::abort();
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
fn fault_point(_step: Step, _target: &Path) {}

/// Replaces `target` with `bytes` atomically and durably; the file gets `mode`.
pub fn write_atomic_mode(target: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name =
        target.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "target has no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!("{TEMP_MARKER}{:016x}", rand::random::<u64>()));
    let tmp = dir.join(tmp_name);

    let result = (|| {
        let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        file.write_all(bytes)?;
        fault_point(Step::WriteTmp, target);
        file.sync_all()?;
        fault_point(Step::FsyncFile, target);
        drop(file);
        fs::rename(&tmp, target)?;
        fault_point(Step::Rename, target);
        File::open(dir)?.sync_all()?;
        fault_point(Step::FsyncDir, target);
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// [`write_atomic_mode`] with mode 0600: state is private to the daemon.
pub fn write_atomic(target: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_mode(target, bytes, 0o600)
}

/// Removes a file durably (unlink, then fsync the directory). A missing file is not an error.
pub fn remove_durably(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Moves an unreadable file aside to `NAME.corrupt-<unix seconds>` and returns the new path.
/// The file is never deleted: it is evidence.
pub fn quarantine(path: &Path) -> io::Result<PathBuf> {
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".corrupt-{stamp}"));
    let mut target = path.with_file_name(&name);
    let mut n = 1;
    while target.exists() {
        let mut numbered = name.clone();
        numbered.push(format!(".{n}"));
        target = path.with_file_name(numbered);
        n += 1;
    }
    fs::rename(path, &target)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(target)
}

/// Deletes temporary files that an interrupted [`write_atomic`] left in `dir`; returns how many.
pub fn remove_stale_temporaries(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().contains(TEMP_MARKER) && entry.file_type()?.is_file() {
            fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("f");
        write_atomic(&target, b"one").unwrap();
        write_atomic(&target, b"two").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn stale_temporaries_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(format!(".f{TEMP_MARKER}0123")), b"partial").unwrap();
        fs::write(dir.path().join("keep"), b"x").unwrap();
        assert_eq!(remove_stale_temporaries(dir.path()).unwrap(), 1);
        assert!(dir.path().join("keep").exists());
    }

    #[test]
    fn quarantine_keeps_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("node.state");
        fs::write(&f, b"garbage").unwrap();
        let moved = quarantine(&f).unwrap();
        assert!(!f.exists());
        assert_eq!(fs::read(&moved).unwrap(), b"garbage");
        assert!(moved.file_name().unwrap().to_string_lossy().starts_with("node.state.corrupt-"));
    }
}
