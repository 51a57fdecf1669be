//! Every malformed-descriptor class gets its own one-line error naming the field, through the
//! real `p2pctl add`, and leaves nothing behind: no torrent, no torrent file, no state.
//! Descriptors written by earlier versions still load with the same info hash; `p2pctl create`
//! refuses what it cannot describe and writes its output through an exclusive temporary file.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;
use p2pd::descriptor::Descriptor;

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
        (
            "escape sequence in a path",
            edit(&good, "path: a.bin", "path: \"a\\e[2J\\e]0;pwned\\a.bin\""),
            "content.files[0].path: `a\\u{1b}[2J\\u{1b}]0;pwned\\u{7}.bin` contains the control character U+001B",
        ),
        (
            "newline in the name",
            edit(&good, "name: tree", "name: \"tree\\nINFO forged log line\""),
            "content.name: `tree\\nINFO forged log line` contains the control character U+000A",
        ),
        (
            "DEL in a path",
            edit(&good, "path: a.bin", "path: \"a\\x7f.bin\""),
            "content.files[0].path: `a\\u{7f}.bin` contains the control character U+007F",
        ),
        ("duplicate", edit(&good, "path: d/b.bin", "path: a.bin"), "is listed twice"),
        ("bad bootstrap", edit(&good, "127.0.0.1:9", "127.0.0.1"), "bootstrap[0]: `127.0.0.1` is missing a port"),
        (
            "version",
            edit(&good, "p2pd_descriptor: 1", "p2pd_descriptor: 3"),
            "p2pd_descriptor: unsupported format version 3 (this p2pd reads versions 1 to 2)",
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
        assert!(!line.chars().any(char::is_control), "{name}: control characters reached stderr: {line:?}");
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
    let fifo_dir = root.path().join("withfifo");
    std::fs::create_dir_all(fifo_dir.join("sub")).unwrap();
    std::fs::write(fifo_dir.join("real"), b"data").unwrap();
    nix::unistd::mkfifo(&fifo_dir.join("sub/pipe"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let socket_dir = root.path().join("withsocket");
    std::fs::create_dir(&socket_dir).unwrap();
    std::fs::write(socket_dir.join("real"), b"data").unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(socket_dir.join("sock")).unwrap();
    let lone_fifo = root.path().join("lone-fifo");
    nix::unistd::mkfifo(&lone_fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let evil_dir = root.path().join("evil");
    std::fs::create_dir(&evil_dir).unwrap();
    std::fs::write(evil_dir.join("x\x1b[31mred"), b"data").unwrap();
    let fifo_msg = format!(
        "{}: is a FIFO (named pipe); descriptors hold regular files and directories only",
        fifo_dir.join("sub/pipe").display()
    );
    let link_msg = format!(
        "{}: is a symbolic link; descriptors hold regular files and directories only",
        link_dir.join("link").display()
    );
    let socket_msg = format!("{}: is a socket;", socket_dir.join("sock").display());
    let lone_msg = format!("{}: is a FIFO (named pipe);", lone_fifo.display());
    let evil_msg = format!("{}: contains the control character U+001B", evil_dir.join("x\\u{1b}[31mred").display());
    for (source, expected) in [
        (empty.as_path(), "nothing to distribute"),
        (link_dir.as_path(), link_msg.as_str()),
        (fifo_dir.as_path(), fifo_msg.as_str()),
        (socket_dir.as_path(), socket_msg.as_str()),
        (lone_fifo.as_path(), lone_msg.as_str()),
        (evil_dir.as_path(), evil_msg.as_str()),
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
        assert!(err.contains(expected), "{source:?}: expected `{expected}` in {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(!err.trim_end().chars().any(char::is_control), "control characters reached stderr: {err:?}");
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

/// Descriptors written before executable bits and empty directories existed (committed as
/// written by p2pctl then) still load, with the info hash they were published under.
#[test]
fn descriptors_of_format_version_1_keep_their_info_hash() {
    const DIRECTORY: &str = "5a562732d3a9e63d4b487bf61213ce7f77bb20a776edb953c6f613d4cba56300";
    const FILE: &str = "23ce9801ab0b56e2fee26a8c8e07284512cdec11ea2b99a695d9bdd444b9167f";
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let dir_fixture = fixtures.join("descriptor-v1-directory.desc");
    let file_fixture = fixtures.join("descriptor-v1-file.desc");
    for (path, hash) in [(&dir_fixture, DIRECTORY), (&file_fixture, FILE)] {
        let text = std::fs::read_to_string(path).unwrap();
        let d = Descriptor::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(d.info_hash.to_hex(), hash, "{}", path.display());
        // Re-written by this version, it is the same text: nothing new appears in it.
        assert_eq!(d.to_yaml(), text, "{}", path.display());
    }

    // The daemon takes them as before.
    let mut node = Node::new();
    node.start();
    assert_eq!(node.add(&dir_fixture), DIRECTORY);
    assert_eq!(node.add(&file_fixture), FILE);

    // The same tree made again now, with nothing executable and no empty directory, gets the
    // same info hash: the fixture's `bin/hello` was 0644 and it had no empty directory.
    let src = node.root.path().join("oldfmt");
    std::fs::create_dir_all(src.join("bin")).unwrap();
    std::fs::write(src.join("README"), "p2pd descriptor fixture, written by p2pctl before the exec bit existed\n")
        .unwrap();
    std::fs::write(src.join("bin/hello"), "#!/bin/sh\necho hello from the fixture\n").unwrap();
    std::fs::set_permissions(src.join("bin/hello"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    let again = create_descriptor(
        &src,
        &node.root.path().join("again.desc"),
        &["--piece-size", "16K", "--bootstrap", "127.0.0.1:9"],
    );
    assert_eq!(std::fs::read_to_string(again).unwrap(), std::fs::read_to_string(&dir_fixture).unwrap());
    // Made executable, it is other content: a version 2 descriptor with another info hash.
    std::fs::set_permissions(src.join("bin/hello"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let v2 = create_descriptor(&src, &node.root.path().join("v2.desc"), &["--piece-size", "16K"]);
    let v2 = Descriptor::parse(&std::fs::read_to_string(v2).unwrap()).unwrap();
    assert_ne!(v2.info_hash.to_hex(), DIRECTORY);
    assert!(v2.content.files[1].executable);
}

/// `create` writes through a temporary file it creates exclusively in the output's directory,
/// then renames it: afterwards the directory holds the output and nothing else, readable by
/// others like any file the user creates; a symlink at the output name is replaced, not
/// followed.
#[test]
fn create_writes_its_output_atomically_and_exclusively() {
    let root = tempfile::tempdir().unwrap();
    random_file(&root.path().join("src/data.bin"), 50_000, 1);
    let out_dir = root.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let victim = root.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    std::os::unix::fs::symlink(&victim, out_dir.join("data.desc")).unwrap();
    create_descriptor(&root.path().join("src/data.bin"), &out_dir.join("data.desc"), &[]);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious", "the symlink's target is untouched");
    let meta = std::fs::symlink_metadata(out_dir.join("data.desc")).unwrap();
    assert!(meta.is_file(), "the output replaced the symlink");
    assert_eq!(meta.permissions().mode() & 0o044, 0o044 & !umask(), "readable like any new file");
    assert_eq!(tree(&out_dir), vec!["data.desc".to_string()], "no temporary file is left");
    Descriptor::parse(&std::fs::read_to_string(out_dir.join("data.desc")).unwrap()).unwrap();

    // Relative output in the current directory.
    let o = std::process::Command::new(p2pctl_bin())
        .current_dir(&out_dir)
        .args(["create", root.path().join("src/data.bin").to_str().unwrap(), "-o", "rel.desc"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(tree(&out_dir), vec!["data.desc".to_string(), "rel.desc".to_string()]);

    // An output directory that does not exist: one line naming the path, nothing written.
    let o = std::process::Command::new(p2pctl_bin())
        .args(["create", root.path().join("src/data.bin").to_str().unwrap(), "-o"])
        .arg(root.path().join("missing/x.desc"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(&root.path().join("missing/x.desc").display().to_string()), "{err}");
}

/// The process umask (read by setting it and putting it back; tests in this file do not
/// create files concurrently with this call in a way its value would matter to).
fn umask() -> u32 {
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    nix::sys::stat::umask(old);
    old.bits()
}
