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

/// Every duration, size and count in the config has an upper bound. A value above it keeps
/// p2pd from starting (one line naming the file, line, key and range; before bounds, a huge
/// lookup timeout started fine and panicked on the first lookup), and `p2pctl reload`
/// rejects it with the same line while the running configuration stays in force.
#[test]
fn values_above_their_bound_are_rejected_with_file_and_line() {
    // Start-up: refused before anything runs.
    let mut node = Node::with_config("discovery:\n  lookup_timeout_secs: 18446744073709551615\n");
    node.spawn();
    let child = node.child.as_mut().unwrap();
    let status = eventually(PATIENCE, "p2pd to refuse its config and exit", || child.try_wait().unwrap());
    node.child = None;
    assert_eq!(status.code(), Some(1), "{}", node.log());
    let cfg = node.cfg().join("p2pd.yaml");
    let expected = format!(
        "p2pd: {}: line 7, column 24: discovery.lookup_timeout_secs: 18446744073709551615 is above the maximum; \
         allowed: 1 to 3600 seconds",
        cfg.display()
    );
    assert!(node.log().lines().any(|l| l == expected), "expected `{expected}` in:\n{}", node.log());
    // The same from --check-config.
    let check = std::process::Command::new(p2pd_bin())
        .arg("--config-dir")
        .arg(node.cfg())
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&check.stdout).contains(&expected["p2pd: ".len()..]));

    // Reload of a running daemon: each bounded section rejected with its line; nothing applied.
    node.write_config("");
    node.start();
    for (extra, line, key_and_range) in [
        ("limits:\n  max_peers: 10001\n", 7, "limits.max_peers: 10001 is above the maximum; allowed: 1 to 10000"),
        (
            "limits:\n  upload_rate: 100Gbit\n",
            7,
            "limits.upload_rate: 12500 MB/s is above the maximum; allowed: 1 kB/s to 4 GB/s, or unlimited",
        ),
        (
            "limits:\n  max_in_flight_per_peer: 2GiB\n",
            7,
            "limits.max_in_flight_per_peer: 2147483648 (2 GiB) is above the maximum; allowed: 256 KiB to 256 MiB",
        ),
        (
            "discovery:\n  k: 8\n  peer_ttl_secs: 604801\n",
            8,
            "discovery.peer_ttl_secs: 604801 is above the maximum; allowed: 10 to 604800 seconds",
        ),
        ("discovery:\n  rpc_timeout_ms: 60001\n", 7, "discovery.rpc_timeout_ms: 60001 is above the maximum"),
    ] {
        node.write_config(extra);
        let r = node.ctl(&["reload"]);
        assert_eq!(r.code, 1, "{extra}: {r:?}");
        let prefix = format!("{}: line {line}, column ", cfg.display());
        let rejected =
            r.stdout.lines().find(|l| l.contains(&prefix)).unwrap_or_else(|| panic!("{extra}: {}", r.stdout));
        assert!(rejected.contains(key_and_range), "{rejected}");
        assert!(rejected.ends_with("; keeping the previous configuration"), "{rejected}");
    }
    assert_eq!(node.status()["node"]["listen"], node.addr(), "the daemon runs on");

    // A torrent file's settings are bounded too.
    random_file(&node.root.path().join("t.bin"), 30_000, 41);
    let desc = create_descriptor(&node.root.path().join("t.bin"), &node.root.path().join("t.desc"), &[]);
    node.write_config("");
    node.ctl_ok(&["reload"]);
    std::fs::create_dir_all(node.torrents()).unwrap();
    std::fs::write(node.torrents().join("t.yaml"), torrent_file(&desc, "max_peers: 20000\n")).unwrap();
    let r = node.ctl(&["reload"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout
            .contains("torrents/t.yaml: line 1, column 12: max_peers: 20000 is above the maximum; allowed: 1 to 10000"),
        "{}",
        r.stdout
    );
    assert!(node.status()["torrents"].as_array().unwrap().is_empty());
}

/// The in-flight caps change in place on reload (the engines read them at every request they
/// make), and the reply says so; `transfer.rs` shows the caps holding.
#[test]
fn in_flight_limits_apply_on_reload() {
    let mut node = Node::new();
    node.start();
    node.write_config("limits:\n  max_in_flight_per_peer: 8MiB\n  max_in_flight_per_torrent: 1GiB\n");
    let r = node.ctl(&["reload"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("max_in_flight_per_peer 64 MiB → 8 MiB"), "{}", r.stdout);
    assert!(r.stdout.contains("max_in_flight_per_torrent 256 MiB → 1 GiB"), "{}", r.stdout);
    assert!(!r.stdout.contains("restart"), "{}", r.stdout);
    // Applied: the next reload has nothing to do.
    assert_eq!(node.ctl_ok(&["reload"]).trim(), "nothing changed");
}

/// `paused: true` in a torrent file takes effect at once, even in the middle of checking what is
/// on disk; a verify asked while paused runs once the torrent is resumed.
#[test]
fn pause_during_a_check_holds_and_a_verify_asked_while_paused_runs_on_resume() {
    let mut node = Node::new();
    node.start();
    // Large enough that the check takes a while; written (not sparse, whose holes need no
    // hashing), and described where it lies, so the add finds it complete.
    std::fs::create_dir_all(node.data()).unwrap();
    let content = node.data().join("big.bin");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&content).unwrap());
        for i in 0..1536u32 {
            f.write_all(&[i as u8; 1 << 20]).unwrap();
        }
    }
    let desc = create_descriptor(&content, &node.root.path().join("big.desc"), &[]);
    let hash = node.add(&desc);
    let file = node.torrents().join(format!("{hash}.yaml"));
    let text = std::fs::read_to_string(&file).unwrap();
    let set_paused = |paused: bool| {
        let body = if paused { format!("paused: true\n{text}") } else { text.clone() };
        std::fs::write(&file, body).unwrap();
        node.ctl_ok(&["reload"])
    };

    node.wait_state(&hash, "checking");
    let out = set_paused(true);
    assert!(out.contains("big.bin: paused"), "{out}");
    node.wait_state(&hash, "paused");
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(node.torrent(&hash).unwrap()["state"], "paused", "the check went on and the torrent ran");
    assert!(!node.log().contains("complete and verified"), "{}", node.log());

    let out = set_paused(false);
    assert!(out.contains("big.bin: resumed"), "{out}");
    node.wait_state(&hash, "seeding");
    let checks = || node.log().matches("big.bin: checking").count();
    let before = checks();

    set_paused(true);
    node.wait_state(&hash, "paused");
    let said = node.ctl_ok(&["verify", &hash[..12]]);
    assert!(said.contains("big.bin") && said.contains("is paused: every piece is verified when it resumes"), "{said}");
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(node.torrent(&hash).unwrap()["state"], "paused", "a verify does not unpause");
    set_paused(false);
    eventually(PATIENCE, "the verify asked while paused to run", || {
        node.log().contains("(full verify requested)").then_some(())
    });
    node.wait_state(&hash, "seeding");
    assert!(checks() > before, "{}", node.log());
}
