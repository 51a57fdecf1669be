//! Opening files below a data directory without ever leaving it.
//!
//! The data directory itself is the operator's choice and may be reached through symlinks.
//! Below it, every component named by a descriptor is opened with `openat(…, O_NOFOLLOW)`
//! relative to its parent's descriptor, so a symlink planted anywhere in the tree — or a
//! directory swapped for one mid-run — makes the open fail (`ELOOP`/`ENOTDIR`) instead of
//! leading outside. Combined with [`RelPath`](crate::descriptor::RelPath) validation (no
//! `..`, no absolute paths) nothing a descriptor says can write outside the data directory.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, renameat};
use nix::sys::stat::{Mode, SFlag, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};

/// What a name in a directory is (never following symlinks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Other,
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

    /// Opens the regular file `name` in this directory (no symlinks).
    pub fn open_file(&self, name: &str, access: Access) -> io::Result<File> {
        let mut flags = OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        flags |= match access {
            Access::Read => OFlag::O_RDONLY,
            Access::ReadWrite => OFlag::O_RDWR,
            Access::Create => OFlag::O_RDWR | OFlag::O_CREAT,
        };
        let fd = openat(self.fd.as_fd(), name, flags, Mode::from_bits_truncate(0o644))
            .map_err(|e| symlink_hint(e, &self.path.join(name)))?;
        let file = File::from(fd);
        if !file.metadata()?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a regular file", self.path.join(name).display()),
            ));
        }
        Ok(file)
    }

    /// Renames `from` to `to` inside this directory and makes it durable. Fails if `to` exists
    /// and is a non-empty directory; replaces a file.
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        renameat(self.fd.as_fd(), from, self.fd.as_fd(), to).map_err(errno)?;
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

    #[test]
    fn creates_nested_directories() {
        let data = tempfile::tempdir().unwrap();
        let root = Dir::open(data.path(), false).unwrap();
        let d = root.descend(&["a".into(), "b".into()], true).unwrap();
        d.open_file("c", Access::Create).unwrap();
        assert!(data.path().join("a/b/c").is_file());
    }
}
