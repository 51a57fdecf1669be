//! Data directories are owned, not shared by accident: one content path per torrent, content
//! already on disk adopted only if it verifies (or with `--adopt`), `remove --delete-data`
//! deleting only what the torrent owns, and `add --data` from a control_group member kept
//! inside `data_roots`. Real p2pd, real p2pctl.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use sha2::{Digest, Sha256};

fn sha(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// The info hash of a descriptor file.
fn hash_of(desc: &Path) -> String {
    p2pd::descriptor::Descriptor::parse(&std::fs::read_to_string(desc).unwrap()).unwrap().info_hash.to_hex()
}

fn short(hash: &str) -> &str {
    &hash[..12]
}

/// Regression: with `tc` complete and seeding, adding another descriptor whose content is also
/// named `tc` renamed the complete `tc` to `tc.part` and overwrote it, while `status` still
/// showed the first torrent seeding at 100 %. Now the second `add` is refused, naming both.
#[test]
fn a_second_torrent_may_not_take_a_content_path() {
    let mut node = Node::new();
    node.start();
    let src = node.root.path().join("src");
    random_file(&src.join("a/tc"), 600_000, 1);
    random_file(&src.join("b/tc"), 500_000, 2);
    random_file(&src.join("c/tc.part"), 100_000, 3);
    random_file(&src.join("tree/inner.bin"), 50_000, 4);
    random_file(&src.join("d/x.bin"), 40_000, 5);
    let desc = |p: &str, n: &str| create_descriptor(&src.join(p), &node.root.path().join(n), &["--piece-size", "64K"]);
    let (da, db, dc, dtree, dx) = (
        desc("a/tc", "a.desc"),
        desc("b/tc", "b.desc"),
        desc("c/tc.part", "c.desc"),
        desc("tree", "t.desc"),
        desc("d/x.bin", "x.desc"),
    );
    std::fs::create_dir_all(node.data()).unwrap();
    std::fs::copy(src.join("a/tc"), node.data().join("tc")).unwrap();
    let a = node.add(&da);
    node.wait_state(&a, "seeding");
    let before = sha(&node.data().join("tc"));

    // Same name, same directory.
    let b = hash_of(&db);
    let r = node.ctl(&["add", db.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{r:?}");
    let expected = format!(
        "p2pctl: content path {} of tc ({}) is already used by tc ({}) (torrents/{a}.yaml); remove that torrent \
         first, or add this one with --data DIR elsewhere",
        node.data().join("tc").display(),
        short(&b),
        short(&a)
    );
    assert_eq!(r.stderr.trim(), expected);
    assert!(node.torrent(&b).is_none() && !node.torrents().join(format!("{b}.yaml")).exists());

    // A torrent named like the first one's partial name.
    let r = node.ctl(&["add", dc.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains(&format!("content path {} of tc.part (", node.data().join("tc.part").display())),
        "{r:?}"
    );
    assert!(r.stderr.contains(&format!("already used by tc ({})", short(&a))), "{r:?}");

    // A torrent inside another one's directory.
    let tree = node.add(&dtree);
    node.wait_state(&tree, "leeching");
    let inside = node.data().join("tree");
    let r = node.ctl(&["add", dx.to_str().unwrap(), "--data", inside.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains(&format!(
            "already used by tree ({}) (torrents/{tree}.yaml, at {})",
            short(&tree),
            inside.display()
        )),
        "{r:?}"
    );

    // The first torrent never noticed.
    let t = node.torrent(&a).unwrap();
    assert_eq!(t["state"], "seeding");
    assert_eq!(t["bytes_done"], 600_000);
    assert_eq!(sha(&node.data().join("tc")), before, "content byte-identical");
    assert!(!node.data().join("tc.part").exists());
    assert_eq!(node.status()["torrents"].as_array().unwrap().len(), 2);
}

/// Two torrent files naming one content path: the first (by file name at start-up; the one
/// already running on reload) keeps it, the other is reported like a clashing info hash.
#[test]
fn torrent_files_naming_one_path_keep_the_first() {
    let mut node = Node::new();
    node.start();
    let src = node.root.path().join("src");
    random_file(&src.join("a/tc"), 200_000, 11);
    random_file(&src.join("b/tc"), 300_000, 12);
    let da = create_descriptor(&src.join("a/tc"), &node.root.path().join("a.desc"), &[]);
    let db = create_descriptor(&src.join("b/tc"), &node.root.path().join("b.desc"), &[]);
    let (a, b) = (hash_of(&da), hash_of(&db));
    std::fs::create_dir_all(node.torrents()).unwrap();
    std::fs::write(node.torrents().join("aa.yaml"), torrent_file(&da)).unwrap();
    std::fs::write(node.torrents().join("bb.yaml"), torrent_file(&db)).unwrap();

    let r = node.ctl(&["reload"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains(&format!("started tc ({}) from torrents/aa.yaml", short(&a))), "{}", r.stdout);
    let rejected = format!(
        "torrents/bb.yaml: content path {} of tc ({}) is already used by tc ({}) (torrents/aa.yaml)",
        node.data().join("tc").display(),
        short(&b),
        short(&a)
    );
    assert!(r.stdout.contains(&rejected), "{}", r.stdout);
    node.wait_state(&a, "leeching");
    assert!(node.torrent(&b).is_none());

    // At start-up, the same: file name order.
    assert_eq!(node.stop(), 0);
    node.start();
    node.wait_state(&a, "leeching");
    assert!(node.torrent(&b).is_none());
    assert!(node.log().contains(&rejected), "{}", node.log());

    // Once the first file goes, the second may have the path, but not what the first left
    // there (tc.part, kept as `remove` without --delete-data keeps it).
    std::fs::remove_file(node.torrents().join("aa.yaml")).unwrap();
    let r = node.ctl(&["reload"]);
    assert_eq!(r.code, 0, "{r:?}");
    let t = node.wait_state(&b, "error");
    let leftover = node.data().join("tc.part");
    assert!(t["error"].as_str().unwrap().starts_with(&format!("{} is already there", leftover.display())), "{t}");
    assert!(node.torrent(&a).is_none());
    std::fs::remove_file(&leftover).unwrap();
    node.ctl_ok(&["verify", &b]);
    node.wait_state(&b, "leeching");
}

/// Editing a torrent file to move its content onto another torrent's path is refused; the
/// torrent keeps running where it was.
#[test]
fn moving_onto_another_torrents_path_is_refused() {
    let mut node = Node::new();
    node.start();
    let src = node.root.path().join("src");
    random_file(&src.join("a/tc"), 100_000, 15);
    random_file(&src.join("b/tc"), 120_000, 16);
    let da = create_descriptor(&src.join("a/tc"), &node.root.path().join("a.desc"), &[]);
    let db = create_descriptor(&src.join("b/tc"), &node.root.path().join("b.desc"), &[]);
    let other = node.root.path().join("other");
    let a = node.add(&da);
    let b = node.ctl_ok(&["add", db.to_str().unwrap(), "--data", other.to_str().unwrap()]).trim().to_string();
    node.wait_state(&b, "leeching");
    let file = node.torrents().join(format!("{b}.yaml"));
    let text = std::fs::read_to_string(&file).unwrap();
    let moved = text.replace(other.to_str().unwrap(), node.data().to_str().unwrap());
    assert_ne!(text, moved);
    std::fs::write(&file, moved).unwrap();
    let r = node.ctl(&["reload"]);
    assert_eq!(r.code, 1, "{r:?}");
    let expected = format!(
        "torrents/{b}.yaml: content path {} of tc ({}) is already used by tc ({}) (torrents/{a}.yaml); remove that \
         torrent first, or add this one with --data DIR elsewhere (tc keeps running in {})",
        node.data().join("tc").display(),
        short(&b),
        short(&a),
        other.display()
    );
    assert!(r.stdout.contains(&expected), "{}", r.stdout);
    assert_eq!(node.torrent(&b).unwrap()["data_dir"], other.to_str().unwrap());
    assert_eq!(node.torrent(&a).unwrap()["data_dir"], node.data().to_str().unwrap());
}

fn torrent_file(desc: &Path) -> String {
    let body: String = std::fs::read_to_string(desc)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("  {l}\n"))
        .collect();
    format!("descriptor:\n{body}")
}

/// An operator's file or directory that happens to have the content's name is never
/// renamed, overwritten or deleted: the torrent shows an error that names the path and says
/// what to do, and `remove --delete-data` leaves it in place.
#[test]
fn an_operators_file_at_the_content_path_is_left_alone() {
    let mut node = Node::new();
    node.start();
    let src = node.root.path().join("src");
    random_file(&src.join("tc"), 600_000, 21);
    random_file(&src.join("tree/a.bin"), 70_000, 22);
    random_file(&src.join("tree/sub/b.bin"), 30_000, 23);
    let dtc = create_descriptor(&src.join("tc"), &node.root.path().join("tc.desc"), &["--piece-size", "64K"]);
    let dtree = create_descriptor(&src.join("tree"), &node.root.path().join("tree.desc"), &[]);
    let operators = node.data().join("tc");
    random_file(&operators, 100_000, 99);
    std::fs::create_dir_all(node.data().join("tree/sub")).unwrap();
    std::fs::write(node.data().join("tree/sub/b.bin"), b"the operator's own b.bin").unwrap();
    std::fs::write(node.data().join("tree/notes.txt"), b"the operator's notes").unwrap();
    let before = (sha(&operators), tree(&node.data()));

    let tc = node.add(&dtc);
    let t = node.wait_state(&tc, "error");
    let error = t["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!(
            "{} is already there and is not this torrent's content (0 of 10 pieces match); p2pd leaves it untouched",
            operators.display()
        )),
        "{error}"
    );
    assert!(
        error.contains(&format!("p2pctl verify {}", short(&tc)))
            && error.contains("--adopt")
            && error.contains("--data DIR"),
        "{error}"
    );
    let tree_hash = node.add(&dtree);
    let t = node.wait_state(&tree_hash, "error");
    assert!(t["error"].as_str().unwrap().contains(&format!("{} is already there", node.data().join("tree").display())));
    assert_eq!((sha(&operators), tree(&node.data())), before, "nothing renamed, written or created");

    // remove --delete-data: the torrent goes, the operator's files stay.
    let r = node.ctl(&["remove", &tree_hash, "--delete-data"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("removed tree") && !r.stdout.contains("deleted its data"), "{}", r.stdout);
    assert!(
        r.stderr.contains(&format!(
            "kept {}: this torrent never created, verified or adopted it",
            node.data().join("tree").display()
        )),
        "{}",
        r.stderr
    );
    assert_eq!((sha(&operators), tree(&node.data())), before);

    // The operator moves the file away and asks for a recheck: now the torrent downloads, and
    // what it created is its own to delete.
    let moved = node.root.path().join("moved-tc");
    std::fs::rename(&operators, &moved).unwrap();
    node.ctl_ok(&["verify", "tc"]);
    node.wait_state(&tc, "leeching");
    assert!(node.data().join("tc.part").exists());
    let r = node.ctl(&["remove", "tc", "--delete-data"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("deleted its data"), "{}", r.stdout);
    assert!(!node.data().join("tc.part").exists());
    assert_eq!(sha(&moved), before.0);
    assert!(node.data().join("tree/notes.txt").exists() && node.data().join("tree/sub/b.bin").exists());
}

/// Regression (review of issue 11): with a torrent's download under `NAME.part`, an operator
/// put their own `NAME` there meanwhile, and `remove --delete-data` deleted the operator's
/// `NAME` (whatever has the final name was taken for the torrent's content) and kept the
/// torrent's `.part`. Realistic trigger: the completed download cannot be moved into place
/// ("already exists"), and the operator then removes the torrent with its data. Now the claim
/// records which file or directory is the torrent's: the torrent keeps to its `.part`, and
/// only that is deleted. For a file, and for a directory (inside an operator's directory of the
/// same name).
#[test]
fn an_operators_file_put_at_the_final_name_meanwhile_is_never_the_torrents() {
    let mut seed = Node::new();
    seed.start();
    let src = seed.root.path().join("src");
    random_file(&src.join("tc"), 300_000, 61);
    random_file(&src.join("tree/a.bin"), 80_000, 62);
    random_file(&src.join("tree/sub/b.bin"), 40_000, 63);
    let opts = ["--piece-size", "16K", "--bootstrap", &seed.addr()].map(String::from);
    let opts: Vec<&str> = opts.iter().map(String::as_str).collect();
    let dtc = create_descriptor(&src.join("tc"), &seed.root.path().join("tc.desc"), &opts);
    let dtree = create_descriptor(&src.join("tree"), &seed.root.path().join("tree.desc"), &opts);

    let mut leecher = Node::new();
    leecher.start();
    let data = leecher.data();
    let operators = ["tc", "tree/a.bin", "tree/sub/b.bin"];
    let put_operators_files = || {
        std::fs::create_dir_all(data.join("tree/sub")).unwrap();
        for p in operators {
            std::fs::write(data.join(p), format!("the operator's {p}")).unwrap();
        }
    };
    let assert_operators_files = |when: &str| {
        for p in operators {
            let found = std::fs::read_to_string(data.join(p)).unwrap_or_else(|e| panic!("{when}: {p}: {e}"));
            assert_eq!(found, format!("the operator's {p}"), "{when}");
        }
    };
    let remove_deleting_data = |leecher: &Node, hashes: [&str; 2], when: &str| {
        for hash in hashes {
            let r = leecher.ctl(&["remove", hash, "--delete-data"]);
            assert_eq!(r.code, 0, "{when}: {r:?}");
            assert!(r.stdout.contains("deleted its data"), "{when}: {r:?}");
        }
        assert!(!data.join("tc.part").exists() && !data.join("tree.part").exists(), "{when}: {:?}", tree(&data));
        assert_operators_files(when);
    };

    // Downloads started while nobody has the content; the operator's files appear beside them.
    let (tc, tree_hash) = (leecher.add(&dtc), leecher.add(&dtree));
    leecher.wait_state(&tc, "leeching");
    leecher.wait_state(&tree_hash, "leeching");
    assert!(data.join("tc.part").is_file() && data.join("tree.part").is_dir());
    put_operators_files();
    remove_deleting_data(&leecher, [&tc, &tree_hash], "removed while downloading");

    // The same after the completed downloads could not be moved into place.
    for p in ["tc", "tree"] {
        std::fs::rename(data.join(p), data.join(format!("{p}.kept"))).unwrap();
    }
    leecher.add(&dtc);
    leecher.add(&dtree);
    leecher.wait_state(&tc, "leeching");
    leecher.wait_state(&tree_hash, "leeching");
    assert_eq!(leecher.stop(), 0);
    for p in ["tc", "tree"] {
        std::fs::rename(data.join(format!("{p}.kept")), data.join(p)).unwrap();
    }
    std::fs::create_dir_all(seed.data().join("tree/sub")).unwrap();
    std::fs::copy(src.join("tc"), seed.data().join("tc")).unwrap();
    std::fs::copy(src.join("tree/a.bin"), seed.data().join("tree/a.bin")).unwrap();
    std::fs::copy(src.join("tree/sub/b.bin"), seed.data().join("tree/sub/b.bin")).unwrap();
    seed.add(&dtc);
    seed.add(&dtree);
    seed.wait_state(&tc, "seeding");
    seed.wait_state(&tree_hash, "seeding");
    leecher.start();
    for (hash, name) in [(&tc, "tc"), (&tree_hash, "tree")] {
        let t = leecher.wait_state(hash, "error");
        assert_eq!(
            t["error"].as_str().unwrap(),
            format!("cannot move the completed content into place: {} already exists", data.join(name).display()),
            "{t}"
        );
        assert_eq!(t["pieces_done"], t["pieces_total"], "{t}");
    }
    assert_eq!(sha(&data.join("tc.part")), sha(&src.join("tc")));
    assert_operators_files("after the downloads completed");
    remove_deleting_data(&leecher, [&tc, &tree_hash], "removed after the downloads completed");
}

/// Regression (review of issue 11): a claim outlived its torrent when `torrents/X.yaml` was
/// deleted while p2pd was stopped; added again later, X "owned" whatever an operator had put at
/// its path since, renamed it to `.part` and overwrote it. Now claims no torrent file names are
/// forgotten at start-up, and what is there is foreign to X.
#[test]
fn a_claim_outliving_its_torrent_file_is_forgotten_at_start_up() {
    let mut node = Node::new();
    node.start();
    let src = node.root.path().join("src/tc");
    random_file(&src, 200_000, 71);
    let desc = create_descriptor(&src, &node.root.path().join("tc.desc"), &[]);
    let hash = node.add(&desc);
    node.wait_state(&hash, "leeching");
    let claim = node.state().join(format!("claims/{hash}.state"));
    assert!(claim.exists() && node.data().join("tc.part").exists());
    assert_eq!(node.stop(), 0);

    // The operator tidies up by hand, and later has a file of their own called `tc`.
    std::fs::remove_file(node.torrents().join(format!("{hash}.yaml"))).unwrap();
    std::fs::remove_file(node.data().join("tc.part")).unwrap();
    let operators = node.data().join("tc");
    random_file(&operators, 150_000, 72);
    let before = sha(&operators);

    node.start();
    eventually(PATIENCE, "the claim to be forgotten", || (!claim.exists()).then_some(()));
    let line = format!(
        "forgot the claim of torrent {} on {}: no file in torrents/ names it",
        short(&hash),
        node.data().join("tc").display()
    );
    assert!(node.log().contains(&line), "{}", node.log());

    let again = node.add(&desc);
    let t = node.wait_state(&again, "error");
    assert!(t["error"].as_str().unwrap().starts_with(&format!("{} is already there", operators.display())), "{t}");
    let r = node.ctl(&["remove", &again, "--delete-data"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("never created, verified or adopted it"), "{r:?}");
    assert_eq!(sha(&operators), before);
    assert!(!node.data().join("tc.part").exists());
}

/// A claim covers the file or directory the torrent made or took over, not a name: content
/// replaced while p2pd was stopped (the torrent file kept) is foreign to the torrent, neither
/// written nor deleted.
#[test]
fn content_replaced_while_stopped_is_not_the_torrents() {
    let mut node = Node::new();
    node.start();
    let src = node.root.path().join("src/tc");
    random_file(&src, 200_000, 81);
    let desc = create_descriptor(&src, &node.root.path().join("tc.desc"), &[]);
    let hash = node.add(&desc);
    node.wait_state(&hash, "leeching");
    assert_eq!(node.stop(), 0);
    std::fs::remove_file(node.data().join("tc.part")).unwrap();
    let operators = node.data().join("tc");
    random_file(&operators, 150_000, 82);
    let before = sha(&operators);

    node.start();
    let t = node.wait_state(&hash, "error");
    assert!(t["error"].as_str().unwrap().starts_with(&format!("{} is already there", operators.display())), "{t}");
    let warning =
        format!("{}: not the content this torrent created (moved away or replaced since", operators.display());
    assert!(node.log().contains(&warning), "{}", node.log());
    let r = node.ctl(&["remove", &hash, "--delete-data"]);
    assert_eq!(r.code, 0, "{r:?}");
    let kept =
        format!("kept {}: not what this torrent created there (moved away or replaced since)", operators.display());
    assert!(r.stderr.contains(&kept), "{r:?}");
    assert_eq!(sha(&operators), before);
    assert!(!node.data().join("tc.part").exists());
}

/// No torrent's content may be, contain or lie inside p2pd's state or configuration directory
/// (for root too, and in torrent files): a torrent there could overwrite or delete p2pd's own
/// claims, resume state or torrent files.
#[test]
fn content_may_not_meet_p2pds_own_directories() {
    let mut node = Node::new();
    node.start();
    let src = node.root.path().join("src");
    random_file(&src.join("f.bin"), 30_000, 91);
    random_file(&src.join("state"), 30_000, 92);
    let df = create_descriptor(&src.join("f.bin"), &node.root.path().join("f.desc"), &[]);
    let dstate = create_descriptor(&src.join("state"), &node.root.path().join("state.desc"), &[]);
    let (hf, hstate) = (hash_of(&df), hash_of(&dstate));
    let refused = |desc: &Path, dir: &Path, expected: String| {
        let r = node.ctl(&["add", desc.to_str().unwrap(), "--data", dir.to_str().unwrap()]);
        assert_eq!(r.code, 1, "--data {}: {r:?}", dir.display());
        assert_eq!(r.stderr.trim(), format!("p2pctl: {expected}"));
    };
    let sentence = |path: &Path, who: &str, relation: &str, what: &str, dir: &Path| {
        format!(
            "content path {} of {who} {relation} p2pd's {what} {}; p2pd keeps content apart from its own files: use \
             a data directory outside it",
            path.display(),
            dir.display()
        )
    };
    let f = format!("f.bin ({})", short(&hf));
    let (state, cfg) = (node.state(), node.cfg());
    refused(&df, &state, sentence(&state.join("f.bin"), &f, "lies inside", "state directory", &state));
    refused(
        &df,
        &state.join("claims"),
        sentence(&state.join("claims/f.bin"), &f, "lies inside", "state directory", &state),
    );
    refused(
        &df,
        &cfg.join("torrents"),
        sentence(&cfg.join("torrents/f.bin"), &f, "lies inside", "configuration directory", &cfg),
    );
    let st = format!("state ({})", short(&hstate));
    refused(&dstate, node.root.path(), sentence(&state, &st, "is", "state directory", &state));
    assert!(node.status()["torrents"].as_array().unwrap().is_empty());
    assert!(!state.join("f.bin.part").exists() && !state.join("claims/f.bin.part").exists());

    // A torrent file naming such a directory is rejected by reload.
    std::fs::create_dir_all(node.torrents()).unwrap();
    std::fs::write(node.torrents().join("f.yaml"), format!("data_dir: {}\n{}", state.display(), torrent_file(&df)))
        .unwrap();
    let r = node.ctl(&["reload"]);
    assert_eq!(r.code, 1, "{r:?}");
    let rejected =
        format!("torrents/f.yaml: {}", sentence(&state.join("f.bin"), &f, "lies inside", "state directory", &state));
    assert!(r.stdout.contains(&rejected), "{}", r.stdout);
    assert!(node.torrent(&hf).is_none() && !state.join("f.bin.part").exists());

    // Anywhere else, fine.
    let h = node.ctl_ok(&["add", dstate.to_str().unwrap()]);
    node.wait_state(h.trim(), "leeching");
}

/// A copy that verifies is seeded without asking; one that does not is taken over only with
/// `--adopt` (fresh, or for a torrent already added), then completed from the swarm.
#[test]
fn adopt_takes_over_a_damaged_copy_and_seeds_it() {
    let mut seed = Node::new();
    seed.start();
    let src = seed.root.path().join("src");
    random_file(&src.join("x.bin"), 900_000, 31);
    random_file(&src.join("y.bin"), 700_000, 32);
    let opts = ["--piece-size", "64K", "--bootstrap", &seed.addr()].map(String::from);
    let opts: Vec<&str> = opts.iter().map(String::as_str).collect();
    let dx = create_descriptor(&src.join("x.bin"), &seed.root.path().join("x.desc"), &opts);
    let dy = create_descriptor(&src.join("y.bin"), &seed.root.path().join("y.desc"), &opts);
    std::fs::create_dir_all(seed.data()).unwrap();
    for n in ["x.bin", "y.bin"] {
        std::fs::copy(src.join(n), seed.data().join(n)).unwrap();
        let h = seed.add(&seed.root.path().join(n.replace(".bin", ".desc")));
        seed.wait_state(&h, "seeding");
    }

    let mut leecher = Node::new();
    leecher.start();
    std::fs::create_dir_all(leecher.data()).unwrap();
    let damaged = |name: &str| {
        let mut bytes = std::fs::read(src.join(name)).unwrap();
        bytes[70_000] ^= 0xff; // piece 1
        std::fs::write(leecher.data().join(name), &bytes).unwrap();
    };
    std::fs::write(leecher.data().join("unrelated.txt"), b"keep me").unwrap();

    // Without --adopt: an error, nothing touched.
    damaged("x.bin");
    let x = leecher.add(&dx);
    let t = leecher.wait_state(&x, "error");
    assert!(t["error"].as_str().unwrap().contains("(13 of 14 pieces match)"), "{t}");
    // --adopt for the torrent already added: it now owns the copy, fixes piece 1, seeds.
    let r = leecher.ctl(&["add", dx.to_str().unwrap(), "--adopt"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("is already added; it now owns"), "{}", r.stderr);
    leecher.wait_state(&x, "seeding");
    assert_eq!(sha(&leecher.data().join("x.bin")), sha(&src.join("x.bin")));

    // Fresh add with --adopt.
    damaged("y.bin");
    let r = leecher.ctl(&["add", dy.to_str().unwrap(), "--adopt"]);
    assert_eq!(r.code, 0, "{r:?}");
    let y = r.stdout.trim().to_string();
    assert!(r.stderr.contains("adopting"), "{}", r.stderr);
    leecher.wait_state(&y, "seeding");
    assert_eq!(sha(&leecher.data().join("y.bin")), sha(&src.join("y.bin")));

    // Adopted content is the torrent's to delete; the unrelated file beside it is not.
    leecher.ctl_ok(&["remove", &x, "--delete-data"]);
    assert!(!leecher.data().join("x.bin").exists());
    assert_eq!(std::fs::read(leecher.data().join("unrelated.txt")).unwrap(), b"keep me");
    assert!(leecher.data().join("y.bin").exists());
}

/// `add --data DIR` from a control_group member (not root) must resolve inside `data_roots`
/// (default: data_dir): `/etc`, a link to it and a `..` escape are refused; root may use any
/// directory. Before: a group member could put content (and have it deleted) anywhere.
#[test]
fn group_members_may_add_only_inside_data_roots() {
    // Root: to run p2pctl as another user.
    if !require(&[Need::Root], None) {
        return;
    }
    let Some(group) = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(65534)).ok().flatten() else {
        return skip("needs a group with gid 65534 (nogroup) for control_group", None);
    };
    let mut node = Node::with_config(&format!("control_group: {}\n", group.name));
    node.start();
    // Let uid 65534 reach the socket, the config and the descriptors (the daemon's own checks
    // are what this test is about), and run a copy of p2pctl it can execute.
    for dir in [node.root.path().to_path_buf(), node.socket().parent().unwrap().to_path_buf()] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let p2pctl = node.root.path().join("p2pctl");
    std::fs::copy(p2pctl_bin(), &p2pctl).unwrap();
    std::fs::set_permissions(&p2pctl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let member = |args: &[&str]| -> Ctl {
        Command::new(&p2pctl)
            .arg("--config-dir")
            .arg(node.cfg())
            .args(args)
            .env_remove("P2PD_SOCKET")
            .current_dir("/")
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
            .into()
    };
    let descs: Vec<PathBuf> = (0..5)
        .map(|i| {
            let f = node.root.path().join(format!("f{i}.bin"));
            random_file(&f, 30_000, 40 + i);
            create_descriptor(&f, &node.root.path().join(format!("f{i}.desc")), &[])
        })
        .collect();
    let d = |i: usize| descs[i].to_str().unwrap().to_string();
    std::fs::create_dir_all(node.data()).unwrap();
    std::os::unix::fs::symlink("/etc", node.data().join("etc-link")).unwrap();

    let refused = |data: &Path, resolved: Option<&str>| {
        let r = member(&["add", &d(0), "--data", data.to_str().unwrap()]);
        assert_eq!(r.code, 4, "--data {}: {r:?}", data.display());
        let which = resolved.map(|p| format!(" (which is {p})")).unwrap_or_default();
        let expected = format!(
            "p2pctl: --data {}{which} is outside the directories this client may use ({})",
            data.display(),
            node.data().display()
        );
        assert!(r.stderr.starts_with(&expected), "expected `{expected}`, got {r:?}");
    };
    refused(Path::new("/etc"), None);
    refused(&node.data().join("etc-link"), Some("/etc"));
    let escape = node.data().join("new/../../escape");
    refused(&escape, Some(node.root.path().join("escape").to_str().unwrap()));
    assert!(node.status()["torrents"].as_array().unwrap().is_empty());
    assert!(!node.root.path().join("escape").exists() && !Path::new("/etc/f0.bin.part").exists());

    // Inside the root, or no --data at all: accepted, and recorded resolved.
    let inside = node.data().join("team/a");
    let r = member(&["add", &d(1), "--data", inside.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(node.torrent(r.stdout.trim()).unwrap()["data_dir"], inside.to_str().unwrap());
    let r = member(&["add", &d(2)]);
    assert_eq!(r.code, 0, "{r:?}");
    let h2 = r.stdout.trim().to_string();

    // --adopt is for root and p2pd's own user only (adopted content is the torrent's to
    // overwrite and delete): refused for a new torrent, and for one already added (before: a
    // member could adopt any file in the roots, then `remove --delete-data` it).
    let nobody = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(65534)).ok().flatten();
    let who = nobody.map(|u| format!("user {} (uid 65534)", u.name)).unwrap_or_else(|| "uid 65534".into());
    let h0 = hash_of(&descs[0]);
    for (desc, hash) in [(d(0), &h0), (d(2), &h2)] {
        let r = member(&["add", &desc, "--adopt"]);
        assert_eq!(r.code, 4, "{r:?}");
        let expected = format!(
            "p2pctl: --adopt from {who} refused: only root and p2pd's own user (root) may adopt content, since \
             adopted content becomes the torrent's to overwrite, cut and delete"
        );
        assert!(r.stderr.starts_with(&expected), "expected `{expected}`, got {r:?}");
        assert_eq!(node.torrent(hash).is_some(), *hash == h2);
    }
    assert!(!node.log().contains("adopted what is at"), "{}", node.log());

    // Root may use any directory.
    let elsewhere = node.root.path().join("elsewhere");
    let h = node.ctl_ok(&["add", &d(3), "--data", elsewhere.to_str().unwrap()]);
    node.wait_state(h.trim(), "leeching");

    // data_roots replaces the default (and reload applies it).
    let extra = node.root.path().join("extra");
    node.write_config(&format!("control_group: {}\ndata_roots: [{}]\n", group.name, extra.display()));
    let r = node.ctl(&["reload"]);
    assert!(r.stdout.contains(&format!("data_roots: [{}] → [{}]", node.data().display(), extra.display())), "{r:?}");
    let r = member(&["add", &d(4), "--data", node.data().join("team/b").to_str().unwrap()]);
    assert_eq!(r.code, 4, "{r:?}");
    let r = member(&["add", &d(4), "--data", extra.join("b").to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r:?}");
}

/// A crash at each step of saving a claim (made before the first byte of content is written):
/// after a restart the torrent carries on, with no temporary file and no warning left.
#[test]
#[cfg_attr(not(feature = "fault-injection"), ignore = "needs `--features p2pd/fault-injection`")]
fn a_crash_while_claiming_loses_nothing() {
    for step in ["write_tmp", "fsync_file", "rename", "fsync_dir"] {
        let mut node = Node::new();
        random_file(&node.root.path().join("f.bin"), 100_000, 51);
        let desc = create_descriptor(&node.root.path().join("f.bin"), &node.root.path().join("f.desc"), &[]);
        node.env = vec![("P2PD_FAULT".into(), format!("abort_after:{step}:/claims/"))];
        node.start();
        let hash = hash_of(&desc);
        // The torrent starts (and claims) while `add` is answered: the answer may be lost.
        node.ctl(&["add", desc.to_str().unwrap()]);
        let child = node.child.as_mut().unwrap();
        let status = eventually(PATIENCE, "the abort", || child.try_wait().unwrap());
        node.child = None;
        assert!(node.log().contains(&format!("fault injection: aborting after {step}")), "{step}: {status}");
        assert!(!node.data().join("f.bin.part").exists(), "{step}: nothing written before the claim is durable");
        node.env.clear();
        node.start();
        node.wait_state(&hash, "leeching");
        assert!(node.data().join("f.bin.part").exists());
        let temporaries: Vec<String> =
            tree(node.root.path()).into_iter().filter(|p| p.contains(".p2pd-tmp.")).collect();
        assert!(temporaries.is_empty(), "{step}: {temporaries:?}");
        assert!(node.status()["node"]["state_warnings"].as_array().unwrap().is_empty(), "{step}");
    }
}

/// Regression (review of issue 11): `add` checks the data directory's path, but a torrent opens
/// it again at every start, following symbolic links. A directory inside the data roots, swapped
/// for a link to p2pd's configuration directory after `add`, made the torrent look at a file of
/// p2pd's there (described by anyone who can read it), verify it, claim it — and `remove
/// --delete-data` delete it. Now every start checks where the opened directory really is.
#[test]
fn a_data_directory_swapped_for_a_link_to_p2pds_own_files_is_refused_at_start() {
    let mut node = Node::new();
    node.start();
    let secret = node.cfg().join("secret.bin");
    random_file(&secret, 40_000, 95);
    let before = sha(&secret);
    let desc = create_descriptor(&secret, &node.root.path().join("secret.desc"), &[]);
    let team = node.data().join("team");
    std::fs::create_dir_all(&team).unwrap();
    let h = node.ctl_ok(&["add", desc.to_str().unwrap(), "--data", team.to_str().unwrap()]).trim().to_string();
    node.wait_state(&h, "leeching");

    std::fs::remove_dir_all(&team).unwrap();
    std::os::unix::fs::symlink(node.cfg(), &team).unwrap();
    node.ctl_ok(&["verify", &h]);
    let t = node.wait_state(&h, "error");
    let cfg = std::fs::canonicalize(node.cfg()).unwrap();
    let expected = format!(
        "content path {} of secret.bin ({}) lies inside p2pd's configuration directory {}; p2pd keeps content \
         apart from its own files: use a data directory outside it",
        cfg.join("secret.bin").display(),
        short(&h),
        cfg.display()
    );
    assert_eq!(t["error"].as_str(), Some(expected.as_str()), "{t}");

    let r = node.ctl(&["remove", &h, "--delete-data"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("kept"), "{r:?}");
    assert_eq!(sha(&secret), before, "p2pd's own file is untouched");
    assert!(!node.cfg().join("secret.bin.part").exists());
}
