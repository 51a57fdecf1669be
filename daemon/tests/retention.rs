//! Retention (`retention:` in p2pd.yaml, `p2pctl add --cache`): a real daemon whose data
//! directory is a small ext4 filesystem on a loop-mounted image evicts the least recently
//! completed cache torrent when the filesystem passes the high-water mark, and keeps the
//! others: the torrent not added as cache, and the cache torrent completed last.

mod common;

use std::path::Path;

use common::mount::Mount;
use common::*;

/// The `on_removed` hook: appends the event and the torrent's name to `out`.
fn recorder(out: &Path) -> String {
    format!("[/bin/sh, -c, 'echo \"$P2PD_EVENT $P2PD_NAME\" >> \"$0\"', {}]", out.display())
}

#[test]
fn the_least_recently_completed_cache_torrent_is_evicted_and_the_others_kept() {
    if !Mount::available(&[Need::tool("mkfs.ext4", "e2fsprogs")]) {
        return;
    }
    let mut seed = Node::new();
    seed.start();
    const MIB: usize = 1 << 20;
    let (old_desc, old) = seed_new_file(&seed, "old-cache.bin", 10 * MIB, 1);
    let (kept_desc, kept) = seed_new_file(&seed, "not-cache.bin", 4 * MIB, 2);
    let (new_desc, new) = seed_new_file(&seed, "new-cache.bin", 10 * MIB, 3);

    // 64 MiB of ext4 hold about 53 MB of data (5 % reserved for root): 10 + 4 MiB is 26 % full, below the high-water
    // mark; with the third torrent's 10 MiB it is 45 %, above it; evicting the old cache
    // torrent brings it back to 26 %, below the low-water mark, so nothing more goes.
    let hooks = tempfile::tempdir().unwrap();
    let removed = hooks.path().join("removed");
    let http = format!("127.0.0.1:{}", free_port());
    let mut node = Node::with_config(&format!(
        "retention:\n  high_water: 40%\n  low_water: 30%\n  min_seed_time: 0s\nhooks:\n  on_removed: {}\nmetrics_listen: {http}\n",
        recorder(&removed)
    ));
    let _fs = Mount::ext4(&node.data(), 64);
    node.start();

    let cache = |desc: &Path| node.ctl_ok(&["add", "--cache", desc.to_str().unwrap()]).trim().to_string();
    // The torrent not added as cache completes first: the oldest, yet never evicted.
    assert_eq!(node.add(&kept_desc), kept);
    node.wait_complete(&kept);
    assert_eq!(node.torrent(&kept).unwrap()["cache"], false);
    // Adding it again with --cache says it stays what it is (an add never changes a torrent).
    let again = node.ctl(&["add", "--cache", kept_desc.to_str().unwrap()]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(again.stderr.contains("--cache does not change a torrent already added"), "{}", again.stderr);
    assert!(again.stderr.contains("not-cache.bin is already added"), "{}", again.stderr);
    assert!(!again.stderr.contains("added not-cache.bin:"), "reported as newly added too: {}", again.stderr);
    assert_eq!(node.torrent(&kept).unwrap()["cache"], false);
    assert_eq!(cache(&old_desc), old);
    node.wait_complete(&old);
    let old_status = node.torrent(&old).unwrap();
    assert_eq!(old_status["cache"], true);
    let human = node.ctl_ok(&["status"]);
    assert!(human.lines().any(|l| l.starts_with("old-cache.bin") && l.contains("seeding (cache)")), "{human}");
    assert!(human.lines().any(|l| l.starts_with("not-cache.bin") && !l.contains("(cache)")), "{human}");
    assert!(old_status["completed_at"].as_u64().is_some(), "{old_status}");
    assert!(std::fs::read_to_string(node.torrents().join(format!("{old}.yaml"))).unwrap().contains("cache: true"));
    // Completed a second later than the old one, at least.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(cache(&new_desc), new);

    eventually(PATIENCE, "the old cache torrent to be evicted", || node.torrent(&old).is_none().then_some(()));
    node.wait_complete(&new);
    assert!(!node.data().join("old-cache.bin").exists(), "evicted data deleted");
    assert!(!node.torrents().join(format!("{old}.yaml")).exists(), "evicted torrent file deleted");
    let log = node.log();
    assert!(log.contains("retention: evicting old-cache.bin"), "{log}");
    assert!(log.contains("above retention.high_water 40%"), "{log}");
    let ran = eventually(PATIENCE, "the on_removed hook", || std::fs::read_to_string(&removed).ok());
    assert_eq!(ran, "removed old-cache.bin\n");
    let mut r = ureq::get(&format!("http://{http}/metrics")).call().unwrap();
    let metrics = r.body_mut().read_to_string().unwrap();
    assert!(metrics.lines().any(|l| l == "p2pd_evictions_total 1"), "{metrics}");
    assert!(metrics.lines().any(|l| l == format!("p2pd_evicted_bytes_total {}", 10 * MIB)), "{metrics}");

    // The others stay, through more rounds (one every 10 s).
    std::thread::sleep(std::time::Duration::from_secs(12));
    for (hash, name) in [(&kept, "not-cache.bin"), (&new, "new-cache.bin")] {
        assert_eq!(node.torrent(hash).unwrap()["state"], "seeding", "{name}");
        assert_eq!(
            std::fs::metadata(node.data().join(name)).unwrap().len(),
            if name == "not-cache.bin" { 4 } else { 10 } as u64 * MIB as u64
        );
    }
    assert_eq!(std::fs::read_to_string(&removed).unwrap(), "removed old-cache.bin\n", "nothing more evicted");

    // A reload applies and reports a new policy.
    let config = std::fs::read_to_string(node.cfg().join("p2pd.yaml")).unwrap();
    std::fs::write(node.cfg().join("p2pd.yaml"), config.replace("high_water: 40%", "high_water: 95%")).unwrap();
    let out = node.ctl_ok(&["reload"]);
    assert!(out.contains("retention: high_water 40% → 95%, low_water 30% → 30%, min_seed_time 0s → 0s"), "{out}");
}
