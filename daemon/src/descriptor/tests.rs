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
        files: lens.iter().map(|(p, l)| FileEntry { path: p.parse().unwrap(), length: *l }).collect(),
        pieces: hasher.finish(),
        total_length: 70_000,
    };
    let d = Descriptor { info_hash: content.info_hash(), content, bootstrap: vec!["10.0.0.1:7000".parse().unwrap()] };
    (d, bytes)
}

fn sample_doc() -> DescriptorDocument {
    sample().0.to_document()
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
        files: vec![FileEntry { path: RelPath::root(), length: 1 }],
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
        ("bad name", |d| d.content.name = "..".into(), "content.name: contains a `..` component"),
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

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
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
