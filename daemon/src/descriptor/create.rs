//! Making a descriptor from files on disk (`p2pctl create`).
//!
//! Two steps so that a caller can show progress against a known total: [`plan`] walks the
//! path and [`hash_pieces`] reads the files in content order and hashes pieces across file
//! boundaries. Reading runs on its own thread so that disk reads overlap hashing; hashing runs
//! at SHA-256 speed.
//!
//! What is described: regular files (with their length and whether the owner may execute
//! them) and directories that hold nothing, walked in byte order of names. Symbolic links and
//! special files (FIFOs, sockets, devices) are refused with the path named: a descriptor
//! carries bytes, and a link or a device node has none that would mean the same on another
//! machine.

use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use sha2::{Digest, Sha256};

use super::{
    Content, ContentKind, Descriptor, DescriptorError, FileEntry, MAX_EMPTY_DIRECTORIES, MAX_FILES, MAX_PIECES,
    MAX_TOTAL_LENGTH, NodeAddr, PieceHash, RelPath,
};
use crate::units::human_bytes;

/// The permission bit that makes a file "executable" in a descriptor: the owner's, as git
/// decides it.
pub const EXECUTABLE_BIT: u32 = 0o100;

/// A file to be described, with where it is on disk.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Where to read it.
    pub disk_path: PathBuf,
    /// Its path in the descriptor.
    pub path: RelPath,
    pub length: u64,
    /// Whether its owner may execute it ([`EXECUTABLE_BIT`]).
    pub executable: bool,
}

/// What [`plan`] found at the path.
#[derive(Debug, Clone)]
pub struct Plan {
    pub kind: ContentKind,
    pub name: String,
    pub files: Vec<SourceFile>,
    /// Directories holding nothing at all, sorted like the files.
    pub empty_dirs: Vec<RelPath>,
    pub total_length: u64,
}

/// Why a descriptor could not be made. Paths are shown with control characters escaped.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("{}: {source}", shown(.path))]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: is a symbolic link; descriptors hold regular files and directories only (copy the target in its place, or describe the target)", shown(.0))]
    Symlink(PathBuf),
    #[error("{}: is {what}; descriptors hold regular files and directories only (move it out of the tree)", shown(.path))]
    Special { path: PathBuf, what: &'static str },
    #[error("{}: file name is not valid UTF-8", shown(.0))]
    NotUtf8(PathBuf),
    #[error("{}: {problem}", shown(.path))]
    BadName { path: PathBuf, problem: super::path::ComponentError },
    #[error("{}: has no file name", shown(.0))]
    NoName(PathBuf),
    #[error("{}: there is nothing to distribute (no bytes in any file)", shown(.0))]
    Empty(PathBuf),
    #[error("{}: more than {MAX_FILES} files", shown(.0))]
    TooManyFiles(PathBuf),
    #[error("{}: more than {MAX_EMPTY_DIRECTORIES} empty directories", shown(.0))]
    TooManyEmptyDirs(PathBuf),
    #[error("{}: more than {} of content", shown(.0), human_bytes(MAX_TOTAL_LENGTH))]
    TooLarge(PathBuf),
    #[error("{}: the file changed while it was being hashed; try again", shown(.0))]
    Changed(PathBuf),
    #[error("piece size {0}: {1}")]
    PieceLength(u64, String),
    #[error("{0}")]
    Descriptor(#[from] DescriptorError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CreateError + '_ {
    move |source| CreateError::Io { path: path.to_path_buf(), source }
}

/// A path for a message: control characters escaped, so that a hostile file name cannot
/// drive the terminal the message is printed on.
fn shown(path: &Path) -> String {
    path.display()
        .to_string()
        .chars()
        .map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() })
        .collect()
}

/// What a file type that is neither a regular file, a directory nor a symlink is, in words.
fn special_kind(t: std::fs::FileType) -> &'static str {
    if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "a special file"
    }
}

/// Walks `path`: a regular file makes a single-file plan, a directory a plan of every regular
/// file and every empty directory below it, sorted by path. Refuses symlinks and special files.
pub fn plan(path: &Path) -> Result<Plan, CreateError> {
    let meta = std::fs::symlink_metadata(path).map_err(io_err(path))?;
    let name = path
        .canonicalize()
        .map_err(io_err(path))?
        .file_name()
        .ok_or_else(|| CreateError::NoName(path.into()))?
        .to_str()
        .ok_or_else(|| CreateError::NotUtf8(path.into()))?
        .to_string();
    super::path::validate_component(&name).map_err(|problem| CreateError::BadName { path: path.into(), problem })?;
    if meta.file_type().is_symlink() {
        return Err(CreateError::Symlink(path.into()));
    }
    let mut empty_dirs = Vec::new();
    let (kind, files) = if meta.is_file() {
        let file = SourceFile {
            disk_path: path.into(),
            path: RelPath::root(),
            length: meta.len(),
            executable: meta.permissions().mode() & EXECUTABLE_BIT != 0,
        };
        (ContentKind::File, vec![file])
    } else if meta.is_dir() {
        let mut files = Vec::new();
        walk(path, &mut Vec::new(), &mut files, &mut empty_dirs)?;
        (ContentKind::Directory, files)
    } else {
        return Err(CreateError::Special { path: path.into(), what: special_kind(meta.file_type()) });
    };
    let total_length = files.iter().map(|f| f.length).try_fold(0u64, u64::checked_add);
    let total_length = match total_length {
        Some(t) if t > MAX_TOTAL_LENGTH => return Err(CreateError::TooLarge(path.into())),
        Some(0) => return Err(CreateError::Empty(path.into())),
        Some(t) => t,
        None => return Err(CreateError::TooLarge(path.into())),
    };
    Ok(Plan { kind, name, files, empty_dirs, total_length })
}

fn walk(
    dir: &Path,
    prefix: &mut Vec<String>,
    out: &mut Vec<SourceFile>,
    empty_dirs: &mut Vec<RelPath>,
) -> Result<(), CreateError> {
    let mut entries =
        std::fs::read_dir(dir).map_err(io_err(dir))?.map(|e| e.map_err(io_err(dir))).collect::<Result<Vec<_>, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    if entries.is_empty() && !prefix.is_empty() {
        if empty_dirs.len() >= MAX_EMPTY_DIRECTORIES {
            return Err(CreateError::TooManyEmptyDirs(dir.into()));
        }
        let path = RelPath::from_components(prefix.clone())
            .map_err(|problem| CreateError::BadName { path: dir.into(), problem })?;
        empty_dirs.push(path);
    }
    for entry in entries {
        let disk_path = entry.path();
        let name = entry.file_name().into_string().map_err(|_| CreateError::NotUtf8(disk_path.clone()))?;
        let file_type = entry.file_type().map_err(io_err(&disk_path))?;
        prefix.push(name);
        if file_type.is_symlink() {
            return Err(CreateError::Symlink(disk_path));
        } else if file_type.is_dir() {
            walk(&disk_path, prefix, out, empty_dirs)?;
        } else if file_type.is_file() {
            if out.len() >= MAX_FILES {
                return Err(CreateError::TooManyFiles(disk_path));
            }
            let meta = entry.metadata().map_err(io_err(&disk_path))?;
            let path = RelPath::from_components(prefix.clone())
                .map_err(|problem| CreateError::BadName { path: disk_path.clone(), problem })?;
            let executable = meta.permissions().mode() & EXECUTABLE_BIT != 0;
            out.push(SourceFile { disk_path, path, length: meta.len(), executable });
        } else {
            return Err(CreateError::Special { path: disk_path, what: special_kind(file_type) });
        }
        prefix.pop();
    }
    Ok(())
}

/// Checks a piece length chosen by the user against the format's limits for this content.
pub fn check_piece_length(piece_length: u64, total_length: u64) -> Result<(), CreateError> {
    let fail = |why: String| Err(CreateError::PieceLength(piece_length, why));
    if !(super::MIN_PIECE_LENGTH..=super::MAX_PIECE_LENGTH).contains(&piece_length) {
        return fail(format!(
            "must be between {} and {}",
            human_bytes(super::MIN_PIECE_LENGTH),
            human_bytes(super::MAX_PIECE_LENGTH)
        ));
    }
    if !piece_length.is_power_of_two() {
        return fail("must be a power of two (e.g. 256K, 1M, 4M)".into());
    }
    if total_length.div_ceil(piece_length) > MAX_PIECES as u64 {
        return fail(format!(
            "gives more than {MAX_PIECES} pieces for {}; choose a larger one",
            human_bytes(total_length)
        ));
    }
    Ok(())
}

/// Hashes fixed-length pieces from a stream of byte slices that may cross piece boundaries.
#[derive(Debug)]
pub struct PieceHasher {
    piece_length: u64,
    current: Sha256,
    filled: u64,
    pieces: Vec<PieceHash>,
}

impl PieceHasher {
    pub fn new(piece_length: u64) -> PieceHasher {
        PieceHasher { piece_length, current: Sha256::new(), filled: 0, pieces: Vec::new() }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let room = (self.piece_length - self.filled) as usize;
            let take = room.min(data.len());
            self.current.update(&data[..take]);
            self.filled += take as u64;
            data = &data[take..];
            if self.filled == self.piece_length {
                self.pieces.push(PieceHash(std::mem::take(&mut self.current).finalize().into()));
                self.filled = 0;
            }
        }
    }

    /// The hashes, including a short last piece.
    pub fn finish(mut self) -> Vec<PieceHash> {
        if self.filled > 0 {
            self.pieces.push(PieceHash(self.current.finalize().into()));
        }
        self.pieces
    }
}

const READ_CHUNK: usize = 4 << 20;

/// Reads the plan's files in order and hashes them into pieces, calling `progress` with the
/// number of bytes hashed after each chunk.
pub fn hash_pieces(
    plan: &Plan,
    piece_length: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<Vec<PieceHash>, CreateError> {
    let (full_tx, full_rx) = mpsc::sync_channel::<Result<Vec<u8>, CreateError>>(3);
    let (empty_tx, empty_rx) = mpsc::channel::<Vec<u8>>();
    for _ in 0..4 {
        let _ = empty_tx.send(vec![0u8; READ_CHUNK]);
    }
    let files = plan.files.clone();
    let reader = std::thread::Builder::new()
        .name("p2p-create-read".into())
        .spawn(move || read_files(&files, &full_tx, &empty_rx))
        .map_err(|source| CreateError::Io { path: PathBuf::from("<reader thread>"), source })?;

    let mut hasher = PieceHasher::new(piece_length);
    let mut done = 0u64;
    let mut result = Ok(());
    for chunk in full_rx {
        match chunk {
            Ok(buf) => {
                hasher.update(&buf);
                done += buf.len() as u64;
                progress(done);
                let _ = empty_tx.send(buf);
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    drop(empty_tx);
    let _ = reader.join();
    result?;
    Ok(hasher.finish())
}

fn read_files(
    files: &[SourceFile],
    full: &mpsc::SyncSender<Result<Vec<u8>, CreateError>>,
    empty: &mpsc::Receiver<Vec<u8>>,
) {
    for f in files {
        if let Err(e) = read_one(f, full, empty) {
            let _ = full.send(Err(e));
            return;
        }
    }
}

fn read_one(
    f: &SourceFile,
    full: &mpsc::SyncSender<Result<Vec<u8>, CreateError>>,
    empty: &mpsc::Receiver<Vec<u8>>,
) -> Result<(), CreateError> {
    // Not blocking and not following links: the plan saw a regular file here, but what is
    // opened now may have been swapped for a FIFO (which would block) or a link.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(&f.disk_path)
        .map_err(io_err(&f.disk_path))?;
    if !file.metadata().map_err(io_err(&f.disk_path))?.is_file() {
        return Err(CreateError::Changed(f.disk_path.clone()));
    }
    let mut left = f.length;
    while left > 0 {
        let Ok(mut buf) = empty.recv() else { return Ok(()) };
        let want = (left as usize).min(READ_CHUNK);
        buf.resize(want, 0);
        let mut got = 0;
        while got < want {
            match file.read(&mut buf[got..want]) {
                Ok(0) => return Err(CreateError::Changed(f.disk_path.clone())),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err(&f.disk_path)(e)),
            }
        }
        left -= want as u64;
        if full.send(Ok(buf)).is_err() {
            return Ok(());
        }
    }
    let mut probe = [0u8; 1];
    match file.read(&mut probe) {
        Ok(0) => Ok(()),
        Ok(_) => Err(CreateError::Changed(f.disk_path.clone())),
        Err(e) => Err(io_err(&f.disk_path)(e)),
    }
}

/// Assembles and validates the descriptor for a hashed plan.
pub fn build(
    plan: &Plan,
    piece_length: u64,
    pieces: Vec<PieceHash>,
    bootstrap: Vec<NodeAddr>,
) -> Result<Descriptor, CreateError> {
    let content = Content {
        kind: plan.kind,
        name: plan.name.clone(),
        piece_length,
        files: plan
            .files
            .iter()
            .map(|f| FileEntry { path: f.path.clone(), length: f.length, executable: f.executable })
            .collect(),
        empty_dirs: plan.empty_dirs.clone(),
        pieces,
        total_length: plan.total_length,
    };
    let descriptor = Descriptor { info_hash: content.info_hash(), content, bootstrap };
    // Round-trip through validation: what we write is exactly what every node will accept.
    Ok(Descriptor::from_document(&descriptor.to_document())?)
}
