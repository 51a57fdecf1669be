//! One peer connection: a reader task and a writer task around a TCP stream.
//!
//! - The **reader** owns the buffers of the pieces being fetched from this peer: it reads each
//!   block's data straight into its piece buffer (no copy), and hands a complete piece to the
//!   engine. It validates everything the peer sends against the torrent's geometry before using
//!   it, answers requests it will not serve with `reject`, and closes the connection with a
//!   reason on any protocol violation.
//! - The **writer** sends control frames as soon as they are queued and serves the peer's
//!   requests one block at a time in between (reading from storage, within the upload rate
//!   limits).
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

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt, future};
use smol::Async;

use sha2::{Digest, Sha256};

use super::first_copies::{Claim, FirstCopies};
use super::limiter::RateLimit;
use super::picker::PeerKey;
use super::socket_reader::{self, SocketReader};
use super::wire::{self, BLOCK, BlockRef, FRAME_HEADER, HANDSHAKE_LEN, Handshake, Kind, MAX_BLOCK, Message};

use crate::bitfield::Bitfield;
use crate::node_id::NodeId;
use crate::storage::{Layout, PieceRead, Storage};

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
    /// A complete piece, not yet verified; `digest` is its SHA-256 when the blocks arrived in
    /// order and were hashed on the way in.
    Piece {
        key: PeerKey,
        piece: u32,
        data: Vec<u8>,
        digest: Option<[u8; 32]>,
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

/// Instructions to the reader.
#[derive(Debug)]
enum ReaderCmd {
    /// Fetch a piece: allocate its buffer and request all its blocks.
    Fetch { piece: u32, length: u32 },
    /// Stop fetching a piece (cancel what is outstanding).
    Drop { piece: u32 },
}

/// Most instructions waiting for the reader. The engine keeps far fewer pieces in flight with
/// one peer (one instruction to fetch each, one to drop it); more means the reader is stuck,
/// and the connection is closed.
const MAX_READER_COMMANDS: usize = 8192;

/// Everything queued for the writer, behind one short lock shared by the engine, the reader
/// and the writer (never held across an await or I/O).
#[derive(Debug)]
struct Outbox {
    /// Encoded control frames, sent before the next block. At most [`MAX_CONTROL_BYTES`].
    control: Vec<u8>,
    /// The peer's requests we will serve, in order. At most [`MAX_QUEUED_UPLOADS`].
    uploads: VecDeque<BlockRef>,
    /// Whether we refuse to serve the peer. Changed only together with `uploads` (a choke
    /// discards the queue), so a request is never queued behind the choke that refused it.
    choking: bool,
}

/// Why a frame could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Full {
    Control,
    Uploads,
}

impl Outbox {
    fn push(&mut self, msg: &Message) -> Result<(), Full> {
        let frame = wire::encode(msg);
        if self.control.len() + frame.len() > MAX_CONTROL_BYTES {
            return Err(Full::Control);
        }
        self.control.extend_from_slice(&frame);
        Ok(())
    }
}

/// The writer's queue, and the bell that wakes it.
struct WriterQueue {
    outbox: std::sync::Mutex<Outbox>,
    /// Holds one `()` when the writer should look at the outbox (a ring while one is pending
    /// is a no-op). Never closed (both ends live here): the tasks end when the engine drops
    /// the [`Connection`], which cancels them.
    bell: (async_channel::Sender<()>, async_channel::Receiver<()>),
}

impl WriterQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ring(&self) {
        let _ = self.bell.0.try_send(());
    }
}

/// The reader's instructions from the engine, and the bell that wakes it.
struct ReaderQueue {
    commands: std::sync::Mutex<VecDeque<ReaderCmd>>,
    bell: (async_channel::Sender<()>, async_channel::Receiver<()>),
}

impl ReaderQueue {
    fn take(&self) -> VecDeque<ReaderCmd> {
        std::mem::take(&mut *self.commands.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

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
    /// overwrites every byte before reading any — a piece is hashed and handed on only once
    /// each of its blocks has arrived.
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
        let mut commands = self.reader.commands.lock().unwrap_or_else(|p| p.into_inner());
        if commands.len() >= MAX_READER_COMMANDS {
            self.stats.overflowed.store(true, Ordering::Relaxed);
            return;
        }
        commands.push_back(cmd);
        drop(commands);
        let _ = self.reader.bell.0.try_send(());
    }

    pub fn fetch(&self, piece: u32, length: u32) {
        self.command(ReaderCmd::Fetch { piece, length });
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
        let mut outbox = self.writer.lock();
        if outbox.choking == choke {
            return;
        }
        outbox.choking = choke;
        let msg = if choke { Message::Choke } else { Message::Unchoke };
        if outbox.push(&msg).is_err() {
            self.stats.overflowed.store(true, Ordering::Relaxed);
        }
        let discarded = if choke { std::mem::take(&mut outbox.uploads) } else { VecDeque::new() };
        drop(outbox);
        for r in discarded {
            self.first_copies.release(r.piece as usize, self.key);
        }
        self.writer.ring();
    }

    pub fn is_choking(&self) -> bool {
        self.writer.lock().choking
    }
}

/// Why a peer's handshake was not read.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Invalid(#[from] wire::WireError),
}

/// Why a connection this node dialled ended before the handshakes were exchanged.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("handshake timed out")]
    TimedOut,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Handshake(#[from] HandshakeError),
}

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

/// Connects to `addr` from `local` (the address this node listens on, when it names one: the
/// peer then sees the connection come from the address discovery knows this node by), and
/// exchanges handshakes; returns the stream and the peer's handshake.
pub async fn connect(
    addr: SocketAddr,
    local: Option<std::net::IpAddr>,
    ours: Handshake,
) -> Result<(Async<TcpStream>, Handshake), ConnectError> {
    let attempt = async {
        let mut stream = match local.filter(|ip| ip.is_ipv4() == addr.is_ipv4()) {
            Some(ip) => dial_from(ip, addr).await?,
            None => Async::<TcpStream>::connect(addr).await?,
        };
        let _ = stream.get_ref().set_nodelay(true);
        stream.write_all(&wire::encode_handshake(&ours)).await?;
        let theirs = read_handshake(&mut stream).await?;
        Ok::<_, ConnectError>((stream, theirs))
    };
    match crate::deadline::within(HANDSHAKE_TIMEOUT, attempt).await {
        None => Err(ConnectError::TimedOut),
        Some(result) => result,
    }
}

/// A non-blocking connect from a bound local address.
async fn dial_from(local: std::net::IpAddr, to: SocketAddr) -> std::io::Result<Async<TcpStream>> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrStorage, bind, connect, socket};
    use std::os::fd::AsRawFd;
    let family = if to.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC, None)?;
    bind(fd.as_raw_fd(), &SockaddrStorage::from(SocketAddr::new(local, 0)))?;
    match connect(fd.as_raw_fd(), &SockaddrStorage::from(to)) {
        Ok(()) | Err(nix::errno::Errno::EINPROGRESS) => {}
        Err(e) => return Err(e.into()),
    }
    let stream = Async::new(TcpStream::from(fd))?;
    stream.writable().await?;
    match stream.get_ref().take_error()? {
        Some(e) => Err(e),
        None => {
            // Connected, or refused without SO_ERROR set yet: asking for the peer says which.
            stream.get_ref().peer_addr()?;
            Ok(stream)
        }
    }
}

/// Reads a peer's handshake.
pub async fn read_handshake(stream: &mut Async<TcpStream>) -> Result<Handshake, HandshakeError> {
    let mut buf = [0u8; HANDSHAKE_LEN];
    stream.read_exact(&mut buf).await?;
    Ok(wire::decode_handshake(&buf)?)
}

/// Most bytes a peer connection keeps written but not yet sent. Without a cap the kernel
/// buffers megabytes per connection on a slow link: data this node committed to one peer long
/// before it leaves (a seed's first copy waits behind it while others are turned away), and a
/// choke or cancel that cannot take it back.
const MAX_UNSENT: libc::c_int = 256 << 10;

/// Caps the connection's unsent bytes at [`MAX_UNSENT`] (`TCP_NOTSENT_LOWAT`); best effort.
fn limit_unsent(stream: &Async<TcpStream>) {
    use std::os::fd::AsRawFd;
    let value = MAX_UNSENT;
    // SAFETY: setsockopt on a socket this connection owns, with a pointer to a c_int and its
    // size, as TCP_NOTSENT_LOWAT expects.
    let r = unsafe {
        libc::setsockopt(
            stream.get_ref().as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        log::debug!("TCP_NOTSENT_LOWAT: {}", std::io::Error::last_os_error());
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
    limit_unsent(&stream);
    let stream = Arc::new(stream);
    let stats = Arc::new(ConnStats::new());
    // Our bitfield goes first.
    let bits = ctx.have.read().unwrap_or_else(|p| p.into_inner()).as_bytes().to_vec();
    let mut outbox = Outbox { control: Vec::new(), uploads: VecDeque::new(), choking: true };
    outbox.control.extend_from_slice(&wire::encode(&Message::Bitfield(bits)));
    let writer_queue = Arc::new(WriterQueue { outbox: std::sync::Mutex::new(outbox), bell: async_channel::bounded(1) });
    writer_queue.ring();
    let reader_queue =
        Arc::new(ReaderQueue { commands: std::sync::Mutex::new(VecDeque::new()), bell: async_channel::bounded(1) });
    let reader = Reader {
        socket: SocketReader::new(stream.clone()),
        key,
        ctx: ctx.clone(),
        queue: reader_queue.clone(),
        writer: writer_queue.clone(),
        stats: stats.clone(),
        downloads: HashMap::new(),
        declined: HashSet::new(),
        declining: HashSet::new(),
        bitfield_seen: false,
        peer_interested: false,
        exchange,
        peers_allowance: EXCHANGE_BURST,
        peers_at: Instant::now(),
        sink: Vec::new(),
    };
    let writer = Writer { stream, key, ctx: ctx.clone(), queue: writer_queue.clone(), stats: stats.clone() };
    let events = ctx.events.clone();
    let events2 = ctx.events.clone();
    let reader_task = executor.spawn(async move {
        let result = reader.run().await;
        let (reason, misbehaved) = match result {
            Ok(()) => ("closed".to_string(), false),
            Err(End::Closed(r)) => (r, false),
            Err(End::Misbehaved(r)) => (r, true),
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

/// Why a reader stopped.
enum End {
    Closed(String),
    /// The peer broke the protocol.
    Misbehaved(String),
}

fn closed(e: std::io::Error) -> End {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        End::Closed("peer closed the connection".into())
    } else {
        End::Closed(e.to_string())
    }
}

/// A piece being fetched.
struct Download {
    data: Vec<u8>,
    /// Which blocks have arrived.
    received: Vec<bool>,
    missing: usize,
    /// SHA-256 over the blocks received in order so far (blocks usually arrive in order: they
    /// are requested in order from one peer over one TCP stream), so the data is hashed while it
    /// is still in the cache, and verifying is a comparison.
    hasher: Sha256,
    /// Blocks fed to `hasher`.
    hashed: usize,
}

struct Reader {
    socket: SocketReader,
    key: PeerKey,
    ctx: ConnContext,
    queue: Arc<ReaderQueue>,
    writer: Arc<WriterQueue>,
    stats: Arc<ConnStats>,
    downloads: HashMap<u32, Download>,
    /// Pieces whose first copy went out to another connection and that this peer was told to
    /// fetch elsewhere ([`FirstCopies`]); asked again, they are served.
    declined: HashSet<u32>,
    /// Of those, the ones whose remaining block requests are being rejected.
    declining: HashSet<u32>,
    /// A peer sends one bitfield; a second is a violation (each costs the engine a pass over
    /// every piece).
    bitfield_seen: bool,
    /// What the peer last said about its interest: only changes reach the engine.
    peer_interested: bool,
    /// Whether the connection's version has `peers`.
    exchange: bool,
    /// `peers` messages the peer may still send now ([`EXCHANGE_BURST`]), as of `peers_at`.
    peers_allowance: f64,
    peers_at: Instant,
    /// Where blocks we no longer want are read to and dropped; reused.
    sink: Vec<u8>,
}

enum Wake {
    Readable(std::io::Result<()>),
    Command(bool),
}

impl Reader {
    async fn run(mut self) -> Result<(), End> {
        loop {
            self.commands().await?;
            // Read at once while data is waiting; only an empty socket is worth a trip through
            // the reactor.
            if self.socket.ready().map_err(closed)? {
                let mut header = [0u8; FRAME_HEADER];
                self.read_exact(&mut header).await?;
                self.on_frame(header).await?;
                continue;
            }
            let bell = self.queue.bell.1.clone();
            let socket = &mut self.socket;
            let wake = future::or(async { Wake::Readable(socket.readable(FRAME_HEADER).await) }, async {
                Wake::Command(bell.recv().await.is_ok())
            })
            .await;
            match wake {
                // Readiness can be stale (the direct read above bypasses the reactor's
                // bookkeeping): try the read again rather than wait inside a frame, where
                // commands — our next requests — would sit until the peer sent something.
                Wake::Readable(Ok(())) => {}
                Wake::Readable(Err(e)) => return Err(closed(e)),
                Wake::Command(true) => {}
                Wake::Command(false) => return Ok(()),
            }
        }
    }

    /// Carries out the engine's instructions.
    async fn commands(&mut self) -> Result<(), End> {
        for cmd in self.queue.take() {
            match cmd {
                ReaderCmd::Fetch { piece, length } => self.fetch(piece, length)?,
                ReaderCmd::Drop { piece } => {
                    self.drop_piece(piece)?;
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
            if outbox.push(&m).is_err() {
                return Err(not_reading());
            }
        }
        drop(outbox);
        self.writer.ring();
        Ok(())
    }

    fn fetch(&mut self, piece: u32, length: u32) -> Result<(), End> {
        let blocks = length.div_ceil(BLOCK) as usize;
        let data = self.ctx.pool.take(length as usize);
        let d = Download { data, received: vec![false; blocks], missing: blocks, hasher: Sha256::new(), hashed: 0 };
        self.downloads.insert(piece, d);
        self.send((0..blocks as u32).map(|b| {
            let offset = b * BLOCK;
            Message::Request(BlockRef { piece, offset, length: BLOCK.min(length - offset) })
        }))
    }

    fn drop_piece(&mut self, piece: u32) -> Result<(), End> {
        let Some(mut d) = self.downloads.remove(&piece) else { return Ok(()) };
        let length = d.data.len() as u32;
        self.ctx.pool.give(std::mem::take(&mut d.data));
        self.send((0..d.received.len() as u32).filter(|&b| !d.received[b as usize]).map(|b| {
            let offset = b * BLOCK;
            Message::Cancel(BlockRef { piece, offset, length: BLOCK.min(length - offset) })
        }))
    }

    async fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), End> {
        self.socket.read_exact(buf).await.map_err(closed)
    }

    /// Hands the engine an event, waiting for room in its queue (back-pressure: meanwhile
    /// this peer is not read).
    async fn event(&self, e: ConnEvent) -> Result<(), End> {
        self.ctx.events.send(e).await.map_err(|_| End::Closed("torrent stopped".into()))
    }

    /// Reads the rest of the frame whose header is `h`, and acts on it.
    async fn on_frame(&mut self, h: [u8; FRAME_HEADER]) -> Result<(), End> {
        self.stats.frame_arrived();
        let header = wire::parse_header(h).map_err(|e| End::Misbehaved(e.to_string()))?;
        if header.kind == Kind::Block {
            return self.read_block(header.body_len).await;
        }
        let mut body = vec![0u8; header.body_len];
        self.read_exact(&mut body).await?;
        let key = self.key;
        let pieces = self.ctx.layout.piece_count() as u32;
        match wire::parse_body(header, &body) {
            Message::KeepAlive => {}
            Message::Bitfield(bytes) => {
                if std::mem::replace(&mut self.bitfield_seen, true) {
                    return Err(End::Misbehaved("sent a second bitfield".into()));
                }
                let bits = Bitfield::from_bytes(&bytes, pieces as usize)
                    .map_err(|e| End::Misbehaved(format!("bitfield: {e}")))?;
                self.event(ConnEvent::Bitfield(key, bits)).await?;
            }
            Message::Have(p) => {
                if p >= pieces {
                    return Err(End::Misbehaved(format!("have for piece {p} of {pieces}")));
                }
                self.event(ConnEvent::Have(key, p)).await?;
            }
            Message::Request(r) => self.on_request(r)?,
            Message::Cancel(r) => {
                // Cancelled: the peer got the piece elsewhere or gave up on us for it. A block
                // already on its way keeps the piece's first copy this connection's.
                let mut outbox = self.writer.lock();
                let queued = outbox.uploads.iter().position(|q| *q == r).and_then(|i| outbox.uploads.remove(i));
                drop(outbox);
                if queued.is_some() {
                    self.ctx.first_copies.release(r.piece as usize, self.key);
                }
            }
            Message::Reject(r) => {
                if self.downloads.remove(&r.piece).is_some() {
                    self.event(ConnEvent::Released { key, piece: r.piece }).await?;
                }
            }
            Message::Choke => {
                // A choke discards our outstanding requests.
                for piece in std::mem::take(&mut self.downloads).into_keys() {
                    self.event(ConnEvent::Released { key, piece }).await?;
                }
                self.event(ConnEvent::Choke(key)).await?;
            }
            Message::Unchoke => self.event(ConnEvent::Unchoke(key)).await?,
            Message::Interested => {
                if !std::mem::replace(&mut self.peer_interested, true) {
                    self.event(ConnEvent::Interested(key)).await?;
                }
            }
            Message::NotInterested => {
                if std::mem::replace(&mut self.peer_interested, false) {
                    self.event(ConnEvent::NotInterested(key)).await?;
                }
            }
            Message::Peers(addrs) => {
                if !self.exchange {
                    return Err(End::Misbehaved("sent peers on a version-1 connection".into()));
                }
                let now = Instant::now();
                let refill = now.duration_since(self.peers_at).as_secs_f64() / MIN_EXCHANGE_SPACING.as_secs_f64();
                self.peers_allowance = (self.peers_allowance + refill).min(EXCHANGE_BURST);
                self.peers_at = now;
                if self.peers_allowance < 1.0 {
                    return Err(End::Misbehaved(format!(
                        "sent peers more often than every {} s",
                        MIN_EXCHANGE_SPACING.as_secs()
                    )));
                }
                self.peers_allowance -= 1.0;
                self.event(ConnEvent::Peers { key, addrs }).await?;
            }
            Message::Block { .. } => unreachable!("blocks are read by read_block"),
        }
        Ok(())
    }

    fn on_request(&mut self, r: BlockRef) -> Result<(), End> {
        let pieces = self.ctx.layout.piece_count() as u32;
        if r.piece >= pieces {
            return Err(End::Misbehaved(format!("request for piece {} of {pieces}", r.piece)));
        }
        let piece_len = self.ctx.layout.piece_len(r.piece as usize);
        if r.length == 0 || r.length > MAX_BLOCK || r.offset as u64 + r.length as u64 > piece_len {
            return Err(End::Misbehaved(format!(
                "request for {} bytes at {} of piece {} ({} bytes long)",
                r.length, r.offset, r.piece, piece_len
            )));
        }
        let have = self.ctx.have.read().unwrap_or_else(|p| p.into_inner()).get(r.piece as usize);
        let serve = have && !self.writer.lock().choking && !self.decline(r);
        let mut outbox = self.writer.lock();
        // A choke that overtook this request (since the check above) has discarded it on the
        // peer's side: never serve it.
        let queued = if serve && !outbox.choking {
            if outbox.uploads.len() >= MAX_QUEUED_UPLOADS {
                Err(Full::Uploads)
            } else {
                outbox.uploads.push_back(r);
                Ok(true)
            }
        } else {
            outbox.push(&Message::Reject(r)).map(|()| false)
        };
        drop(outbox);
        if serve && queued != Ok(true) {
            self.ctx.first_copies.release(r.piece as usize, self.key);
        }
        match queued {
            Ok(_) => {
                self.writer.ring();
                Ok(())
            }
            Err(Full::Uploads) => Err(End::Misbehaved(format!(
                "queued more than {MAX_QUEUED_UPLOADS} requests without reading our blocks"
            ))),
            Err(Full::Control) => Err(not_reading()),
        }
    }

    /// Whether to decline this request because another connection has the piece's first copy
    /// (decided at the piece's first block): always while that copy is on its way, once per
    /// piece and connection after it went out.
    fn decline(&mut self, r: BlockRef) -> bool {
        if r.offset != 0 {
            return self.declining.contains(&r.piece);
        }
        let decline = match self.ctx.first_copies.claim(r.piece as usize, self.key, Instant::now()) {
            Claim::Mine => false,
            Claim::Pending => true,
            Claim::Sent => self.declined.insert(r.piece),
        };
        if decline {
            self.declining.insert(r.piece);
        } else {
            self.declining.remove(&r.piece);
        }
        decline
    }

    async fn read_block(&mut self, body_len: usize) -> Result<(), End> {
        let mut head = [0u8; 8];
        self.read_exact(&mut head).await?;
        let piece = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let offset = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        let len = body_len - 8;
        let expected = self.downloads.get(&piece).and_then(|d| {
            let block = (offset / BLOCK) as usize;
            let want = (d.data.len() as u32).saturating_sub(offset).min(BLOCK) as usize;
            (offset % BLOCK == 0 && block < d.received.len() && !d.received[block] && want == len).then_some(block)
        });
        let Some(block) = expected else {
            // A block we did not ask for (or no longer want, after a cancel): read and drop it.
            // Cancelled requests make this legitimate, so it is not a violation by itself.
            let mut sink = std::mem::take(&mut self.sink);
            sink.resize(len, 0);
            let result = read_limited(&mut self.socket, &self.ctx.download, &mut sink).await;
            self.sink = sink;
            return result;
        };
        let Some(d) = self.downloads.get_mut(&piece) else { return Ok(()) };
        let start = offset as usize;
        read_limited(&mut self.socket, &self.ctx.download, &mut d.data[start..start + len]).await?;
        d.received[block] = true;
        d.missing -= 1;
        // Hash every block now contiguous with what was already hashed.
        while d.hashed < d.received.len() && d.received[d.hashed] {
            let from = d.hashed * BLOCK as usize;
            let to = (from + BLOCK as usize).min(d.data.len());
            d.hasher.update(&d.data[from..to]);
            d.hashed += 1;
        }
        self.stats.downloaded.fetch_add(len as u64, Ordering::Relaxed);
        self.stats.block_arrived();
        if d.missing == 0
            && let Some(d) = self.downloads.remove(&piece)
        {
            let digest = (d.hashed == d.received.len()).then(|| d.hasher.finalize().into());
            self.event(ConnEvent::Piece { key: self.key, piece, data: d.data, digest }).await?;
        }
        Ok(())
    }
}

/// Reads exactly `buf.len()` bytes within the download limits. Under a limit the bytes are
/// taken [`RATE_CHUNK`] at a time, each after its tokens: waiting for a whole block's tokens
/// first would leave the socket undrained for a block's worth of time — over
/// [`SEND_STALL`] for a block at under 4.4 kB/s, after which the sending node cuts us off.
async fn read_limited(socket: &mut SocketReader, limits: &[Arc<RateLimit>; 2], buf: &mut [u8]) -> Result<(), End> {
    if limits.iter().all(|l| !l.is_limited()) {
        return socket.read_exact(buf).await.map_err(closed);
    }
    for chunk in buf.chunks_mut(RATE_CHUNK) {
        for limit in limits {
            limit.acquire(chunk.len()).await;
        }
        socket.read_exact(chunk).await.map_err(closed)?;
    }
    Ok(())
}

/// Bytes read per download-limit grant.
const RATE_CHUNK: usize = 16 << 10;

/// The peer sends us requests (or we have frames for it) faster than it reads.
fn not_reading() -> End {
    End::Misbehaved(format!("left {} KiB of our messages unread", MAX_CONTROL_BYTES >> 10))
}

struct Writer {
    stream: Arc<Async<TcpStream>>,
    key: PeerKey,
    ctx: ConnContext,
    queue: Arc<WriterQueue>,
    stats: Arc<ConnStats>,
}

impl Writer {
    async fn run(self) -> Result<(), SendError> {
        let mut control: Vec<u8> = Vec::new();
        let mut block: Vec<u8> = Vec::with_capacity(FRAME_HEADER + 8 + MAX_BLOCK as usize);
        loop {
            let upload = {
                let mut outbox = self.queue.lock();
                std::mem::swap(&mut control, &mut outbox.control);
                outbox.uploads.pop_front()
            };
            if !control.is_empty() {
                self.write(&control).await?;
                control.clear();
                // A burst (a bitfield, a choke's rejects) need not stay allocated.
                if control.capacity() > 64 << 10 {
                    control = Vec::new();
                }
            } else if upload.is_none() {
                if self.queue.bell.1.recv().await.is_err() {
                    return Ok(());
                }
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
