//! `p2pctl pause`, `resume` and `set`: applied live to a real transfer, recorded in the
//! torrent's file, kept across SIGKILL and restart; bad input refused with a clear line.

mod common;

use std::time::Duration;

use common::*;

fn torrent_file(node: &Node, hash: &str) -> String {
    std::fs::read_to_string(node.torrents().join(format!("{hash}.yaml"))).unwrap()
}

#[test]
fn pause_resume_and_set_apply_live_and_survive_sigkill() {
    let mut seed = Node::new();
    seed.start();
    let src = seed.root.path().join("src");
    random_file(&src.join("data.bin"), 8 << 20, 3);
    let desc = create_descriptor(
        &src.join("data.bin"),
        &seed.root.path().join("d.desc"),
        &["--piece-size", "256K", "--bootstrap", &seed.addr()],
    );
    std::fs::create_dir_all(seed.data()).unwrap();
    std::fs::copy(src.join("data.bin"), seed.data().join("data.bin")).unwrap();
    let hash = seed.add(&desc);
    seed.wait_state(&hash, "seeding");

    let mut leecher = Node::new();
    leecher.start();
    leecher.add(&desc);
    // Slowed down by `set`, live, so that the transfer is still going when it is paused.
    let out = leecher.ctl_ok(&["set", &hash[..12], "--download-rate", "1MiB", "--max-peers", "7"]);
    assert!(out.contains("data.bin: download_rate unlimited → 1 MiB/s"), "{out}");
    assert!(out.contains("max_peers"), "{out}");
    let file = torrent_file(&leecher, &hash);
    assert!(file.contains("download_rate:") && file.contains("max_peers: 7"), "{file}");
    eventually(PATIENCE, "some progress", || {
        leecher.torrent(&hash).filter(|t| t["bytes_done"].as_u64().unwrap() > 0).map(|_| ())
    });

    let out = leecher.ctl_ok(&["pause", &hash[..12]]);
    assert!(out.contains("data.bin: paused"), "{out}");
    leecher.wait_state(&hash, "paused");
    assert!(torrent_file(&leecher, &hash).contains("paused: true"));
    let held = leecher.torrent(&hash).unwrap()["bytes_done"].as_u64().unwrap();
    assert!(held < 8 << 20, "finished before the pause; the test needs a slower transfer");
    std::thread::sleep(Duration::from_secs(2));
    let t = leecher.torrent(&hash).unwrap();
    assert_eq!((t["state"].as_str(), t["bytes_done"].as_u64()), (Some("paused"), Some(held)), "a paused torrent moved");
    let again = leecher.ctl_ok(&["pause", &hash[..12]]);
    assert!(again.contains("no change"), "{again}");

    // SIGKILL: the settings were in the file before the answer.
    leecher.kill();
    leecher.start();
    leecher.wait_state(&hash, "paused");
    assert_eq!(leecher.ctl_ok(&["reload"]).trim(), "nothing changed", "the supervisor's record matches the file");

    let json: serde_json::Value =
        serde_json::from_str(&leecher.ctl_ok(&["resume", &hash[..12], "--json"])).expect("resume --json");
    assert_eq!(json["type"], "updated", "{json}");
    assert_eq!(json["info_hash"], hash.as_str());
    assert!(json["changes"][0].as_str().unwrap().contains("resumed"), "{json}");
    leecher.ctl_ok(&["set", &hash[..12], "--download-rate", "unlimited"]);
    assert!(!torrent_file(&leecher, &hash).contains("download_rate"), "unlimited drops the torrent's own limit");
    leecher.wait_complete(&hash);
    assert_eq!(std::fs::read(leecher.data().join("data.bin")).unwrap(), std::fs::read(src.join("data.bin")).unwrap());
}

#[test]
fn bad_settings_and_unknown_torrents_get_one_clear_line() {
    let mut node = Node::new();
    node.start();
    let src = node.root.path().join("a.bin");
    random_file(&src, 10_000, 1);
    let hash = node.add(&create_descriptor(&src, &node.root.path().join("a.desc"), &[]));
    let before = torrent_file(&node, &hash);

    let r = node.ctl(&["set", &hash[..12], "--max-peers", "0"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("max_peers: 0 is below the minimum; allowed: 1 to"), "{}", r.stderr);
    let r = node.ctl(&["set", &hash[..12], "--upload-rate", "fast"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("fast"), "{}", r.stderr);
    let r = node.ctl(&["set", &hash[..12]]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("nothing to set"), "{}", r.stderr);
    let r = node.ctl(&["pause", "no-such-torrent"]);
    assert_eq!(r.code, 5, "{r:?}");
    assert!(r.stderr.contains("no-such-torrent"), "{}", r.stderr);
    assert_eq!(torrent_file(&node, &hash), before, "nothing was written");

    // A request that bypasses p2pctl's checks is refused by the daemon's (same bounds).
    let raw = serde_json::json!({"version": 1, "request": {"type": "set", "id": &hash, "settings": {"max_peers": 0}}});
    let reply = raw_request(&node, &serde_json::to_vec(&raw).unwrap());
    assert_eq!(reply["type"], "error", "{reply}");
    assert!(reply["message"].as_str().unwrap().contains("max_peers: 0 is below the minimum"), "{reply}");
    assert_eq!(torrent_file(&node, &hash), before, "nothing was written");
}
