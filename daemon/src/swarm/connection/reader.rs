//! The reading side of a connection: frames from the peer, checked by [`PeerState`] and acted
//! on, and the engine's instructions (fetch a piece, drop one) carried out in between.
//!
//! Invariants: a block's data is read straight into its piece buffer (no copy) or, if
//! [`PeerState`] does not expect it, into a scratch buffer and dropped; events reach the engine
//! through the torrent's bounded queue and the reader waits for room (a peer that sends faster
//! than the engine handles its messages is read slower, never buffered); the read path has no
//! timers (the engine's tick enforces idleness).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use futures_lite::future;

use super::peer_state::{PeerState, Violation};
use super::queues::{Full, ReaderCmd, ReaderQueue, WriterQueue};
use super::{ConnContext, ConnEvent, ConnStats};
use crate::swarm::limiter::RateLimit;
use crate::swarm::picker::PeerKey;
use crate::swarm::socket_reader::SocketReader;
use crate::swarm::wire::{self, BLOCK_HEAD, BlockRef, FRAME_HEADER, Kind, Message};

/// Why a reader stopped.
#[derive(Debug, thiserror::Error)]
pub(super) enum End {
    #[error("peer closed the connection")]
    PeerClosed,
    #[error("{0}")]
    Io(std::io::Error),
    #[error("torrent stopped")]
    TorrentStopped,
    /// The peer broke the protocol.
    #[error("{0}")]
    Misbehaved(#[from] Violation),
}

impl From<std::io::Error> for End {
    fn from(e: std::io::Error) -> End {
        if e.kind() == std::io::ErrorKind::UnexpectedEof { End::PeerClosed } else { End::Io(e) }
    }
}

impl From<Full> for End {
    fn from(full: Full) -> End {
        End::Misbehaved(match full {
            Full::Control => Violation::NotReading,
            Full::Uploads => Violation::TooManyRequests,
        })
    }
}

pub(super) struct Reader {
    pub(super) socket: SocketReader,
    pub(super) key: PeerKey,
    pub(super) ctx: ConnContext,
    pub(super) queue: Arc<ReaderQueue>,
    pub(super) writer: Arc<WriterQueue>,
    pub(super) stats: Arc<ConnStats>,
    pub(super) peer: PeerState,
    /// Where blocks we no longer want are read to and dropped; reused.
    pub(super) sink: Vec<u8>,
}

enum Wake {
    Readable(std::io::Result<()>),
    Command,
}

/// Frames read back to back before the reader lets the other tasks run. Reading while data
/// is waiting never waits, so without a turn a peer that keeps the socket full (a flood of
/// keep-alives, say) would hold the one network thread, and with it every torrent, discovery
/// and the control socket.
const FRAMES_PER_TURN: u32 = 32;

impl Reader {
    pub(super) async fn run(mut self) -> Result<(), End> {
        let mut frames_this_turn = 0;
        loop {
            self.commands().await?;
            // Read at once while data is waiting; only an empty socket is worth a trip through
            // the reactor.
            if self.socket.ready()? {
                let mut header = [0u8; FRAME_HEADER];
                self.socket.read_exact(&mut header).await?;
                self.on_frame(header).await?;
                frames_this_turn += 1;
                if frames_this_turn >= FRAMES_PER_TURN {
                    frames_this_turn = 0;
                    future::yield_now().await;
                }
                continue;
            }
            frames_this_turn = 0;
            let queue = self.queue.clone();
            let socket = &mut self.socket;
            let wake = future::or(async { Wake::Readable(socket.readable(FRAME_HEADER).await) }, async {
                queue.wait().await;
                Wake::Command
            })
            .await;
            // Readiness can be stale (the direct read above bypasses the reactor's
            // bookkeeping): try the read again rather than wait inside a frame, where commands
            // — our next requests — would sit until the peer sent something.
            if let Wake::Readable(Err(e)) = wake {
                return Err(e.into());
            }
        }
    }

    /// Carries out the engine's instructions.
    async fn commands(&mut self) -> Result<(), End> {
        for cmd in self.queue.take() {
            match cmd {
                ReaderCmd::Fetch { piece } => {
                    let buffer = self.ctx.pool.take(self.ctx.layout.piece_len(piece as usize) as usize);
                    match self.peer.fetch(piece, buffer) {
                        Ok(requests) => self.send(requests.into_iter().map(Message::Request))?,
                        Err(buffer) => self.ctx.pool.give(buffer),
                    }
                }
                ReaderCmd::Drop { piece } => {
                    if let Some((buffer, cancels)) = self.peer.drop_piece(piece) {
                        self.ctx.pool.give(buffer);
                        self.send(cancels.into_iter().map(Message::Cancel))?;
                    }
                    self.event(ConnEvent::Dropped { key: self.key, piece }).await?;
                }
            }
        }
        Ok(())
    }

    /// Queues control frames for the writer.
    fn send(&self, msgs: impl IntoIterator<Item = Message>) -> Result<(), End> {
        let mut outbox = self.writer.lock();
        for m in msgs {
            outbox.push(&m)?;
        }
        drop(outbox);
        self.writer.ring();
        Ok(())
    }

    /// Hands the engine an event, waiting for room in its queue (back-pressure: meanwhile
    /// this peer is not read).
    async fn event(&self, e: ConnEvent) -> Result<(), End> {
        self.ctx.events.send(e).await.map_err(|_| End::TorrentStopped)
    }

    /// Reads the rest of the frame whose header is `h`, and acts on it.
    async fn on_frame(&mut self, h: [u8; FRAME_HEADER]) -> Result<(), End> {
        self.stats.frame_arrived();
        let header = wire::parse_header(h).map_err(Violation::from)?;
        if header.kind == Kind::Block {
            return self.read_block(header.body_len).await;
        }
        let mut body = vec![0u8; header.body_len];
        self.socket.read_exact(&mut body).await?;
        let key = self.key;
        match wire::parse_body(header, &body) {
            Message::KeepAlive => {}
            Message::Bitfield(bytes) => {
                let bits = self.peer.bitfield(&bytes)?;
                self.event(ConnEvent::Bitfield(key, bits)).await?;
            }
            Message::Have(piece) => {
                self.peer.have(piece)?;
                self.event(ConnEvent::Have(key, piece)).await?;
            }
            Message::Request(r) => self.on_request(r)?,
            Message::Cancel(r) => {
                // Cancelled: the peer got the piece elsewhere or gave up on us for it. A block
                // already on its way keeps the piece's first copy this connection's.
                if self.writer.lock().cancel(r) {
                    self.ctx.first_copies.release(r.piece as usize, key);
                }
            }
            Message::Reject(r) => {
                if let Some(buffer) = self.peer.rejected(r.piece) {
                    self.ctx.pool.give(buffer);
                    self.event(ConnEvent::Released { key, piece: r.piece }).await?;
                }
            }
            Message::Choke => {
                // A choke discards our outstanding requests.
                for (piece, buffer) in self.peer.choked() {
                    self.ctx.pool.give(buffer);
                    self.event(ConnEvent::Released { key, piece }).await?;
                }
                self.event(ConnEvent::Choke(key)).await?;
            }
            Message::Unchoke => self.event(ConnEvent::Unchoke(key)).await?,
            Message::Interested => {
                if self.peer.interested(true) {
                    self.event(ConnEvent::Interested(key)).await?;
                }
            }
            Message::NotInterested => {
                if self.peer.interested(false) {
                    self.event(ConnEvent::NotInterested(key)).await?;
                }
            }
            Message::Peers(addrs) => {
                self.peer.peers_message(Instant::now())?;
                self.event(ConnEvent::Peers { key, addrs }).await?;
            }
            Message::Block { .. } => unreachable!("blocks are read by read_block"),
        }
        Ok(())
    }

    fn on_request(&mut self, r: BlockRef) -> Result<(), End> {
        self.peer.check_request(r)?;
        let have = self.ctx.have.read().unwrap_or_else(|p| p.into_inner()).get(r.piece as usize);
        let first_copies = &self.ctx.first_copies;
        let key = self.key;
        let serve = have
            && !self.writer.lock().choking()
            && !self.peer.decline(r, || first_copies.claim(r.piece as usize, key, Instant::now()));
        let queued = self.writer.lock().answer(r, serve);
        if serve && queued != Ok(true) {
            self.ctx.first_copies.release(r.piece as usize, self.key);
        }
        queued?;
        self.writer.ring();
        Ok(())
    }

    async fn read_block(&mut self, body_len: usize) -> Result<(), End> {
        let mut head = [0u8; BLOCK_HEAD];
        self.socket.read_exact(&mut head).await?;
        let (piece, offset) = wire::parse_block_head(head);
        let len = body_len - BLOCK_HEAD;
        let Some(slot) = self.peer.block_slot(piece, offset, len) else {
            // A block we did not ask for (or no longer want, after a cancel): read and drop it.
            // Cancelled requests make this legitimate, so it is not a violation by itself.
            let mut sink = std::mem::take(&mut self.sink);
            sink.resize(len, 0);
            let result = read_limited(&mut self.socket, &self.ctx.download, &mut sink).await;
            self.sink = sink;
            return result;
        };
        read_limited(&mut self.socket, &self.ctx.download, slot).await?;
        self.stats.downloaded.fetch_add(len as u64, Ordering::Relaxed);
        self.ctx.counters.received(len as u64);
        self.stats.block_arrived();
        if let Some(done) = self.peer.block_read(piece, offset) {
            self.event(ConnEvent::Piece { key: self.key, piece: done.piece, data: done.data }).await?;
        }
        Ok(())
    }
}

/// Reads exactly `buf.len()` bytes within the download limits. Under a limit the bytes are
/// taken [`RATE_CHUNK`] at a time, each after its tokens: waiting for a whole block's tokens
/// first would leave the socket undrained for a block's worth of time — over
/// [`super::SEND_STALL`] for a block at under 4.4 kB/s, after which the sending node cuts us
/// off.
async fn read_limited(socket: &mut SocketReader, limits: &[Arc<RateLimit>; 2], buf: &mut [u8]) -> Result<(), End> {
    if limits.iter().all(|l| !l.is_limited()) {
        return Ok(socket.read_exact(buf).await?);
    }
    for chunk in buf.chunks_mut(RATE_CHUNK) {
        for limit in limits {
            limit.acquire(chunk.len()).await;
        }
        socket.read_exact(chunk).await?;
    }
    Ok(())
}

/// Bytes read per download-limit grant.
const RATE_CHUNK: usize = 16 << 10;
