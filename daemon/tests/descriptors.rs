//! Every malformed-descriptor class gets its own one-line error naming the field, through the
//! real `p2pctl add`, and leaves nothing behind: no torrent, no torrent file, no state.

mod common;

use std::path::Path;

use common::*;

/// A valid directory descriptor's text, to be broken in one way per case.
fn valid_descriptor(node: &Node) -> String {
    let src = node.root.path().join("src/tree");
    random_file(&src.join("a.bin"), 40_000, 1);
    random_file(&src.join("d/b.bin"), 30_000, 2);
    std::fs::write(src.join("d/empty"), b"").unwrap();
    let desc = create_descriptor(
        &src,
        &node.root.path().join("valid.desc"),
        &["--piece-size", "16K", "--bootstrap", "127.0.0.1:9"],
    );
    std::fs::read_to_string(desc).unwrap()
}

/// Replaces the first occurrence of `from` (which must exist) with `to`.
fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "fixture lacks {from:?}");
    text.replacen(from, to, 1)
}

fn first_piece(text: &str) -> String {
    text.lines().find(|l| l.trim_start().starts_with("- ") && l.trim().len() == 66).unwrap().trim()[2..].to_string()
}

#[test]
fn each_malformed_class_has_its_own_error_and_adds_nothing() {
    let mut node = Node::new();
    node.start();
    let good = valid_descriptor(&node);
    let piece = first_piece(&good);
    random_file(&node.root.path().join("src/single.bin"), 20_000, 3);
    let single = std::fs::read_to_string(create_descriptor(
        &node.root.path().join("src/single.bin"),
        &node.root.path().join("single.desc"),
        &[],
    ))
    .unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        ("bad yaml", "content: [\n".into(), "line 1"),
        ("not a mapping", "- a\n- b\n".into(), "line 1"),
        ("missing field", edit(&good, "  piece_length: 16384\n", ""), "missing field `piece_length`"),
        ("unknown field", edit(&good, "content:\n", "colour: blue\ncontent:\n"), "unknown field `colour`"),
        ("short hash", edit(&good, &piece, &piece[1..]), "content.pieces[0]: expected 64 hex digits, found 63"),
        ("non-hex hash", edit(&good, &piece, &"g".repeat(64)), "content.pieces[0]: `gggg"),
        ("piece count", edit(&good, &format!("  - {piece}\n"), ""), "content.pieces: 4 hashes listed"),
        (
            "zero piece size",
            edit(&good, "piece_length: 16384", "piece_length: 0"),
            "content.piece_length: must not be zero",
        ),
        (
            "absurd piece size",
            edit(&good, "piece_length: 16384", "piece_length: 1099511627776"),
            "content.piece_length: 1099511627776 is out of range",
        ),
        ("zero length", edit(&single, "length: 20000", "length: 0"), "content.length: must not be zero"),
        (
            "absurd length",
            edit(&single, "length: 20000", "length: 99999999999999999"),
            "content.length: 99999999999999999 is larger than the maximum",
        ),
        ("info hash mismatch", edit(&good, "length: 40000", "length: 40001"), "info_hash: does not match the content"),
        (
            "absolute path",
            edit(&good, "path: a.bin", "path: /etc/passwd"),
            "content.files[0].path: `/etc/passwd` is absolute",
        ),
        (
            "dot-dot",
            edit(&good, "path: a.bin", "path: ../../escape"),
            "content.files[0].path: `../../escape` contains a `..` component",
        ),
        (
            "empty component",
            edit(&good, "path: a.bin", "path: a//b"),
            "content.files[0].path: `a//b` has an empty component",
        ),
        ("nul", edit(&good, "path: a.bin", "path: \"a\\0b\""), "content.files[0].path: contains a NUL byte"),
        ("duplicate", edit(&good, "path: d/b.bin", "path: a.bin"), "is listed twice"),
        ("bad bootstrap", edit(&good, "127.0.0.1:9", "127.0.0.1"), "bootstrap[0]: `127.0.0.1` is missing a port"),
        (
            "version",
            edit(&good, "p2pd_descriptor: 1", "p2pd_descriptor: 2"),
            "p2pd_descriptor: unsupported format version 2",
        ),
    ];
    for (name, text, expected) in &cases {
        let path = node.root.path().join(format!("{}.desc", name.replace(' ', "-")));
        std::fs::write(&path, text).unwrap();
        let r = node.ctl(&["add", path.to_str().unwrap()]);
        assert_eq!(r.code, 1, "{name}: exit code: {r:?}");
        let line = r.stderr.trim_end();
        assert!(!line.contains('\n'), "{name}: not one line: {line}");
        assert!(line.starts_with("p2pctl: "), "{name}: {line}");
        assert!(line.contains(path.to_str().unwrap()), "{name}: names the file: {line}");
        assert!(line.contains(expected), "{name}: expected `{expected}` in `{line}`");
        assert!(r.stdout.is_empty(), "{name}: printed a hash anyway");
    }
    // The daemon's own check (bypassing p2pctl's) gives the same answer: drop broken torrent
    // files into torrents/ and reload.
    std::fs::create_dir_all(node.torrents()).unwrap();
    std::fs::write(
        node.torrents().join("broken.yaml"),
        format!("descriptor:\n{}", indent(&edit(&good, "path: a.bin", "path: ../x"))),
    )
    .unwrap();
    let r = node.ctl(&["reload"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.contains("torrents/broken.yaml: descriptor.content.files[0].path: `../x` contains a `..` component"),
        "{}",
        r.stdout
    );
    std::fs::remove_file(node.torrents().join("broken.yaml")).unwrap();

    assert!(node.status()["torrents"].as_array().unwrap().is_empty(), "nothing was added");
    assert!(tree(&node.torrents()).is_empty(), "no torrent files: {:?}", tree(&node.torrents()));
    assert!(tree(&node.state().join("resume")).is_empty());
    assert!(!node.root.path().join("escape").exists() && !Path::new("/escape").exists());
    // The daemon is still fine.
    assert_eq!(node.ctl(&["status"]).code, 0);
}

#[test]
fn unreadable_and_missing_descriptor_files() {
    let mut node = Node::new();
    node.start();
    let r = node.ctl(&["add", "/nonexistent/x.desc"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("/nonexistent/x.desc") && r.stderr.contains("No such file"), "{}", r.stderr);
    let dir = node.root.path().join("a-directory.desc");
    std::fs::create_dir(&dir).unwrap();
    let r = node.ctl(&["add", dir.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{r:?}");
    let huge = node.root.path().join("huge.desc");
    std::fs::write(&huge, vec![b'#'; 17 << 20]).unwrap();
    let r = node.ctl(&["add", huge.to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("larger than the limit"), "{}", r.stderr);
    let binary = node.root.path().join("binary.desc");
    std::fs::write(&binary, [0xff, 0xfe, 0x00, 0x81]).unwrap();
    let r = node.ctl(&["add", binary.to_str().unwrap()]);
    assert!(r.code == 1 && r.stderr.contains("UTF-8"), "{r:?}");
}

#[test]
fn create_refuses_what_it_cannot_describe() {
    let root = tempfile::tempdir().unwrap();
    let empty = root.path().join("empty.bin");
    std::fs::write(&empty, b"").unwrap();
    let link_dir = root.path().join("withlink");
    std::fs::create_dir(&link_dir).unwrap();
    std::fs::write(link_dir.join("real"), b"data").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", link_dir.join("link")).unwrap();
    for (source, expected) in [
        (empty.as_path(), "nothing to distribute"),
        (link_dir.as_path(), "symbolic links are not supported"),
        (Path::new("/nonexistent"), "No such file"),
    ] {
        let o = std::process::Command::new(p2pctl_bin())
            .arg("create")
            .arg(source)
            .arg("-o")
            .arg(root.path().join("out.desc"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains(expected), "{source:?}: {err}");
    }
    let o = std::process::Command::new(p2pctl_bin())
        .args(["create", link_dir.join("real").to_str().unwrap(), "--piece-size", "48K"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "bad --piece-size is a usage error");
    assert!(String::from_utf8_lossy(&o.stderr).contains("power of two"));
    assert!(!root.path().join("out.desc").exists());
}

fn indent(text: &str) -> String {
    text.lines().filter(|l| !l.starts_with('#')).map(|l| format!("  {l}\n")).collect()
}
