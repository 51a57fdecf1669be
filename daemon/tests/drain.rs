//! `p2pctl drain`: a real daemon taken out of the fleet stops what it was downloading, refuses
//! new work, seeds on until another node holds a complete copy, then exits 0; with a timeout
//! it exits anyway, and what it stopped resumes at its next start.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// `p2pctl drain ARGS` against `node`, running in the background.
fn drain(node: &Node, args: &[&str]) -> Child {
    Command::new(p2pctl_bin())
        .arg("--config-dir")
        .arg(node.cfg())
        .arg("drain")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child` to exit; its status code and stderr.
fn finished(child: Child) -> (i32, String) {
    let pid = child.id();
    let deadline = Instant::now() + PATIENCE;
    let mut child = child;
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "p2pctl drain (pid {pid}) still running");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A torrent nobody seeds, so it stays `leeching` on `node`.
fn unseeded(node: &Node) -> (std::path::PathBuf, String) {
    let src = node.root.path().join("nobody.bin");
    random_file(&src, 200_000, 99);
    let desc = create_descriptor(&src, &node.root.path().join("nobody.desc"), &[]);
    let hash = node.add(&desc);
    node.wait_state(&hash, "leeching");
    (desc, hash)
}

fn same_file(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}

#[test]
fn a_drained_node_seeds_until_another_node_has_a_copy_then_exits_0() {
    let mut seed = Node::new();
    seed.start();
    let (desc, hash) = seed_new_file(&seed, "art.bin", 4 << 20, 1);
    let (nobody_desc, nobody) = unseeded(&seed);

    let ctl = drain(&seed, &["--min-copies", "1", "--timeout", "300"]);
    let report = eventually(PATIENCE, "the drain in status", || seed.status()["node"]["drain"].as_object().cloned());
    assert_eq!(report["min_copies"], 1);
    assert_eq!(report["torrents"][0]["info_hash"], hash.as_str());
    assert_eq!(report["torrents"][0]["copies"], 0);
    let human = seed.ctl_ok(&["status"]);
    assert!(human.contains("draining: 1 of 1 torrents still have fewer than 1 other complete copies"), "{human}");
    assert!(human.contains("  art.bin: 0 of 1 copies"), "{human}");
    assert_eq!(report["stopped"][0]["info_hash"], nobody.as_str(), "the incomplete torrent stops");
    assert!(seed.torrent(&nobody).is_none());
    let refused = seed.ctl(&["add", nobody_desc.to_str().unwrap()]);
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("draining"), "{}", refused.stderr);
    assert_ne!(seed.ctl(&["reload"]).code, 0, "no reload while draining");
    assert_ne!(seed.ctl(&["verify", &hash]).code, 0, "no verify while draining (it could start a download)");
    assert_ne!(seed.ctl(&["pause", &hash]).code, 0, "no pause of a torrent the drain waits for");

    // No other copy yet: it keeps seeding.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(seed.torrent(&hash).unwrap()["state"], "seeding");

    let mut leecher = Node::new();
    leecher.start();
    leecher.add(&desc);
    leecher.wait_complete(&hash);
    let (code, stderr) = finished(ctl);
    assert_eq!(code, 0, "{stderr}\n{}", seed.log());
    assert!(stderr.contains("drained: every torrent has at least 1 other complete copies"), "{stderr}");
    assert_eq!(seed.wait_exit(), 0, "p2pd exits 0 after a drain");
    assert!(seed.log().contains("drain: every seeding torrent has at least 1 other complete copies; stopping"));
    assert!(same_file(&seed.data().join("art.bin"), &leecher.data().join("art.bin")));
}

#[test]
fn a_drain_that_times_out_stops_p2pd_and_what_it_stopped_resumes_at_the_next_start() {
    let mut seed = Node::new();
    seed.start();
    let (_, hash) = seed_new_file(&seed, "art.bin", 1 << 20, 2);
    let (_, nobody) = unseeded(&seed);
    let (code, stderr) = finished(drain(&seed, &["--min-copies", "2", "--timeout", "2"]));
    assert_eq!(code, 6, "{stderr}");
    assert!(stderr.contains("timed out; p2pd is stopping with too few copies of: art.bin 0/2"), "{stderr}");
    assert_eq!(seed.wait_exit(), 0);
    assert!(seed.log().contains("drain: timed out"), "{}", seed.log());

    seed.start();
    seed.wait_state(&hash, "seeding");
    seed.wait_state(&nobody, "leeching");
}

/// Status of the member at `addr` in `node`'s table of swarm `hash` (`p2pctl peers`).
fn member_status(node: &Node, hash: &str, addr: &str) -> Option<String> {
    let out = node.ctl_ok(&["peers", hash, "--json"]);
    let report: serde_json::Value = serde_json::from_str(&out).expect("peers JSON");
    report["peers"]
        .as_array()?
        .iter()
        .find(|p| p["address"] == addr)
        .and_then(|p| p["status"].as_str().map(String::from))
}

/// Two seeds drained at the same moment (a rack going down) each know the other as a seed; if
/// each counted the other as a copy, both would stop and the swarm would lose its content.
/// Neither counts a node that drains too, so both wait until a third node has a copy.
#[test]
fn two_seeds_drained_at_once_wait_for_a_third_copy() {
    let mut a = Node::new();
    a.start();
    let (desc, hash) = seed_new_file(&a, "rack.bin", 2 << 20, 3);
    let mut b = Node::new();
    b.start();
    b.add(&desc);
    b.wait_complete(&hash);
    for (node, other) in [(&a, &b), (&b, &a)] {
        eventually(PATIENCE, "each knows the other as a seed", || {
            (member_status(node, &hash, &other.addr()).as_deref() == Some("seeding")).then_some(())
        });
    }

    let (drain_a, drain_b) = (drain(&a, &["--min-copies", "1"]), drain(&b, &["--min-copies", "1"]));
    for (node, other) in [(&a, &b), (&b, &a)] {
        eventually(PATIENCE, "each hears the other drains", || {
            (member_status(node, &hash, &other.addr()).as_deref() == Some("draining")).then_some(())
        });
    }
    std::thread::sleep(Duration::from_secs(3));
    for node in [&a, &b] {
        let report = node.status()["node"]["drain"].clone();
        assert_eq!(report["torrents"][0]["copies"], 0, "a draining node is no copy: {report}\n{}", node.log());
        assert_eq!(node.torrent(&hash).unwrap()["state"], "seeding");
    }

    let mut c = Node::new();
    c.start();
    c.add(&desc);
    c.wait_complete(&hash);
    for (ctl, node) in [(drain_a, &mut a), (drain_b, &mut b)] {
        let (code, stderr) = finished(ctl);
        assert_eq!(code, 0, "{stderr}\n{}", node.log());
        assert_eq!(node.wait_exit(), 0);
    }
    assert!(same_file(&a.data().join("rack.bin"), &c.data().join("rack.bin")));
}

/// Out-of-range drains are refused, by p2pctl and by the daemon (a client that bypasses
/// p2pctl), with the bound named; nothing starts draining.
#[test]
fn a_drain_beyond_its_bounds_is_refused_and_nothing_drains() {
    let mut node = Node::new();
    node.start();
    let r = node.ctl(&["drain", "--min-copies", "10001"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("10001 is not in 0..=10000"), "{}", r.stderr);
    for (request, bound) in [
        (serde_json::json!({"type": "drain", "min_copies": 10_001, "wait": false}), "above the maximum (10000)"),
        (
            serde_json::json!({"type": "drain", "min_copies": 1, "timeout_secs": 0, "wait": false}),
            "from 1 second to a year",
        ),
    ] {
        let raw = serde_json::json!({"version": 1, "request": request});
        let reply = raw_request(&node, &serde_json::to_vec(&raw).unwrap());
        assert_eq!(reply["type"], "error", "{reply}");
        assert!(reply["message"].as_str().unwrap().contains(bound), "{reply}");
    }
    assert!(node.status()["node"]["drain"].is_null(), "not draining");
    node.stop();
}
