use super::*;
use crate::descriptor::create::PieceHasher;

/// A valid directory descriptor over deterministic bytes: files `a` (40000 B), `d/e` (0 B),
/// `d/f` (30000 B), piece length 16 KiB.
fn sample() -> (Descriptor, Vec<u8>) {
    let lens = [("a", 40_000u64), ("d/e", 0), ("d/f", 30_000)];
    let bytes: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut hasher = PieceHasher::new(16 << 10);
    hasher.update(&bytes);
    let content = Content {
        kind: ContentKind::Directory,
        name: "data".into(),
        piece_length: 16 << 10,
        files: lens.iter().map(|(p, l)| FileEntry::new(p.parse().unwrap(), *l)).collect(),
        empty_dirs: Vec::new(),
        pieces: hasher.finish(),
        total_length: 70_000,
    };
    let d = Descriptor { info_hash: content.info_hash(), content, bootstrap: vec!["10.0.0.1:7000".parse().unwrap()] };
    (d, bytes)
}

fn sample_doc() -> DescriptorDocument {
    sample().0.to_document()
}

/// [`sample`] with `a` executable and two empty directories (a version 2 descriptor).
fn sample_v2() -> Descriptor {
    let (mut d, _) = sample();
    d.content.files[0].executable = true;
    d.content.empty_dirs = vec!["d/g".parse().unwrap(), "h".parse().unwrap()];
    d.info_hash = d.content.info_hash();
    d
}

/// Re-hashes a tampered document so that only the intended defect remains.
fn rehash(doc: &mut DescriptorDocument) {
    if let Ok(content) = validate_content(&doc.content) {
        doc.info_hash = content.info_hash().to_hex();
    }
}

#[test]
fn yaml_round_trip() {
    let (d, _) = sample();
    let text = d.to_yaml();
    assert_eq!(Descriptor::parse(&text).unwrap(), d);
}

#[test]
fn yaml_round_trip_with_executable_files_and_empty_directories() {
    let d = sample_v2();
    let text = d.to_yaml();
    assert!(text.contains("p2pd_descriptor: 2\n"), "{text}");
    assert!(text.contains("  - path: a\n    length: 40000\n    executable: true\n"), "{text}");
    assert!(text.contains("  directories:\n  - d/g\n  - h\n"), "{text}");
    assert_eq!(Descriptor::parse(&text).unwrap(), d);

    let mut single = d.clone();
    single.content.kind = ContentKind::File;
    single.content.files = vec![FileEntry { path: RelPath::root(), length: 70_000, executable: true }];
    single.content.empty_dirs.clear();
    single.info_hash = single.content.info_hash();
    let text = single.to_yaml();
    assert!(text.contains("  length: 70000\n  executable: true\n"), "{text}");
    assert_eq!(Descriptor::parse(&text).unwrap(), single);
}

/// Descriptors written before executable bits and empty directories existed keep their info
/// hash: absent attributes add nothing to the encoding, and such content is still written as
/// version 1, byte for byte.
#[test]
fn content_without_attributes_is_version_1_and_keeps_its_encoding() {
    let (d, _) = sample();
    assert_eq!(d.content.format_version(), 1);
    assert!(d.to_yaml().contains("p2pd_descriptor: 1\n"));
    assert!(!d.to_yaml().contains("executable") && !d.to_yaml().contains("directories"));
    // `executable: false` and `directories: []` written out are the same as absent.
    let mut text = d.to_yaml().replace("    length: 40000\n", "    length: 40000\n    executable: false\n");
    text = text.replace("  pieces:\n", "  directories: []\n  pieces:\n");
    assert_eq!(Descriptor::parse(&text).unwrap().info_hash, d.info_hash);
}

#[test]
fn attributes_are_covered_by_the_info_hash() {
    let (d, _) = sample();
    let v2 = sample_v2();
    assert_ne!(d.content.info_hash(), v2.content.info_hash());
    let mut other = v2.content.clone();
    other.files[0].executable = false;
    other.files[2].executable = true;
    assert_ne!(other.info_hash(), v2.content.info_hash(), "which file is executable matters");
    let mut other = v2.content.clone();
    other.empty_dirs.pop();
    assert_ne!(other.info_hash(), v2.content.info_hash(), "each empty directory matters");
    // Tampering with either in the YAML is caught.
    let text = v2.to_yaml().replacen("    executable: true\n", "", 1);
    let e = Descriptor::parse(&text).unwrap_err().to_string();
    assert!(e.starts_with("info_hash: does not match the content"), "{e}");
    let text = v2.to_yaml().replacen("  - h\n", "  - i\n", 1);
    let e = Descriptor::parse(&text).unwrap_err().to_string();
    assert!(e.starts_with("info_hash: does not match the content"), "{e}");
}

#[test]
fn version_1_cannot_carry_attributes() {
    let text = sample_v2().to_yaml().replace("p2pd_descriptor: 2", "p2pd_descriptor: 1");
    let e = Descriptor::parse(&text).unwrap_err().to_string();
    assert_eq!(e, "p2pd_descriptor: is 1, but `executable` and `directories` need version 2");
    // A version 2 descriptor without attributes is fine (it could have been version 1).
    let text = sample().0.to_yaml().replace("p2pd_descriptor: 1", "p2pd_descriptor: 2");
    assert_eq!(Descriptor::parse(&text).unwrap().info_hash, sample().0.info_hash);
}

#[test]
fn bootstrap_is_not_part_of_the_info_hash() {
    let (d, _) = sample();
    let mut other = d.clone();
    other.bootstrap = vec!["[::1]:9".parse().unwrap(), "node.example:1".parse().unwrap()];
    let reparsed = Descriptor::parse(&other.to_yaml()).unwrap();
    assert_eq!(reparsed.info_hash, d.info_hash);
}

#[test]
fn info_hash_is_known_value_of_canonical_encoding() {
    // Pin the encoding: any change to it must be deliberate (and bump the magic).
    let content = Content {
        kind: ContentKind::File,
        name: "x".into(),
        piece_length: 16 << 10,
        files: vec![FileEntry::new(RelPath::root(), 1)],
        empty_dirs: Vec::new(),
        pieces: vec![PieceHash([0xab; 32])],
        total_length: 1,
    };
    let bytes = encoding::canonical_bytes(&content);
    let mut expected = b"p2pd/content/v1".to_vec();
    expected.push(0);
    expected.extend([0, 1, b'x']);
    expected.extend((16u64 << 10).to_be_bytes());
    expected.extend(1u32.to_be_bytes());
    expected.extend([0, 0]);
    expected.extend(1u64.to_be_bytes());
    expected.extend(1u32.to_be_bytes());
    expected.extend([0xab; 32]);
    assert_eq!(bytes, expected);

    // Attributes are appended, tagged, after the version 1 bytes.
    let mut attributed = content.clone();
    attributed.kind = ContentKind::Directory;
    attributed.files = vec![
        FileEntry { path: "e".parse().unwrap(), length: 0, executable: true },
        FileEntry { path: "f".parse().unwrap(), length: 1, executable: false },
        FileEntry { path: "g".parse().unwrap(), length: 0, executable: true },
    ];
    attributed.empty_dirs = vec!["d/x".parse().unwrap()];
    let bytes = encoding::canonical_bytes(&attributed);
    let mut expected = b"p2pd/content/v1".to_vec();
    expected.push(1);
    expected.extend([0, 1, b'x']);
    expected.extend((16u64 << 10).to_be_bytes());
    expected.extend(3u32.to_be_bytes());
    for (name, len) in [(b'e', 0u64), (b'f', 1), (b'g', 0)] {
        expected.extend([0, 1, name]);
        expected.extend(len.to_be_bytes());
    }
    expected.extend(1u32.to_be_bytes());
    expected.extend([0xab; 32]);
    expected.push(1); // executable files
    expected.extend(2u32.to_be_bytes());
    expected.extend(0u32.to_be_bytes());
    expected.extend(2u32.to_be_bytes());
    expected.push(2); // empty directories
    expected.extend(1u32.to_be_bytes());
    expected.extend([0, 3, b'd', b'/', b'x']);
    assert_eq!(bytes, expected);
}

/// Each malformed class yields one line naming the field.
#[test]
fn malformed_descriptors_name_the_field() {
    type Edit = fn(&mut DescriptorDocument);
    let cases: Vec<(&str, Edit, &str)> = vec![
        ("version", |d| d.p2pd_descriptor = 9, "p2pd_descriptor: unsupported format version 9"),
        (
            "short piece hash",
            |d| d.content.pieces[1].pop().map(|_| ()).unwrap_or(()),
            "content.pieces[1]: expected 64 hex digits, found 63",
        ),
        ("non-hex", |d| d.content.pieces[2] = "zz".repeat(32), "content.pieces[2]: `zzzz"),
        (
            "piece count",
            |d| {
                d.content.pieces.pop();
            },
            "content.pieces: 4 hashes listed",
        ),
        ("zero piece length", |d| d.content.piece_length = 0, "content.piece_length: must not be zero"),
        (
            "absurd piece length",
            |d| d.content.piece_length = 1 << 40,
            "content.piece_length: 1099511627776 is out of range",
        ),
        ("odd piece length", |d| d.content.piece_length = 20_000, "content.piece_length"),
        (
            "absolute path",
            |d| d.content.files.as_mut().unwrap()[0].path = "/etc/passwd".into(),
            "content.files[0].path: `/etc/passwd` is absolute",
        ),
        (
            "dotdot",
            |d| d.content.files.as_mut().unwrap()[1].path = "../../x".into(),
            "content.files[1].path: `../../x` contains a `..` component",
        ),
        (
            "nul",
            |d| d.content.files.as_mut().unwrap()[1].path = "a\0b".into(),
            "content.files[1].path: contains a NUL byte",
        ),
        (
            "empty component",
            |d| d.content.files.as_mut().unwrap()[1].path = "d//e".into(),
            "content.files[1].path: `d//e` has an empty component",
        ),
        (
            "duplicate",
            |d| d.content.files.as_mut().unwrap()[2].path = "a".into(),
            "content.files[2].path: `a` is listed twice (also content.files[0])",
        ),
        (
            "nested under file",
            |d| d.content.files.as_mut().unwrap()[2].path = "a/x".into(),
            "content.files[2].path: `a/x` is inside `a`",
        ),
        ("bad name", |d| d.content.name = "..".into(), "content.name: `..` contains a `..` component"),
        (
            "control character in name",
            |d| d.content.name = "da\x1b]0;owned\x07ta".into(),
            "content.name: `da\\u{1b}]0;owned\\u{7}ta` contains the control character U+001B",
        ),
        (
            "control character in path",
            |d| d.content.files.as_mut().unwrap()[1].path = "d/e\rfake".into(),
            "content.files[1].path: `d/e\\rfake` contains the control character U+000D",
        ),
        (
            "DEL in path",
            |d| d.content.files.as_mut().unwrap()[1].path = "d/\x7f".into(),
            "content.files[1].path: `d/\\u{7f}` contains the control character U+007F",
        ),
        (
            "directories for a single file",
            |d| {
                d.content.files = None;
                d.content.length = Some(70_000);
                d.content.directories = vec!["x".into()];
            },
            "content.directories: only a directory (`files`) can hold directories",
        ),
        (
            "executable on a directory",
            |d| d.content.executable = true,
            "content.executable: is for a single file (`length`)",
        ),
        (
            "directory holding a file",
            |d| d.content.directories = vec!["d".into()],
            "content.directories[0]: `d` is listed as an empty directory but holds `d/e` (content.files[1].path)",
        ),
        (
            "directory holding a directory",
            |d| d.content.directories = vec!["x/y".into(), "x".into()],
            "content.directories[1]: `x` is listed as an empty directory but holds `x/y` (content.directories[0])",
        ),
        (
            "directory that is a file",
            |d| d.content.directories = vec!["d/f".into()],
            "content.directories[0]: `d/f` is listed twice (also content.files[2].path)",
        ),
        (
            "directory inside a file",
            |d| d.content.directories = vec!["a/x".into()],
            "content.directories[0]: `a/x` is inside `a`, which is a file (content.files[0].path)",
        ),
        (
            "directory listed twice",
            |d| d.content.directories = vec!["x".into(), "y".into(), "x".into()],
            "content.directories[2]: `x` is listed twice (also content.directories[0])",
        ),
        (
            "directory escaping",
            |d| d.content.directories = vec!["../x".into()],
            "content.directories[0]: `../x` contains a `..` component",
        ),
        (
            "directory with a control character",
            |d| d.content.directories = vec!["x\u{9b}31m".into()],
            "content.directories[0]: `x\\u{9b}31m` contains the control character U+009B",
        ),
        (
            "zero length",
            |d| {
                d.content.files = None;
                d.content.length = Some(0);
            },
            "content.length: must not be zero",
        ),
        (
            "absurd length",
            |d| {
                d.content.files = None;
                d.content.length = Some(u64::MAX);
            },
            "content.length: 18446744073709551615 is larger than the maximum",
        ),
        ("both kinds", |d| d.content.length = Some(5), "content: has both `length`"),
        ("neither kind", |d| d.content.files = None, "content: missing field `length`"),
        ("no files", |d| d.content.files = Some(vec![]), "content.files: must list at least one file"),
        (
            "bootstrap without port",
            |d| d.bootstrap = vec!["10.0.0.1".into()],
            "bootstrap[0]: `10.0.0.1` is missing a port",
        ),
        ("bootstrap bad port", |d| d.bootstrap = vec!["h:99999".into()], "bootstrap[0]: `h:99999` has an invalid port"),
    ];
    for (name, edit, expected) in cases {
        let mut doc = sample_doc();
        edit(&mut doc);
        rehash(&mut doc);
        let err = Descriptor::from_document(&doc).unwrap_err().to_string();
        assert!(err.starts_with(expected), "{name}: got `{err}`, expected it to start with `{expected}`");
        assert!(!err.contains('\n'), "{name}: message must be one line: {err:?}");
    }
}

#[test]
fn tampered_content_fails_the_info_hash() {
    let mut doc = sample_doc();
    doc.content.files.as_mut().unwrap()[2].path = "d/g".into();
    let err = Descriptor::from_document(&doc).unwrap_err().to_string();
    assert!(err.starts_with("info_hash: does not match the content"), "{err}");
}

#[test]
fn bad_info_hash_syntax() {
    let mut doc = sample_doc();
    doc.info_hash = "abc".into();
    let err = Descriptor::from_document(&doc).unwrap_err().to_string();
    assert_eq!(err, "info_hash: expected 64 hex digits, found 3 characters");
}

#[test]
fn yaml_level_errors() {
    let cases = [
        ("p2pd_descriptor: 1\ncontent: [", "line"),
        ("p2pd_descriptor: 1\ninfo_hash: x\n", "missing field `content`"),
        ("p2pd_descriptor: 1\ninfo_hash: x\nsurprise: 1\ncontent: {}\n", "unknown field `surprise`"),
        ("- just\n- a list\n", "line 1"),
    ];
    for (text, needle) in cases {
        let err = Descriptor::parse(text).unwrap_err().to_string();
        assert!(err.contains(needle), "{text:?}: {err}");
        assert!(!err.contains('\n'), "{err:?}");
    }
}

#[test]
fn default_piece_length_rule() {
    assert_eq!(default_piece_length(1), 256 << 10);
    assert_eq!(default_piece_length(256 << 20), 256 << 10);
    assert_eq!(default_piece_length(1 << 30), 1 << 20);
    assert_eq!(default_piece_length(100 << 30), 16 << 20);
    assert_eq!(default_piece_length(u64::MAX / 2), 16 << 20);
}

#[test]
fn piece_len_of_last_piece() {
    let (d, _) = sample();
    assert_eq!(d.content.piece_count(), 5);
    assert_eq!(d.content.piece_len(0), 16 << 10);
    assert_eq!(d.content.piece_len(4), 70_000 - 4 * (16 << 10));
}

#[test]
fn node_addresses() {
    assert_eq!("[::1]:7000".parse::<NodeAddr>().unwrap().to_string(), "[::1]:7000");
    assert_eq!("Seed-1.LAN:80".parse::<NodeAddr>().unwrap().to_string(), "seed-1.lan:80");
    assert!("[::1]".parse::<NodeAddr>().is_err());
    assert!("::1:80".parse::<NodeAddr>().is_err());
    assert!("bad_name:80".parse::<NodeAddr>().is_err());
    assert!("1.2.3.4:0".parse::<NodeAddr>().is_err());
}

/// The largest valid descriptor fits the YAML node budget: every file executable, as many
/// empty directories as allowed.
#[test]
fn the_yaml_budget_fits_the_largest_attributes() {
    let content = Content {
        kind: ContentKind::Directory,
        name: "big".into(),
        piece_length: MIN_PIECE_LENGTH,
        files: (0..MAX_FILES)
            .map(|i| FileEntry { path: format!("f{i:x}").parse().unwrap(), length: 1, executable: true })
            .collect(),
        empty_dirs: (0..MAX_EMPTY_DIRECTORIES).map(|i| format!("d{i:x}").parse().unwrap()).collect(),
        pieces: vec![PieceHash([7; 32]); MAX_FILES.div_ceil(MIN_PIECE_LENGTH as usize)],
        total_length: MAX_FILES as u64,
    };
    let d = Descriptor { info_hash: content.info_hash(), content, bootstrap: vec![] };
    assert_eq!(Descriptor::parse(&d.to_yaml()).unwrap().info_hash, d.info_hash);
    let mut doc = d.to_document();
    doc.content.directories.push("one-more".into());
    let e = validate_content(&doc.content).unwrap_err().to_string();
    assert!(e.starts_with("content.directories: 65537 directories listed, at most 65536"), "{e}");
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// A directory of files `f0..` (some executable) and empty directories `e0..`, with
    /// matching piece hashes.
    fn attributed() -> impl Strategy<Value = Content> {
        (proptest::collection::vec((0u64..40_000, any::<bool>()), 1..8), 0usize..4).prop_map(|(files, dirs)| {
            let total: u64 = files.iter().map(|f| f.0).sum::<u64>().max(1);
            let mut files: Vec<FileEntry> = files
                .iter()
                .enumerate()
                .map(|(i, &(length, executable))| FileEntry {
                    path: format!("f{i}").parse().unwrap(),
                    length,
                    executable,
                })
                .collect();
            files[0].length += total - files.iter().map(|f| f.length).sum::<u64>();
            Content {
                kind: ContentKind::Directory,
                name: "p".into(),
                piece_length: 16 << 10,
                files,
                empty_dirs: (0..dirs).map(|i| format!("e{i}/x").parse().unwrap()).collect(),
                pieces: vec![PieceHash([1; 32]); total.div_ceil(16 << 10) as usize],
                total_length: total,
            }
        })
    }

    proptest! {
        /// Any content with any attributes survives YAML and keeps its info hash; the version
        /// written is the lowest that can carry it.
        #[test]
        fn attributed_content_round_trips(content in attributed()) {
            let d = Descriptor { info_hash: content.info_hash(), content, bootstrap: vec![] };
            let parsed = Descriptor::parse(&d.to_yaml()).unwrap();
            prop_assert_eq!(&parsed, &d);
            let uses = d.content.files.iter().any(|f| f.executable) || !d.content.empty_dirs.is_empty();
            prop_assert_eq!(d.to_document().p2pd_descriptor, if uses { 2 } else { 1 });
        }

        /// Any byte string split into any chunks hashes to the same pieces.
        #[test]
        fn piece_hasher_is_chunking_independent(data in proptest::collection::vec(any::<u8>(), 0..100_000), cut in 1usize..70_000) {
            let mut whole = PieceHasher::new(16 << 10);
            whole.update(&data);
            let mut parts = PieceHasher::new(16 << 10);
            for chunk in data.chunks(cut) {
                parts.update(chunk);
            }
            prop_assert_eq!(whole.finish(), parts.finish());
        }

        /// The parser never panics on arbitrary text and bounds its work.
        #[test]
        fn parse_never_panics(text in "\\PC{0,400}") {
            let _ = Descriptor::parse(&text);
        }
    }
}
