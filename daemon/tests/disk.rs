//! Disk faults on real filesystems this test mounts (root only): a full disk before and during
//! a download, and a filesystem that turns read-only mid-download. The torrent concerned goes
//! to `error` with a clear message, keeps what it verified, and resumes when the disk is back;
//! other torrents are not touched.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn run(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd).args(args).output().map(|o| o.status.success()).unwrap_or(false)
}

/// Mounts made by this test, unmounted on drop.
struct Mount {
    dir: PathBuf,
    image: Option<PathBuf>,
}

impl Mount {
    /// Root (to mount) and the tools; false if the test skips (see [`require`]).
    fn available(tools: &[Need]) -> bool {
        require(&[&[Need::Root, Need::tool("mount", "mount")], tools].concat(), None)
    }

    /// A tmpfs of `size` (no preallocation there: writes can fail with ENOSPC mid-download).
    fn tmpfs(dir: &Path, size: &str) -> Mount {
        std::fs::create_dir_all(dir).unwrap();
        assert!(run("mount", &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", dir.to_str().unwrap()]));
        Mount { dir: dir.to_path_buf(), image: None }
    }

    /// An ext4 filesystem of `mib` MiB in a file, loop-mounted; `errors=remount-ro`.
    fn ext4(dir: &Path, mib: u64) -> Mount {
        std::fs::create_dir_all(dir).unwrap();
        let image = dir.with_extension("img");
        std::fs::File::create(&image).unwrap().set_len(mib << 20).unwrap();
        assert!(run("mkfs.ext4", &["-q", "-F", image.to_str().unwrap()]), "mkfs.ext4");
        let m = Mount { dir: dir.to_path_buf(), image: Some(image) };
        m.mount();
        m
    }

    fn mount(&self) {
        let image = self.image.as_ref().unwrap().to_str().unwrap();
        assert!(run("mount", &["-o", "loop,errors=remount-ro", image, self.dir.to_str().unwrap()]), "mount");
    }

    /// Makes ext4 hit an error: with `errors=remount-ro` it turns read-only at once.
    fn trigger_error(&self) {
        let source = String::from_utf8(
            Command::new("findmnt").args(["-n", "-o", "SOURCE", self.dir.to_str().unwrap()]).output().unwrap().stdout,
        )
        .unwrap();
        let dev = Path::new(source.trim()).file_name().unwrap().to_str().unwrap().to_string();
        std::fs::write(format!("/sys/fs/ext4/{dev}/trigger_fs_error"), "p2pd test").unwrap();
    }

    /// What an operator does after a filesystem error: unmount, fsck, mount again.
    fn repair(&self) {
        assert!(run("umount", &["-l", self.dir.to_str().unwrap()]));
        let image = self.image.as_ref().unwrap().to_str().unwrap();
        Command::new("e2fsck").args(["-fy", image]).output().unwrap();
        self.mount();
    }

    fn available_bytes(&self) -> u64 {
        let s = nix::sys::statvfs::statvfs(&self.dir).unwrap();
        s.blocks_available() as u64 * s.fragment_size() as u64
    }

    /// Fills the filesystem, leaving about `leave` bytes; returns the filler's path.
    fn fill(&self, leave: u64) -> PathBuf {
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

/// A seeded torrent: its descriptor, info hash and content.
type Seeded = (PathBuf, String, Vec<u8>);

/// A seed with two torrents: `big` (16 MiB) and `other` (2 MiB).
fn seed_two(seed: &Node) -> (Seeded, Seeded) {
    let mut made = Vec::new();
    for (name, len, s) in [("big.bin", 16 << 20, 11u64), ("other.bin", 2 << 20, 12)] {
        let src = seed.root.path().join("src").join(name);
        let bytes = random_file(&src, len, s);
        let desc = create_descriptor(
            &src,
            &seed.root.path().join(format!("{name}.desc")),
            &["--piece-size", "256K", "--bootstrap", &seed.addr()],
        );
        std::fs::create_dir_all(seed.data()).unwrap();
        std::fs::copy(&src, seed.data().join(name)).unwrap();
        let hash = seed.add(&desc);
        seed.wait_state(&hash, "seeding");
        made.push((desc, hash, bytes));
    }
    let other = made.pop().unwrap();
    (made.pop().unwrap(), other)
}

/// A seed uploading at 4 MiB/s (so that a download is still going when the disk fails) with
/// both torrents, and a leecher already seeding `other`; returns them, `big`, and `other`'s hash.
fn slow_seed_and_leecher() -> (Node, Node, Seeded, String) {
    let mut seed = Node::with_config("limits:\n  upload_rate: 4MiB\n");
    seed.start();
    let (big, (other_desc, other, _)) = seed_two(&seed);
    let mut leecher = Node::new();
    leecher.start();
    leecher.add(&other_desc);
    leecher.wait_state(&other, "seeding");
    (seed, leecher, big, other)
}

/// Waits until `node` has verified some of `hash` (3 MiB).
fn wait_some_progress(node: &Node, hash: &str) {
    eventually(PATIENCE, "some progress", || (node.torrent(hash)?["bytes_done"].as_u64()? >= 3 << 20).then_some(()));
}

fn add_to(node: &Node, desc: &Path, dir: &Path) -> String {
    node.ctl_ok(&["add", desc.to_str().unwrap(), "--data", dir.to_str().unwrap()]).trim().to_string()
}

fn wait_error(node: &Node, hash: &str, needle: &str) -> serde_json::Value {
    let t = node.wait_state(hash, "error");
    let msg = t["error"].as_str().unwrap_or_default().to_string();
    assert!(msg.contains(needle), "error message should say {needle:?}: {msg}");
    assert!(msg.contains("retrying"), "the operator learns it will retry: {msg}");
    assert_eq!(msg.lines().count(), 1, "one line: {msg}");
    t
}

#[test]
fn a_full_disk_before_the_download_then_space_returns() {
    if !Mount::available(&[Need::tool("mkfs.ext4", "e2fsprogs")]) {
        return;
    }
    let mut seed = Node::new();
    seed.start();
    let ((big_desc, big, big_bytes), (other_desc, other, _)) = seed_two(&seed);
    let mut leecher = Node::new();
    leecher.start();
    let disk = Mount::ext4(&leecher.root.path().join("small"), 40);
    let filler = disk.fill(6 << 20);
    let hash = add_to(&leecher, &big_desc, &disk.dir);
    assert_eq!(hash, big);
    wait_error(&leecher, &big, "not enough free space");
    // Others are not affected.
    leecher.add(&other_desc);
    leecher.wait_state(&other, "seeding");
    std::fs::remove_file(filler).unwrap();
    leecher.wait_state(&big, "seeding");
    assert_eq!(std::fs::read(disk.dir.join("big.bin")).unwrap(), big_bytes);
}

#[test]
fn a_disk_that_fills_mid_download_keeps_verified_pieces_and_resumes() {
    if !Mount::available(&[]) {
        return;
    }
    let (seed, leecher, (big_desc, big, big_bytes), other) = slow_seed_and_leecher();
    let disk = Mount::tmpfs(&leecher.root.path().join("tiny"), "24m");
    add_to(&leecher, &big_desc, &disk.dir);
    wait_some_progress(&leecher, &big);
    let filler = disk.fill(0);
    let t = wait_error(&leecher, &big, "No space left");
    let kept = t["pieces_done"].as_u64().unwrap();
    assert!(kept > 0, "verified pieces are kept");
    assert_eq!(leecher.torrent(&other).unwrap()["state"], "seeding", "the other torrent is untouched");
    std::fs::remove_file(filler).unwrap();
    leecher.wait_state(&big, "seeding");
    assert_eq!(std::fs::read(disk.dir.join("big.bin")).unwrap(), big_bytes);
    let sent = seed.torrent(&big).unwrap()["uploaded"].as_u64().unwrap();
    assert!(sent <= (big_bytes.len() as u64) + (8 << 20), "verified pieces were fetched again: {sent}");
}

#[test]
fn a_filesystem_that_turns_read_only_mid_download() {
    if !Mount::available(&[
        Need::tool("mkfs.ext4", "e2fsprogs"),
        Need::tool("e2fsck", "e2fsprogs"),
        Need::tool("findmnt", "util-linux"),
    ]) {
        return;
    }
    let (_seed, leecher, (big_desc, big, big_bytes), other) = slow_seed_and_leecher();
    let disk = Mount::ext4(&leecher.root.path().join("ro"), 48);
    add_to(&leecher, &big_desc, &disk.dir);
    wait_some_progress(&leecher, &big);
    disk.trigger_error();
    wait_error(&leecher, &big, "Read-only file system");
    assert_eq!(leecher.torrent(&other).unwrap()["state"], "seeding", "the other torrent is untouched");
    assert!(tree(&leecher.state()).iter().all(|p| !p.contains(".corrupt-")), "state intact");
    // The operator repairs the filesystem; the torrent resumes by itself and trusts nothing
    // the error may have lost.
    disk.repair();
    leecher.wait_state(&big, "seeding");
    assert_eq!(std::fs::read(disk.dir.join("big.bin")).unwrap(), big_bytes);
    assert!(leecher.status()["node"]["state_warnings"].as_array().unwrap().is_empty());
}
