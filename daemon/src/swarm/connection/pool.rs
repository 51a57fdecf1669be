//! Piece buffers kept for reuse while a torrent downloads.
//!
//! Invariant: the pool never holds more than [`POOL_BYTES`] of buffers, and nothing once the
//! torrent is complete ([`BufferPool::close`]).

use std::sync::atomic::{AtomicBool, Ordering};

/// Piece buffers for reuse: fresh allocations of whole pieces cost a page fault per page.
#[derive(Default)]
pub struct BufferPool {
    free: std::sync::Mutex<Vec<Vec<u8>>>,
    /// Set once the torrent is complete: nothing is downloaded any more, so nothing is kept.
    closed: AtomicBool,
}

/// Buffers kept for reuse while a torrent downloads (at most this many bytes in all).
pub const POOL_BYTES: usize = 128 << 20;

impl BufferPool {
    /// A buffer of `len` bytes to receive a piece into. A reused one keeps the bytes of the
    /// piece it last held (clearing 256 KiB per piece was 2 % of the daemon's CPU): its user
    /// overwrites every byte before reading any — a piece is handed on (and then hashed) only
    /// once each of its blocks has arrived.
    pub fn take(&self, len: usize) -> Vec<u8> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        let mut buf = match free.iter().position(|b| b.capacity() >= len) {
            Some(i) => free.swap_remove(i),
            None => Vec::with_capacity(len),
        };
        drop(free);
        if buf.len() >= len {
            buf.truncate(len);
        } else {
            buf.resize(len, 0);
        }
        buf
    }

    /// Returns a buffer for reuse.
    pub fn give(&self, buf: Vec<u8>) {
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        let held: usize = free.iter().map(Vec::capacity).sum();
        if held + buf.capacity() <= POOL_BYTES {
            free.push(buf);
        }
    }

    /// Frees every buffer and keeps none from now on (the torrent completed).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        std::mem::take(&mut *self.free.lock().unwrap_or_else(|p| p.into_inner()));
    }
}
