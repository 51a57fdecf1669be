//! The writing side of a connection: control frames as soon as they are queued, and the
//! peer's requests served one block at a time in between, within the upload rate limits
//! (zero copy from the page cache when a block lies in one file).
//!
//! Invariants: every byte goes out through [`Writer::write`] or the block path, which stamp
//! progress in [`ConnStats`] (the engine's stall check reads it); a piece's last block sent
//! completes its first copy ([`crate::swarm::first_copies`]), and a block that cannot be read
//! releases it and is rejected instead.

use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_lite::AsyncWriteExt;
use smol::Async;

use super::queues::WriterQueue;
use super::{ConnContext, ConnStats};
use crate::storage::PieceRead;
use crate::swarm::picker::PeerKey;
use crate::swarm::wire::{self, BlockRef, FRAME_HEADER, MAX_BLOCK, Message};

/// Why sending to a peer stopped.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("connection closed while sending")]
    Closed,
    #[error("piece {0} vanished from disk while being sent")]
    Vanished(u32),
}

pub(super) struct Writer {
    pub(super) stream: Arc<Async<TcpStream>>,
    pub(super) key: PeerKey,
    pub(super) ctx: ConnContext,
    pub(super) queue: Arc<WriterQueue>,
    pub(super) stats: Arc<ConnStats>,
}

impl Writer {
    pub(super) async fn run(self) -> Result<(), SendError> {
        let mut control: Vec<u8> = Vec::new();
        let mut block: Vec<u8> = Vec::with_capacity(FRAME_HEADER + 8 + MAX_BLOCK as usize);
        loop {
            let upload = self.queue.lock().take(&mut control);
            if !control.is_empty() {
                self.write(&control).await?;
                control.clear();
                // A burst (a bitfield, a choke's rejects) need not stay allocated.
                if control.capacity() > 64 << 10 {
                    control = Vec::new();
                }
            } else if upload.is_none() {
                self.queue.wait().await;
                continue;
            }
            if let Some(r) = upload {
                self.serve(r, &mut block).await?;
            }
        }
    }

    /// Writes `bytes`, stamping progress for the engine's stall check.
    async fn write(&self, mut bytes: &[u8]) -> Result<(), SendError> {
        self.stats.send_progress();
        while !bytes.is_empty() {
            let n = (&*self.stream).write(bytes).await?;
            if n == 0 {
                return Err(SendError::Closed);
            }
            bytes = &bytes[n..];
            self.stats.send_progress();
        }
        self.stats.send_done();
        Ok(())
    }

    async fn serve(&self, r: BlockRef, block: &mut Vec<u8>) -> Result<(), SendError> {
        for limit in &self.ctx.upload {
            limit.acquire(r.length as usize).await;
        }
        let start = self.ctx.layout.piece_range(r.piece as usize).start + r.offset as u64;
        let len = r.length as usize;
        // Zero copy when the block lies in one file: the header, then the data straight from
        // the page cache to the socket.
        if let Some((file, file_offset)) = self.ctx.storage.file_range(start, len as u64) {
            let header = wire::block_header(r.piece, r.offset, len);
            self.stats.send_progress();
            self.send_more(&header).await?;
            let mut offset = file_offset as i64;
            let mut left = len;
            while left > 0 {
                let sent = self
                    .stream
                    .write_with(|s| {
                        nix::sys::sendfile::sendfile64(s, &*file, Some(&mut offset), left)
                            .map_err(|e| std::io::Error::from_raw_os_error(e as i32))
                    })
                    .await?;
                if sent == 0 {
                    // The file shrank under us; the frame cannot be completed.
                    return Err(SendError::Vanished(r.piece));
                }
                left -= sent;
                self.stats.send_progress();
            }
            self.stats.send_done();
            self.uploaded(r);
            return Ok(());
        }
        block.clear();
        block.extend_from_slice(&wire::block_header(r.piece, r.offset, len));
        let head = block.len();
        block.resize(head + len, 0);
        // Page-cache reads are fast; this runs inline on purpose (see ARCHITECTURE.md).
        match self.ctx.storage.read_at(start, &mut block[head..]) {
            Ok(PieceRead::Complete) => {}
            Ok(PieceRead::Missing) | Err(_) => {
                self.ctx.first_copies.release(r.piece as usize, self.key);
                return self.write(&wire::encode(&Message::Reject(r))).await;
            }
        }
        self.write(block).await?;
        self.uploaded(r);
        Ok(())
    }

    /// Counts a block sent; its piece's last block completes a first copy.
    fn uploaded(&self, r: BlockRef) {
        self.stats.uploaded.fetch_add(u64::from(r.length), Ordering::Relaxed);
        self.ctx.counters.sent(u64::from(r.length));
        let piece = r.piece as usize;
        if u64::from(r.offset) + u64::from(r.length) == self.ctx.layout.piece_len(piece) {
            self.ctx.first_copies.sent(piece, self.key);
        }
    }

    /// Sends `bytes` flagged as "more follows", so that they leave with what is sent next.
    async fn send_more(&self, bytes: &[u8]) -> Result<(), SendError> {
        use std::os::fd::AsRawFd;
        let mut sent = 0;
        while sent < bytes.len() {
            sent += self
                .stream
                .write_with(|s| {
                    let rest = &bytes[sent..];
                    // SAFETY: `rest` is a valid, initialised buffer of `rest.len()` bytes for the
                    // duration of the call, and the descriptor belongs to `s`.
                    let n = unsafe { libc::send(s.as_raw_fd(), rest.as_ptr().cast(), rest.len(), libc::MSG_MORE) };
                    if n < 0 { Err(std::io::Error::last_os_error()) } else { Ok(n as usize) }
                })
                .await?;
            self.stats.send_progress();
        }
        Ok(())
    }
}
