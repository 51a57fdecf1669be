//! One peer connection: a reader task and a writer task around a TCP stream.
//!
//! - [`dial`]: connecting and exchanging handshakes.
//! - [`peer_state`] (pure): what the connection knows of its peer and the rules applied to what
//!   it sends — the pieces being fetched and their buffers, request and bitfield checks, the
//!   first-copy declines, the `peers` rate.
//! - [`queues`]: the writer's outbox and the reader's instructions (pure but for the bells).
//! - [`reader`]: the **reader** task reads each frame, has [`peer_state`] check it, reads a
//!   block's data straight into its piece buffer (no copy), hands complete pieces to the engine,
//!   answers requests it will not serve with `reject`, and closes the connection with a reason
//!   on any protocol violation.
//! - [`writer`]: the **writer** task sends control frames as soon as they are queued and serves
//!   the peer's requests one block at a time in between (reading from storage, within the
//!   upload rate limits).
//! - [`pool`]: piece buffers kept for reuse.
//!
//! The engine owns every decision (what to fetch, whom to choke); it reads counters from
//! [`ConnStats`].
//!
//! # Bounds: what one peer can make us hold
//! Every queue between the peer, the two tasks and the engine is bounded, and a peer that
//! fills one is disconnected rather than buffered (docs/PROTOCOL.md, "Limits"):
//! - the [`Outbox`] the writer drains holds at most [`MAX_CONTROL_BYTES`] of encoded control
//!   frames (rejects, haves, our requests, ...) and [`MAX_QUEUED_UPLOADS`] requests to serve.
//!   A peer that sends requests without reading our answers fills it: closed at once.
//! - A peer that does not drain its socket while we have something to send it for
//!   [`SEND_STALL`] is closed by the engine (the writer stamps its progress in [`ConnStats`]).
//! - Events to the engine go through the torrent's bounded channel; the reader waits for room,
//!   so a peer that sends faster than the engine handles its messages is simply read slower
//!   (TCP back-pressure), never buffered.
//! - Per message, the work is O(1): `interested`/`not interested` reach the engine only when
//!   they change something, a second bitfield is a violation, a duplicate `have` is dropped
//!   by the engine in constant time; `peers` (at most 50 addresses) is allowed 3 back to back
//!   and then one per [`MIN_EXCHANGE_SPACING`], and only on a version-2 connection.
//! - Piece buffers exist only for pieces we asked this peer for: the engine's in-flight caps
//!   bound them (`limits.max_in_flight_per_peer` and `_per_torrent`).
//!
//! So besides piece buffers a connection holds at most [`MAX_CONNECTION_MEMORY`] bytes.

mod dial;
mod peer_state;
mod pool;
mod queues;
mod reader;
mod writer;

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use smol::Async;

pub use dial::{ConnectError, HandshakeError, connect, read_handshake};
pub use peer_state::Violation;
pub use pool::{BufferPool, POOL_BYTES};
pub use writer::SendError;

use super::first_copies::FirstCopies;
use super::limiter::RateLimit;
use super::picker::PeerKey;
use super::socket_reader::{self, SocketReader};
use super::wire::{self, BlockRef, FRAME_HEADER, Message};
use crate::bitfield::Bitfield;
use crate::node_id::NodeId;
use crate::storage::{Layout, Storage};
use peer_state::PeerState;
use queues::{Outbox, ReaderCmd, ReaderQueue, WriterQueue};
use reader::Reader;
use writer::Writer;

/// A peer that sends nothing for this long is gone (keep-alives come every 30 s). Enforced by
/// the engine's tick: the read path itself has no timers (each one costs the reactor a wake-up).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
pub const KEEPALIVE_EVERY: Duration = Duration::from_secs(30);
/// Time allowed for connecting and exchanging handshakes.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A peer that takes nothing from its socket for this long while we have data for it is
/// closed (by the engine's tick). Keep-alives alone make a dead link show here well within
/// [`IDLE_TIMEOUT`].
pub const SEND_STALL: Duration = Duration::from_secs(30);
/// Most requests a peer may have queued with us: 256 MiB in 128 KiB blocks, the largest
/// `limits.max_in_flight_per_peer` a node may use. A peer that queues more is disconnected.
pub const MAX_QUEUED_UPLOADS: usize = 2048;
/// Most bytes of encoded control frames waiting for the writer. The writer sends them before
/// each block, so an honest peer never has more than one block's worth of our haves and
/// answers waiting; a peer that sends requests without reading our rejects fills it.
pub const MAX_CONTROL_BYTES: usize = 512 << 10;
/// What a connection may hold besides the piece buffers of pieces we asked it for: its outbox
/// (control bytes, and the writer's copy of them being sent: twice [`MAX_CONTROL_BYTES`]; the
/// request queue), the writer's block buffer, the reader's frame buffers (a bitfield, a block
/// we no longer want) and read-ahead buffer, its share of the torrent's event queue (one
/// bitfield), and the engine's record of the addresses it told the peer about (peer exchange).
pub const MAX_CONNECTION_MEMORY: usize = 2 * MAX_CONTROL_BYTES
    + MAX_QUEUED_UPLOADS * std::mem::size_of::<BlockRef>()
    + 2 * (FRAME_HEADER + wire::MAX_BODY)
    + 2 * wire::MAX_BITFIELD
    + socket_reader::READ_BUFFER
    + super::exchange::MAX_REMEMBERED * std::mem::size_of::<SocketAddr>();

/// Counters and health marks the engine reads.
#[derive(Debug)]
pub struct ConnStats {
    pub downloaded: AtomicU64,
    pub uploaded: AtomicU64,
    /// Nanoseconds after `epoch` at which the last block arrived.
    last_block: AtomicU64,
    /// Nanoseconds after `epoch` at which the last frame of any kind arrived.
    last_frame: AtomicU64,
    /// 1 + nanoseconds after `epoch` at which the writer, with data to send, last made progress
    /// on the socket; 0 while it has nothing to send (or waits on a rate limit).
    sending_since: AtomicU64,
    /// The engine asked for more than the connection may queue: it is closed at the next tick.
    overflowed: AtomicBool,
    epoch: Instant,
}

impl ConnStats {
    fn new() -> ConnStats {
        ConnStats {
            downloaded: AtomicU64::new(0),
            uploaded: AtomicU64::new(0),
            last_block: AtomicU64::new(0),
            last_frame: AtomicU64::new(0),
            sending_since: AtomicU64::new(0),
            overflowed: AtomicBool::new(false),
            epoch: Instant::now(),
        }
    }

    fn nanos(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn block_arrived(&self) {
        self.last_block.store(self.nanos(), Ordering::Relaxed);
    }

    /// When the last block arrived (or the connection started).
    pub fn last_block(&self) -> Instant {
        self.epoch + Duration::from_nanos(self.last_block.load(Ordering::Relaxed))
    }

    fn frame_arrived(&self) {
        self.last_frame.store(self.nanos(), Ordering::Relaxed);
    }

    /// When anything last arrived (or the connection started).
    pub fn last_frame(&self) -> Instant {
        self.epoch + Duration::from_nanos(self.last_frame.load(Ordering::Relaxed))
    }

    /// The writer has data for the socket and has just made progress (or starts to wait).
    fn send_progress(&self) {
        self.sending_since.store(1 + self.nanos(), Ordering::Relaxed);
    }

    /// The writer has nothing more for the socket.
    fn send_done(&self) {
        self.sending_since.store(0, Ordering::Relaxed);
    }

    /// How long the writer has waited on the socket without progress, if it is waiting.
    pub fn send_stalled_for(&self, now: Instant) -> Option<Duration> {
        let since = self.sending_since.load(Ordering::Relaxed);
        (since != 0).then(|| now.saturating_duration_since(self.epoch + Duration::from_nanos(since - 1)))
    }

    /// Whether the engine overfilled the connection's queues (it must be closed).
    pub fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Relaxed)
    }
}

/// What a connection tells the engine.
#[derive(Debug)]
pub enum ConnEvent {
    Bitfield(PeerKey, Bitfield),
    Have(PeerKey, u32),
    Choke(PeerKey),
    Unchoke(PeerKey),
    /// The peer became interested (sent only on a change).
    Interested(PeerKey),
    /// The peer is no longer interested (sent only on a change).
    NotInterested(PeerKey),
    /// A complete piece, not yet verified.
    Piece {
        key: PeerKey,
        piece: u32,
        data: Vec<u8>,
    },
    /// The peer will not send this piece (rejected, or choked us).
    Released {
        key: PeerKey,
        piece: u32,
    },
    /// The reader dropped this piece as the engine asked (its buffer is free), or had nothing
    /// of it left.
    Dropped {
        key: PeerKey,
        piece: u32,
    },
    Closed {
        key: PeerKey,
        reason: String,
        misbehaved: bool,
    },
    /// Members the peer is connected to (peer exchange), at most
    /// [`wire::MAX_EXCHANGED_PEERS`], at most one message per [`MIN_EXCHANGE_SPACING`].
    Peers {
        key: PeerKey,
        addrs: Vec<SocketAddr>,
    },
}

/// How often a node sends `peers` on one connection, at most (docs/PROTOCOL.md).
pub const EXCHANGE_INTERVAL: Duration = Duration::from_secs(5);
/// `peers` messages a peer may send back to back (frames queued behind a slow block arrive
/// together), then one per [`MIN_EXCHANGE_SPACING`]; beyond that it is cut off.
pub const EXCHANGE_BURST: f64 = 3.0;
/// See [`EXCHANGE_BURST`].
pub const MIN_EXCHANGE_SPACING: Duration = Duration::from_secs(2);

/// Everything a connection needs from its torrent.
#[derive(Clone)]
pub struct ConnContext {
    pub pool: Arc<BufferPool>,
    pub storage: Arc<Storage>,
    pub have: Arc<RwLock<Bitfield>>,
    pub layout: Layout,
    /// The torrent's event channel (bounded: a reader waits for room).
    pub events: async_channel::Sender<ConnEvent>,
    /// Upload limits (global, this torrent) and download limits.
    pub upload: [Arc<RateLimit>; 2],
    pub download: [Arc<RateLimit>; 2],
    pub first_copies: Arc<FirstCopies>,
    /// The daemon-wide payload counters.
    pub counters: Arc<crate::swarm::counters::WireCounters>,
}

/// The engine's side of a connection. Dropping it stops both tasks.
pub struct Connection {
    pub key: PeerKey,
    pub node_id: NodeId,
    /// The peer's address: IP and its announced listen port.
    pub addr: SocketAddr,
    pub outgoing: bool,
    pub stats: Arc<ConnStats>,
    writer: Arc<WriterQueue>,
    reader: Arc<ReaderQueue>,
    first_copies: Arc<FirstCopies>,
    _tasks: [smol::Task<()>; 2],
}

impl Connection {
    fn command(&self, cmd: ReaderCmd) {
        if !self.reader.push(cmd) {
            self.stats.overflowed.store(true, Ordering::Relaxed);
        }
    }

    /// Asks the peer for every block of `piece`.
    pub fn fetch(&self, piece: u32) {
        self.command(ReaderCmd::Fetch { piece });
    }

    pub fn drop_piece(&self, piece: u32) {
        self.command(ReaderCmd::Drop { piece });
    }

    /// Queues a control frame. A peer that has left [`MAX_CONTROL_BYTES`] of them unread is
    /// marked for closing instead ([`ConnStats::overflowed`]).
    pub fn send(&self, msg: Message) {
        self.send_all(std::slice::from_ref(&msg));
    }

    /// Queues control frames to leave together (one wake-up of the writer).
    pub fn send_all(&self, msgs: &[Message]) {
        let mut outbox = self.writer.lock();
        if msgs.iter().any(|m| outbox.push(m).is_err()) {
            self.stats.overflowed.store(true, Ordering::Relaxed);
        }
        drop(outbox);
        self.writer.ring();
    }

    /// Chokes or unchokes the peer; a choke discards its queued requests.
    pub fn set_choking(&self, choke: bool) {
        let Some((sent, discarded)) = self.writer.lock().set_choking(choke) else { return };
        if sent.is_err() {
            self.stats.overflowed.store(true, Ordering::Relaxed);
        }
        for r in discarded {
            self.first_copies.release(r.piece as usize, self.key);
        }
        self.writer.ring();
    }

    pub fn is_choking(&self) -> bool {
        self.writer.lock().choking()
    }
}

/// Starts the tasks of an established connection (handshakes done).
#[allow(clippy::too_many_arguments)]
pub fn start(
    stream: Async<TcpStream>,
    key: PeerKey,
    node_id: NodeId,
    addr: SocketAddr,
    outgoing: bool,
    exchange: bool,
    ctx: ConnContext,
    executor: &smol::Executor<'static>,
) -> Connection {
    dial::limit_unsent(&stream);
    let stream = Arc::new(stream);
    let stats = Arc::new(ConnStats::new());
    // Our bitfield goes first.
    let bits = ctx.have.read().unwrap_or_else(|p| p.into_inner()).as_bytes().to_vec();
    let writer_queue = Arc::new(WriterQueue::new(Outbox::new(&Message::Bitfield(bits))));
    writer_queue.ring();
    let reader_queue = Arc::new(ReaderQueue::new());
    let reader = Reader {
        socket: SocketReader::new(stream.clone()),
        key,
        ctx: ctx.clone(),
        queue: reader_queue.clone(),
        writer: writer_queue.clone(),
        stats: stats.clone(),
        peer: PeerState::new(ctx.layout.clone(), exchange, Instant::now()),
        sink: Vec::new(),
    };
    let writer = Writer { stream, key, ctx: ctx.clone(), queue: writer_queue.clone(), stats: stats.clone() };
    let events = ctx.events.clone();
    let events2 = ctx.events.clone();
    let reader_task = executor.spawn(async move {
        let (reason, misbehaved) = match reader.run().await {
            Ok(()) => ("closed".to_string(), false),
            Err(e) => (e.to_string(), matches!(e, reader::End::Misbehaved(_))),
        };
        let _ = events.send(ConnEvent::Closed { key, reason, misbehaved }).await;
    });
    let writer_task = executor.spawn(async move {
        if let Err(e) = writer.run().await {
            let _ = events2.send(ConnEvent::Closed { key, reason: e.to_string(), misbehaved: false }).await;
        }
    });
    Connection {
        key,
        node_id,
        addr,
        outgoing,
        stats,
        writer: writer_queue,
        reader: reader_queue,
        first_copies: ctx.first_copies,
        _tasks: [reader_task, writer_task],
    }
}
