//! The verify pipeline: complete pieces wait in a queue, at most [`MAX_VERIFYING`] are hashed
//! and written at once (on blocking threads, off the one network thread: see `runtime`), and
//! each result comes back with its buffer.
//!
//! Invariants: a piece is written only if its SHA-256, computed here, matches the descriptor;
//! the queue is first in, first out;
//! [`VerifyQueue::held_bytes`] counts every buffer the pipeline holds, so the torrent's
//! in-flight cap covers pieces waiting to be verified; fetching pauses while more than
//! [`MAX_VERIFY_BACKLOG`] bytes wait (hashing is behind).

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use crate::descriptor::PieceHash;
use crate::storage::{Storage, StorageError, hash_matches};
use crate::swarm::picker::PeerKey;

/// Pieces hashed and written at once.
pub const MAX_VERIFYING: usize = 2;
/// Bytes waiting to be hashed above which nothing more is requested.
pub const MAX_VERIFY_BACKLOG: u64 = 64 << 20;

/// A complete piece waiting to be verified and written.
#[derive(Debug)]
pub struct Received {
    /// The connection that sent it (struck if it is bad).
    pub key: PeerKey,
    pub piece: u32,
    pub data: Vec<u8>,
}

/// A piece verified (and if good, written): `Ok(true)` good and written, `Ok(false)` bad.
#[derive(Debug)]
pub struct Verified {
    pub key: PeerKey,
    pub piece: u32,
    pub result: Result<bool, StorageError>,
    /// The piece's buffer, for reuse.
    pub data: Vec<u8>,
}

/// The pieces waiting, and how many are being verified.
#[derive(Debug, Default)]
pub struct VerifyQueue {
    waiting: VecDeque<Received>,
    waiting_bytes: u64,
    verifying: usize,
}

impl VerifyQueue {
    pub fn push(&mut self, r: Received) {
        self.waiting_bytes += r.data.len() as u64;
        self.waiting.push_back(r);
    }

    /// The next piece to verify, if fewer than [`MAX_VERIFYING`] are being verified (it counts
    /// as being verified until [`VerifyQueue::finished`]).
    pub fn start_next(&mut self) -> Option<Received> {
        if self.verifying >= MAX_VERIFYING {
            return None;
        }
        let r = self.waiting.pop_front()?;
        self.waiting_bytes -= r.data.len() as u64;
        self.verifying += 1;
        Some(r)
    }

    /// A piece's verification ended.
    pub fn finished(&mut self) {
        self.verifying = self.verifying.saturating_sub(1);
    }

    /// Whether hashing is behind: fetching more would only pile up buffers.
    pub fn behind(&self) -> bool {
        self.waiting_bytes > MAX_VERIFY_BACKLOG
    }

    /// Bytes of piece buffers in the pipeline, counting each piece being verified as
    /// `piece_length` long.
    pub fn held_bytes(&self, piece_length: u64) -> u64 {
        self.waiting_bytes + self.verifying as u64 * piece_length
    }
}

/// Checks a piece against its hash and writes it if it matches (blocking: run it off the
/// executor).
pub fn verify_and_write(storage: &Storage, expected: &PieceHash, r: Received) -> Verified {
    let result = if hash_matches(&r.data, expected) {
        storage.write_piece(r.piece as usize, &r.data).map(|()| true)
    } else {
        Ok(false)
    };
    Verified { key: r.key, piece: r.piece, result, data: r.data }
}

/// Verifies `r` on a blocking thread and sends the result to `done` (the engine runs it as a
/// task of its own).
///
/// A result is always sent, a panic included (as an error that fails the torrent, naming the
/// bug): the engine counts pieces being verified until their result arrives, and a result
/// lost would keep that count up, and the piece marked as verifying, for good.
pub async fn run(storage: Arc<Storage>, expected: PieceHash, r: Received, done: async_channel::Sender<Verified>) {
    let (key, piece) = (r.key, r.piece);
    let verified = smol::unblock(move || {
        std::panic::catch_unwind(AssertUnwindSafe(|| verify_and_write(&storage, &expected, r))).unwrap_or_else(
            |payload| {
                let why = crate::tasks::panic_message(&*payload);
                let source = std::io::Error::other(format!("internal error: panicked ({why}); this is a bug in p2pd"));
                let context = format!("verifying piece {piece}");
                Verified { key, piece, result: Err(StorageError::Io { context, source }), data: Vec::new() }
            },
        )
    })
    .await;
    // The engine gone, nobody waits for the result.
    let _ = done.send(verified).await;
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;
    use crate::descriptor::{Content, ContentKind, FileEntry, RelPath};
    use crate::storage::PieceRead;

    fn received(piece: u32, len: usize) -> Received {
        Received { key: 1, piece, data: vec![piece as u8; len] }
    }

    #[test]
    fn pieces_are_verified_in_order_two_at_a_time() {
        let mut q = VerifyQueue::default();
        for piece in 0..4 {
            q.push(received(piece, 100));
        }
        assert_eq!(q.held_bytes(100), 400);
        assert_eq!(q.start_next().map(|r| r.piece), Some(0));
        assert_eq!(q.start_next().map(|r| r.piece), Some(1));
        assert!(q.start_next().is_none(), "at most {MAX_VERIFYING} at once");
        assert_eq!(q.held_bytes(100), 400, "pieces being verified still hold their buffers");
        q.finished();
        assert_eq!(q.held_bytes(100), 300);
        assert_eq!(q.start_next().map(|r| r.piece), Some(2));
        q.finished();
        q.finished();
        assert_eq!(q.start_next().map(|r| r.piece), Some(3));
        assert!(q.start_next().is_none());
    }

    #[test]
    fn fetching_pauses_while_hashing_is_behind() {
        let mut q = VerifyQueue::default();
        let piece = 16 << 20;
        for i in 0..(MAX_VERIFY_BACKLOG / piece as u64) as u32 {
            q.push(received(i, piece));
            assert!(!q.behind());
        }
        q.push(received(99, 1));
        assert!(q.behind());
        q.start_next();
        assert!(!q.behind());
    }

    #[test]
    fn only_a_piece_matching_its_hash_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![7u8; 1000];
        let hash = PieceHash(Sha256::digest(&data).into());
        let content = Content {
            kind: ContentKind::File,
            name: "f".into(),
            piece_length: 1000,
            files: vec![FileEntry::new(RelPath::root(), 2000)],
            empty_dirs: Vec::new(),
            pieces: vec![hash, hash],
            total_length: 2000,
        };
        let storage = Storage::open(dir.path(), &content).unwrap();
        storage.prepare_download().unwrap();
        let bad = Received { key: 3, piece: 0, data: vec![8u8; 1000] };
        let v = verify_and_write(&storage, &hash, bad);
        assert_eq!((v.key, v.piece, v.result.unwrap()), (3, 0, false));
        let mut buf = Vec::new();
        let read = storage.read_piece(0, &mut buf).unwrap();
        assert!(read == PieceRead::Missing || buf.iter().all(|&b| b == 0), "nothing was written");
        let good = Received { key: 3, piece: 0, data: data.clone() };
        assert!(verify_and_write(&storage, &hash, good).result.unwrap());
        assert_eq!(storage.read_piece(0, &mut buf).unwrap(), PieceRead::Complete);
        assert_eq!(buf, data);
    }
}
