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

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn published_modes() {
    assert_eq!(published_mode(0o644, true), 0o755);
    assert_eq!(published_mode(0o600, true), 0o700);
    assert_eq!(published_mode(0o640, true), 0o750);
    assert_eq!(published_mode(0o755, false), 0o644);
    assert_eq!(published_mode(0o4755, true), 0o755, "set-id bits are never given");
    assert_eq!(published_mode(0o1777, false), 0o666);
}

/// Regression (issue 11): a published executable arrived 0644, and empty directories were lost.
#[test]
fn finish_applies_modes_empty_files_and_dirs_before_the_rename() {
    let dir = tempfile::tempdir().unwrap();
    let (mut c, bytes) =
        content(ContentKind::Directory, &[("bin/tool", 40_000), ("doc/readme", 30_000), ("etc/empty.conf", 0)]);
    c.files[0].executable = true;
    c.empty_dirs = vec!["share/empty".parse().unwrap(), "var/log/p2pd".parse().unwrap()];
    let s = Storage::open(dir.path(), &c).unwrap();
    s.prepare_download().unwrap();
    assert!(dir.path().join("c.part/share/empty").is_dir(), "empty directories are made with the files");
    write_all(&s, &c, &bytes);
    // Whatever happened to the partial tree meanwhile, the published attributes win.
    set_mode(&dir.path().join("c.part/doc/readme"), 0o4755);
    std::fs::remove_file(dir.path().join("c.part/etc/empty.conf")).unwrap();
    std::fs::remove_dir(dir.path().join("c.part/var/log/p2pd")).unwrap();
    s.finish().unwrap();

    let tool = mode(&dir.path().join("c/bin/tool"));
    assert!(tool & 0o100 != 0 && tool & 0o111 == (tool & 0o444) >> 2, "tool is {tool:o}");
    assert_eq!(mode(&dir.path().join("c/doc/readme")), 0o644);
    assert_eq!(std::fs::metadata(dir.path().join("c/etc/empty.conf")).unwrap().len(), 0);
    assert!(dir.path().join("c/share/empty").is_dir());
    assert!(dir.path().join("c/var/log/p2pd").is_dir());
    assert_eq!(std::fs::read_dir(dir.path().join("c/share/empty")).unwrap().count(), 0);
}

#[test]
fn a_single_executable_file() {
    let dir = tempfile::tempdir().unwrap();
    let (mut c, bytes) = content(ContentKind::File, &[("", 20_000)]);
    c.files[0].executable = true;
    let s = Storage::open(dir.path(), &c).unwrap();
    s.prepare_download().unwrap();
    write_all(&s, &c, &bytes);
    s.finish().unwrap();
    assert!(mode(&dir.path().join("c")) & 0o100 != 0);
}

/// Regression (issue 11): bytes past a file's described end survived as "verified".
#[test]
fn longer_files_are_cut_to_their_described_length() {
    // Under the partial name: cut when the download is prepared.
    let dir = tempfile::tempdir().unwrap();
    let (c, bytes) = content(ContentKind::Directory, &[("a", 40_000), ("b", 30_000)]);
    std::fs::create_dir(dir.path().join("c.part")).unwrap();
    std::fs::write(dir.path().join("c.part/a"), [&bytes[..40_000], b"trailing junk"].concat()).unwrap();
    let s = Storage::open(dir.path(), &c).unwrap();
    s.prepare_download().unwrap();
    assert_eq!(std::fs::metadata(dir.path().join("c.part/a")).unwrap().len(), 40_000);
    write_all(&s, &c, &bytes);
    // Appended to after that: cut again on completion.
    use std::io::Write;
    std::fs::OpenOptions::new().append(true).open(dir.path().join("c.part/b")).unwrap().write_all(b"more").unwrap();
    s.finish().unwrap();
    assert_eq!(std::fs::read(dir.path().join("c/a")).unwrap(), &bytes[..40_000]);
    assert_eq!(std::fs::read(dir.path().join("c/b")).unwrap(), &bytes[40_000..]);

    // Under the final name (complete content found there): cut by finish, which is what a
    // torrent calls once every piece checks.
    let dir = tempfile::tempdir().unwrap();
    let (c, bytes) = content(ContentKind::File, &[("", 50_000)]);
    std::fs::write(dir.path().join("c"), [&bytes[..], &[0u8; 5000][..]].concat()).unwrap();
    let s = Storage::open(dir.path(), &c).unwrap();
    assert_eq!(s.placement(), Placement::Final);
    let mut buf = Vec::new();
    assert!((0..c.piece_count()).all(|i| s.check_piece(i, &c.pieces[i], &mut buf).unwrap()));
    s.finish().unwrap();
    assert_eq!(std::fs::read(dir.path().join("c")).unwrap(), bytes);
}

/// Regression (issue 11): a FIFO at a content path made `open` block until a writer came.
#[test]
fn special_files_at_content_paths_are_errors_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _) = content(ContentKind::Directory, &[("a", 40_000), ("sub/b", 30_000)]);
    std::fs::create_dir_all(dir.path().join("c.part/sub")).unwrap();
    let fifo = dir.path().join("c.part/sub/b");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let s = Arc::new(Storage::open(dir.path(), &c).unwrap());
    // Run where a hang is noticed instead of blocking the test run.
    let (tx, rx) = std::sync::mpsc::channel();
    let s2 = s.clone();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let read = s2.read_piece(3, &mut buf).map(|_| ());
        let prepare = s2.prepare_download();
        let _ = tx.send((read, prepare));
    });
    let (read, prepare) = rx.recv_timeout(std::time::Duration::from_secs(60)).expect("storage blocked on a FIFO");
    for e in [read.unwrap_err(), prepare.unwrap_err()] {
        let text = e.to_string();
        assert!(text.starts_with(&format!("{}: is a FIFO (named pipe)", fifo.display())), "{text}");
        assert!(!e.may_pass());
    }
    assert_eq!(s.stamps()[1], None, "a FIFO has no stamp");
}
