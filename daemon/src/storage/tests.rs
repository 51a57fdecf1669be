use super::*;
use crate::descriptor::create::PieceHasher;
use crate::descriptor::{Content, ContentKind, FileEntry, RelPath};

const PIECE: u64 = 16 << 10;

fn content(kind: ContentKind, files: &[(&str, u64)]) -> (Content, Vec<u8>) {
    let total: u64 = files.iter().map(|f| f.1).sum();
    let bytes: Vec<u8> = (0..total).map(|i| (i * 31 % 253) as u8).collect();
    let mut h = PieceHasher::new(PIECE);
    h.update(&bytes);
    let files = files
        .iter()
        .map(|(p, l)| FileEntry::new(if p.is_empty() { RelPath::root() } else { p.parse().unwrap() }, *l))
        .collect();
    (
        Content {
            kind,
            name: "c".into(),
            piece_length: PIECE,
            files,
            empty_dirs: Vec::new(),
            pieces: h.finish(),
            total_length: total,
        },
        bytes,
    )
}

fn write_all(s: &Storage, c: &Content, bytes: &[u8]) {
    for i in 0..c.piece_count() {
        let r = s.layout().piece_range(i);
        s.write_piece(i, &bytes[r.start as usize..r.end as usize]).unwrap();
    }
}

#[test]
fn download_then_finish_moves_into_place() {
    let dir = tempfile::tempdir().unwrap();
    let (c, bytes) = content(ContentKind::Directory, &[("a", 40_000), ("d/empty", 0), ("d/b", 30_000)]);
    let s = Storage::open(dir.path(), &c).unwrap();
    assert_eq!(s.placement(), Placement::Partial);
    s.prepare_download().unwrap();
    assert!(dir.path().join("c.part/d/empty").is_file());
    assert!(!dir.path().join("c").exists(), "nothing under the final name before completion");
    write_all(&s, &c, &bytes);
    s.finish().unwrap();
    assert_eq!(s.placement(), Placement::Final);
    assert!(!dir.path().join("c.part").exists());
    let mut joined = std::fs::read(dir.path().join("c/a")).unwrap();
    joined.extend(std::fs::read(dir.path().join("c/d/b")).unwrap());
    assert_eq!(joined, bytes);
    let mut buf = Vec::new();
    for i in 0..c.piece_count() {
        assert!(s.check_piece(i, &c.pieces[i], &mut buf).unwrap());
    }
}

#[test]
fn existing_complete_data_is_found_under_final_name() {
    let dir = tempfile::tempdir().unwrap();
    let (c, bytes) = content(ContentKind::File, &[("", 50_000)]);
    std::fs::write(dir.path().join("c"), &bytes).unwrap();
    let s = Storage::open(dir.path(), &c).unwrap();
    assert_eq!(s.placement(), Placement::Final);
    let mut buf = Vec::new();
    assert!((0..c.piece_count()).all(|i| s.check_piece(i, &c.pieces[i], &mut buf).unwrap()));
}

#[test]
fn incomplete_final_content_is_moved_aside_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let (c, bytes) = content(ContentKind::File, &[("", 50_000)]);
    std::fs::write(dir.path().join("c"), &bytes[..20_000]).unwrap();
    let s = Storage::open(dir.path(), &c).unwrap();
    let mut buf = Vec::new();
    assert!(s.check_piece(0, &c.pieces[0], &mut buf).unwrap());
    assert!(!s.check_piece(2, &c.pieces[2], &mut buf).unwrap());
    s.prepare_download().unwrap();
    assert!(!dir.path().join("c").exists());
    assert_eq!(std::fs::metadata(dir.path().join("c.part")).unwrap().len(), 50_000);
    assert!(s.check_piece(0, &c.pieces[0], &mut buf).unwrap(), "kept pieces survive the move");
}

#[test]
fn missing_files_read_as_missing_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _) = content(ContentKind::Directory, &[("a", 40_000), ("b", 30_000)]);
    let s = Storage::open(dir.path(), &c).unwrap();
    let mut buf = Vec::new();
    assert_eq!(s.read_piece(0, &mut buf).unwrap(), PieceRead::Missing);
}

#[test]
fn type_conflicts_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _) = content(ContentKind::File, &[("", 100)]);
    std::fs::create_dir(dir.path().join("c")).unwrap();
    let e = Storage::open(dir.path(), &c).unwrap_err().to_string();
    assert!(e.contains("is a directory but the descriptor describes a file"), "{e}");
}

#[test]
fn planted_symlink_root_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (c, _) = content(ContentKind::Directory, &[("a", 100)]);
    std::os::unix::fs::symlink(outside.path(), dir.path().join("c.part")).unwrap();
    let e = Storage::open(dir.path(), &c).unwrap_err().to_string();
    assert!(e.contains("symbolic link"), "{e}");
}

#[test]
fn delete_data_removes_only_the_content() {
    let dir = tempfile::tempdir().unwrap();
    let (c, bytes) = content(ContentKind::Directory, &[("x/a", 40_000), ("x/y/b", 30_000)]);
    let s = Storage::open(dir.path(), &c).unwrap();
    s.prepare_download().unwrap();
    write_all(&s, &c, &bytes);
    s.finish().unwrap();
    std::fs::write(dir.path().join("c/x/operator-notes.txt"), b"mine").unwrap();
    std::fs::write(dir.path().join("unrelated"), b"keep").unwrap();
    s.delete_data().unwrap();
    assert!(!dir.path().join("c/x/a").exists());
    assert!(!dir.path().join("c/x/y").exists());
    assert!(dir.path().join("c/x/operator-notes.txt").exists(), "files not in the descriptor are kept");
    assert!(dir.path().join("unrelated").exists());
}
