//! Event hooks (`hooks:` in p2pd.yaml and torrent files): real programs run by a real daemon
//! on a real completion, error and removal; a hanging hook is killed with its process group.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

/// A hook that appends its P2PD_* environment to `out` (one block per run) and says hello.
fn recorder(out: &Path) -> String {
    format!(
        "[/bin/sh, -c, 'env | grep ^P2PD_ | sort >> \"$0\"; echo \"--\" >> \"$0\"; echo hook-says-hello', {}]",
        out.display()
    )
}

fn runs(out: &Path) -> Vec<String> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .split("--\n")
        .filter(|b| !b.trim().is_empty())
        .map(String::from)
        .collect()
}

#[test]
fn complete_error_and_removed_hooks_run_once_with_their_environment() {
    let mut seed = Node::new();
    seed.start();
    let (desc, hash) = seed_new_file(&seed, "art.bin", 3 << 20, 5);

    let dir = tempfile::tempdir().unwrap();
    let (done, failed, removed) = (dir.path().join("complete"), dir.path().join("error"), dir.path().join("removed"));
    let mut leecher = Node::with_config(&format!(
        "hooks:\n  on_complete: {}\n  on_error: {}\n  on_removed: {}\n",
        recorder(&done),
        recorder(&failed),
        recorder(&removed)
    ));
    leecher.start();
    leecher.add(&desc);
    leecher.wait_complete(&hash);
    // A check right after the completion (the resume file may not say yet that the hook ran)
    // is no new completion.
    leecher.ctl_ok(&["verify", &hash]);
    let run = eventually(PATIENCE, "the on_complete hook", || runs(&done).pop());
    let data_path = leecher.data().join("art.bin");
    for line in [
        "P2PD_EVENT=complete".to_string(),
        format!("P2PD_INFO_HASH={hash}"),
        "P2PD_NAME=art.bin".to_string(),
        format!("P2PD_DATA_PATH={}", data_path.display()),
    ] {
        assert!(run.lines().any(|l| l == line), "{line} not in\n{run}");
    }
    eventually(PATIENCE, "the hook's output and status in the log", || {
        let log = leecher.log();
        (log.contains("art.bin: on_complete hook `/bin/sh`: hook-says-hello")
            && log.contains("on_complete hook `/bin/sh`: exited 0"))
        .then_some(())
    });

    leecher.wait_state(&hash, "seeding");
    // A restart of the complete torrent is no new completion.
    leecher.stop();
    leecher.start();
    leecher.wait_state(&hash, "seeding");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(runs(&done).len(), 1, "on_complete ran again on restart");

    // An error: something else already at another torrent's path.
    let other = leecher.root.path().join("other.bin");
    random_file(&other, 50_000, 9);
    let other_desc = create_descriptor(&other, &leecher.root.path().join("o.desc"), &[]);
    std::fs::write(leecher.data().join("other.bin"), b"not this torrent's content").unwrap();
    let other_hash = leecher.add(&other_desc);
    leecher.wait_state(&other_hash, "error");
    let run = eventually(PATIENCE, "the on_error hook", || runs(&failed).pop());
    assert!(run.contains("P2PD_EVENT=error") && run.contains(&format!("P2PD_INFO_HASH={other_hash}")), "{run}");
    assert!(run.contains("P2PD_ERROR=") && run.contains("not this torrent's content"), "{run}");

    leecher.ctl_ok(&["remove", &hash[..12]]);
    let run = eventually(PATIENCE, "the on_removed hook", || runs(&removed).pop());
    assert!(run.contains("P2PD_EVENT=removed") && run.contains(&format!("P2PD_INFO_HASH={hash}")), "{run}");
    assert_eq!(runs(&done).len(), 1);
}

/// p2pd killed at the instant a download completes — the content in place, the completion not
/// yet recorded — runs `on_complete` at its next start, once: the completion is not lost, and
/// the start after that is no new one.
#[test]
fn a_completion_cut_short_by_sigkill_runs_its_hook_at_the_next_start() {
    let mut seed = Node::new();
    seed.start();
    let (desc, hash) = seed_new_file(&seed, "art.bin", 2 << 20, 6);
    let dir = tempfile::tempdir().unwrap();
    let done = dir.path().join("complete");
    let mut leecher = Node::with_config(&format!("hooks:\n  on_complete: {}\n", recorder(&done)));
    leecher.env.push(("P2PD_FAULT_KILL_AT_COMPLETION".into(), "1".into()));
    leecher.start();
    leecher.add(&desc);
    assert_eq!(leecher.wait_exit(), -1, "killed at completion:\n{}", leecher.log());
    assert!(runs(&done).is_empty(), "no hook before the kill");
    assert!(leecher.data().join("art.bin").exists(), "the content is in place");

    leecher.env.clear();
    leecher.start();
    leecher.wait_state(&hash, "seeding");
    let run = eventually(PATIENCE, "the on_complete hook after the restart", || runs(&done).pop());
    assert!(run.contains("P2PD_EVENT=complete") && run.contains(&format!("P2PD_INFO_HASH={hash}")), "{run}");
    leecher.stop();
    leecher.start();
    leecher.wait_state(&hash, "seeding");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(runs(&done).len(), 1, "on_complete ran again");
}

#[test]
fn a_torrent_file_replaces_the_daemons_hook_for_its_torrent() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon_out, own_out) = (dir.path().join("daemon"), dir.path().join("own"));
    let mut node = Node::with_config(&format!("hooks:\n  on_removed: {}\n", recorder(&daemon_out)));
    node.start();
    let src = node.root.path().join("src");
    random_file(&src.join("a.bin"), 10_000, 1);
    random_file(&src.join("b.bin"), 10_000, 2);
    let a = node.add(&create_descriptor(&src.join("a.bin"), &node.root.path().join("a.desc"), &[]));
    let b = node.add(&create_descriptor(&src.join("b.bin"), &node.root.path().join("b.desc"), &[]));
    // b's file names its own on_removed.
    let b_file = node.torrents().join(format!("{b}.yaml"));
    let text = std::fs::read_to_string(&b_file).unwrap();
    std::fs::write(&b_file, format!("hooks:\n  on_removed: {}\n{text}", recorder(&own_out))).unwrap();
    let out = node.ctl_ok(&["reload"]);
    assert!(out.contains("hooks.on_removed"), "{out}");

    node.ctl_ok(&["remove", &a[..12]]);
    node.ctl_ok(&["remove", &b[..12]]);
    let daemon_run = eventually(PATIENCE, "a's hook", || runs(&daemon_out).pop());
    let own_run = eventually(PATIENCE, "b's own hook", || runs(&own_out).pop());
    assert!(daemon_run.contains(&format!("P2PD_INFO_HASH={a}")), "{daemon_run}");
    assert!(own_run.contains(&format!("P2PD_INFO_HASH={b}")), "{own_run}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(runs(&daemon_out).len(), 1, "the daemon's hook ran for b too");
}

/// Processes whose process group is `pgid`.
fn group_members(pgid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().nth(2) == Some(&pgid.to_string()))
                })
                .unwrap_or(false)
        })
        .collect()
}

/// A daemon whose `on_removed` hook is `/bin/sh -c SCRIPT OUT` (`$0`: OUT, a file in the
/// returned directory) with `timeout_secs`, after a torrent (`a.bin` in its root) was added and
/// removed: the hook has been started.
fn run_on_removed(script: &str, timeout_secs: u32) -> (Node, tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut node = Node::with_config(&format!(
        "hooks:\n  on_removed: [/bin/sh, -c, '{script}', {}]\n  timeout_secs: {timeout_secs}\n",
        out.display()
    ));
    node.start();
    let src = node.root.path().join("a.bin");
    random_file(&src, 10_000, 1);
    let hash = node.add(&create_descriptor(&src, &node.root.path().join("a.desc"), &[]));
    node.ctl_ok(&["remove", &hash[..12]]);
    (node, dir, out)
}

#[test]
fn a_hanging_hook_is_killed_with_its_children_and_never_blocks_the_daemon() {
    let (node, _dir, pid_file) = run_on_removed("echo $$ > \"$0\"; sleep 1000 & sleep 1000", 2);
    let src = node.root.path().join("a.bin");
    let pgid: i32 = eventually(PATIENCE, "the hook to start", || {
        std::fs::read_to_string(&pid_file).ok().and_then(|s| s.trim().parse().ok())
    });
    assert!(group_members(pgid).len() >= 2, "the hook and its background sleep run in their own group");
    // The daemon serves meanwhile: another torrent comes and goes.
    let hash = node.add(&create_descriptor(&src, &node.root.path().join("b.desc"), &[]));
    assert_eq!(node.ctl(&["status"]).code, 0);
    eventually(PATIENCE, "the timeout to kill the group", || group_members(pgid).is_empty().then_some(()));
    eventually(PATIENCE, "the kill to be logged", || {
        node.log()
            .contains("on_removed hook `/bin/sh`: killed (with its process group) after its 2 s timeout")
            .then_some(())
    });
    node.ctl_ok(&["remove", &hash[..12]]);
}

/// A hook that exits leaving a process in the background is done when it exits: its status is
/// logged then (not a timeout kill), and what it left behind is not killed.
#[test]
fn a_hook_is_done_when_it_exits_even_with_a_process_left_behind() {
    let (node, _dir, pid_file) = run_on_removed("sleep 30 & echo $! > \"$0\"; echo left-one-behind; exit 3", 20);
    eventually(Duration::from_secs(10), "the exit status to be logged", || {
        node.log().contains("on_removed hook `/bin/sh`: exit status: 3 after").then_some(())
    });
    let log = node.log();
    assert!(log.contains("on_removed hook `/bin/sh`: left-one-behind"), "{log}");
    assert!(!log.contains("killed"), "{log}");
    let bg: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    assert!(Path::new(&format!("/proc/{bg}")).exists(), "the background process was killed");
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(bg), nix::sys::signal::Signal::SIGKILL);
}
