//! Where each host keeps its data: the run directory's filesystem (tmpfs, the default), or an
//! ext4 filesystem of its own (`--fs ext4`).
//!
//! With ext4 every host's data directory — and the floor's output directory — is the mount
//! point of its own ext4 image:
//! - a sparse file on a disk, under the system's temporary directory (which must not be in
//!   memory: set `TMPDIR` if it is), sized for the content and some room;
//! - made by `mkfs.ext4` with the inode tables and the journal written out at once
//!   (`lazy_itable_init=0,lazy_journal_init=0`), so that no kernel thread initialises them
//!   during the run, and no reserved blocks;
//! - attached to a loop device with direct I/O, so that its pages are cached once (by this
//!   ext4) and not a second time by the filesystem holding the image;
//! - mounted with the default options, and the loop device detached at once: the kernel
//!   frees it when the filesystem is unmounted, so an unmount is all a teardown needs.
//!
//! An image per host rather than one directory per host on the root disk: a host of a real
//! fleet has a filesystem of its own, with its own journal and writeback, and its fdatasync
//! waits for its own data only. Sixty-four hosts in directories of one filesystem would share a
//! journal, and each one's fsync would commit the others' metadata too.
//!
//! Mount points are recorded in the fleet's teardown plan the moment they exist; `cleanup`
//! unmounts what a killed run left ([`mounts_under`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use nix::sys::statfs::{EXT4_SUPER_MAGIC, FsType, TMPFS_MAGIC, statfs};
use serde::{Deserialize, Serialize};

/// ramfs's magic number (linux/magic.h), which nix does not name.
const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);

/// Room in every image beyond the content: state, the journal, ext4's own metadata.
pub const IMAGE_ROOM_BYTES: u64 = 64 << 20;

/// What holds each host's data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Filesystem {
    /// The run directory's filesystem: `/dev/shm` when it has room.
    #[default]
    Tmpfs,
    /// An ext4 image per host, loop-mounted (see the module doc).
    Ext4,
}

impl Filesystem {
    pub fn as_str(self) -> &'static str {
        match self {
            Filesystem::Tmpfs => "tmpfs",
            Filesystem::Ext4 => "ext4",
        }
    }
}

impl fmt::Display for Filesystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Filesystem {
    type Err = String;

    fn from_str(s: &str) -> Result<Filesystem, String> {
        match s {
            "tmpfs" => Ok(Filesystem::Tmpfs),
            "ext4" => Ok(Filesystem::Ext4),
            other => Err(format!("`{other}` is not a filesystem the testbed can set up: tmpfs or ext4")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("`{0}` is not installed; --fs ext4 needs it (e2fsprogs provides mkfs.ext4, util-linux the others)")]
    MissingTool(&'static str),
    #[error(
        "{} is on {filesystem}, so ext4 images there would live in memory; set TMPDIR to a directory on a disk",
        path.display()
    )]
    InMemory { path: PathBuf, filesystem: String },
    #[error("{} has {} MiB free; the ext4 images need up to {} MiB", path.display(), free >> 20, needed >> 20)]
    NoRoom { path: PathBuf, needed: u64, free: u64 },
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

fn run(program: &str, args: &[&str]) -> Result<String, VolumeError> {
    let command = || format!("{program} {}", args.join(" "));
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| VolumeError::Command { command: command(), stderr: e.to_string() })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    } else {
        Err(VolumeError::Command {
            command: command(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

/// Whether `mkfs.ext4`, `losetup`, `mount` and `umount` are on the PATH.
pub fn check_ext4_tools() -> Result<(), VolumeError> {
    for (tool, flag) in [("mkfs.ext4", "-V"), ("losetup", "--version"), ("mount", "--version"), ("umount", "--version")]
    {
        let found = Command::new(tool).arg(flag).output().is_ok_and(|o| o.status.success());
        if !found {
            return Err(VolumeError::MissingTool(tool));
        }
    }
    Ok(())
}

/// The name of the filesystem holding `path` (`tmpfs`, `ext4`, …; `0x…` for one not named
/// here, `unknown` if it cannot be asked).
pub fn filesystem_name(path: &Path) -> String {
    match statfs(path) {
        Ok(s) => fs_type_name(s.filesystem_type()),
        Err(_) => "unknown".into(),
    }
}

fn fs_type_name(kind: FsType) -> String {
    // ext2, ext3 and ext4 share a magic number; the testbed only makes ext4.
    match kind {
        TMPFS_MAGIC => "tmpfs".into(),
        RAMFS_MAGIC => "ramfs".into(),
        EXT4_SUPER_MAGIC => "ext4".into(),
        nix::sys::statfs::BTRFS_SUPER_MAGIC => "btrfs".into(),
        nix::sys::statfs::XFS_SUPER_MAGIC => "xfs".into(),
        nix::sys::statfs::OVERLAYFS_SUPER_MAGIC => "overlayfs".into(),
        other => format!("{:#x}", other.0),
    }
}

/// Where the images of a run go: the system's temporary directory, which must be on a disk.
pub fn image_base() -> Result<PathBuf, VolumeError> {
    let base = std::env::temp_dir();
    let filesystem = filesystem_name(&base);
    if filesystem == "tmpfs" || filesystem == "ramfs" {
        return Err(VolumeError::InMemory { path: base, filesystem });
    }
    Ok(base)
}

/// The size of one image for content of `content_bytes`: the content, an eighth more for
/// ext4's metadata, and [`IMAGE_ROOM_BYTES`], in whole MiB.
pub fn image_bytes(content_bytes: u64) -> u64 {
    let raw = content_bytes.saturating_add(content_bytes / 8).saturating_add(IMAGE_ROOM_BYTES);
    raw.div_ceil(1 << 20) << 20
}

/// Fails unless `base` has `needed` bytes free.
pub fn check_room(base: &Path, needed: u64) -> Result<(), VolumeError> {
    let stat = nix::sys::statvfs::statvfs(base)
        .map_err(|e| VolumeError::Io { path: base.to_path_buf(), source: std::io::Error::from(e) })?;
    let free = stat.blocks_available().saturating_mul(stat.fragment_size());
    if free < needed {
        return Err(VolumeError::NoRoom { path: base.to_path_buf(), needed, free });
    }
    Ok(())
}

/// Makes an ext4 image of `bytes` at `image` and mounts it on `mount_point` (an existing,
/// empty directory). The caller records `mount_point` for teardown once this returns; if it
/// fails half-way, whatever was attached is undone here.
pub fn mount_new_ext4(image: &Path, bytes: u64, mount_point: &Path) -> Result<(), VolumeError> {
    let io = |source| VolumeError::Io { path: image.to_path_buf(), source };
    let file = std::fs::File::create(image).map_err(io)?;
    file.set_len(bytes).map_err(io)?;
    drop(file);
    let image_text = image.display().to_string();
    run(
        "mkfs.ext4",
        &["-q", "-F", "-m", "0", "-E", "lazy_itable_init=0,lazy_journal_init=0", "-L", "p2ptb", &image_text],
    )?;
    let device = run("losetup", &["--direct-io=on", "--find", "--show", &image_text])?;
    let mount_text = mount_point.display().to_string();
    if let Err(e) = run("mount", &["-t", "ext4", &device, &mount_text]) {
        let _ = run("losetup", &["-d", &device]);
        return Err(e);
    }
    // The device is in use by the mount: detaching it now only marks it to be freed when the
    // filesystem is unmounted (the kernel's autoclear).
    run("losetup", &["-d", &device])?;
    Ok(())
}

/// Unmounts `mount_point` (lazily if it is busy); the loop device goes with it.
pub fn unmount(mount_point: &Path) -> Result<(), VolumeError> {
    let text = mount_point.display().to_string();
    match run("umount", &[&text]) {
        Ok(_) => Ok(()),
        Err(first) => run("umount", &["--lazy", &text]).map(|_| ()).map_err(|_| first),
    }
}

/// Writes out every dirty page of the filesystem holding `path` (syncfs), so that the
/// writeback of content generated before a run does not land in it.
pub fn sync_filesystem(path: &Path) -> Result<(), VolumeError> {
    let io = |source| VolumeError::Io { path: path.to_path_buf(), source };
    let dir = std::fs::File::open(path).map_err(io)?;
    nix::unistd::syncfs(&dir).map_err(|e| io(std::io::Error::from(e)))
}

/// Mount points at or below `dir`, deepest first (from `/proc/self/mountinfo`).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = parse_mount_points(&text).into_iter().filter(|p| p.starts_with(dir)).collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}

/// The mount point (fifth field) of every line of a mountinfo text, octal escapes undone.
pub fn parse_mount_points(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo.lines().filter_map(|line| line.split(' ').nth(4)).map(|field| PathBuf::from(unescape(field))).collect()
}

/// mountinfo writes space, tab, newline and backslash as `\NNN` (octal).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b))
            && let Ok(value) = u8::from_str_radix(&field[i + 1..i + 4], 8)
        {
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filesystems_parse_and_display_as_the_flag_spells_them() {
        assert_eq!("tmpfs".parse(), Ok(Filesystem::Tmpfs));
        assert_eq!("ext4".parse(), Ok(Filesystem::Ext4));
        assert_eq!(Filesystem::Ext4.to_string(), "ext4");
        let err = "xfs".parse::<Filesystem>().expect_err("not offered");
        assert!(err.contains("tmpfs or ext4"), "{err}");
        assert_eq!(Filesystem::default(), Filesystem::Tmpfs);
    }

    #[test]
    fn images_hold_the_content_and_room_in_whole_mib() {
        assert_eq!(image_bytes(32 << 20), (36 + 64) << 20);
        assert_eq!(image_bytes(256 << 20), (288 + 64) << 20);
        assert_eq!(image_bytes(1) % (1 << 20), 0);
        assert!(image_bytes(1) > IMAGE_ROOM_BYTES);
    }

    #[test]
    fn mount_points_are_read_from_mountinfo_with_escapes() {
        let text = "22 1 252:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
                    40 22 7:3 / /dev/shm/p2ptb9-0/h1/data rw,relatime - ext4 /dev/loop3 rw\n\
                    41 22 7:4 / /tmp/with\\040space rw - ext4 /dev/loop4 rw\n";
        let points = parse_mount_points(text);
        assert_eq!(
            points,
            vec![PathBuf::from("/"), PathBuf::from("/dev/shm/p2ptb9-0/h1/data"), PathBuf::from("/tmp/with space")]
        );
    }

    #[test]
    fn the_filesystem_of_proc_is_named_or_given_in_hex() {
        assert_eq!(fs_type_name(TMPFS_MAGIC), "tmpfs");
        assert_eq!(fs_type_name(EXT4_SUPER_MAGIC), "ext4");
        assert_eq!(fs_type_name(FsType(0x1234)), "0x1234");
    }
}
