//! Crashes and damaged files: what the daemon acknowledged survives, and nothing unverified is
//! trusted (docs/RELIABILITY.md lists every scenario).

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use rand::{RngExt, SeedableRng};

/// Starts a seed for `source` (copied into its data dir); returns the descriptor and hash.
fn seed_content(seed: &Node, source: &Path, extra: &[&str]) -> (std::path::PathBuf, String) {
    let bootstrap = seed.addr();
    let mut args = vec!["--bootstrap", bootstrap.as_str()];
    args.extend_from_slice(extra);
    let desc = create_descriptor(source, &seed.root.path().join("content.desc"), &args);
    std::fs::create_dir_all(seed.data()).unwrap();
    std::fs::copy(source, seed.data().join(source.file_name().unwrap())).unwrap();
    let hash = seed.add(&desc);
    seed.wait_state(&hash, "seeding");
    (desc, hash)
}

/// Temporary files of atomic writes anywhere under `dir`.
fn temporaries(dir: &Path) -> Vec<String> {
    tree(dir).into_iter().filter(|p| p.contains(".p2pd-tmp.")).collect()
}

/// Of the temporaries an interrupted write left (`stale`, listed before the restart), those
/// still there. Only those: the restarted daemon may be in the middle of a save of its own
/// (its temporary has a new random name), which is no leak — asserting "none at all" made
/// this test fail about one run in four.
fn left_behind(stale: &[String], dir: &Path) -> Vec<String> {
    temporaries(dir).into_iter().filter(|t| stale.contains(t)).collect()
}

fn state_warnings(node: &Node) -> Vec<String> {
    node.status()["node"]["state_warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap_or_default().to_string())
        .collect()
}

/// Waits for a daemon that is expected to abort at a fault point; asserts it did.
fn expect_abort(node: &mut Node, step: &str) {
    let mut child = node.child.take().expect("daemon running");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < PATIENCE, "the fault point after {step} was never reached:\n{}", node.log());
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.signal(), Some(libc::SIGABRT), "p2pd should have aborted: {status}\n{}", node.log());
    assert!(node.log().contains(&format!("fault injection: aborting after {step}")), "{}", node.log());
}

const STEPS: [&str; 4] = ["write_tmp", "fsync_file", "rename", "fsync_dir"];

/// Abort right after each step of an atomic save, for every kind of durable file: after a
/// restart each file is the old or the new version and loads, no warning, no temporary left.
#[test]
#[cfg_attr(not(feature = "fault-injection"), ignore = "needs `--features p2pd/fault-injection`")]
fn a_crash_at_each_step_of_a_save_leaves_the_old_or_the_new_file() {
    let mut seed = Node::new();
    seed.start();
    let src = seed.root.path().join("src/f.bin");
    let bytes = random_file(&src, 1 << 20, 1);
    let (desc, hash) = seed_content(&seed, &src, &["--piece-size", "64K"]);
    let fault = |step: &str, path: &str| ("P2PD_FAULT".to_string(), format!("abort_after:{step}:{path}"));

    for step in STEPS {
        // The node identity, written at the first start.
        let mut node = Node::new();
        node.env = vec![fault(step, "node.state")];
        node.spawn();
        expect_abort(&mut node, step);
        let saved = std::fs::read(node.state().join("node.state")).ok();
        assert_eq!(saved.is_some(), step == "rename" || step == "fsync_dir", "{step}: node.state");
        node.env.clear();
        let stale = temporaries(node.root.path());
        node.start();
        assert!(state_warnings(&node).is_empty(), "{step}: {:?}", state_warnings(&node));
        if let Some(saved) = saved {
            assert_eq!(std::fs::read(node.state().join("node.state")).unwrap(), saved, "the identity was kept");
        }
        assert!(left_behind(&stale, node.root.path()).is_empty(), "{step}: {:?}", temporaries(node.root.path()));
        node.stop();

        // A torrent file, written by `add` before it is acknowledged.
        node.env = vec![fault(step, "/torrents/")];
        node.spawn();
        eventually(PATIENCE, "the socket", || (node.ctl(&["status"]).code == 0).then_some(()));
        assert_ne!(node.ctl(&["add", desc.to_str().unwrap()]).code, 0, "{step}: add cannot be acknowledged");
        expect_abort(&mut node, step);
        node.env.clear();
        let stale = temporaries(node.root.path());
        node.start();
        let kept = node.torrent(&hash).is_some();
        assert_eq!(kept, step == "rename" || step == "fsync_dir", "{step}: the torrent file is old or new");
        assert!(left_behind(&stale, node.root.path()).is_empty(), "{step}: {:?}", temporaries(node.root.path()));
        if !kept {
            node.add(&desc);
        }
        node.wait_state(&hash, "seeding");
        assert_eq!(std::fs::read(node.data().join("f.bin")).unwrap(), bytes);

        // The resume state, the routing table and the peer table: all saved at shutdown.
        for file in ["/resume/", "routing.state", "/peers/"] {
            node.stop();
            let before = tree(&node.state());
            node.env = vec![fault(step, file)];
            node.spawn();
            // Running (then stopped, which saves) — unless a save on the way aborted it already.
            let running = eventually(PATIENCE, "the socket or an abort", || {
                if matches!(node.child.as_mut().map(|c| c.try_wait()), Some(Ok(Some(_)))) {
                    return Some(false);
                }
                (node.ctl(&["status"]).code == 0).then_some(true)
            });
            if running {
                node.signal(nix::sys::signal::Signal::SIGTERM);
            }
            expect_abort(&mut node, step);
            node.env.clear();
            let stale = temporaries(node.root.path());
            node.start();
            let warnings = state_warnings(&node);
            assert!(warnings.is_empty(), "{step} {file}: {warnings:?}\nstate before: {before:?}");
            let left = left_behind(&stale, node.root.path());
            assert!(left.is_empty(), "{step} {file}: {left:?}");
            node.wait_state(&hash, "seeding");
            assert!(
                common::peers(&node, &hash).iter().any(|p| p["address"] == seed.addr()),
                "{step} {file}: the seed is still known"
            );
        }
    }
}

/// SIGKILL at random moments, many times during one download: every restart keeps what was
/// reported verified, the download finishes with identical bytes, no temporary is left, and
/// the seed sends one copy and at most what each kill caught in flight.
///
/// To see it fail: in `plan` (daemon/src/torrent/check.rs) check nothing after an unclean stop
/// (`to_check` empty unless files changed): the pieces reported but not yet recorded are
/// missing after the restart, and fetched again (2.1 copies).
#[test]
fn sigkill_at_random_moments_during_one_download() {
    let mut seed = Node::with_config("limits:\n  upload_rate: 8MiB\n");
    seed.start();
    let src = seed.root.path().join("src/k.bin");
    let bytes = random_file(&src, 24 << 20, 5);
    let (desc, hash) = seed_content(&seed, &src, &["--piece-size", "128K"]);
    // What a kill may cost is what the leecher asked for and had not written yet: its requests
    // in flight, capped here at the least `limits.max_in_flight_per_peer` allows (two pieces,
    // still enough for 8 MiB/s on loopback), and the pieces being verified.
    const IN_FLIGHT: u64 = 256 << 10;
    let mut leecher = Node::with_config(&format!("limits:\n  max_in_flight_per_peer: {IN_FLIGHT}\n"));
    leecher.start();
    leecher.add(&desc);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    // Killed at most this often (6 or 7 kills happen before completion here), so that what
    // the kills may cost is bounded: a leecher that fetched verified pieces again, taking longer,
    // would otherwise be killed more, and allowed more.
    const MAX_KILLS: u64 = 8;
    let mut kills = 0;
    let mut reported = 0u64;
    while kills < MAX_KILLS {
        std::thread::sleep(Duration::from_millis(rng.random_range(50..700)));
        let Some(t) = leecher.torrent(&hash) else { panic!("torrent lost:\n{}", leecher.log()) };
        if t["state"] == "seeding" {
            break;
        }
        reported = reported.max(t["pieces_done"].as_u64().unwrap());
        leecher.kill();
        kills += 1;
        // Nothing under the final name before completion. The download may have completed
        // between the status read above and the kill (one run in about sixteen): then the file
        // under that name must be the whole content.
        if let Ok(found) = std::fs::read(leecher.data().join("k.bin")) {
            assert!(found == bytes, "k.bin appeared before the download completed (kill {kills})");
        }
        let stale = temporaries(&leecher.state());
        leecher.start();
        // Once checked, every piece reported verified before the kill is verified again.
        let after = eventually(PATIENCE, "the restart check", || {
            leecher.torrent(&hash).filter(|t| t["state"] != "checking").map(|t| t["pieces_done"].as_u64().unwrap())
        });
        assert!(after >= reported, "kill {kills}: {reported} pieces were reported, {after} after restart");
        assert!(left_behind(&stale, &leecher.state()).is_empty(), "{:?}", temporaries(&leecher.state()));
    }
    assert!(kills >= 5, "only {kills} kills happened before completion");
    leecher.wait_state(&hash, "seeding");
    assert_eq!(std::fs::read(leecher.data().join("k.bin")).unwrap(), bytes);
    // Stopped cleanly (a running daemon may be mid-save), nothing temporary is left.
    assert_eq!(leecher.stop(), 0);
    assert!(temporaries(leecher.root.path()).is_empty(), "{:?}", temporaries(leecher.root.path()));
    let sent = eventually(PATIENCE, "the seed's counters", || {
        let a = seed.torrent(&hash)?["uploaded"].as_u64()?;
        std::thread::sleep(Duration::from_millis(1200));
        (seed.torrent(&hash)?["uploaded"].as_u64()? == a).then_some(a)
    });
    let again = sent.saturating_sub(bytes.len() as u64);
    eprintln!("{kills} kills; the seed sent {:.3} copies ({again} bytes again)", sent as f64 / bytes.len() as f64);
    // Each kill may cost what the leecher had asked for and not yet written — its requests in
    // flight (at most IN_FLIGHT) and the two pieces it verifies at once (MAX_VERIFYING in
    // swarm/engine/verify.rs; a comparison and a write into the page cache, which keep up with
    // 8 MiB/s) — never what was verified: a piece verified but not yet recorded is hashed again
    // at the restart, not fetched. 512 KiB a kill; measured: 0 to 256 KiB again in all over
    // 7 kills (docs/RELIABILITY.md).
    let allowed = kills * (IN_FLIGHT + 2 * (128 << 10));
    assert!(again <= allowed, "{again} bytes were sent again after {kills} kills ({allowed} allowed)");
}

/// Truncated, zeroed and garbage state files of every kind at start: moved aside, reported,
/// and the daemon runs (rechecking what it can no longer trust).
#[test]
fn damaged_state_files_at_start_are_moved_aside_and_reported() {
    let mut seed = Node::new();
    seed.start();
    let src = seed.root.path().join("src/d.bin");
    random_file(&src, 1 << 20, 2);
    let (desc, hash) = seed_content(&seed, &src, &["--piece-size", "64K"]);
    let mut node = Node::new();
    node.start();
    node.add(&desc);
    node.wait_state(&hash, "seeding");
    node.stop();
    let files = [
        node.state().join("node.state"),
        node.state().join("routing.state"),
        node.state().join(format!("resume/{hash}.state")),
        node.state().join(format!("peers/{hash}.state")),
    ];
    type Damage = fn(Vec<u8>) -> Vec<u8>;
    let damage: [(&str, Damage); 3] = [
        ("truncated", |b| b[..b.len() / 2].to_vec()),
        ("zeroed", |b| vec![0; b.len()]),
        ("garbage", |b| (0..b.len()).map(|i| (i * 7 + 3) as u8).collect()),
    ];
    for (how, f) in damage {
        for file in &files {
            let good = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            std::fs::write(file, f(good)).unwrap();
        }
        node.start();
        let warnings = state_warnings(&node);
        assert_eq!(warnings.len(), files.len(), "{how}: {warnings:?}");
        node.wait_state(&hash, "seeding");
        let moved: Vec<_> = tree(&node.state()).into_iter().filter(|p| p.contains(".corrupt-")).collect();
        assert_eq!(moved.len(), files.len(), "{how}: {moved:?}");
        node.stop();
        for m in moved {
            std::fs::remove_file(node.state().join(m)).unwrap();
        }
        for file in &files {
            assert!(file.exists(), "{how}: {} was not written again", file.display());
        }
    }
}

/// A config file that is truncated, empty, binary or unknown-keyed at start: one clear line,
/// exit code 1, nothing written.
#[test]
fn damaged_config_at_start_is_refused_with_one_line() {
    let node = Node::new();
    let good = std::fs::read_to_string(node.cfg().join("p2pd.yaml")).unwrap();
    // Cut inside the `control_socket` key (line 4): what a torn write of the file would look like.
    let cut = good.find("control_socket").unwrap() + "control_so".len();
    // Each with the text the line must hold: the file, and where in it the damage is.
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated", good.as_bytes()[..cut].to_vec(), "p2pd.yaml: line 4, column 1: "),
        ("zeroed", vec![0u8; good.len()], "p2pd.yaml: line 1, column 1: unexpected character"),
        ("binary", vec![0xff, 0xfe, 0x00, 0x13, 0x37], "p2pd.yaml: file is not valid UTF-8 text"),
        ("garbage", b"listen: [[[\n".to_vec(), "p2pd.yaml: line 1, column 9: "),
        (
            "unknown key",
            format!("{good}\nlisten_port: 5\n").into_bytes(),
            "p2pd.yaml: line 7, column 1: unknown field `listen_port`",
        ),
    ];
    for (how, bytes, needle) in cases {
        std::fs::write(node.cfg().join("p2pd.yaml"), &bytes).unwrap();
        let child = std::process::Command::new(p2pd_bin())
            .arg("--config-dir")
            .arg(node.cfg())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{how}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{how}: one line, got: {stderr}");
        assert!(stderr.contains(needle), "{how}: {stderr}");
        assert!(!node.state().exists(), "{how}: nothing written");
    }
}
