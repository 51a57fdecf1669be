//! Content arrives as it was published (issue 11): executable bits, empty files and empty
//! directories survive a transfer between real daemons; what lies in a data directory is
//! refused when it is not a regular file (without blocking); content found longer than
//! described is left alone unless adopted, and cut to its described length once it is the
//! torrent's.

mod common;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::*;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o7777
}

/// Asserts that `path` holds exactly `expected` (without printing megabytes when it does not).
fn assert_holds(path: &Path, expected: &[u8]) {
    let found = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        found == expected,
        "{}: {} bytes, expected {} bytes{}",
        path.display(),
        found.len(),
        expected.len(),
        if found.starts_with(expected) { " (the expected ones, then more)" } else { " (different)" }
    );
}

/// Regression: a toolchain directory arrived byte-identical but with every file 0644, so its
/// programs failed with "Permission denied"; empty directories were not described at all.
#[test]
fn a_tool_directory_arrives_runnable_with_its_empty_files_and_directories() {
    let mut seed = Node::new();
    seed.start();
    let src = seed.root.path().join("src/tools");
    std::fs::create_dir_all(src.join("bin")).unwrap();
    std::fs::write(src.join("bin/hello"), "#!/bin/sh\necho \"hello from $(basename \"$0\"), args: $*\"\n").unwrap();
    std::fs::set_permissions(src.join("bin/hello"), std::fs::Permissions::from_mode(0o755)).unwrap();
    random_file(&src.join("lib/blob.bin"), 300_000, 7);
    std::fs::write(src.join("README"), "not a program\n").unwrap();
    std::fs::set_permissions(src.join("README"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/empty.conf"), b"").unwrap();
    std::fs::create_dir_all(src.join("share/empty")).unwrap();

    let desc = create_descriptor(
        &src,
        &seed.root.path().join("tools.desc"),
        &["--piece-size", "64K", "--bootstrap", &seed.addr()],
    );
    let text = std::fs::read_to_string(&desc).unwrap();
    assert!(text.contains("p2pd_descriptor: 2\n"), "{text}");
    assert!(text.contains("  - path: bin/hello\n    length: 55\n    executable: true\n"), "{text}");
    assert!(text.contains("  - path: etc/empty.conf\n    length: 0\n"), "{text}");
    assert!(text.contains("  directories:\n  - share/empty\n"), "{text}");
    assert_eq!(text.matches("executable").count(), 1, "only the script is executable: {text}");

    copy_tree(&src, &seed.data().join("tools"));
    let hash = seed.add(&desc);
    seed.wait_state(&hash, "seeding");

    let mut leecher = Node::new();
    leecher.start();
    assert_eq!(leecher.add(&desc), hash);
    leecher.wait_complete(&hash);
    let copy = leecher.data().join("tools");
    assert!(!leecher.data().join("tools.part").exists());

    for f in ["bin/hello", "lib/blob.bin", "README", "etc/empty.conf"] {
        assert_holds(&copy.join(f), &std::fs::read(src.join(f)).unwrap());
    }
    let hello = mode(&copy.join("bin/hello"));
    assert!(hello & 0o100 != 0, "bin/hello arrived {hello:o}");
    assert_eq!(hello & 0o111, (hello & 0o444) >> 2, "execute bits follow the read bits: {hello:o}");
    for f in ["README", "lib/blob.bin", "etc/empty.conf"] {
        assert_eq!(mode(&copy.join(f)) & 0o111, 0, "{f} must not be executable");
    }
    assert!(copy.join("share/empty").is_dir(), "the empty directory exists");
    assert_eq!(std::fs::read_dir(copy.join("share/empty")).unwrap().count(), 0);

    // The copy runs — while the leecher keeps seeding it (no descriptor of it is left open for
    // writing, which would make exec fail with "Text file busy").
    let out = Command::new(copy.join("bin/hello")).arg("--version").output().expect("run the downloaded script");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from hello, args: --version\n");
    assert_eq!(leecher.torrent(&hash).unwrap()["state"], "seeding");

    // What it wrote, it deletes on request — empty directories and the root included.
    leecher.ctl_ok(&["remove", &hash, "--delete-data"]);
    eventually(PATIENCE, "the copy to be deleted", || (!copy.exists()).then_some(()));
}

/// Regression: a FIFO at a content path made the daemon's `open` block until a writer came.
#[test]
fn a_fifo_at_a_content_path_is_an_error_naming_it_not_a_hang() {
    let mut node = Node::new();
    node.start();
    let src = node.root.path().join("src/tree");
    random_file(&src.join("a.bin"), 40_000, 1);
    random_file(&src.join("sub/b.bin"), 30_000, 2);
    let desc = create_descriptor(&src, &node.root.path().join("tree.desc"), &["--piece-size", "16K"]);
    std::fs::create_dir_all(node.data().join("tree.part/sub")).unwrap();
    let fifo = node.data().join("tree.part/sub/b.bin");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();

    // Without --adopt the partial tree is not this torrent's to touch; adopted, the FIFO in it
    // is refused by its type.
    let hash = node.ctl_ok(&["add", desc.to_str().unwrap(), "--adopt"]).trim().to_string();
    let t = node.wait_state(&hash, "error");
    let message = t["error"].as_str().unwrap_or_default();
    assert!(message.contains(&format!("{}: is a FIFO (named pipe), not a regular file", fifo.display())), "{t}");
    // The daemon still answers, and the FIFO was never opened for writing by anyone.
    assert_eq!(node.ctl(&["status"]).code, 0);
    assert_eq!(node.ctl(&["status", &hash]).code, 0);
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
}

/// Regression: a file longer than described passed the check ("verified") with the extra
/// bytes still in it, and was seeded that way. Then (review of issue 11) p2pd cut such a file
/// although it was not the torrent's: verification hashes the described bytes only, so an
/// operator's file that merely starts with them (a log appended to) lost its tail. Now content
/// found longer than described is an error that names the file and leaves it whole; adopted (or
/// once the torrent's own) it is cut to length before it is seeded.
#[test]
fn bytes_past_a_files_described_end_do_not_survive_verification() {
    let mut node = Node::new();
    node.start();
    let src = node.root.path().join("src");
    let a = random_file(&src.join("tree/a.bin"), 100_000, 1);
    let b = random_file(&src.join("tree/b.bin"), 50_000, 2);
    let single = random_file(&src.join("single.bin"), 70_000, 3);
    let tree_desc = create_descriptor(&src.join("tree"), &node.root.path().join("tree.desc"), &["--piece-size", "16K"]);
    let single_desc =
        create_descriptor(&src.join("single.bin"), &node.root.path().join("single.desc"), &["--piece-size", "16K"]);

    // Complete content under its final name with a tail appended.
    copy_tree(&src.join("tree"), &node.data().join("tree"));
    let append = |path: &Path, tail: &[u8]| {
        use std::io::Write;
        std::fs::OpenOptions::new().append(true).open(path).unwrap().write_all(tail).unwrap();
    };
    append(&node.data().join("tree/a.bin"), &[0xee; 4096]);
    let a_longer = [&a[..], &[0xee; 4096][..]].concat();
    // Complete content under its partial name whose file grew.
    let single_longer = [&single[..], &[0x11; 1000][..]].concat();
    std::fs::write(node.data().join("single.bin.part"), &single_longer).unwrap();

    // Not the torrents' own: an error naming the file and saying what to do; nothing is cut.
    let tree_hash = node.add(&tree_desc);
    let single_hash = node.add(&single_desc);
    for (hash, path, found, described) in [
        (&tree_hash, node.data().join("tree/a.bin"), 104_096, 100_000),
        (&single_hash, node.data().join("single.bin.part"), 71_000, 70_000),
    ] {
        let t = node.wait_state(hash, "error");
        let error = t["error"].as_str().unwrap();
        let expected = format!(
            "{} is {found} bytes, longer than the {described} bytes the descriptor describes: the first \
             {described} bytes match, but the file is not this torrent's content as it is, and p2pd leaves it \
             untouched. Add the descriptor with --adopt to let p2pd cut it to {described} bytes and seed it, move \
             it away and run `p2pctl verify {}`, or add it with --data DIR elsewhere",
            path.display(),
            &hash[..12]
        );
        assert_eq!(error, expected);
    }
    assert_holds(&node.data().join("tree/a.bin"), &a_longer);
    assert_holds(&node.data().join("single.bin.part"), &single_longer);
    assert!(!node.data().join("single.bin").exists());
    assert!(!node.log().contains("more than the descriptor describes"), "{}", node.log());

    // Adopted: cut to length, moved into place, seeded.
    for desc in [&tree_desc, &single_desc] {
        node.ctl_ok(&["add", desc.to_str().unwrap(), "--adopt"]);
    }
    node.wait_state(&tree_hash, "seeding");
    node.wait_state(&single_hash, "seeding");
    assert_holds(&node.data().join("tree/a.bin"), &a);
    assert_holds(&node.data().join("tree/b.bin"), &b);
    assert_holds(&node.data().join("single.bin"), &single);
    assert!(!node.data().join("single.bin.part").exists());
    assert!(node.log().contains("more than the descriptor describes; cut to 100000 bytes"), "{}", node.log());

    // Grown again while seeding (the torrent's own now): a full verify cuts it again and keeps
    // seeding.
    append(&node.data().join("tree/b.bin"), b"appended by someone");
    node.ctl_ok(&["verify", &tree_hash]);
    eventually(PATIENCE, "the verify to cut b.bin", || {
        (std::fs::metadata(node.data().join("tree/b.bin")).unwrap().len() == 50_000).then_some(())
    });
    node.wait_state(&tree_hash, "seeding");
    assert_holds(&node.data().join("tree/b.bin"), &b);
}
