//! Disk faults on real filesystems this test mounts (root only): a full disk before and during
//! a download, and a filesystem that turns read-only mid-download. The torrent concerned goes
//! to `error` with a clear message, keeps what it verified, and resumes when the disk is back;
//! other torrents are not touched.

mod common;

use std::path::{Path, PathBuf};

use common::mount::Mount;
use common::*;

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
