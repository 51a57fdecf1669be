//! Content on disk: reading, writing and finishing a torrent's files.
//!
//! Invariants:
//! - Everything is created below the torrent's data directory, through [`dir::Dir`] (no
//!   symlink is ever followed below it).
//! - Content is visible under its final name (`DATA/<name>`) only when every piece is verified.
//!   Until then it lives under `DATA/<name>.part` (a file, or a directory tree); [`Storage::
//!   finish`] renames it once complete. Content found under the final name but incomplete is
//!   moved back to the partial name before anything is written to it.
//! - Files are preallocated to their full length before a download writes to them, after a
//!   free-space check; pieces are written in place with positioned writes.
//! - Content arrives as it was published: before the rename to the final name, [`Storage::
//!   finish`] cuts every file to its described length, gives executable files their execute
//!   bits (and takes them from the others), and creates empty files and empty directories. So
//!   when the final name appears, everything under it is complete, modes included. Content
//!   that was already under its final name is only cut to length: extra bytes past a file's
//!   described end are never part of content reported as verified.
//! - Only regular files are opened as content files; a FIFO, socket or device there is an
//!   error naming the path, found without blocking ([`dir::NotRegularFile`]).
//! - Nothing here decides whether a piece is valid: callers hash and verify. [`Storage::
//!   sync`] makes written data durable; a caller records a piece as verified only after that.
//!
//! All methods block on disk I/O; async callers run them on the blocking pool.

pub mod claim;
pub mod dir;
pub mod layout;

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::sync::{Arc, Mutex, MutexGuard};

use nix::errno::Errno;
use nix::fcntl::{FallocateFlags, fallocate};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::descriptor::{Content, ContentKind, PieceHash};
use crate::units::human_bytes;
pub use dir::NotRegularFile;
use dir::{Access, Dir, EntryKind};
pub use layout::{Layout, Span};

/// Suffix of the partial (incomplete) content root.
pub const PARTIAL_SUFFIX: &str = ".part";
/// Most files kept open at once per torrent.
const MAX_OPEN_FILES: usize = 64;

/// Whether the content is under its final or its partial name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    Final,
    Partial,
}

/// A storage problem, phrased for the operator.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("not enough free space in {dir}: {needed} more needed, {available} available")]
    NoSpace { dir: String, needed: String, available: String },
    #[error("{0}")]
    Conflict(String),
    /// Something that is not this torrent's is at its path (see [`claim`]).
    #[error(transparent)]
    Foreign(claim::ForeignContent),
    /// Content that is not this torrent's verifies, but a file is longer than described.
    #[error(transparent)]
    TooLong(claim::LongerThanDescribed),
}

impl StorageError {
    /// Whether the problem may go away without anything changing in p2pd: a full disk (space
    /// is freed), a read-only filesystem (remounted read-write). Worth retrying.
    pub fn may_pass(&self) -> bool {
        match self {
            StorageError::NoSpace { .. } => true,
            StorageError::Io { source, .. } => {
                is_no_space(source)
                    || source.raw_os_error() == Some(libc::EROFS)
                    || matches!(
                        source.kind(),
                        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded | io::ErrorKind::ReadOnlyFilesystem
                    )
            }
            StorageError::Conflict(_) | StorageError::Foreign(_) | StorageError::TooLong(_) => false,
        }
    }
}

/// Whether an I/O error means the disk is full.
pub fn is_no_space(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT)
}

/// Size and modification time of a file, to notice changes made while the daemon was down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    pub length: u64,
    pub mtime_ns: i128,
}

/// Outcome of reading a piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceRead {
    /// All bytes were read.
    Complete,
    /// A file is missing or too short: the piece is not on disk.
    Missing,
}

/// One torrent's files.
#[derive(Debug)]
pub struct Storage {
    data_dir: Dir,
    kind: ContentKind,
    name: String,
    /// Per file: path components below the root (empty for a single file) and length.
    files: Vec<(Vec<String>, u64)>,
    layout: Layout,
    /// What is applied on completion besides the bytes.
    published: Published,
    inner: Mutex<Inner>,
}

/// The parts of the content that are not bytes: applied by [`Storage::finish`].
#[derive(Debug)]
struct Published {
    /// Per file (same order as `Storage::files`): whether it is executable.
    executable: Vec<bool>,
    /// Empty directories, as components below the root.
    empty_dirs: Vec<Vec<String>>,
}

impl Published {
    fn of(content: &Content) -> Published {
        Published {
            executable: content.files.iter().map(|f| f.executable).collect(),
            empty_dirs: content.empty_dirs.iter().map(|d| d.components().to_vec()).collect(),
        }
    }
}

/// The permission bits a file of the content gets: execute bits where the read bits are set if
/// it is executable, none otherwise; set-id and sticky bits never.
pub fn published_mode(mode: u32, executable: bool) -> u32 {
    let rw = mode & 0o666;
    if executable { rw | ((rw & 0o444) >> 2) } else { rw }
}

#[derive(Debug)]
struct Inner {
    placement: Placement,
    /// Open files by index, with whether they were opened writable.
    open: Vec<Option<(Arc<File>, bool)>>,
    open_count: usize,
}

fn io_ctx(context: impl Into<String>) -> impl FnOnce(io::Error) -> StorageError {
    let context = context.into();
    move |source| StorageError::Io { context, source }
}

impl Storage {
    /// Opens the content of `content` in `data_dir` (created if missing), finding whether it
    /// is under its final or partial name (the final name first). Creates no content files.
    pub fn open(data_dir: &std::path::Path, content: &Content) -> Result<Storage, StorageError> {
        Storage::open_with(data_dir, content, None)
    }

    /// Opens the content of `content` in `data_dir` under the name of `placement`, whatever is
    /// at the other name: where a torrent's claim says its own content is
    /// ([`claim::open_owned`]).
    pub fn open_at(
        data_dir: &std::path::Path,
        content: &Content,
        placement: Placement,
    ) -> Result<Storage, StorageError> {
        Storage::open_with(data_dir, content, Some(placement))
    }

    fn open_with(
        data_dir: &std::path::Path,
        content: &Content,
        only: Option<Placement>,
    ) -> Result<Storage, StorageError> {
        let data = Dir::open(data_dir, true).map_err(io_ctx(format!("data directory {}", data_dir.display())))?;
        let expected = match content.kind {
            ContentKind::File => EntryKind::File,
            ContentKind::Directory => EntryKind::Dir,
        };
        let what = |k: EntryKind| match k {
            EntryKind::File => "a file",
            EntryKind::Dir => "a directory",
            EntryKind::Symlink => "a symbolic link",
            EntryKind::Other => "a special file",
        };
        let partial_name = format!("{}{PARTIAL_SUFFIX}", content.name);
        let mut placement = only.unwrap_or(Placement::Partial);
        let candidates = [(&content.name, Placement::Final), (&partial_name, Placement::Partial)];
        for (name, candidate) in candidates.into_iter().filter(|(_, p)| only.is_none_or(|only| only == *p)) {
            let kind = data.entry_kind(name).map_err(io_ctx(format!("{}", data_dir.join(name).display())))?;
            match kind {
                None => continue,
                Some(k) if k == expected => {
                    placement = candidate;
                    break;
                }
                Some(k) => {
                    return Err(StorageError::Conflict(format!(
                        "{} is {} but the descriptor describes {}; move it away or add with --data elsewhere",
                        data_dir.join(name).display(),
                        what(k),
                        what(expected)
                    )));
                }
            }
        }
        let files = content.files.iter().map(|f| (f.path.components().to_vec(), f.length)).collect::<Vec<_>>();
        let open = vec![None; files.len()];
        Ok(Storage {
            data_dir: data,
            kind: content.kind,
            name: content.name.clone(),
            files,
            layout: Layout::new(content),
            published: Published::of(content),
            inner: Mutex::new(Inner { placement, open, open_count: 0 }),
        })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn placement(&self) -> Placement {
        self.lock().placement
    }

    /// Where the data directory this storage opened really is (see [`Dir::real_path`]).
    pub fn data_dir_real_path(&self) -> std::path::PathBuf {
        self.data_dir.real_path()
    }

    /// Path of the content root as it is now (for messages and status).
    pub fn root_path(&self) -> std::path::PathBuf {
        self.data_dir.path().join(self.root_name(self.placement()))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave `Inner` inconsistent (it only caches fds).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn root_name(&self, placement: Placement) -> String {
        match placement {
            Placement::Final => self.name.clone(),
            Placement::Partial => format!("{}{PARTIAL_SUFFIX}", self.name),
        }
    }

    fn display_path(&self, placement: Placement, file: usize) -> String {
        let mut p = self.data_dir.path().join(self.root_name(placement));
        for c in &self.files[file].0 {
            p.push(c);
        }
        p.display().to_string()
    }

    /// Opens file `index` at the current placement. `Ok(None)` if it does not exist and
    /// `access` does not create.
    fn file(&self, index: usize, access: Access) -> io::Result<Option<Arc<File>>> {
        let writable = access != Access::Read;
        let placement = {
            let inner = self.lock();
            if let Some((f, w)) = &inner.open[index]
                && (*w || !writable)
            {
                return Ok(Some(f.clone()));
            }
            inner.placement
        };
        let root = self.root_name(placement);
        let create = access == Access::Create;
        let opened = match self.kind {
            ContentKind::File => self.data_dir.open_file(&root, access),
            ContentKind::Directory => {
                let comps = &self.files[index].0;
                let (last, parents) = comps.split_last().ok_or_else(|| io::Error::other("empty path"))?;
                self.data_dir
                    .subdir(&root, create)
                    .and_then(|d| d.descend(parents, create))
                    .and_then(|d| d.open_file(last, access))
            }
        };
        let file = match opened {
            Ok(f) => Arc::new(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound && !create => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut inner = self.lock();
        if inner.placement != placement {
            return Err(io::Error::other("content moved while opening a file"));
        }
        if inner.open[index].is_none() {
            if inner.open_count >= MAX_OPEN_FILES {
                inner.open.iter_mut().for_each(|slot| *slot = None);
                inner.open_count = 0;
            }
            inner.open_count += 1;
        }
        inner.open[index] = Some((file.clone(), writable));
        Ok(Some(file))
    }

    fn forget_open_files(&self) {
        let mut inner = self.lock();
        inner.open.iter_mut().for_each(|slot| *slot = None);
        inner.open_count = 0;
    }

    /// Reads content bytes `[offset, offset + buf.len())`.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<PieceRead, StorageError> {
        let mut pos = 0usize;
        let placement = self.placement();
        for span in self.layout.spans(offset, buf.len() as u64) {
            let Some(file) =
                self.file(span.file, Access::Read).map_err(io_ctx(self.display_path(placement, span.file)))?
            else {
                return Ok(PieceRead::Missing);
            };
            let part = &mut buf[pos..pos + span.len as usize];
            match file.read_exact_at(part, span.offset) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(PieceRead::Missing),
                Err(e) => return Err(io_ctx(self.display_path(placement, span.file))(e)),
            }
            pos += span.len as usize;
        }
        Ok(PieceRead::Complete)
    }

    /// The file and offset holding content bytes `[offset, offset + len)`, when they lie within
    /// one file (for zero-copy sends). `None` if they span files or the file is missing.
    pub fn file_range(&self, offset: u64, len: u64) -> Option<(Arc<File>, u64)> {
        let spans = self.layout.spans(offset, len);
        let [span] = spans[..] else { return None };
        let file = self.file(span.file, Access::Read).ok().flatten()?;
        Some((file, span.offset))
    }

    /// Reads piece `index` into `buf` (resized to the piece length).
    pub fn read_piece(&self, index: usize, buf: &mut Vec<u8>) -> Result<PieceRead, StorageError> {
        let range = self.layout.piece_range(index);
        buf.resize((range.end - range.start) as usize, 0);
        self.read_at(range.start, buf)
    }

    /// Whether piece `index` on disk has hash `expected`; a missing piece does not.
    pub fn check_piece(&self, index: usize, expected: &PieceHash, buf: &mut Vec<u8>) -> Result<bool, StorageError> {
        Ok(self.read_piece(index, buf)? == PieceRead::Complete && hash_matches(buf, expected))
    }

    /// Writes a verified piece in place. Only valid after [`Storage::prepare_download`].
    pub fn write_piece(&self, index: usize, data: &[u8]) -> Result<(), StorageError> {
        let range = self.layout.piece_range(index);
        debug_assert_eq!(data.len() as u64, range.end - range.start);
        let placement = self.placement();
        let mut pos = 0usize;
        for span in self.layout.spans(range.start, data.len() as u64) {
            let path = || self.display_path(placement, span.file);
            let file = self.file(span.file, Access::Create).map_err(|e| io_ctx(path())(e))?;
            let file = file.ok_or_else(|| io_ctx(path())(io::Error::other("file vanished")))?;
            file.write_all_at(&data[pos..pos + span.len as usize], span.offset).map_err(io_ctx(path()))?;
            pos += span.len as usize;
        }
        Ok(())
    }

    /// Makes every written byte durable (fdatasync of every file open for writing).
    pub fn sync(&self) -> Result<(), StorageError> {
        let open: Vec<(usize, Arc<File>)> = {
            let inner = self.lock();
            inner
                .open
                .iter()
                .enumerate()
                .filter_map(|(i, slot)| slot.as_ref().filter(|(_, w)| *w).map(|(f, _)| (i, f.clone())))
                .collect()
        };
        let placement = self.placement();
        for (i, f) in open {
            f.sync_data().map_err(io_ctx(self.display_path(placement, i)))?;
        }
        Ok(())
    }

    /// Gets ready to write: moves content found under the final name to the partial name,
    /// checks free space, creates every file (and empty ones) and preallocates it.
    pub fn prepare_download(&self) -> Result<(), StorageError> {
        if self.placement() == Placement::Final {
            self.forget_open_files();
            let (from, to) = (self.root_name(Placement::Final), self.root_name(Placement::Partial));
            match self.data_dir.rename(&from, &to) {
                Ok(()) => {}
                // Never over something this torrent did not write.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(StorageError::Conflict(format!(
                        "cannot move incomplete {} aside: {} already exists; move it away",
                        self.data_dir.path().join(&from).display(),
                        self.data_dir.path().join(&to).display()
                    )));
                }
                Err(e) => {
                    return Err(io_ctx(format!(
                        "moving incomplete {} to {}",
                        self.data_dir.path().join(&from).display(),
                        self.data_dir.path().join(&to).display()
                    ))(e));
                }
            }
            self.lock().placement = Placement::Partial;
        }
        let mut needed: u64 = 0;
        let mut stats = Vec::with_capacity(self.files.len());
        for (i, (_, length)) in self.files.iter().enumerate() {
            let allocated = match self.file(i, Access::Read) {
                Ok(Some(f)) => f.metadata().map(|m| m.blocks() * 512).unwrap_or(0),
                Ok(None) => 0,
                Err(e) => return Err(io_ctx(self.display_path(Placement::Partial, i))(e)),
            };
            needed += length.saturating_sub(allocated);
            stats.push(allocated);
        }
        let available = self.data_dir.available_bytes().unwrap_or(u64::MAX);
        if needed > available {
            return Err(StorageError::NoSpace {
                dir: self.data_dir.path().display().to_string(),
                needed: human_bytes(needed),
                available: human_bytes(available),
            });
        }
        for (i, (_, length)) in self.files.iter().enumerate() {
            let path = || self.display_path(Placement::Partial, i);
            let file = self.file(i, Access::Create).map_err(|e| io_ctx(path())(e))?;
            let file = file.ok_or_else(|| io_ctx(path())(io::Error::other("file vanished")))?;
            let found = file.metadata().map_err(io_ctx(path()))?.len();
            if found > *length {
                // Bytes past the described end are not content; cut them before anything is
                // written.
                file.set_len(*length).map_err(io_ctx(path()))?;
                log::warn!(
                    "{}: was {found} bytes, {} more than the descriptor describes; cut to {length} bytes",
                    path(),
                    found - length
                );
            }
            if *length > 0 && stats[i] < *length {
                preallocate(&file, *length).map_err(io_ctx(path()))?;
            }
        }
        // Made now, not only on completion, so that a name in the way is reported at once.
        self.create_empty_dirs()?;
        Ok(())
    }

    /// Cuts every file longer than described to its described length, durably. Files of
    /// content under the final name are opened writable only if they need cutting, so that
    /// content on a read-only filesystem can still be seeded when it is exact.
    fn truncate_to_described(&self) -> Result<(), StorageError> {
        let placement = self.placement();
        for (i, (_, length)) in self.files.iter().enumerate() {
            let path = || self.display_path(placement, i);
            let Some(file) = self.file(i, Access::Read).map_err(|e| io_ctx(path())(e))? else { continue };
            let found = file.metadata().map_err(io_ctx(path()))?.len();
            if found <= *length {
                continue;
            }
            let file = self.file(i, Access::ReadWrite).map_err(|e| io_ctx(path())(e))?;
            let file = file.ok_or_else(|| io_ctx(path())(io::Error::other("file vanished")))?;
            file.set_len(*length).and_then(|()| file.sync_all()).map_err(io_ctx(format!(
                "{} is {found} bytes, longer than the {length} described; cutting it",
                path()
            )))?;
            log::warn!(
                "{}: was {found} bytes, {} more than the descriptor describes; cut to {length} bytes",
                path(),
                found - length
            );
        }
        Ok(())
    }

    /// Creates the content's empty directories under the partial root (those that exist are
    /// kept), each made durable in its parent.
    fn create_empty_dirs(&self) -> Result<(), StorageError> {
        if self.published.empty_dirs.is_empty() {
            return Ok(());
        }
        let root_name = self.root_name(Placement::Partial);
        let root_path = self.data_dir.path().join(&root_name);
        let root = self.data_dir.subdir(&root_name, true).map_err(io_ctx(root_path.display().to_string()))?;
        for comps in &self.published.empty_dirs {
            let shown = comps.iter().fold(root_path.clone(), |p, c| p.join(c)).display().to_string();
            let Some((last, parents)) = comps.split_last() else { continue };
            let parent = root.descend(parents, true).map_err(io_ctx(shown.clone()))?;
            let existed = parent.entry_kind(last).map_err(io_ctx(shown.clone()))? == Some(EntryKind::Dir);
            parent.subdir(last, true).map_err(io_ctx(shown.clone()))?;
            if !existed {
                parent.sync().map_err(io_ctx(shown))?;
            }
        }
        Ok(())
    }

    /// Under the partial root: creates empty files and directories, and sets every file's
    /// permission bits to [`published_mode`]. A file whose mode changes is fsynced.
    fn apply_published(&self) -> Result<(), StorageError> {
        // Look at what is on disk now, not through descriptors opened earlier (an empty file
        // removed since would otherwise look present).
        self.forget_open_files();
        for (i, (_, length)) in self.files.iter().enumerate() {
            let path = || self.display_path(Placement::Partial, i);
            // Every other file holds verified bytes and exists; an empty one may have been
            // removed since it was created.
            let access = if *length == 0 { Access::Create } else { Access::Read };
            let file = self.file(i, access).map_err(|e| io_ctx(path())(e))?;
            let file = file.ok_or_else(|| io_ctx(path())(io::Error::other("file vanished")))?;
            let mode = file.metadata().map_err(io_ctx(path()))?.permissions().mode() & 0o7777;
            let wanted = published_mode(mode, self.published.executable[i]);
            if wanted != mode {
                file.set_permissions(std::fs::Permissions::from_mode(wanted))
                    .and_then(|()| file.sync_all())
                    .map_err(io_ctx(format!("{}: setting mode {wanted:o}", path())))?;
            }
        }
        self.create_empty_dirs()
    }

    /// Once every piece is verified: makes the data durable, cuts files to their described
    /// length, applies modes, empty files and empty directories, and renames the partial root
    /// to the final name. Fails (renaming nothing) if something else took the final name.
    /// Content already under its final name is only cut to length.
    pub fn finish(&self) -> Result<(), StorageError> {
        if self.placement() == Placement::Final {
            self.truncate_to_described()?;
            self.close_writable_files();
            return Ok(());
        }
        self.sync()?;
        self.truncate_to_described()?;
        self.apply_published()?;
        let (from, to) = (self.root_name(Placement::Partial), self.root_name(Placement::Final));
        if self
            .data_dir
            .entry_kind(&to)
            .map_err(io_ctx(self.data_dir.path().join(&to).display().to_string()))?
            .is_some()
        {
            return Err(StorageError::Conflict(format!(
                "cannot move the completed content into place: {} already exists",
                self.data_dir.path().join(&to).display()
            )));
        }
        self.data_dir.rename(&from, &to).map_err(io_ctx(format!(
            "renaming {} to {}",
            self.data_dir.path().join(&from).display(),
            self.data_dir.path().join(&to).display()
        )))?;
        self.lock().placement = Placement::Final;
        self.close_writable_files();
        Ok(())
    }

    /// Closes the files held open for writing (they are reopened read-only when read).
    /// Complete content is only read; and a file open for writing anywhere cannot be executed
    /// (`ETXTBSY`), so a published tool would not run while p2pd seeds it.
    fn close_writable_files(&self) {
        let mut inner = self.lock();
        let mut closed = 0;
        for slot in inner.open.iter_mut() {
            if slot.as_ref().is_some_and(|(_, writable)| *writable) {
                *slot = None;
                closed += 1;
            }
        }
        inner.open_count -= closed;
    }

    /// Size and modification time of every file (`None` for a missing one).
    pub fn stamps(&self) -> Vec<Option<FileStamp>> {
        (0..self.files.len())
            .map(|i| {
                let f = self.file(i, Access::Read).ok().flatten()?;
                let m = f.metadata().ok()?;
                Some(FileStamp {
                    length: m.len(),
                    mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
                })
            })
            .collect()
    }

    /// Whether any byte of piece `index` may have been written (false only for pieces lying
    /// entirely in holes or missing files). Lets a post-crash recheck skip untouched pieces.
    pub fn piece_may_have_data(&self, index: usize) -> bool {
        let range = self.layout.piece_range(index);
        for span in self.layout.spans(range.start, range.end - range.start) {
            let Ok(Some(file)) = self.file(span.file, Access::Read) else { continue };
            match nix::unistd::lseek(&*file, span.offset as i64, nix::unistd::Whence::SeekData) {
                Ok(pos) if (pos as u64) < span.offset + span.len => return true,
                Ok(_) | Err(Errno::ENXIO) => {}
                Err(_) => return true,
            }
        }
        false
    }

    /// Deletes the content's files where the content is now (final name, else partial): the
    /// regular files at the layout's paths, then the directories that became empty. Nothing
    /// else: other files in its directories stay, and so do symbolic links and special files
    /// at the layout's paths (p2pd never creates those). Callers delete only content the
    /// torrent owns ([`claim::delete_owned`]).
    pub fn delete_data(&self) -> Result<(), StorageError> {
        self.forget_open_files();
        let root = self.root_name(self.placement());
        let ctx = || self.data_dir.path().join(&root).display().to_string();
        match self.kind {
            ContentKind::File => {
                if claim::is_regular_file(&self.data_dir, &root).map_err(io_ctx(ctx()))? {
                    self.data_dir.remove_file(&root).map_err(io_ctx(ctx()))?;
                }
            }
            ContentKind::Directory => {
                if self.data_dir.entry_kind(&root).map_err(io_ctx(ctx()))? != Some(EntryKind::Dir) {
                    return Ok(());
                }
                let root_dir = self.data_dir.subdir(&root, false).map_err(io_ctx(ctx()))?;
                for (comps, _) in &self.files {
                    let Some((last, parents)) = comps.split_last() else { continue };
                    if let Ok(d) = root_dir.descend(parents, false)
                        && claim::is_regular_file(&d, last).map_err(io_ctx(ctx()))?
                    {
                        d.remove_file(last).map_err(io_ctx(ctx()))?;
                    }
                }
                // Remove now-empty directories, deepest first: the files' parents, and the empty
                // directories the descriptor lists (and theirs). A directory with anything else
                // in it stays.
                let files = self.files.iter().flat_map(|(c, _)| (1..c.len()).map(move |n| &c[..n]));
                let listed = self.published.empty_dirs.iter().flat_map(|c| (1..=c.len()).map(move |n| &c[..n]));
                let mut dirs: Vec<&[String]> = files.chain(listed).collect();
                dirs.sort_by_key(|d| std::cmp::Reverse(d.len()));
                dirs.dedup();
                for d in dirs {
                    let Some((last, parents)) = d.split_last() else { continue };
                    if let Ok(parent) = root_dir.descend(parents, false) {
                        parent.remove_empty_dir(last).map_err(io_ctx(ctx()))?;
                    }
                }
                self.data_dir.remove_empty_dir(&root).map_err(io_ctx(ctx()))?;
            }
        }
        self.data_dir.sync().map_err(io_ctx(self.data_dir.path().display().to_string()))
    }
}

/// `statfs` magic of tmpfs.
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// Reserves `length` bytes for the file. On tmpfs, where `fallocate` reserves nothing the free
/// space check did not already account for and makes every later write several times slower,
/// the file is only extended.
fn preallocate(file: &File, length: u64) -> io::Result<()> {
    let on_tmpfs = nix::sys::statfs::fstatfs(file).map(|s| s.filesystem_type().0 == TMPFS_MAGIC).unwrap_or(false);
    if on_tmpfs {
        return file.set_len(length);
    }
    match fallocate(file, FallocateFlags::empty(), 0, length as i64) {
        Ok(()) => Ok(()),
        Err(Errno::EOPNOTSUPP | Errno::ENOSYS) => file.set_len(length),
        Err(e) => Err(io::Error::from_raw_os_error(e as i32)),
    }
}

/// Whether `data` hashes to `expected`.
pub fn hash_matches(data: &[u8], expected: &PieceHash) -> bool {
    let digest: [u8; 32] = Sha256::digest(data).into();
    digest == expected.0
}

#[cfg(test)]
mod tests;
