//! Unit tests of content claims: what a torrent owns, and what it may delete.

use super::*;

/// A claim of format version 1 loads: the torrent, where, how.
#[test]
fn a_claim_of_format_version_1_loads() {
    let (dir, path) = crate::state::fixture("claim.state");
    let hash: InfoHash = crate::state::FIXTURE_HASH.parse().unwrap();
    std::fs::create_dir(dir.path().join(CLAIMS_DIR)).unwrap();
    std::fs::rename(&path, dir.path().join(CLAIMS_DIR).join(format!("{hash}{CLAIM_SUFFIX}"))).unwrap();
    let c = Claims::new(dir.path()).load(&hash).expect("loaded");
    assert_eq!(c.version, CLAIM_VERSION);
    assert_eq!(c.info_hash.to_hex(), crate::state::FIXTURE_HASH);
    assert_eq!((c.data_dir.as_path(), c.name.as_str()), (Path::new("/tmp/fx/b/data"), "fixture.bin"));
    assert_eq!(c.how, ClaimKind::Created);
    assert!(c.root.is_some());
}
use crate::descriptor::create::PieceHasher;
use crate::descriptor::{ContentKind, FileEntry, RelPath};

/// `Storage::claim` with the identity of what is there now (no check in between).
fn claim_now(
    s: &Storage,
    claims: &Claims,
    h: InfoHash,
    verified: usize,
    recorded: Option<&[Option<FileStamp>]>,
) -> Result<(), StorageError> {
    s.claim(claims, h, verified, recorded, s.root_id()?)
}

fn content(name: &str, bytes: &[u8]) -> Content {
    let mut h = PieceHasher::new(16 << 10);
    h.update(bytes);
    Content {
        kind: ContentKind::File,
        name: name.into(),
        piece_length: 16 << 10,
        files: vec![FileEntry::new(RelPath::root(), bytes.len() as u64)],
        pieces: h.finish(),
        total_length: bytes.len() as u64,
        empty_dirs: Vec::new(),
    }
}

#[test]
fn claims_round_trip_and_cover_only_their_path() {
    let state = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let claims = Claims::new(state.path());
    let h = InfoHash([7; 32]);
    assert_eq!(claims.load(&h), None);
    let claim = Claim::new(h, data.path(), "tc", ClaimKind::Created).unwrap();
    claims.save(&claim).unwrap();
    let loaded = claims.load(&h).unwrap();
    assert_eq!(loaded, claim);
    assert!(loaded.covers(data.path(), "tc"));
    assert!(!loaded.covers(data.path(), "other"));
    assert!(!loaded.covers(state.path(), "tc"));
    // The same directory through a symbolic link is the same directory.
    let link = state.path().join("link");
    std::os::unix::fs::symlink(data.path(), &link).unwrap();
    assert!(loaded.covers(&link, "tc"));
    claims.remove(&h).unwrap();
    assert_eq!(claims.load(&h), None);
    claims.remove(&h).unwrap();
}

#[test]
fn a_damaged_claim_is_moved_aside_and_owns_nothing() {
    let state = tempfile::tempdir().unwrap();
    let claims = Claims::new(state.path());
    let h = InfoHash([8; 32]);
    claims.save(&Claim::new(h, state.path(), "x", ClaimKind::Adopted).unwrap()).unwrap();
    let path = claims.path(&h);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(claims.load(&h), None);
    assert!(!path.exists());
    assert_eq!(std::fs::read_dir(state.path().join(CLAIMS_DIR)).unwrap().count(), 1, "kept as evidence");
}

/// The ownership rule: nothing there → created; everything verifies → verified; anything
/// else → foreign, and the storage is left exactly as it was.
#[test]
fn foreign_content_is_refused_and_left_alone() {
    let state = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let claims = Claims::new(state.path());
    let bytes = vec![3u8; 40_000];
    let c = content("tc", &bytes);
    let h = InfoHash([9; 32]);

    std::fs::write(data.path().join("tc"), b"an operator's notes").unwrap();
    let s = Storage::open(data.path(), &c).unwrap();
    let e = claim_now(&s, &claims, h, 0, None).unwrap_err();
    let message = e.to_string();
    assert!(message.contains(&format!("{} is already there", data.path().join("tc").display())), "{message}");
    assert!(message.contains("0 of 3 pieces match") && message.contains("--adopt"), "{message}");
    assert!(matches!(e, StorageError::Foreign(_)) && !e.may_pass());
    assert_eq!(claims.load(&h), None);
    assert_eq!(std::fs::read(data.path().join("tc")).unwrap(), b"an operator's notes");
    // A partial match is not enough.
    assert!(matches!(claim_now(&s, &claims, h, 2, None), Err(StorageError::Foreign(_))));
    // A complete match is.
    claim_now(&s, &claims, h, 3, None).unwrap();
    assert_eq!(claims.load(&h).unwrap().how, ClaimKind::Verified);

    // Nothing there: the torrent creates it.
    let empty = tempfile::tempdir().unwrap();
    let s = Storage::open(empty.path(), &c).unwrap();
    let h2 = InfoHash([10; 32]);
    claim_now(&s, &claims, h2, 0, None).unwrap();
    assert_eq!(claims.load(&h2).unwrap().how, ClaimKind::Created);
}

/// A torrent from before claims: its resume state's stamps vouch for its `.part`, as long
/// as the files are exactly as it recorded them.
#[test]
fn a_resume_state_that_matches_the_files_vouches_for_them() {
    let state = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let claims = Claims::new(state.path());
    let c = content("tc", &[5u8; 40_000]);
    std::fs::write(data.path().join("tc.part"), [5u8; 20_000]).unwrap();
    let s = Storage::open(data.path(), &c).unwrap();
    let stamps = s.stamps();
    let (h1, h2) = (InfoHash([12; 32]), InfoHash([13; 32]));
    let other = vec![Some(FileStamp { length: 20_000, mtime_ns: 1 })];
    assert!(matches!(claim_now(&s, &claims, h1, 1, Some(&other)), Err(StorageError::Foreign(_))));
    claim_now(&s, &claims, h2, 1, Some(&stamps)).unwrap();
    assert_eq!(claims.load(&h2).unwrap().how, ClaimKind::Recorded);
}

/// `delete_data` removes regular files at the layout's paths where the content is now, and
/// nothing else: not a link or a FIFO put at a layout path, not a `NAME.part` beside it.
#[test]
fn deletion_removes_only_regular_files_of_the_layout() {
    let data = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let (a, b) = (vec![1u8; 20_000], vec![2u8; 10_000]);
    let mut h = PieceHasher::new(16 << 10);
    h.update(&a);
    h.update(&b);
    let c = Content {
        kind: ContentKind::Directory,
        name: "d".into(),
        piece_length: 16 << 10,
        files: vec![
            FileEntry::new("a".parse().unwrap(), 20_000),
            FileEntry::new("sub/b".parse().unwrap(), 10_000),
            FileEntry::new("sub/f".parse().unwrap(), 0),
        ],
        pieces: h.finish(),
        total_length: 30_000,
        empty_dirs: Vec::new(),
    };
    std::fs::create_dir_all(data.path().join("d/sub")).unwrap();
    std::fs::write(data.path().join("d/a"), &a).unwrap();
    std::fs::write(outside.path().join("target"), b"outside").unwrap();
    std::os::unix::fs::symlink(outside.path().join("target"), data.path().join("d/sub/b")).unwrap();
    nix::unistd::mkfifo(&data.path().join("d/sub/f"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    std::fs::write(data.path().join("d.part"), b"someone else's").unwrap();
    let s = Storage::open(data.path(), &c).unwrap();
    s.delete_data().unwrap();
    assert!(!data.path().join("d/a").exists());
    assert!(data.path().join("d/sub/b").symlink_metadata().unwrap().file_type().is_symlink());
    assert!(data.path().join("d/sub/f").exists());
    assert_eq!(std::fs::read(outside.path().join("target")).unwrap(), b"outside");
    assert_eq!(std::fs::read(data.path().join("d.part")).unwrap(), b"someone else's");
}

#[test]
fn deletion_needs_a_claim_with_the_root_it_is_on() {
    let state = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let claims = Claims::new(state.path());
    let bytes = vec![4u8; 20_000];
    let c = content("f.bin", &bytes);
    let h = InfoHash([11; 32]);
    std::fs::write(data.path().join("f.bin"), &bytes).unwrap();
    let kept = delete_owned(&claims, h, data.path(), &c).unwrap();
    assert!(matches!(kept, Deletion::Kept(ref why) if why.contains("never created, verified or adopted")));
    assert!(data.path().join("f.bin").exists());
    // A claim that records no root: which copy is the torrent's is not known.
    claims.save(&Claim::new(h, data.path(), "f.bin", ClaimKind::Verified).unwrap()).unwrap();
    let kept = delete_owned(&claims, h, data.path(), &c).unwrap();
    assert!(matches!(kept, Deletion::Kept(ref why) if why.contains("no record of which")), "{kept:?}");
    assert!(data.path().join("f.bin").exists());
    let root = Dir::open(data.path(), false).unwrap().entry_id("f.bin").unwrap();
    claims.save(&Claim { root, ..Claim::new(h, data.path(), "f.bin", ClaimKind::Verified).unwrap() }).unwrap();
    assert_eq!(delete_owned(&claims, h, data.path(), &c).unwrap(), Deletion::Deleted);
    assert!(!data.path().join("f.bin").exists());
    assert_eq!(claims.load(&h), None, "the claim goes with the content");
}

fn tree_content() -> (Content, Vec<u8>) {
    let bytes = vec![6u8; 30_000];
    let mut h = PieceHasher::new(16 << 10);
    h.update(&bytes);
    let content = Content {
        kind: ContentKind::Directory,
        name: "tree".into(),
        piece_length: 16 << 10,
        files: vec![FileEntry::new("a.bin".parse().unwrap(), 30_000)],
        pieces: h.finish(),
        total_length: 30_000,
        empty_dirs: Vec::new(),
    };
    (content, bytes)
}

/// Regression (review of issue 11): with the torrent's download under `NAME.part` and an
/// operator's file put at `NAME` meanwhile (so that `finish` fails with "already exists"),
/// `remove --delete-data` deleted the operator's `NAME` — the final name wins when both
/// are there — and kept the torrent's `.part`. The same inside an operator's directory.
#[test]
fn deletion_takes_the_torrents_root_not_what_is_at_the_final_name() {
    let state = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let claims = Claims::new(state.path());
    let c = content("tc", &[3u8; 40_000]);
    let (tree, _) = tree_content();
    let (h, ht) = (InfoHash([1; 32]), InfoHash([2; 32]));
    for (content, hash) in [(&c, h), (&tree, ht)] {
        let s = Storage::open(data.path(), content).unwrap();
        claim_now(&s, &claims, hash, 0, None).unwrap();
        s.prepare_download().unwrap();
        assert_eq!(claims.load(&hash).unwrap().how, ClaimKind::Created);
    }
    assert!(data.path().join("tc.part").is_file() && data.path().join("tree.part/a.bin").is_file());
    std::fs::write(data.path().join("tc"), b"the operator's report").unwrap();
    std::fs::create_dir(data.path().join("tree")).unwrap();
    std::fs::write(data.path().join("tree/a.bin"), b"the operator's a.bin").unwrap();

    // Reopened (a restart, a verify), the torrent keeps to its own root.
    let s = open_owned(&claims, h, data.path(), &c).unwrap();
    assert_eq!(s.placement(), Placement::Partial);
    claim_now(&s, &claims, h, 0, None).unwrap();
    let e = s.finish().unwrap_err().to_string();
    assert!(e.contains("cannot move the completed content into place"), "{e}");

    assert_eq!(delete_owned(&claims, h, data.path(), &c).unwrap(), Deletion::Deleted);
    assert_eq!(delete_owned(&claims, ht, data.path(), &tree).unwrap(), Deletion::Deleted);
    assert_eq!(std::fs::read(data.path().join("tc")).unwrap(), b"the operator's report");
    assert_eq!(std::fs::read(data.path().join("tree/a.bin")).unwrap(), b"the operator's a.bin");
    assert!(!data.path().join("tc.part").exists() && !data.path().join("tree.part").exists());
}

/// A claim whose root was replaced (deleted, and something new put there) owns nothing:
/// the new thing is foreign to the torrent, is not written, and is not deleted.
#[test]
fn a_replaced_root_is_foreign_again() {
    let state = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let claims = Claims::new(state.path());
    let c = content("tc", &[3u8; 40_000]);
    let h = InfoHash([3; 32]);
    let s = Storage::open(data.path(), &c).unwrap();
    claim_now(&s, &claims, h, 0, None).unwrap();
    s.prepare_download().unwrap();
    assert!(claims.owns(&h, data.path(), "tc"));
    // Held open so that the new file cannot reuse the inode number.
    let _old = std::fs::File::open(data.path().join("tc.part")).unwrap();
    std::fs::remove_file(data.path().join("tc.part")).unwrap();
    std::fs::write(data.path().join("tc"), b"the operator's own tc").unwrap();
    assert!(!claims.owns(&h, data.path(), "tc"));

    let s = open_owned(&claims, h, data.path(), &c).unwrap();
    assert_eq!(s.placement(), Placement::Final);
    let e = claim_now(&s, &claims, h, 0, None).unwrap_err();
    assert!(matches!(e, StorageError::Foreign(_)), "{e}");
    let kept = delete_owned(&claims, h, data.path(), &c).unwrap();
    assert!(matches!(kept, Deletion::Kept(ref why) if why.contains("moved away or replaced since")), "{kept:?}");
    assert_eq!(std::fs::read(data.path().join("tc")).unwrap(), b"the operator's own tc");

    // Gone without a replacement: the torrent starts afresh, with a new root.
    let s = Storage::open(data.path(), &c).unwrap();
    claims
        .save(&Claim {
            root: Some(EntryId { dev: 0, ino: 1, born_ns: None }),
            ..Claim::new(h, data.path(), "tc", ClaimKind::Created).unwrap()
        })
        .unwrap();
    std::fs::remove_file(data.path().join("tc")).unwrap();
    claim_now(&s, &claims, h, 0, None).unwrap();
    assert!(claims.owns(&h, data.path(), "tc") && data.path().join("tc.part").is_file());
}

/// A crash between creating the root and recording it leaves a claim without a root and
/// an empty root: that is the torrent's (nothing to lose). Anything more is not.
#[test]
fn a_claim_without_a_root_covers_an_empty_root_or_an_adopted_one() {
    let state = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let claims = Claims::new(state.path());
    let (tree, _) = tree_content();
    let c = content("tc", &[3u8; 40_000]);
    let (h, ht) = (InfoHash([4; 32]), InfoHash([5; 32]));
    std::fs::write(data.path().join("tc.part"), b"").unwrap();
    std::fs::create_dir(data.path().join("tree.part")).unwrap();
    for (hash, name) in [(h, "tc"), (ht, "tree")] {
        claims.save(&Claim::new(hash, data.path(), name, ClaimKind::Created).unwrap()).unwrap();
    }
    claim_now(&Storage::open(data.path(), &c).unwrap(), &claims, h, 0, None).unwrap();
    claim_now(&Storage::open(data.path(), &tree).unwrap(), &claims, ht, 0, None).unwrap();
    assert!(claims.owns(&h, data.path(), "tc") && claims.owns(&ht, data.path(), "tree"));

    std::fs::write(data.path().join("tc.part"), b"not empty").unwrap();
    claims.save(&Claim::new(h, data.path(), "tc", ClaimKind::Created).unwrap()).unwrap();
    let e = claim_now(&Storage::open(data.path(), &c).unwrap(), &claims, h, 0, None).unwrap_err();
    assert!(matches!(e, StorageError::Foreign(_)), "{e}");
    // Adopted: whatever is there, as the operator said.
    claims.save(&Claim::new(h, data.path(), "tc", ClaimKind::Adopted).unwrap()).unwrap();
    claim_now(&Storage::open(data.path(), &c).unwrap(), &claims, h, 0, None).unwrap();
    assert!(claims.owns(&h, data.path(), "tc"));
    assert_eq!(std::fs::read(data.path().join("tc.part")).unwrap(), b"not empty");
}

/// Regression (review of issue 11): a file whose described bytes all verify but that goes
/// on (an operator's log that starts with the published bytes) was claimed as "verified",
/// and then cut. Without a claim, it is left alone; adopted, it is the torrent's to cut.
#[test]
fn a_longer_file_is_not_verified_content() {
    let state = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let claims = Claims::new(state.path());
    let bytes = vec![3u8; 40_000];
    let c = content("tc", &bytes);
    let h = InfoHash([6; 32]);
    let longer = [&bytes[..], b"and the operator's log"].concat();
    std::fs::write(data.path().join("tc"), &longer).unwrap();
    let s = Storage::open(data.path(), &c).unwrap();
    let e = claim_now(&s, &claims, h, 3, None).unwrap_err();
    let message = e.to_string();
    let path = data.path().join("tc");
    assert!(
        message.starts_with(&format!(
            "{} is 40022 bytes, longer than the 40000 bytes the descriptor describes",
            path.display()
        )),
        "{message}"
    );
    assert!(message.contains("--adopt to let p2pd cut it to 40000 bytes"), "{message}");
    assert!(matches!(e, StorageError::TooLong(_)) && !e.may_pass());
    assert_eq!(claims.load(&h), None);
    assert_eq!(std::fs::read(&path).unwrap(), longer);

    claims.save(&Claim::new(h, data.path(), "tc", ClaimKind::Adopted).unwrap()).unwrap();
    claim_now(&s, &claims, h, 3, None).unwrap();
    s.finish().unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[test]
fn claims_no_torrent_names_are_forgotten() {
    let state = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let claims = Claims::new(state.path());
    assert_eq!(claims.retain(&BTreeSet::new()).unwrap(), vec![], "no claims directory yet");
    let (a, b) = (InfoHash([20; 32]), InfoHash([21; 32]));
    for (h, name) in [(a, "a"), (b, "b")] {
        claims.save(&Claim::new(h, data.path(), name, ClaimKind::Created).unwrap()).unwrap();
    }
    let dir = state.path().join(CLAIMS_DIR);
    std::fs::write(dir.join("notes.txt"), b"an operator's").unwrap();
    std::fs::write(dir.join(format!("{}.state.corrupt-1", InfoHash([22; 32]))), b"evidence").unwrap();
    let resolved = std::fs::canonicalize(data.path()).unwrap();
    assert_eq!(claims.retain(&BTreeSet::from([a])).unwrap(), vec![(b, Some(resolved.join("b")))]);
    assert!(claims.load(&a).is_some() && claims.load(&b).is_none());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 3, "only the claim of b went");
    assert_eq!(claim_file_hash(&format!("{a}.state")), Some(a));
    for name in ["x.state", "AB.state", &format!("{a}.state.corrupt-1"), &format!("{a}")] {
        assert_eq!(claim_file_hash(name), None, "{name}");
    }
}

/// Regression (review of issue 11): the root's identity was read after the check, so a file
/// replaced while it was being hashed (an operator's tooling writing a new version and
/// renaming it into place) was claimed as verified without having been checked.
#[test]
fn a_root_replaced_during_the_check_is_not_claimed() {
    let state = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let claims = Claims::new(state.path());
    let bytes = vec![3u8; 40_000];
    let c = content("tc", &bytes);
    let h = InfoHash([7; 32]);
    std::fs::write(data.path().join("tc"), &bytes).unwrap();
    let s = Storage::open(data.path(), &c).unwrap();
    let checked = s.root_id().unwrap();
    // The check verified every piece; meanwhile the operator's new version was renamed in.
    std::fs::write(data.path().join("tc.new"), b"the operator's new version").unwrap();
    std::fs::rename(data.path().join("tc.new"), data.path().join("tc")).unwrap();
    let e = s.claim(&claims, h, 3, None, checked).unwrap_err().to_string();
    assert!(e.contains("was replaced while p2pd was checking it; nothing was taken"), "{e}");
    assert_eq!(claims.load(&h), None);
    assert_eq!(std::fs::read(data.path().join("tc")).unwrap(), b"the operator's new version");
}
