//! Real filesystems for tests to run daemons on: a size-limited tmpfs, or ext4 in a
//! loop-mounted image (root only; skipped through [`require`] otherwise).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Need, require};

pub fn run(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd).args(args).output().map(|o| o.status.success()).unwrap_or(false)
}

/// Filesystems a test mounts (root only), unmounted (lazily: a daemon may still hold them) on
/// drop.
pub struct Mount {
    pub dir: PathBuf,
    image: Option<PathBuf>,
}

impl Mount {
    /// Root (to mount) and the tools; false if the test skips (see [`require`]).
    pub fn available(tools: &[Need]) -> bool {
        require(&[&[Need::Root, Need::tool("mount", "mount")], tools].concat(), None)
    }

    /// A tmpfs of `size` (no preallocation there: writes can fail with ENOSPC mid-download).
    pub fn tmpfs(dir: &Path, size: &str) -> Mount {
        std::fs::create_dir_all(dir).unwrap();
        assert!(run("mount", &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", dir.to_str().unwrap()]));
        Mount { dir: dir.to_path_buf(), image: None }
    }

    /// An ext4 filesystem of `mib` MiB in a file, loop-mounted; `errors=remount-ro`.
    pub fn ext4(dir: &Path, mib: u64) -> Mount {
        std::fs::create_dir_all(dir).unwrap();
        let image = dir.with_extension("img");
        std::fs::File::create(&image).unwrap().set_len(mib << 20).unwrap();
        assert!(run("mkfs.ext4", &["-q", "-F", image.to_str().unwrap()]), "mkfs.ext4");
        let m = Mount { dir: dir.to_path_buf(), image: Some(image) };
        m.mount();
        m
    }

    pub fn mount(&self) {
        let image = self.image.as_ref().unwrap().to_str().unwrap();
        assert!(run("mount", &["-o", "loop,errors=remount-ro", image, self.dir.to_str().unwrap()]), "mount");
    }

    /// Makes ext4 hit an error: with `errors=remount-ro` it turns read-only at once.
    pub fn trigger_error(&self) {
        let source = String::from_utf8(
            Command::new("findmnt").args(["-n", "-o", "SOURCE", self.dir.to_str().unwrap()]).output().unwrap().stdout,
        )
        .unwrap();
        let dev = Path::new(source.trim()).file_name().unwrap().to_str().unwrap().to_string();
        std::fs::write(format!("/sys/fs/ext4/{dev}/trigger_fs_error"), "p2pd test").unwrap();
    }

    /// What an operator does after a filesystem error: unmount, fsck, mount again.
    pub fn repair(&self) {
        assert!(run("umount", &["-l", self.dir.to_str().unwrap()]));
        let image = self.image.as_ref().unwrap().to_str().unwrap();
        Command::new("e2fsck").args(["-fy", image]).output().unwrap();
        self.mount();
    }

    pub fn available_bytes(&self) -> u64 {
        let s = nix::sys::statvfs::statvfs(&self.dir).unwrap();
        s.blocks_available() as u64 * s.fragment_size() as u64
    }

    /// Fills the filesystem, leaving about `leave` bytes; returns the filler's path.
    pub fn fill(&self, leave: u64) -> PathBuf {
        use std::io::Write;
        let path = self.dir.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0x5au8; 1 << 20];
        while self.available_bytes() > leave + (1 << 20) {
            if f.write_all(&chunk).is_err() {
                break;
            }
        }
        let mut left = self.available_bytes().saturating_sub(leave) as usize;
        while left > 0 {
            let n = left.min(chunk.len());
            if f.write_all(&chunk[..n]).is_err() {
                break;
            }
            left -= n;
        }
        let _ = f.sync_all();
        path
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").args(["-l", self.dir.to_str().unwrap()]).output();
        if let Some(image) = &self.image {
            let _ = std::fs::remove_file(image);
        }
    }
}
