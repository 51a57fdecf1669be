//! One peer connection: a reader task and a writer task around a TCP stream.
//!
//! - The **reader** owns the buffers of the pieces being fetched from this peer: it reads each
//!   block's data straight into its piece buffer (no copy), and hands a complete piece to the
//!   engine. It validates everything the peer sends against the torrent's geometry before using
//!   it, answers requests it will not serve with `reject`, and closes the connection with a
//!   reason on any protocol violation.
//! - The **writer** sends control messages as soon as they are queued and serves the peer's
//!   requests one block at a time in between (reading from storage, within the upload rate
//!   limits).
//!
//! The engine talks to both through channels and reads counters from [`ConnStats`]; it owns
//! every decision (what to fetch, whom to choke).

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
/// Most requests a peer may have queued with us (above the largest budget a peer may keep in
/// flight: 64 MiB in 64 KiB blocks).
pub const MAX_QUEUED_UPLOADS: usize = 2048;

/// Counters the engine reads.
#[derive(Debug)]
pub struct ConnStats {
    pub downloaded: AtomicU64,
    pub uploaded: AtomicU64,
    /// Nanoseconds after `epoch` at which the last block arrived.
    last_block: AtomicU64,
    /// Nanoseconds after `epoch` at which the last frame of any kind arrived.
    last_frame: AtomicU64,
    epoch: Instant,
}

impl ConnStats {
    fn new() -> ConnStats {
        ConnStats {
            downloaded: AtomicU64::new(0),
            uploaded: AtomicU64::new(0),
            last_block: AtomicU64::new(0),
            last_frame: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn block_arrived(&self) {
        self.last_block.store(self.epoch.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    /// When the last block arrived (or the connection started).
    pub fn last_block(&self) -> Instant {
        self.epoch + Duration::from_nanos(self.last_block.load(Ordering::Relaxed))
    }

    fn frame_arrived(&self) {
        self.last_frame.store(self.epoch.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    /// When anything last arrived (or the connection started).
    pub fn last_frame(&self) -> Instant {
        self.epoch + Duration::from_nanos(self.last_frame.load(Ordering::Relaxed))
    }
}

/// What a connection tells the engine.
#[derive(Debug)]
pub enum ConnEvent {
    Bitfield(PeerKey, Bitfield),
    Have(PeerKey, u32),
    Choke(PeerKey),
    Unchoke(PeerKey),
    Interested(PeerKey),
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
    Closed {
        key: PeerKey,
        reason: String,
        misbehaved: bool,
    },
}

/// Instructions to the reader.
#[derive(Debug)]
pub enum ReaderCmd {
    /// Fetch a piece: allocate its buffer and request all its blocks.
    Fetch { piece: u32, length: u32 },
    /// Stop fetching a piece (cancel what is outstanding).
    Drop { piece: u32 },
}

/// Instructions to the writer.
#[derive(Debug)]
pub enum WriterCmd {
    Send(Message),
    SendMany(Vec<Message>),
    /// Serve the peer's request.
    Serve(BlockRef),
    /// The peer cancelled a request.
    Unserve(BlockRef),
}

/// Piece buffers for reuse: fresh allocations of whole pieces cost a page fault per page.
#[derive(Default)]
pub struct BufferPool {
    free: std::sync::Mutex<Vec<Vec<u8>>>,
}

/// Buffers kept for reuse (at most this many bytes in all).
const POOL_BYTES: usize = 128 << 20;

impl BufferPool {
    /// A zeroed buffer of `len` bytes.
    pub fn take(&self, len: usize) -> Vec<u8> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        let mut buf = match free.iter().position(|b| b.capacity() >= len) {
            Some(i) => free.swap_remove(i),
            None => Vec::with_capacity(len),
        };
        drop(free);
        buf.clear();
        buf.resize(len, 0);
        buf
    }

    /// Returns a buffer for reuse.
    pub fn give(&self, buf: Vec<u8>) {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        let held: usize = free.iter().map(Vec::capacity).sum();
        if held + buf.capacity() <= POOL_BYTES {
            free.push(buf);
        }
    }
}

/// Everything a connection needs from its torrent.
#[derive(Clone)]
pub struct ConnContext {
    pub pool: Arc<BufferPool>,
    pub storage: Arc<Storage>,
    pub have: Arc<RwLock<Bitfield>>,
    pub layout: Layout,
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
    /// Whether we refuse to serve this peer (reader rejects its requests).
    am_choking: Arc<AtomicBool>,
    reader: async_channel::Sender<ReaderCmd>,
    writer: async_channel::Sender<WriterCmd>,
    _tasks: [smol::Task<()>; 2],
}

impl Connection {
    pub fn fetch(&self, piece: u32, length: u32) {
        let _ = self.reader.try_send(ReaderCmd::Fetch { piece, length });
    }

    pub fn drop_piece(&self, piece: u32) {
        let _ = self.reader.try_send(ReaderCmd::Drop { piece });
    }

    pub fn send(&self, msg: Message) {
        let _ = self.writer.try_send(WriterCmd::Send(msg));
    }

    pub fn set_choking(&self, choke: bool) {
        if self.am_choking.swap(choke, Ordering::SeqCst) != choke {
            self.send(if choke { Message::Choke } else { Message::Unchoke });
        }
    }

    pub fn is_choking(&self) -> bool {
        self.am_choking.load(Ordering::SeqCst)
    }
}

fn ioerr(e: std::io::Error) -> String {
    e.to_string()
}

/// Connects to `addr` and exchanges handshakes; returns the stream and the peer's handshake.
pub async fn connect(addr: SocketAddr, ours: Handshake) -> Result<(Async<TcpStream>, Handshake), String> {
    let attempt = async {
        let mut stream = Async::<TcpStream>::connect(addr).await.map_err(ioerr)?;
        let _ = stream.get_ref().set_nodelay(true);
        stream.write_all(&wire::encode_handshake(&ours)).await.map_err(ioerr)?;
        let theirs = read_handshake(&mut stream).await?;
        Ok((stream, theirs))
    };
    with_deadline(HANDSHAKE_TIMEOUT, attempt).await.unwrap_or_else(|| Err("handshake timed out".into()))
}

/// Reads a peer's handshake.
pub async fn read_handshake(stream: &mut Async<TcpStream>) -> Result<Handshake, String> {
    let mut buf = [0u8; HANDSHAKE_LEN];
    stream.read_exact(&mut buf).await.map_err(ioerr)?;
    wire::decode_handshake(&buf).map_err(|e| e.to_string())
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

async fn with_deadline<T>(limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
    future::or(async { Some(fut.await) }, async {
        smol::Timer::after(limit).await;
        None
    })
    .await
}

/// Starts the tasks of an established connection (handshakes done).
#[allow(clippy::too_many_arguments)]
pub fn start(
    stream: Async<TcpStream>,
    key: PeerKey,
    node_id: NodeId,
    addr: SocketAddr,
    outgoing: bool,
    ctx: ConnContext,
    executor: &smol::Executor<'static>,
) -> Connection {
    limit_unsent(&stream);
    let stream = Arc::new(stream);
    let stats = Arc::new(ConnStats::new());
    let am_choking = Arc::new(AtomicBool::new(true));
    let (reader_tx, reader_rx) = async_channel::unbounded();
    let (writer_tx, writer_rx) = async_channel::unbounded();
    // Our bitfield goes first.
    let bits = ctx.have.read().unwrap_or_else(|p| p.into_inner()).as_bytes().to_vec();
    let _ = writer_tx.try_send(WriterCmd::Send(Message::Bitfield(bits)));
    let reader = Reader {
        stream: stream.clone(),
        key,
        ctx: ctx.clone(),
        commands: reader_rx,
        writer: writer_tx.clone(),
        am_choking: am_choking.clone(),
        stats: stats.clone(),
        downloads: HashMap::new(),
        declined: HashSet::new(),
        declining: HashSet::new(),
    };
    let writer = Writer {
        stream,
        key,
        ctx: ctx.clone(),
        commands: writer_rx,
        am_choking: am_choking.clone(),
        stats: stats.clone(),
        uploads: VecDeque::new(),
    };
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
        if let Err(reason) = writer.run().await {
            let _ = events2.send(ConnEvent::Closed { key, reason, misbehaved: false }).await;
        }
    });
    Connection {
        key,
        node_id,
        addr,
        outgoing,
        stats,
        am_choking,
        reader: reader_tx,
        writer: writer_tx,
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
    stream: Arc<Async<TcpStream>>,
    key: PeerKey,
    ctx: ConnContext,
    commands: async_channel::Receiver<ReaderCmd>,
    writer: async_channel::Sender<WriterCmd>,
    am_choking: Arc<AtomicBool>,
    stats: Arc<ConnStats>,
    downloads: HashMap<u32, Download>,
    /// Pieces whose first copy went out to another connection and that this peer was told to
    /// fetch elsewhere ([`FirstCopies`]); asked again, they are served.
    declined: HashSet<u32>,
    /// Of those, the ones whose remaining block requests are being rejected.
    declining: HashSet<u32>,
}

enum Wake {
    Readable(std::io::Result<()>),
    Command(Option<ReaderCmd>),
}

impl Reader {
    async fn run(mut self) -> Result<(), End> {
        loop {
            while let Ok(cmd) = self.commands.try_recv() {
                self.command(cmd);
            }
            // Read at once while data is waiting; only an empty socket is worth a trip through
            // the reactor (a readiness wait costs a re-registration and a wake-up per frame).
            let mut header = [0u8; FRAME_HEADER];
            match std::io::Read::read(&mut self.stream.get_ref(), &mut header) {
                Ok(0) => return Err(closed(std::io::ErrorKind::UnexpectedEof.into())),
                Ok(n) => {
                    self.read_exact(&mut header[n..]).await?;
                    self.on_frame(header).await?;
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(closed(e)),
            }
            let stream = self.stream.clone();
            let wake = future::or(async { Wake::Readable(stream.readable().await) }, async {
                Wake::Command(self.commands.recv().await.ok())
            })
            .await;
            match wake {
                // Readiness can be stale (the direct read above bypasses the reactor's
                // bookkeeping): try the read again rather than wait inside a frame, where
                // commands — our next requests — would sit until the peer sent something.
                Wake::Readable(Ok(())) => {}
                Wake::Readable(Err(e)) => return Err(closed(e)),
                Wake::Command(Some(cmd)) => self.command(cmd),
                Wake::Command(None) => return Ok(()),
            }
        }
    }

    fn command(&mut self, cmd: ReaderCmd) {
        match cmd {
            ReaderCmd::Fetch { piece, length } => {
                let blocks = length.div_ceil(BLOCK) as usize;
                let requests: Vec<Message> = (0..blocks as u32)
                    .map(|b| {
                        let offset = b * BLOCK;
                        Message::Request(BlockRef { piece, offset, length: BLOCK.min(length - offset) })
                    })
                    .collect();
                let data = self.ctx.pool.take(length as usize);
                let d =
                    Download { data, received: vec![false; blocks], missing: blocks, hasher: Sha256::new(), hashed: 0 };
                self.downloads.insert(piece, d);
                let _ = self.writer.try_send(WriterCmd::SendMany(requests));
            }
            ReaderCmd::Drop { piece } => {
                if let Some(mut d) = self.downloads.remove(&piece) {
                    let length = d.data.len() as u32;
                    let cancels: Vec<Message> = (0..d.received.len() as u32)
                        .filter(|&b| !d.received[b as usize])
                        .map(|b| {
                            let offset = b * BLOCK;
                            Message::Cancel(BlockRef { piece, offset, length: BLOCK.min(length - offset) })
                        })
                        .collect();
                    let _ = self.writer.try_send(WriterCmd::SendMany(cancels));
                    self.ctx.pool.give(std::mem::take(&mut d.data));
                }
            }
        }
    }

    async fn read_exact(&self, buf: &mut [u8]) -> Result<(), End> {
        let mut stream = &*self.stream;
        stream.read_exact(buf).await.map_err(closed)
    }

    fn event(&self, e: ConnEvent) {
        // Unbounded per-connection volume is bounded by the protocol: each event answers one
        // message from the peer, and pieces only arrive when we asked for them.
        let _ = self.ctx.events.try_send(e);
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
                let bits = Bitfield::from_bytes(&bytes, pieces as usize)
                    .map_err(|e| End::Misbehaved(format!("bitfield: {e}")))?;
                self.event(ConnEvent::Bitfield(key, bits));
            }
            Message::Have(p) => {
                if p >= pieces {
                    return Err(End::Misbehaved(format!("have for piece {p} of {pieces}")));
                }
                self.event(ConnEvent::Have(key, p));
            }
            Message::Request(r) => self.on_request(r)?,
            Message::Cancel(r) => {
                let _ = self.writer.try_send(WriterCmd::Unserve(r));
            }
            Message::Reject(r) => {
                if self.downloads.remove(&r.piece).is_some() {
                    self.event(ConnEvent::Released { key, piece: r.piece });
                }
            }
            Message::Choke => {
                // A choke discards our outstanding requests.
                for piece in std::mem::take(&mut self.downloads).into_keys() {
                    self.event(ConnEvent::Released { key, piece });
                }
                self.event(ConnEvent::Choke(key));
            }
            Message::Unchoke => self.event(ConnEvent::Unchoke(key)),
            Message::Interested => self.event(ConnEvent::Interested(key)),
            Message::NotInterested => self.event(ConnEvent::NotInterested(key)),
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
        if !have || self.am_choking.load(Ordering::SeqCst) || self.decline(r) {
            let _ = self.writer.try_send(WriterCmd::Send(Message::Reject(r)));
        } else {
            let _ = self.writer.try_send(WriterCmd::Serve(r));
        }
        Ok(())
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
        for limit in &self.ctx.download {
            limit.acquire(len).await;
        }
        let expected = self.downloads.get(&piece).and_then(|d| {
            let block = (offset / BLOCK) as usize;
            let want = (d.data.len() as u32).saturating_sub(offset).min(BLOCK) as usize;
            (offset % BLOCK == 0 && block < d.received.len() && !d.received[block] && want == len).then_some(block)
        });
        let Some(block) = expected else {
            // A block we did not ask for (or no longer want, after a cancel): read and drop it.
            // Cancelled requests make this legitimate, so it is not a violation by itself.
            let mut sink = vec![0u8; len];
            return self.read_exact(&mut sink).await;
        };
        let stream = self.stream.clone();
        let Some(d) = self.downloads.get_mut(&piece) else { return Ok(()) };
        let start = offset as usize;
        let mut reader = &*stream;
        reader.read_exact(&mut d.data[start..start + len]).await.map_err(closed)?;
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
            let _ = self.ctx.events.send(ConnEvent::Piece { key: self.key, piece, data: d.data, digest }).await;
        }
        Ok(())
    }
}

struct Writer {
    stream: Arc<Async<TcpStream>>,
    key: PeerKey,
    ctx: ConnContext,
    commands: async_channel::Receiver<WriterCmd>,
    am_choking: Arc<AtomicBool>,
    stats: Arc<ConnStats>,
    uploads: VecDeque<BlockRef>,
}

impl Writer {
    async fn run(mut self) -> Result<(), String> {
        let mut out: Vec<u8> = Vec::with_capacity(4096);
        let mut block: Vec<u8> = Vec::with_capacity(FRAME_HEADER + 8 + MAX_BLOCK as usize);
        loop {
            if self.uploads.is_empty() && out.is_empty() {
                match self.commands.recv().await {
                    Ok(cmd) => self.command(cmd, &mut out),
                    Err(_) => return Ok(()),
                }
            }
            while let Ok(cmd) = self.commands.try_recv() {
                self.command(cmd, &mut out);
            }
            if !out.is_empty() {
                (&*self.stream).write_all(&out).await.map_err(ioerr)?;
                out.clear();
            }
            if let Some(r) = self.uploads.pop_front() {
                self.serve(r, &mut block).await?;
            }
        }
    }

    fn command(&mut self, cmd: WriterCmd, out: &mut Vec<u8>) {
        match cmd {
            WriterCmd::Send(m) => {
                if m == Message::Choke {
                    // A choke discards the peer's queued requests.
                    for r in std::mem::take(&mut self.uploads) {
                        self.ctx.first_copies.release(r.piece as usize, self.key);
                    }
                }
                out.extend_from_slice(&wire::encode(&m));
            }
            WriterCmd::SendMany(ms) => {
                for m in ms {
                    out.extend_from_slice(&wire::encode(&m));
                }
            }
            WriterCmd::Serve(r) => {
                // A choke that overtook this request (the reader checked just before the
                // engine choked) has discarded it on the peer's side: never serve it.
                if self.uploads.len() >= MAX_QUEUED_UPLOADS || self.am_choking.load(Ordering::SeqCst) {
                    self.ctx.first_copies.release(r.piece as usize, self.key);
                    out.extend_from_slice(&wire::encode(&Message::Reject(r)));
                } else {
                    self.uploads.push_back(r);
                }
            }
            WriterCmd::Unserve(r) => {
                // Cancelled: the peer got the piece elsewhere or gave up on us for it.
                self.uploads.retain(|q| *q != r);
                self.ctx.first_copies.release(r.piece as usize, self.key);
            }
        }
    }

    async fn serve(&mut self, r: BlockRef, block: &mut Vec<u8>) -> Result<(), String> {
        for limit in &self.ctx.upload {
            limit.acquire(r.length as usize).await;
        }
        let start = self.ctx.layout.piece_range(r.piece as usize).start + r.offset as u64;
        let len = r.length as usize;
        // Zero copy when the block lies in one file: the header, then the data straight from
        // the page cache to the socket.
        if let Some((file, file_offset)) = self.ctx.storage.file_range(start, len as u64) {
            let header = wire::block_header(r.piece, r.offset, len);
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
                    .await
                    .map_err(ioerr)?;
                if sent == 0 {
                    // The file shrank under us; the frame cannot be completed.
                    return Err(format!("piece {} vanished from disk while being sent", r.piece));
                }
                left -= sent;
            }
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
                (&*self.stream).write_all(&wire::encode(&Message::Reject(r))).await.map_err(ioerr)?;
                return Ok(());
            }
        }
        (&*self.stream).write_all(block).await.map_err(ioerr)?;
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
    async fn send_more(&self, bytes: &[u8]) -> Result<(), String> {
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
                .await
                .map_err(ioerr)?;
        }
        Ok(())
    }
}
