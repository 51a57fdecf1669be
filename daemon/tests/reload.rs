//! Reload by SIGHUP and by `p2pctl reload`: new, removed, changed and broken files; config
//! changes applied live, deferred to a restart, or rejected. Untouched torrents keep running.

mod common;

use common::*;
use nix::sys::signal::Signal;

/// A torrent file for `desc`, as an operator would write it by hand.
fn torrent_file(desc: &std::path::Path, settings: &str) -> String {
    let body: String = std::fs::read_to_string(desc)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("  {l}\n"))
        .collect();
    format!("{settings}descriptor:\n{body}")
}

fn running_secs(node: &Node, hash: &str) -> u64 {
    node.torrent(hash).unwrap()["running_secs"].as_u64().unwrap()
}

#[test]
fn sighup_applies_new_removed_changed_and_broken_files() {
    let mut node = Node::new();
    node.start();
    let src = node.root.path().join("src");
    for (i, name) in ["a.bin", "b.bin", "c.bin"].iter().enumerate() {
        random_file(&src.join(name), 40_000 + i * 1000, 10 + i as u64);
    }
    let desc = |n: &str| create_descriptor(&src.join(n), &node.root.path().join(format!("{n}.desc")), &[]);
    let (da, db, dc) = (desc("a.bin"), desc("b.bin"), desc("c.bin"));
    std::fs::create_dir_all(node.data()).unwrap();
    std::fs::copy(src.join("a.bin"), node.data().join("a.bin")).unwrap();
    let a = node.add(&da);
    let b = node.add(&db);
    node.wait_state(&a, "seeding");
    node.wait_state(&b, "leeching");
    eventually(PATIENCE, "torrents to run for a second", || {
        (running_secs(&node, &a) >= 1 && running_secs(&node, &b) >= 1).then_some(())
    });

    // New file by hand, a changed setting in b's file, and a broken file.
    std::fs::write(node.torrents().join("hand-written.yaml"), torrent_file(&dc, "")).unwrap();
    let b_file = node.torrents().join(format!("{b}.yaml"));
    let b_text = std::fs::read_to_string(&b_file).unwrap();
    std::fs::write(&b_file, b_text.replacen("data_dir:", "upload_rate: 2MiB\ndata_dir:", 1)).unwrap();
    std::fs::write(node.torrents().join("broken.yaml"), "descriptor: [unterminated\n").unwrap();
    std::fs::write(node.torrents().join("notes.txt"), "not a torrent file; ignored").unwrap();
    node.signal(Signal::SIGHUP);

    let c = eventually(PATIENCE, "the hand-written torrent to start", || {
        node.status()["torrents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "c.bin")
            .map(|t| t["info_hash"].as_str().unwrap().to_string())
    });
    eventually(PATIENCE, "the reload to be logged", || node.log().contains("torrents/broken.yaml: line").then_some(()));
    let log = node.log();
    assert!(log.contains("b.bin: upload_rate unlimited → 2 MiB/s"), "{log}");
    assert!(running_secs(&node, &a) >= 1, "untouched torrent was not restarted");
    assert!(running_secs(&node, &b) >= 1, "a live setting change does not restart");
    assert_eq!(node.torrent(&a).unwrap()["state"], "seeding");

    // Removing a file stops its torrent; others continue.
    std::fs::remove_file(node.torrents().join(format!("{a}.yaml"))).unwrap();
    let r = node.ctl(&["reload"]);
    assert_eq!(r.code, 1, "broken.yaml is still rejected: {r:?}");
    assert!(r.stdout.contains(&format!("stopped a.bin ({})", &a[..12])), "{}", r.stdout);
    assert!(r.stdout.contains("rejected:") && r.stdout.contains("torrents/broken.yaml: line 1"), "{}", r.stdout);
    assert!(node.torrent(&a).is_none());
    assert!(node.data().join("a.bin").exists(), "data of a stopped torrent is kept");

    // A running torrent's file turned invalid: the torrent keeps running as before.
    std::fs::write(&b_file, "descriptor: {}\nextra: [1\n").unwrap();
    let r = node.ctl(&["reload"]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains(&format!("torrents/{b}.yaml: line")), "{}", r.stdout);
    assert!(r.stdout.contains("keeps running as before"), "{}", r.stdout);
    assert_eq!(node.torrent(&b).unwrap()["state"], "leeching");

    // Fixing the files again: nothing rejected, b back to its old settings.
    std::fs::write(&b_file, &b_text).unwrap();
    std::fs::remove_file(node.torrents().join("broken.yaml")).unwrap();
    let r = node.ctl(&["reload"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("upload_rate 2 MiB/s → unlimited"), "{}", r.stdout);
    assert!(node.torrent(&c).is_some());
    // Repeated reload with nothing changed reports nothing.
    assert_eq!(node.ctl_ok(&["reload"]).trim(), "nothing changed");
}

#[test]
fn config_changes_are_applied_deferred_or_rejected() {
    let mut node = Node::new();
    node.start();
    let port = node.port;
    // Live: log_level. Needs restart: listen.
    let cfg = std::fs::read_to_string(node.cfg().join("p2pd.yaml")).unwrap();
    let cfg =
        cfg.replacen("log_level: debug", "log_level: info", 1).replace(&format!(":{port}"), &format!(":{}", port + 1));
    std::fs::write(node.cfg().join("p2pd.yaml"), &cfg).unwrap();
    let r = node.ctl(&["reload"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("log_level: debug → info"), "{}", r.stdout);
    assert!(
        r.stdout.contains(&format!("listen: 127.0.0.1:{port} → 127.0.0.1:{} (restart p2pd to apply)", port + 1)),
        "{}",
        r.stdout
    );
    assert_eq!(node.status()["node"]["listen"], format!("127.0.0.1:{port}"));

    // Unknown key: rejected with file and line; the previous configuration stays.
    std::fs::write(node.cfg().join("p2pd.yaml"), format!("{cfg}listen_port: 5\n")).unwrap();
    let r = node.ctl(&["reload"]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("p2pd.yaml: line") && r.stdout.contains("unknown field `listen_port`"), "{}", r.stdout);
    assert!(r.stdout.contains("keeping the previous configuration"), "{}", r.stdout);
    // A control_group that does not exist is rejected; access is unchanged.
    std::fs::write(node.cfg().join("p2pd.yaml"), format!("{cfg}control_group: no-such-group-p2pd\n")).unwrap();
    let r = node.ctl(&["reload"]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("group `no-such-group-p2pd` does not exist"), "{}", r.stdout);
    assert_eq!(node.ctl(&["status"]).code, 0);
}

/// 100 SIGHUPs in a burst, some while a file is broken: no crash, fds do not leak.
#[test]
fn reload_storm() {
    let mut node = Node::new();
    node.start();
    let fds = || std::fs::read_dir(format!("/proc/{}/fd", node.pid())).unwrap().count();
    node.ctl_ok(&["reload"]);
    let before = fds();
    for i in 0..100 {
        if i == 50 {
            std::fs::create_dir_all(node.torrents()).unwrap();
            std::fs::write(node.torrents().join("broken.yaml"), "{{{").unwrap();
        }
        node.signal(Signal::SIGHUP);
    }
    eventually(PATIENCE, "the storm to be absorbed", || {
        (node.log().matches("SIGHUP: reloading").count() >= 1 && node.ctl(&["status"]).code == 0).then_some(())
    });
    // Let queued reloads finish: a control-socket reload is answered after them.
    node.ctl(&["reload"]);
    assert!(fds() <= before + 2, "file descriptors leaked: {before} → {}", fds());
}
