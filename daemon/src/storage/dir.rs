//! Opening files below a data directory without ever leaving it.
//!
//! The data directory itself is the operator's choice and may be reached through symlinks.
//! Below it, every component named by a descriptor is opened with `openat(…, O_NOFOLLOW)`
//! relative to its parent's descriptor, so a symlink planted anywhere in the tree — or a
//! directory swapped for one mid-run — makes the open fail (`ELOOP`/`ENOTDIR`) instead of
//! leading outside. Combined with [`RelPath`](crate::descriptor::RelPath) validation (no
//! `..`, no absolute paths) nothing a descriptor says can write outside the data directory.
//!
//! Only regular files are opened as content. A FIFO, socket or device node at a content path is
//! refused by its type before it is opened (opening a FIFO blocks until a writer appears;
//! opening a device runs its driver), and the open itself is non-blocking and checked again
//! with `fstat`, in case the name was swapped in between.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, FcntlArg, OFlag, RenameFlags, fcntl, openat, renameat, renameat2};
use nix::sys::stat::{Mode, SFlag, fstat, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};

/// What a name in a directory is (never following symlinks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Other,
}

/// What tells one file or directory from another on disk, whatever its name: a rename keeps it,
/// a replacement (delete and create again) does not. Recorded in a torrent's claim
/// ([`claim`](super::claim)) so that it deletes or rewrites only the content root it made or
/// took over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EntryId {
    /// `st_dev`: the filesystem.
    pub dev: u64,
    /// `st_ino`: the inode in it.
    pub ino: u64,
    /// Birth time (ns since the epoch), where the filesystem reports one (`statx`). Tells a new
    /// file from an old one that had the same inode number before it was deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub born_ns: Option<i128>,
}

impl EntryId {
    /// Whether `self` and `other` are the same entry. With a birth time on both sides the
    /// filesystem's device number is not compared: it is not stable across reboots on every
    /// filesystem (btrfs subvolumes, dynamically numbered NVMe partitions), while an inode
    /// number together with its birth time is.
    pub fn same_as(&self, other: &EntryId) -> bool {
        self.ino == other.ino
            && match (self.born_ns, other.born_ns) {
                (Some(a), Some(b)) => a == b,
                _ => self.dev == other.dev,
            }
    }

    /// The identity of what `file` is open on (a file or a directory).
    fn of(file: &File) -> io::Result<EntryId> {
        use std::os::unix::fs::MetadataExt;
        // std asks `statx` for the birth time where the kernel has it.
        let meta = file.metadata()?;
        let born_ns = meta.created().ok().map(|t| {
            let ns = |d: std::time::Duration| d.as_nanos() as i128;
            match t.duration_since(std::time::UNIX_EPOCH) {
                Ok(d) => ns(d),
                Err(e) => -ns(e.duration()),
            }
        });
        Ok(EntryId { dev: meta.dev(), ino: meta.ino(), born_ns })
    }
}

/// How to open a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    ReadWrite,
    /// Read-write, creating the file and missing parent directories.
    Create,
}

fn errno(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// A content path that holds something other than a regular file. Carried inside an
/// [`io::Error`]; the caller's context names the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("is {what}, not a regular file; p2pd reads and writes only regular files in a data directory (move it away)")]
pub struct NotRegularFile {
    /// The file type, in words ("a FIFO (named pipe)").
    pub what: &'static str,
}

/// The file type in `st_mode`, in words, or `None` for a regular file.
fn non_regular(st_mode: libc::mode_t) -> Option<&'static str> {
    let kind = SFlag::from_bits_truncate(st_mode) & SFlag::S_IFMT;
    Some(match kind {
        k if k == SFlag::S_IFREG => return None,
        k if k == SFlag::S_IFDIR => "a directory",
        k if k == SFlag::S_IFLNK => "a symbolic link",
        k if k == SFlag::S_IFIFO => "a FIFO (named pipe)",
        k if k == SFlag::S_IFSOCK => "a socket",
        k if k == SFlag::S_IFCHR => "a character device",
        k if k == SFlag::S_IFBLK => "a block device",
        _ => "a special file",
    })
}

fn not_regular(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, NotRegularFile { what })
}

/// An open directory that descriptor paths are resolved against.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl Dir {
    /// Opens the operator-configured directory at `path` (following symlinks in it), creating
    /// it (mode 0755) if `create`.
    pub fn open(path: &Path, create: bool) -> io::Result<Dir> {
        if create {
            std::fs::create_dir_all(path)?;
        }
        let fd = nix::fcntl::open(path, OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(errno)?;
        Ok(Dir { fd, path: path.to_path_buf() })
    }

    /// Where this open directory is now, as the kernel knows it (`/proc/self/fd`): what a
    /// symbolic link in the configured path led to when it was opened, whatever the link says
    /// now. The configured path where `/proc` is not mounted.
    pub fn real_path(&self) -> PathBuf {
        std::fs::read_link(format!("/proc/self/fd/{}", self.fd.as_raw_fd())).unwrap_or_else(|_| self.path.clone())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The kind of the entry `name` directly in this directory, or `None` if absent.
    pub fn entry_kind(&self, name: &str) -> io::Result<Option<EntryKind>> {
        match fstatat(self.fd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => {
                let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
                Ok(Some(if kind == SFlag::S_IFREG {
                    EntryKind::File
                } else if kind == SFlag::S_IFDIR {
                    EntryKind::Dir
                } else if kind == SFlag::S_IFLNK {
                    EntryKind::Symlink
                } else {
                    EntryKind::Other
                }))
            }
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(errno(e)),
        }
    }

    /// The identity of the entry `name` directly in this directory (not following a symbolic
    /// link: a link's own identity), or `None` if absent. Never opens the entry for reading, so
    /// a FIFO there does not block.
    pub fn entry_id(&self, name: &str) -> io::Result<Option<EntryId>> {
        let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = match openat(self.fd.as_fd(), name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(errno(e)),
        };
        EntryId::of(&File::from(fd)).map(Some)
    }

    /// Creates the empty regular file `name` here, failing with `AlreadyExists` if anything is
    /// there, and returns its identity, taken from the file just created (not looked up again by
    /// name, where something else could have been put meanwhile).
    pub fn create_new_file(&self, name: &str) -> io::Result<EntryId> {
        let flags = OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(self.fd.as_fd(), name, flags, Mode::from_bits_truncate(0o644)).map_err(errno)?;
        EntryId::of(&File::from(fd))
    }

    /// Creates the empty directory `name` here (mode 0755), failing with `AlreadyExists` if
    /// anything is there, and returns the identity of the directory it then opens (without
    /// following a symbolic link).
    pub fn create_new_dir(&self, name: &str) -> io::Result<EntryId> {
        mkdirat(self.fd.as_fd(), name, Mode::from_bits_truncate(0o755)).map_err(errno)?;
        let flags = OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(self.fd.as_fd(), name, flags, Mode::empty()).map_err(errno)?;
        EntryId::of(&File::from(fd))
    }

    /// Whether the entry `name` is an empty regular file or an empty directory (not following
    /// symbolic links; `false` for anything else, or if absent).
    pub fn is_empty_entry(&self, name: &str) -> io::Result<bool> {
        let st = match fstatat(self.fd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(false),
            Err(e) => return Err(errno(e)),
        };
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        if kind == SFlag::S_IFREG {
            return Ok(st.st_size == 0);
        }
        if kind != SFlag::S_IFDIR {
            return Ok(false);
        }
        let sub = self.subdir(name, false)?;
        let mut listing = nix::dir::Dir::from_fd(sub.fd).map_err(errno)?;
        for entry in listing.iter() {
            let entry = entry.map_err(errno)?;
            if !matches!(entry.file_name().to_bytes(), b"." | b"..") {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Opens the subdirectory `name` (no symlinks), creating it if `create`.
    pub fn subdir(&self, name: &str, create: bool) -> io::Result<Dir> {
        let flags = OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = match openat(self.fd.as_fd(), name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if create => {
                match mkdirat(self.fd.as_fd(), name, Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(errno(e)),
                }
                openat(self.fd.as_fd(), name, flags, Mode::empty()).map_err(errno)?
            }
            Err(e) => return Err(symlink_hint(e, &self.path.join(name))),
        };
        Ok(Dir { fd, path: self.path.join(name) })
    }

    /// Walks `components` as directories from here.
    pub fn descend(&self, components: &[String], create: bool) -> io::Result<Dir> {
        let mut dir = Dir { fd: self.fd.try_clone()?, path: self.path.clone() };
        for c in components {
            dir = dir.subdir(c, create)?;
        }
        Ok(dir)
    }

    /// Opens the regular file `name` in this directory (no symlinks); anything else at `name`
    /// is refused with a [`NotRegularFile`] error, without blocking.
    pub fn open_file(&self, name: &str, access: Access) -> io::Result<File> {
        // Look before opening. A symlink is left to `O_NOFOLLOW` (and `symlink_hint`).
        match fstatat(self.fd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => match non_regular(st.st_mode) {
                Some(what) if (st.st_mode & libc::S_IFMT) != libc::S_IFLNK => return Err(not_regular(what)),
                _ => {}
            },
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(errno(e)),
        }
        // Non-blocking in case a FIFO was put there since; cleared again below.
        let mut flags = OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
        flags |= match access {
            Access::Read => OFlag::O_RDONLY,
            Access::ReadWrite => OFlag::O_RDWR,
            Access::Create => OFlag::O_RDWR | OFlag::O_CREAT,
        };
        let fd = openat(self.fd.as_fd(), name, flags, Mode::from_bits_truncate(0o644))
            .map_err(|e| symlink_hint(e, &self.path.join(name)))?;
        if let Some(what) = non_regular(fstat(fd.as_fd()).map_err(errno)?.st_mode) {
            return Err(not_regular(what));
        }
        let status = OFlag::from_bits_truncate(fcntl(fd.as_fd(), FcntlArg::F_GETFL).map_err(errno)?);
        fcntl(fd.as_fd(), FcntlArg::F_SETFL(status & !OFlag::O_NONBLOCK)).map_err(errno)?;
        Ok(File::from(fd))
    }

    /// Renames `from` to `to` inside this directory and makes it durable. Fails if `to` exists
    /// and is a non-empty directory; replaces a file.
    /// Renames `from` to `to`, never replacing what is at `to` (`AlreadyExists` then): what
    /// is there may be an operator's. Where the filesystem cannot say so atomically
    /// (`RENAME_NOREPLACE` unsupported), `to` is checked first.
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        match renameat2(self.fd.as_fd(), from, self.fd.as_fd(), to, RenameFlags::RENAME_NOREPLACE) {
            Ok(()) => {}
            Err(Errno::EINVAL | Errno::ENOSYS) => {
                if self.entry_kind(to)?.is_some() {
                    return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{to} already exists")));
                }
                renameat(self.fd.as_fd(), from, self.fd.as_fd(), to).map_err(errno)?;
            }
            Err(e) => return Err(errno(e)),
        }
        self.sync()
    }

    /// Removes the file `name` (not following symlinks: a symlink itself is removed).
    pub fn remove_file(&self, name: &str) -> io::Result<()> {
        match unlinkat(self.fd.as_fd(), name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(errno(e)),
        }
    }

    /// Removes the directory `name` if it is empty; returns whether it was removed.
    pub fn remove_empty_dir(&self, name: &str) -> io::Result<bool> {
        match unlinkat(self.fd.as_fd(), name, UnlinkatFlags::RemoveDir) {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT | Errno::ENOTEMPTY | Errno::EEXIST) => Ok(false),
            Err(e) => Err(errno(e)),
        }
    }

    /// fsyncs the directory (makes renames and new entries in it durable).
    pub fn sync(&self) -> io::Result<()> {
        nix::unistd::fsync(self.fd.as_fd()).map_err(errno)
    }

    /// Bytes available to unprivileged users on this directory's filesystem.
    pub fn available_bytes(&self) -> io::Result<u64> {
        let st = nix::sys::statvfs::fstatvfs(self.fd.as_fd()).map_err(errno)?;
        Ok(st.blocks_available() as u64 * st.fragment_size() as u64)
    }
}

/// `O_NOFOLLOW` on a symlink fails with `ELOOP`; say so in words (naming `path`).
fn symlink_hint(e: Errno, path: &Path) -> io::Error {
    match e {
        Errno::ELOOP => io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is a symbolic link; p2pd does not follow links inside a data directory", path.display()),
        ),
        Errno::ENOTDIR => io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a directory (or a symbolic link to one)", path.display()),
        ),
        // Callers name the file; keep the OS error as it is (its code says whether it may pass).
        other => errno(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rename_never_replaces_what_is_there() {
        let data = tempfile::tempdir().unwrap();
        std::fs::write(data.path().join("x.part"), b"ours").unwrap();
        std::fs::write(data.path().join("x"), b"the operator's").unwrap();
        let root = Dir::open(data.path(), false).unwrap();
        let e = root.rename("x.part", "x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(data.path().join("x")).unwrap(), b"the operator's");
        std::fs::remove_file(data.path().join("x")).unwrap();
        root.rename("x.part", "x").unwrap();
        assert_eq!(std::fs::read(data.path().join("x")).unwrap(), b"ours");
    }

    #[test]
    fn planted_symlinks_are_never_followed() {
        let outside = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), data.path().join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("f"), data.path().join("flink")).unwrap();
        let root = Dir::open(data.path(), false).unwrap();
        assert_eq!(root.entry_kind("link").unwrap(), Some(EntryKind::Symlink));
        let e = root.descend(&["link".into(), "x".into()], true).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let e = root.open_file("flink", Access::Create).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0, "nothing written outside");
    }

    /// Regression: a FIFO at a content path made `open` block until a writer appeared.
    #[test]
    fn special_files_are_refused_without_blocking() {
        let data = tempfile::tempdir().unwrap();
        nix::unistd::mkfifo(&data.path().join("fifo"), Mode::from_bits_truncate(0o644)).unwrap();
        let listener = std::os::unix::net::UnixListener::bind(data.path().join("sock")).unwrap();
        std::fs::create_dir(data.path().join("dir")).unwrap();
        let root = Dir::open(data.path(), false).unwrap();
        for (name, what) in [("fifo", "a FIFO (named pipe)"), ("sock", "a socket"), ("dir", "a directory")] {
            for access in [Access::Read, Access::ReadWrite, Access::Create] {
                let e = root.open_file(name, access).unwrap_err();
                let inner = e.get_ref().and_then(|i| i.downcast_ref::<NotRegularFile>());
                assert_eq!(inner, Some(&NotRegularFile { what }), "{name} {access:?}: {e}");
            }
        }
        drop(listener);
        // A character device, if this system lets us see one (it always has /dev/null).
        let dev = Dir::open(Path::new("/dev"), false).unwrap();
        let e = dev.open_file("null", Access::Read).unwrap_err();
        assert!(e.to_string().starts_with("is a character device, not a regular file"), "{e}");
    }

    #[test]
    fn opened_files_are_blocking_again() {
        let data = tempfile::tempdir().unwrap();
        let root = Dir::open(data.path(), false).unwrap();
        let f = root.open_file("f", Access::Create).unwrap();
        let fl = OFlag::from_bits_truncate(fcntl(f.as_fd(), FcntlArg::F_GETFL).unwrap());
        assert!(!fl.contains(OFlag::O_NONBLOCK), "{fl:?}");
    }

    /// A rename keeps an entry's identity; a replacement under the same name does not.
    #[test]
    fn entry_ids_follow_the_entry_not_the_name() {
        let data = tempfile::tempdir().unwrap();
        let root = Dir::open(data.path(), false).unwrap();
        assert_eq!(root.entry_id("x").unwrap(), None);
        std::fs::write(data.path().join("x.part"), b"ours").unwrap();
        let ours = root.entry_id("x.part").unwrap().unwrap();
        root.rename("x.part", "x").unwrap();
        assert!(root.entry_id("x").unwrap().unwrap().same_as(&ours));
        // Held open, so that the new file cannot get the old inode number back.
        let _old = File::open(data.path().join("x")).unwrap();
        std::fs::remove_file(data.path().join("x")).unwrap();
        std::fs::write(data.path().join("x"), b"theirs").unwrap();
        assert!(!root.entry_id("x").unwrap().unwrap().same_as(&ours));
        // A FIFO is looked at, not opened.
        nix::unistd::mkfifo(&data.path().join("fifo"), Mode::from_bits_truncate(0o644)).unwrap();
        assert!(root.entry_id("fifo").unwrap().is_some());
        // The device number is compared only when a birth time is missing.
        let a = EntryId { dev: 1, ino: 7, born_ns: Some(5) };
        assert!(a.same_as(&EntryId { dev: 2, ..a }), "device renumbered after a reboot");
        assert!(!a.same_as(&EntryId { born_ns: Some(6), ..a }), "inode number reused");
        assert!(!a.same_as(&EntryId { dev: 2, born_ns: None, ..a }));
        assert!(a.same_as(&EntryId { born_ns: None, ..a }));
    }

    #[test]
    fn empty_entries() {
        let data = tempfile::tempdir().unwrap();
        let root = Dir::open(data.path(), false).unwrap();
        std::fs::write(data.path().join("empty"), b"").unwrap();
        std::fs::write(data.path().join("full"), b"x").unwrap();
        std::fs::create_dir_all(data.path().join("d/sub")).unwrap();
        std::fs::create_dir(data.path().join("e")).unwrap();
        std::os::unix::fs::symlink("e", data.path().join("link")).unwrap();
        for (name, empty) in [("empty", true), ("full", false), ("d", false), ("e", true)] {
            assert_eq!(root.is_empty_entry(name).unwrap(), empty, "{name}");
        }
        assert!(root.descend(&["d".into()], false).unwrap().is_empty_entry("sub").unwrap());
        assert!(!root.is_empty_entry("link").unwrap() && !root.is_empty_entry("absent").unwrap());
    }

    #[test]
    fn creates_nested_directories() {
        let data = tempfile::tempdir().unwrap();
        let root = Dir::open(data.path(), false).unwrap();
        let d = root.descend(&["a".into(), "b".into()], true).unwrap();
        d.open_file("c", Access::Create).unwrap();
        assert!(data.path().join("a/b/c").is_file());
    }

    /// A content root is created only where nothing is (an operator's entry put there since
    /// the look is never taken), and its identity is the created entry's.
    #[test]
    fn new_roots_are_created_exclusively() {
        let data = tempfile::tempdir().unwrap();
        let root = Dir::open(data.path(), false).unwrap();
        let f = root.create_new_file("f.part").unwrap();
        let d = root.create_new_dir("d.part").unwrap();
        assert!(f.same_as(&root.entry_id("f.part").unwrap().unwrap()));
        assert!(d.same_as(&root.entry_id("d.part").unwrap().unwrap()));
        std::fs::write(data.path().join("theirs"), b"the operator's").unwrap();
        std::fs::create_dir(data.path().join("their-dir")).unwrap();
        std::os::unix::fs::symlink("/etc", data.path().join("link")).unwrap();
        for name in ["theirs", "their-dir", "link", "f.part"] {
            let e = root.create_new_file(name).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{name}: {e}");
            let e = root.create_new_dir(name).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{name}: {e}");
        }
        assert_eq!(std::fs::read(data.path().join("theirs")).unwrap(), b"the operator's");
    }
}
