//! The transfer engine of one torrent: connections, piece selection, verification, upload
//! slots, bans. Why the numbers are what they are, with the measurements: `STATE.md` beside
//! this file.
//!
//! Owned by the torrent task (one owner: nothing here is shared but the verified set, which
//! connections read to validate requests). [`Engine::next`] runs the engine until something
//! the torrent must act on happens: a piece verified and written, or storage failing.
//!
//! - Fetching: each connection has a budget of bytes in flight (a quarter second of what it
//!   delivers, 512 KiB–64 MiB, at least two pieces); the picker fills it, incomplete peers
//!   first (so seeds are asked for what leechers cannot give). Pieces are fetched whole from
//!   one peer (blocks pipelined), which makes every bad piece attributable; in the endgame a
//!   piece may be fetched from up to three peers at once, the first complete copy is verified
//!   and the others are cancelled (a copy that crossed the cancel is dropped unverified: each
//!   piece is verified once).
//! - Interest: `Peer::useful` counts the pieces a peer has that we lack; we are interested
//!   while it is non-zero. Debug builds check it against the bitfields every tick.
//! - A peer that delivers nothing for [`STALL_AFTER`] while owing us data loses its pieces to
//!   other peers and is asked for one piece at a time until it delivers again (at most
//!   4 × [`STALL_AFTER`]). The clock starts at the later of its last block and our first request
//!   since it last owed us nothing: a peer we had not asked for anything for a while is not
//!   stalled the moment we ask again.
//! - Memory: the bytes of pieces being fetched (each has a whole-piece buffer) are capped per
//!   peer (`limits.max_in_flight_per_peer`; a peer may always have one piece) and per torrent
//!   (`limits.max_in_flight_per_torrent`, counting pieces waiting to be verified), whatever the
//!   piece size.
//! - Verification: every piece is hashed before it is written or announced; a mismatch strikes
//!   the address that sent it, and [`BAN_AFTER`] strikes ban that address for this torrent
//!   ([`super::bans`]: the address, never the id a peer claims).
//! - Uploading: up to `upload_slots` interested peers are unchoked; when more want to download,
//!   those that give us the most (or, when we seed, those that need the most) are preferred,
//!   and one slot rotates every [`ROTATE_EVERY`]. A peer's interest costs O(1): it takes a free
//!   slot at once, or waits for the next rotation.
//! - Peers that overfill their connection's queues or leave our data unread for
//!   [`connection::SEND_STALL`] are closed at the next tick ([`super::connection`], "Bounds").
//! - Identity: two connections claiming one node id are resolved by the agreed direction only
//!   when they come from the same address; a connection claiming the id of a peer connected
//!   from another address is a peer of its own, never allowed to displace it.
//! - Cancelled pieces ([`super::fetches`]) count against the caps until the reader confirms it
//!   freed them; a peer stuck inside a frame that long ([`DROP_CONFIRM`]) is closed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures_lite::future;
use log::{debug, info, warn};
use rand::seq::SliceRandom;

use super::bans::{Bans, Strike};
use super::candidates::Candidates;
use super::connection::ConnectError;
use super::connection::{self, BufferPool, ConnContext, ConnEvent, Connection};
use super::counters::{WireCounters, WireEvent};
use super::exchange::{self, Exchange};
use super::fetches::Fetches;
use super::first_copies::FirstCopies;
use super::have_batch::HaveBatch;
use super::limiter::RateLimit;
use super::listener::{Incoming, IpSlot, Registry};
use super::picker::{PeerKey, Picker, PieceState};
use super::wire::{self, Handshake, Message};
use crate::bitfield::Bitfield;
use crate::control::protocol::{PeerInfo, WireState};
use crate::descriptor::{InfoHash, PieceHash};
use crate::discovery::wire::PeerRecord;
use crate::node_id::NodeId;
use crate::storage::{Layout, Storage, StorageError, hash_matches};

/// A peer owing data that sends nothing for this long loses its pieces.
pub const STALL_AFTER: Duration = Duration::from_secs(8);
pub use super::bans::BAN_AFTER;
/// How often the unchoked set is reconsidered.
pub const ROTATE_EVERY: Duration = Duration::from_secs(10);
const TICK: Duration = Duration::from_secs(1);
/// How long a peer's declines are remembered: about the time the first copy's holder needs to
/// receive, verify and announce a piece. Longer stalls a swarm whose holders are slow to
/// deliver (every other leecher waits it out); shorter makes the seed send more duplicates.
const DECLINED_FOR: Duration = Duration::from_secs(1);
/// The same with no incomplete peer connected, which could pass the piece on to us: the seed
/// will serve it once its first copy has gone out, so ask again soon (but not at once: while
/// that copy is on its way the seed declines every time, and asking back at once would spin).
const DECLINED_ALONE: Duration = Duration::from_millis(100);
/// Pieces hashed and written at once.
const MAX_VERIFYING: usize = 2;
/// How long an unchoked peer should take to receive one piece from us: the upload slots
/// in use are what the uplink serves at this pace ([`Engine::upload_slots`]): split among
/// more peers, every piece crawls out at a fraction of the uplink, slower than first copies
/// keep second copies away ([`super::first_copies::PATIENCE`]). (Measurements: STATE.md.)
const SLOT_PIECE_TIME: Duration = Duration::from_millis(500);
/// The fewest upload slots the uplink's rate may leave (unless `limits.upload_slots` is
/// lower).
const MIN_UPLOAD_SLOTS: usize = 4;
/// The upload rate (bytes/s) slots are counted for at least: 20 Mbit/s, a modest uplink.
/// Until a rate is measured (each tick, a second) the slots are those this rate allows, so a
/// swarm shorter than that is not held to four peers: a 16 MiB swarm on 200 Mbit/s links
/// with 64 KiB pieces is done in 0.7 s, and its seed starts with 20 slots.
const MIN_UPLOAD_RATE: f64 = 2_500_000.0;
/// Per tick, how much of its peak the measured upload capacity keeps: a peak is forgotten
/// within a minute or so (half-life about 35 s) when the uplink has become slower.
const UP_CAPACITY_DECAY: f64 = 0.98;
/// Bytes in flight per peer: a quarter second of what it delivers, within bounds. Requests
/// queue at the sender, each connection's behind its own, so the budget is also how long a
/// freshly announced piece waits there before it can be passed on: on a LAN a quarter second
/// of a peer's rate covers the round trip many times over. The floor matters where a peer's
/// share of a busy uplink is small (a seed serving 16 leechers gives each well under 1 MB/s).
/// (Measurements: STATE.md.)
const BUDGET_SECS: f64 = 0.25;
const MIN_IN_FLIGHT: u64 = 512 << 10;
/// Events from a torrent's connections waiting for the engine; a reader waits for room.
const EVENT_QUEUE: usize = 1024;
/// Connects one torrent has started and not yet seen answered, at most: what a peer naming
/// addresses (exchange) or a discovery answer can make this node dial at once.
pub const MAX_DIALS_IN_FLIGHT: usize = 16;
/// Peer messages handled per wake-up, at most, before requests are filled and the other
/// sources looked at again.
const EVENT_BATCH: usize = 256;
/// A peer whose reader has not dropped the pieces we cancelled for this long is stuck inside a
/// frame (a block it never finishes) and is closed: its buffers are freed with it. A block
/// taking longer than this arrives at under 4.4 kB/s, which [`connection::SEND_STALL`] also
/// treats as a dead link.
const DROP_CONFIRM: Duration = connection::SEND_STALL;

/// An outgoing connection set up (or the candidate that could not be reached).
type Connected = Result<(SocketAddr, smol::Async<std::net::TcpStream>, Handshake, IpSlot), SocketAddr>;

/// A hashed (and, if good, written) piece, with its buffer for reuse.
type VerifyResult = (PeerKey, u32, Result<bool, StorageError>, Vec<u8>);

/// Bytes waiting to be hashed above which nothing more is requested (hashing is behind).
const MAX_VERIFY_BACKLOG: u64 = 64 << 20;

/// Daemon-wide parts every engine shares.
#[derive(Clone)]
pub struct SwarmContext {
    pub executor: Arc<smol::Executor<'static>>,
    pub node_id: NodeId,
    pub listen_port: u16,
    /// The address this node listens on, when the configuration names one (not `0.0.0.0` or
    /// `::`): connections are made from it.
    pub listen_ip: Option<std::net::IpAddr>,
    pub registry: Arc<Registry>,
    pub upload: Arc<RateLimit>,
    pub download: Arc<RateLimit>,
    /// Connections open, over all torrents, and the most allowed.
    pub connections: Arc<AtomicUsize>,
    pub max_connections: Arc<AtomicUsize>,
    pub upload_slots: Arc<AtomicUsize>,
    /// Caps on bytes of pieces requested and not yet received (changed in place by reload).
    pub in_flight: Arc<InFlightLimits>,
    /// Connection counters for `status` (shared with the peer port).
    pub counters: Arc<WireCounters>,
}

/// `limits.max_in_flight_per_peer` and `limits.max_in_flight_per_torrent`.
#[derive(Debug)]
pub struct InFlightLimits {
    pub per_peer: std::sync::atomic::AtomicU64,
    pub per_torrent: std::sync::atomic::AtomicU64,
}

impl InFlightLimits {
    pub fn new(per_peer: u64, per_torrent: u64) -> InFlightLimits {
        InFlightLimits {
            per_peer: std::sync::atomic::AtomicU64::new(per_peer),
            per_torrent: std::sync::atomic::AtomicU64::new(per_torrent),
        }
    }

    pub fn set(&self, per_peer: u64, per_torrent: u64) {
        self.per_peer.store(per_peer, Ordering::Relaxed);
        self.per_torrent.store(per_torrent, Ordering::Relaxed);
    }
}

/// What the torrent must act on.
#[derive(Debug)]
pub enum EngineEvent {
    /// A piece was verified and written (not yet synced).
    Verified(usize),
    StorageFailed(StorageError),
}

struct Peer {
    conn: Connection,
    bits: Bitfield,
    peer_choking: bool,
    peer_interested: bool,
    am_interested: bool,
    /// Pieces it has that we lack.
    useful: usize,
    /// Pieces we asked it for, and those its reader has yet to drop.
    fetches: Fetches,
    /// When what it owes us last rose from zero.
    owed_since: Instant,
    /// When it last stalled, while it has not delivered since: asked for one piece at a time.
    snubbed_at: Option<Instant>,
    down_rate: f64,
    up_rate: f64,
    last_down: u64,
    last_up: u64,
    unchoked_at: Option<Instant>,
    /// Pieces it declined to send us lately (a seed's [`FirstCopies`] policy, or a choke):
    /// not asked of it again until `declined_until` (meanwhile the leecher that got the first
    /// copy announces it).
    declined: Bitfield,
    declined_until: Option<Instant>,
    /// Nothing to pick from it as of this picker generation: not scanned again until the
    /// generation, its bitfield or its declines change.
    exhausted: Option<u64>,
    /// What it has been told by peer exchange; `None` on a version-1 connection.
    exchange: Option<Exchange>,
    /// Its bitfield arrived. A connection we opened that closes before that was a node
    /// without room (it answered, named its peers and closed): a failed connect, backed off.
    heard: bool,
    outgoing: bool,
    _slot: IpSlot,
}

/// A complete piece waiting to be verified and written.
struct Received {
    key: PeerKey,
    piece: u32,
    data: Vec<u8>,
    /// Its SHA-256, when the connection hashed it on the way in.
    digest: Option<[u8; 32]>,
}

/// Why a connection is not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Us,
    Banned,
    /// Already connected in the direction both ends agree on.
    Duplicate,
    NoRoom,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Us => write!(f, "it is this node"),
            Refusal::Banned => write!(f, "its address is banned"),
            Refusal::Duplicate => write!(f, "already connected in the direction both ends agree on"),
            Refusal::NoRoom => write!(f, "no room for more peers"),
        }
    }
}

enum Wake {
    Conn(ConnEvent),
    Incoming(Incoming),
    Connected(Connected),
    Verified(PeerKey, u32, Result<bool, StorageError>, Vec<u8>),
    Tick,
}

pub struct Engine {
    ctx: SwarmContext,
    info_hash: InfoHash,
    name: String,
    layout: Layout,
    hashes: Arc<Vec<PieceHash>>,
    storage: Arc<Storage>,
    have: Arc<RwLock<Bitfield>>,
    picker: Picker,
    first_copies: Arc<FirstCopies>,
    peers: HashMap<PeerKey, Peer>,
    candidates: Candidates,
    bans: Bans,
    events: (async_channel::Sender<ConnEvent>, async_channel::Receiver<ConnEvent>),
    incoming: async_channel::Receiver<Incoming>,
    connected: (async_channel::Sender<Connected>, async_channel::Receiver<Connected>),
    verified: (async_channel::Sender<VerifyResult>, async_channel::Receiver<VerifyResult>),
    verify_queue: VecDeque<Received>,
    verifying: usize,
    /// Connects started and not yet answered (at most [`MAX_DIALS_IN_FLIGHT`]).
    dialling: usize,
    /// Piece buffers, reused.
    pool: Arc<BufferPool>,
    upload: Arc<RateLimit>,
    download: Arc<RateLimit>,
    max_peers: usize,
    next_key: PeerKey,
    next_tick: Instant,
    /// Fires at `next_tick`; kept and reset rather than re-created (each new timer costs the
    /// reactor a wake-up, and `next` runs once per event).
    timer: smol::Timer,
    /// Verified pieces not yet announced to the peers.
    haves: HaveBatch,
    last_rotation: Instant,
    last_keepalive: Instant,
    /// Payload bytes moved by connections that have closed.
    closed_down: u64,
    closed_up: u64,
    down_rate: f64,
    up_rate: f64,
    /// The highest recent upload rate (bytes/s, smoothed, decaying by [`UP_CAPACITY_DECAY`]
    /// per tick): what the uplink can do, which sets the upload slots in use.
    up_capacity: f64,
}

impl Engine {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ctx: SwarmContext,
        info_hash: InfoHash,
        name: String,
        hashes: Arc<Vec<PieceHash>>,
        storage: Arc<Storage>,
        have: &Bitfield,
        upload: Arc<RateLimit>,
        download: Arc<RateLimit>,
        max_peers: usize,
    ) -> Engine {
        let (in_tx, in_rx) = async_channel::bounded(64);
        ctx.registry.register(info_hash, in_tx);
        let layout = storage.layout().clone();
        let now = Instant::now();
        let first_copies = Arc::new(FirstCopies::new(layout.piece_count()));
        first_copies.set_active(have.is_complete());
        Engine {
            first_copies,
            picker: Picker::new(have, rand::random()),
            have: Arc::new(RwLock::new(have.clone())),
            ctx,
            info_hash,
            name,
            layout,
            hashes,
            storage,
            peers: HashMap::new(),
            candidates: Candidates::default(),
            bans: Bans::default(),
            events: async_channel::bounded(EVENT_QUEUE),
            incoming: in_rx,
            connected: async_channel::bounded(64),
            verified: async_channel::bounded(MAX_VERIFYING),
            verify_queue: VecDeque::new(),
            verifying: 0,
            dialling: 0,
            pool: Arc::new(BufferPool::default()),
            upload,
            download,
            max_peers,
            next_key: 1,
            next_tick: now,
            timer: smol::Timer::at(now),
            haves: HaveBatch::new(now),
            last_rotation: now,
            last_keepalive: now,
            closed_down: 0,
            closed_up: 0,
            down_rate: 0.0,
            up_rate: 0.0,
            up_capacity: 0.0,
        }
    }

    fn seeding(&self) -> bool {
        self.have.read().unwrap_or_else(|p| p.into_inner()).is_complete()
    }

    pub fn set_max_peers(&mut self, n: usize) {
        self.max_peers = n;
    }

    /// Payload bytes moved since the engine started: (downloaded, uploaded).
    pub fn totals(&self) -> (u64, u64) {
        let (d, u) = self.peers.values().fold((0, 0), |(d, u), p| {
            (d + p.conn.stats.downloaded.load(Ordering::Relaxed), u + p.conn.stats.uploaded.load(Ordering::Relaxed))
        });
        (self.closed_down + d, self.closed_up + u)
    }

    /// Bytes per second, averaged over the last few seconds: (down, up).
    pub fn rates(&self) -> (u64, u64) {
        (self.down_rate as u64, self.up_rate as u64)
    }

    /// Connected and banned peers, for `p2pctl peers`.
    pub fn peer_infos(&self) -> Vec<PeerInfo> {
        let mut out: Vec<PeerInfo> = self
            .peers
            .values()
            .map(|p| PeerInfo {
                address: p.conn.addr.to_string(),
                node_id: p.conn.node_id.to_hex(),
                status: if p.bits.is_complete() { "seeding".into() } else { "leeching".into() },
                last_seen_secs: 0,
                connected: true,
                strikes: self.bans.strikes(p.conn.addr.ip()),
                banned: false,
                downloaded: p.conn.stats.downloaded.load(Ordering::Relaxed),
                uploaded: p.conn.stats.uploaded.load(Ordering::Relaxed),
                wire: Some(WireState {
                    interested: p.am_interested,
                    choked_by_peer: p.peer_choking,
                    peer_interested: p.peer_interested,
                    choking: p.conn.is_choking(),
                    requested_bytes: p.fetches.asked_bytes(),
                    last_block_secs: (p.conn.stats.downloaded.load(Ordering::Relaxed) > 0)
                        .then(|| p.conn.stats.last_block().elapsed().as_secs()),
                    snubbed: p.snubbed_at.is_some(),
                }),
            })
            .collect();
        for (_, banned) in self.bans.banned() {
            out.push(PeerInfo {
                address: banned.addr.to_string(),
                node_id: banned.node_id.to_hex(),
                status: "banned".into(),
                last_seen_secs: 0,
                connected: false,
                strikes: banned.strikes,
                banned: true,
                downloaded: 0,
                uploaded: 0,
                wire: None,
            });
        }
        out
    }

    /// Members of the swarm learned by discovery.
    pub fn add_candidates(&mut self, peers: Vec<PeerRecord>) {
        let now = Instant::now();
        for p in peers {
            if p.id == self.ctx.node_id || self.bans.is_banned(p.addr.ip()) {
                continue;
            }
            self.candidates.learn(&p, now);
        }
        self.connect_candidates(now);
    }

    /// Runs until a piece verifies or storage fails. Cancel-safe: the only await point is
    /// [`Engine::wait`] (channel receives and a timer), so dropping the future loses nothing.
    ///
    /// After each wake-up, whatever else is ready is handled too — up to [`EVENT_BATCH`] peer
    /// messages, and all that waits in the other (small, bounded) queues — before requests are
    /// filled once. So a busy stream of peer messages cannot keep
    /// an incoming connection waiting for its handshake (the waiting side gives up after
    /// [`connection::HANDSHAKE_TIMEOUT`]), a verified piece or the tick; and the cost of
    /// filling requests is paid once per batch, not once per message.
    pub async fn next(&mut self) -> EngineEvent {
        loop {
            let wake = self.wait().await;
            if let Some(event) = self.handle(wake) {
                self.fill_requests();
                return event;
            }
            while let Ok(i) = self.incoming.try_recv() {
                self.on_incoming(i);
            }
            while let Ok(c) = self.connected.1.try_recv() {
                self.handle(Wake::Connected(c));
            }
            for _ in 0..EVENT_BATCH {
                let Ok(e) = self.events.1.try_recv() else { break };
                self.on_conn_event(e);
            }
            while let Ok((k, p, r, b)) = self.verified.1.try_recv() {
                if let Some(event) = self.handle(Wake::Verified(k, p, r, b)) {
                    self.fill_requests();
                    return event;
                }
            }
            if Instant::now() >= self.next_wake() {
                self.handle(Wake::Tick);
            }
            self.fill_requests();
        }
    }

    /// The first thing ready: a peer message, a connection, a verified piece, or the timer.
    async fn wait(&mut self) -> Wake {
        let timer = &mut self.timer;
        future::or(
            async { self.events.1.recv().await.map(Wake::Conn).unwrap_or(Wake::Tick) },
            future::or(
                async { self.incoming.recv().await.map(Wake::Incoming).unwrap_or(Wake::Tick) },
                future::or(
                    async { self.connected.1.recv().await.map(Wake::Connected).unwrap_or(Wake::Tick) },
                    future::or(
                        async {
                            self.verified
                                .1
                                .recv()
                                .await
                                .map(|(k, p, r, b)| Wake::Verified(k, p, r, b))
                                .unwrap_or(Wake::Tick)
                        },
                        async {
                            timer.await;
                            Wake::Tick
                        },
                    ),
                ),
            ),
        )
        .await
    }

    /// Handles one wake-up; a verified piece may end [`Engine::next`] with an event.
    fn handle(&mut self, wake: Wake) -> Option<EngineEvent> {
        match wake {
            Wake::Conn(e) => self.on_conn_event(e),
            Wake::Incoming(i) => self.on_incoming(i),
            Wake::Connected(Ok((addr, stream, hs, slot))) => {
                self.dialling -= 1;
                self.on_connected(addr, stream, hs, slot);
            }
            Wake::Connected(Err(addr)) => {
                self.dialling -= 1;
                if self.candidates.failed(&addr, Instant::now()) {
                    debug!(
                        "{}: {addr} failed {} connects in a row; forgotten until discovery names it again",
                        self.name,
                        super::candidates::MAX_CONNECT_FAILURES
                    );
                }
            }
            Wake::Verified(key, piece, result, buf) => {
                self.pool.give(buf);
                self.verifying -= 1;
                self.start_verifying();
                return self.on_verified(key, piece as usize, result);
            }
            Wake::Tick => {
                let now = Instant::now();
                self.forget_declines(now);
                let due = self.haves.take_due(now);
                self.send_haves(&due);
                if now >= self.next_tick {
                    self.next_tick = now + TICK;
                    self.tick(now);
                }
                self.timer.set_at(self.next_wake());
            }
        }
        None
    }

    fn conn_context(&self) -> ConnContext {
        ConnContext {
            pool: self.pool.clone(),
            storage: self.storage.clone(),
            have: self.have.clone(),
            layout: self.layout.clone(),
            events: self.events.0.clone(),
            upload: [self.ctx.upload.clone(), self.upload.clone()],
            download: [self.ctx.download.clone(), self.download.clone()],
            first_copies: self.first_copies.clone(),
        }
    }

    fn handshake(&self, version: u8) -> Handshake {
        Handshake { info_hash: self.info_hash, node_id: self.ctx.node_id, listen_port: self.ctx.listen_port, version }
    }

    /// The listen addresses of every connected peer.
    fn connected_addrs(&self) -> Vec<SocketAddr> {
        self.peers.values().map(|p| p.conn.addr).collect()
    }

    /// Tells each peer whose turn it is about the peers connected now that it has not heard of.
    fn exchange_peers(&mut self, now: Instant) {
        let connected = self.connected_addrs();
        for p in self.peers.values_mut() {
            let addr = p.conn.addr;
            if let Some(addrs) = p.exchange.as_mut().and_then(|x| x.due(now, addr, &connected)) {
                p.conn.send(Message::Peers(addrs));
            }
        }
    }

    /// Members a connected peer passed on: candidates to try.
    fn on_exchanged(&mut self, key: PeerKey, addrs: Vec<SocketAddr>) {
        let now = Instant::now();
        let Some(from) = self.peers.get(&key).map(|p| p.conn.addr) else { return };
        let connected: HashSet<SocketAddr> = self.peers.values().map(|p| p.conn.addr).collect();
        let mut taken = 0;
        for addr in addrs {
            if exchange::plausible(&addr, &from)
                && !connected.contains(&addr)
                && !self.bans.is_banned(addr.ip())
                && self.candidates.learn_exchanged(addr, now)
            {
                taken += 1;
            }
        }
        if taken > 0 {
            if let Some(p) = self.peers.get(&key) {
                debug!("{}: {} named {taken} members we did not know", self.name, p.conn.addr);
            }
            self.connect_candidates(now);
        }
    }

    fn room(&self) -> bool {
        self.peers.len() < self.max_peers
            && self.ctx.connections.load(Ordering::SeqCst) < self.ctx.max_connections.load(Ordering::SeqCst)
    }

    fn connect_candidates(&mut self, now: Instant) {
        let connected: HashSet<SocketAddr> = self.peers.values().map(|p| p.conn.addr).collect();
        let mut due = self.candidates.due(now, self.seeding(), &connected);
        due.shuffle(&mut rand::rng());
        for addr in due {
            if !self.room()
                || self.dialling >= MAX_DIALS_IN_FLIGHT
                || self.peers.len() + self.dialling >= self.max_peers
            {
                break;
            }
            let Some(slot) = self.ctx.registry.take_slot(addr.ip()) else { continue };
            self.candidates.dialling(&addr);
            self.dialling += 1;
            let tx = self.connected.0.clone();
            let hs = self.handshake(wire::VERSION);
            let counters = self.ctx.counters.clone();
            let local = self.ctx.listen_ip;
            counters.count(WireEvent::Dialed);
            self.ctx
                .executor
                .spawn(async move {
                    let result = match connection::connect(addr, local, hs).await {
                        Ok((stream, theirs)) => Ok((addr, stream, theirs, slot)),
                        Err(e) => {
                            debug!("connect to {addr}: {e}");
                            counters.count(WireEvent::DialFailed { timed_out: matches!(e, ConnectError::TimedOut) });
                            Err(addr)
                        }
                    };
                    let _ = tx.send(result).await;
                })
                .detach();
        }
    }

    fn on_connected(
        &mut self,
        addr: SocketAddr,
        stream: smol::Async<std::net::TcpStream>,
        hs: Handshake,
        slot: IpSlot,
    ) {
        self.candidates.connected(&addr);
        if hs.info_hash != self.info_hash {
            debug!("{}: {addr} answered for another swarm; closing", self.name);
            self.ctx.counters.count(WireEvent::Refused);
            self.candidates.closed(&addr, Instant::now());
            return;
        }
        if !self.admit(stream, hs.node_id, addr, true, slot, hs.version.min(wire::VERSION)) {
            // Not dialled again at once (it would be every tick).
            self.candidates.closed(&addr, Instant::now());
        }
    }

    /// An incoming connection for this torrent. No await in here: [`Engine::next`] may be
    /// dropped at any await point (the torrent task selects over it), and nothing received
    /// may be lost when it is.
    fn on_incoming(&mut self, i: Incoming) {
        use std::io::Write;
        let addr = SocketAddr::new(i.remote.ip(), i.handshake.listen_port);
        let version = i.handshake.version.min(wire::VERSION);
        let hs = wire::encode_handshake(&self.handshake(version));
        if let Err(why) = self.admission(i.handshake.node_id, addr, false) {
            // No room: answer, name the peers connected here (version 2), then close — a late
            // joiner that knew only this node learns where else to go.
            if why == Refusal::NoRoom {
                let mut answer = hs.to_vec();
                let others = exchange::sample(&self.connected_addrs(), addr);
                if version >= wire::PEERS_VERSION && !others.is_empty() {
                    answer.extend_from_slice(&wire::encode(&Message::Peers(others)));
                }
                // Under 1 KiB into a fresh connection's empty send buffer: it completes.
                if let Err(e) = i.stream.get_ref().write_all(&answer) {
                    debug!("{}: {addr}: could not answer before closing: {e}", self.name);
                }
            }
            return self.refused(addr, why);
        }
        // 76 bytes into a fresh connection's empty send buffer: a non-blocking write completes.
        match i.stream.get_ref().write(&hs) {
            Ok(n) if n == hs.len() => {
                self.admit(i.stream, i.handshake.node_id, addr, false, i.slot, version);
            }
            _ => {
                self.ctx.counters.count(WireEvent::Refused);
                debug!("{}: {addr}: could not answer the handshake", self.name);
            }
        }
    }

    /// Whether a connection from or to `addr`, whose peer claims `node_id`, may start: `Ok`
    /// with the connection it replaces, if any, or why not.
    ///
    /// Two connections between the same pair: keep the one opened by the lower node id, which
    /// both ends decide the same way. Only between the same addresses: an id is only a claim.
    /// A connection from another address claiming the id of a connected peer is a peer of its
    /// own — it never displaces the established one, and is not refused either (the first to
    /// connect under an id must not lock the real owner of that id out).
    fn admission(&self, node_id: NodeId, addr: SocketAddr, outgoing: bool) -> Result<Option<PeerKey>, Refusal> {
        if node_id == self.ctx.node_id {
            return Err(Refusal::Us);
        }
        if self.bans.is_banned(addr.ip()) {
            return Err(Refusal::Banned);
        }
        let own = self.ctx.node_id;
        let initiator = |out: bool, peer: NodeId| if out { own } else { peer };
        let same = self.peers.iter().find(|(_, p)| p.conn.node_id == node_id && p.conn.addr.ip() == addr.ip());
        if same.is_none()
            && let Some(other) = self.peers.values().find(|p| p.conn.node_id == node_id)
        {
            info!("{}: {addr} claims the node id of {}, connected from another address", self.name, other.conn.addr);
        }
        let replaces = match same {
            None => None,
            Some((&key, existing)) => {
                if initiator(outgoing, node_id) >= initiator(existing.conn.outgoing, node_id) {
                    return Err(Refusal::Duplicate);
                }
                Some(key)
            }
        };
        if replaces.is_none() && !self.room() {
            return Err(Refusal::NoRoom);
        }
        Ok(replaces)
    }

    fn refused(&self, addr: SocketAddr, why: Refusal) {
        self.ctx.counters.count(WireEvent::Refused);
        debug!("{}: {addr} refused: {why}", self.name);
    }

    /// Starts a connection, unless [`Engine::admission`] refuses it; returns whether it did.
    fn admit(
        &mut self,
        stream: smol::Async<std::net::TcpStream>,
        node_id: NodeId,
        addr: SocketAddr,
        outgoing: bool,
        slot: IpSlot,
        version: u8,
    ) -> bool {
        match self.admission(node_id, addr, outgoing) {
            Err(why) => {
                self.refused(addr, why);
                return false;
            }
            Ok(Some(key)) => self.close(key, "replaced by a connection in the agreed direction"),
            Ok(None) => {}
        }
        let key = self.next_key;
        self.next_key += 1;
        let exchange = version >= wire::PEERS_VERSION;
        let conn =
            connection::start(stream, key, node_id, addr, outgoing, exchange, self.conn_context(), &self.ctx.executor);
        self.ctx.connections.fetch_add(1, Ordering::SeqCst);
        self.ctx.counters.count(WireEvent::Established);
        debug!("{}: connected to {addr} ({})", self.name, if outgoing { "outgoing" } else { "incoming" });
        self.peers.insert(
            key,
            Peer {
                conn,
                bits: Bitfield::new(self.layout.piece_count()),
                peer_choking: true,
                peer_interested: false,
                am_interested: false,
                useful: 0,
                fetches: Fetches::default(),
                owed_since: Instant::now(),
                snubbed_at: None,
                down_rate: 0.0,
                up_rate: 0.0,
                last_down: 0,
                last_up: 0,
                unchoked_at: None,
                declined: Bitfield::new(self.layout.piece_count()),
                declined_until: None,
                exhausted: None,
                exchange: exchange.then(|| Exchange::new(Instant::now())),
                heard: false,
                outgoing,
                _slot: slot,
            },
        );
        self.exchange_peers(Instant::now());
        true
    }

    fn close(&mut self, key: PeerKey, why: &str) {
        let Some(p) = self.peers.remove(&key) else { return };
        debug!("{}: closing {}: {why}", self.name, p.conn.addr);
        self.closed_down += p.conn.stats.downloaded.load(Ordering::Relaxed);
        self.closed_up += p.conn.stats.uploaded.load(Ordering::Relaxed);
        self.picker.remove_peer(key, &p.bits);
        self.first_copies.forget(key);
        self.ctx.connections.fetch_sub(1, Ordering::SeqCst);
        let now = Instant::now();
        if p.bits.is_complete() {
            self.candidates.complete(&p.conn.addr);
        }
        if p.outgoing && !p.heard {
            // Answered and closed before its bitfield: a node without room. Back off as from
            // a failed connect (an exchanged address is dropped), not redialled in 5 s.
            self.candidates.failed(&p.conn.addr, now);
        } else {
            self.candidates.closed(&p.conn.addr, now);
        }
    }

    fn update_interest(&mut self, key: PeerKey) {
        let Some(p) = self.peers.get_mut(&key) else { return };
        let want = p.useful > 0;
        if want != p.am_interested {
            p.am_interested = want;
            p.conn.send(if want { Message::Interested } else { Message::NotInterested });
        }
    }

    fn on_conn_event(&mut self, e: ConnEvent) {
        match e {
            ConnEvent::Bitfield(key, bits) => {
                let seeding = self.seeding();
                let Some(p) = self.peers.get_mut(&key) else { return };
                p.heard = true;
                self.picker.remove_peer(key, &p.bits);
                let have = self.have.read().unwrap_or_else(|x| x.into_inner());
                p.useful = bits.ones().filter(|&i| !have.get(i)).count();
                drop(have);
                self.picker.add_peer(&bits);
                p.bits = bits;
                p.exhausted = None;
                // Two seeds have nothing to say to each other.
                if seeding && p.bits.is_complete() {
                    return self.close(key, "both seeding");
                }
                self.update_interest(key);
            }
            ConnEvent::Have(key, piece) => {
                let Some(p) = self.peers.get_mut(&key) else { return };
                if !p.bits.set(piece as usize) {
                    return;
                }
                p.exhausted = None;
                self.picker.peer_has(piece as usize, &p.bits);
                if !self.have.read().unwrap_or_else(|x| x.into_inner()).get(piece as usize) {
                    p.useful += 1;
                }
                let both_seeds = p.bits.is_complete() && self.seeding();
                if both_seeds {
                    return self.close(key, "both seeding");
                }
                self.update_interest(key);
            }
            ConnEvent::Choke(key) => {
                if let Some(p) = self.peers.get_mut(&key) {
                    p.peer_choking = true;
                }
            }
            ConnEvent::Unchoke(key) => {
                if let Some(p) = self.peers.get_mut(&key) {
                    p.peer_choking = false;
                }
            }
            ConnEvent::Interested(key) => {
                if let Some(p) = self.peers.get_mut(&key) {
                    p.peer_interested = true;
                }
                self.fill_free_slots(Instant::now());
            }
            ConnEvent::NotInterested(key) => {
                let Some(p) = self.peers.get_mut(&key) else { return };
                p.peer_interested = false;
                p.conn.set_choking(true);
                if p.unchoked_at.take().is_some() {
                    self.fill_free_slots(Instant::now());
                }
            }
            ConnEvent::Released { key, piece } => {
                let window =
                    if self.peers.values().any(|p| !p.bits.is_complete()) { DECLINED_FOR } else { DECLINED_ALONE };
                let Some(p) = self.peers.get_mut(&key) else { return };
                // Released after we dropped it: the reader has freed it, nothing more.
                if !p.fetches.done(piece, Instant::now()) {
                    return;
                }
                debug!("{}: {} will not send piece {piece}", self.name, p.conn.addr);
                p.declined.set(piece as usize);
                if p.declined_until.is_none() {
                    p.declined_until = Some(Instant::now() + window);
                    self.timer.set_at(self.next_wake());
                }
                self.picker.release(piece as usize, key);
            }
            ConnEvent::Dropped { key, piece } => {
                if let Some(p) = self.peers.get_mut(&key) {
                    p.fetches.confirm_drop(piece, Instant::now());
                }
            }
            ConnEvent::Piece { key, piece, data, digest } => {
                let now = Instant::now();
                if let Some(p) = self.peers.get_mut(&key) {
                    p.fetches.done(piece, now);
                }
                // A second copy that crossed our cancel (endgame): one copy is verified, once.
                if matches!(self.picker.state(piece as usize), PieceState::Verifying | PieceState::Have) {
                    debug!("{}: piece {piece} arrived again; one copy is enough", self.name);
                    self.pool.give(data);
                    return;
                }
                for other in self.picker.verifying(piece as usize, key) {
                    if let Some(p) = self.peers.get_mut(&other)
                        && p.fetches.drop_piece(piece, now)
                    {
                        p.conn.drop_piece(piece);
                    }
                }
                self.verify_queue.push_back(Received { key, piece, data, digest });
                self.start_verifying();
            }
            ConnEvent::Peers { key, addrs } => self.on_exchanged(key, addrs),
            ConnEvent::Closed { key, reason, misbehaved } => {
                if misbehaved && let Some(p) = self.peers.get(&key) {
                    warn!("{}: {} broke the protocol: {reason}; disconnected", self.name, p.conn.addr);
                }
                self.close(key, &reason);
                self.fill_free_slots(Instant::now());
            }
        }
    }

    fn start_verifying(&mut self) {
        while self.verifying < MAX_VERIFYING {
            let Some(Received { key, piece, data, digest }) = self.verify_queue.pop_front() else { return };
            self.verifying += 1;
            let storage = self.storage.clone();
            let expected = self.hashes[piece as usize];
            let tx = self.verified.0.clone();
            self.ctx
                .executor
                .spawn(async move {
                    let (result, data) = smol::unblock(move || {
                        let good = match digest {
                            Some(d) => d == expected.0,
                            None => hash_matches(&data, &expected),
                        };
                        let r =
                            if good { storage.write_piece(piece as usize, &data).map(|()| true) } else { Ok(false) };
                        (r, data)
                    })
                    .await;
                    let _ = tx.send((key, piece, result, data)).await;
                })
                .detach();
        }
    }

    fn on_verified(&mut self, key: PeerKey, piece: usize, result: Result<bool, StorageError>) -> Option<EngineEvent> {
        match result {
            Ok(true) => {
                if self.picker.state(piece) == PieceState::Have {
                    return None;
                }
                self.picker.verified(piece);
                self.have.write().unwrap_or_else(|x| x.into_inner()).set(piece);
                let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
                for k in keys {
                    if let Some(p) = self.peers.get_mut(&k)
                        && p.bits.get(piece)
                    {
                        p.useful = p.useful.saturating_sub(1);
                    }
                    self.update_interest(k);
                }
                let now = Instant::now();
                let ready = self.haves.push(piece as u32, now, self.seeding());
                if ready.is_empty() {
                    self.timer.set_at(self.next_wake());
                }
                self.send_haves(&ready);
                Some(EngineEvent::Verified(piece))
            }
            Ok(false) => {
                self.picker.failed(piece);
                let p = self.peers.get(&key)?;
                let (node, addr) = (p.conn.node_id, p.conn.addr);
                match self.bans.strike(addr, node) {
                    Strike::Counted(n) => {
                        warn!("{}: piece {piece} from {addr} failed verification (strike {n})", self.name)
                    }
                    Strike::Banned(n) => {
                        warn!("{}: piece {piece} from {addr} failed verification (strike {n})", self.name);
                        warn!(
                            "{}: banning {} (claimed node id {node}) after {n} bad pieces",
                            self.name,
                            super::bans::BanKey::of(addr.ip())
                        );
                        self.candidates.forget(&addr);
                        let same: Vec<PeerKey> = self
                            .peers
                            .iter()
                            .filter(|(_, p)| self.bans.is_banned(p.conn.addr.ip()))
                            .map(|(k, _)| *k)
                            .collect();
                        for k in same {
                            self.close(k, "banned");
                        }
                    }
                }
                None
            }
            Err(e) => {
                self.picker.failed(piece);
                Some(EngineEvent::StorageFailed(e))
            }
        }
    }

    /// Budget of bytes in flight for a peer ([`BUDGET_SECS`] of what it delivers, within
    /// `limits.max_in_flight_per_peer`), two pieces if the cap allows so that the next is asked
    /// for while one arrives, and always one; one piece while snubbed.
    fn budget(&self, p: &Peer) -> u64 {
        let piece = self.layout.piece_length();
        if p.snubbed_at.is_some() {
            return piece;
        }
        let cap = self.ctx.in_flight.per_peer.load(Ordering::Relaxed);
        ((p.down_rate * BUDGET_SECS) as u64).clamp(MIN_IN_FLIGHT.min(cap), cap).max((2 * piece).min(cap)).max(piece)
    }

    fn fill_requests(&mut self) {
        // Seeding, or hashing is behind: asking for more would only pile up buffers.
        let backlog: u64 = self.verify_queue.iter().map(|r| r.data.len() as u64).sum();
        if self.seeding() || backlog > MAX_VERIFY_BACKLOG {
            return;
        }
        // Every piece buffer this torrent holds: in flight, queued for and being verified.
        let torrent_cap = self.ctx.in_flight.per_torrent.load(Ordering::Relaxed);
        let mut held = backlog
            + self.verifying as u64 * self.layout.piece_length()
            + self.peers.values().map(|p| p.fetches.held_bytes()).sum::<u64>();
        let now = Instant::now();
        let mut order: Vec<(bool, PeerKey)> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.peer_choking && p.am_interested)
            .map(|(k, p)| (p.bits.is_complete(), *k))
            .collect();
        // Incomplete peers first: seeds get what leechers cannot give.
        order.sort();
        for (_, key) in order {
            while let Some(p) = self.peers.get(&key) {
                let generation = self.picker.generation();
                if p.fetches.held_bytes() >= self.budget(p) || p.exhausted == Some(generation) {
                    break;
                }
                let declined = &p.declined;
                let found = match self.picker.pick(&p.bits, declined) {
                    Some(piece) => Some(piece),
                    None if self.picker.endgame() => self.picker.pick_duplicate(key, &p.bits, declined),
                    None => None,
                };
                let Some(piece) = found else {
                    if let Some(p) = self.peers.get_mut(&key) {
                        p.exhausted = Some(generation);
                    }
                    break;
                };
                let len = self.layout.piece_len(piece);
                if held > 0 && held + len > torrent_cap {
                    return;
                }
                held += len;
                self.picker.assign(piece, key);
                if let Some(p) = self.peers.get_mut(&key) {
                    if p.fetches.asked_bytes() == 0 {
                        p.owed_since = now;
                    }
                    p.fetches.ask(piece as u32, len);
                    p.conn.fetch(piece as u32);
                }
            }
        }
    }

    fn tick(&mut self, now: Instant) {
        #[cfg(debug_assertions)]
        self.check_useful();
        // Rates, smoothed over a few seconds.
        let (mut down, mut up) = (0.0, 0.0);
        let mut stalled = Vec::new();
        for (key, p) in self.peers.iter_mut() {
            let d = p.conn.stats.downloaded.load(Ordering::Relaxed);
            let u = p.conn.stats.uploaded.load(Ordering::Relaxed);
            let dt = TICK.as_secs_f64();
            p.down_rate = 0.6 * p.down_rate + 0.4 * ((d - p.last_down) as f64 / dt);
            p.up_rate = 0.6 * p.up_rate + 0.4 * ((u - p.last_up) as f64 / dt);
            p.last_down = d;
            p.last_up = u;
            down += p.down_rate;
            up += p.up_rate;
            let last_block = p.conn.stats.last_block();
            if p.snubbed_at.is_some_and(|at| last_block > at || now.duration_since(at) >= STALL_AFTER * 4) {
                p.snubbed_at = None;
            }
            if p.fetches.asked_bytes() > 0
                && !p.peer_choking
                && now.duration_since(last_block.max(p.owed_since)) > STALL_AFTER
            {
                stalled.push(*key);
            }
        }
        self.down_rate = down;
        self.up_rate = up;
        self.up_capacity = up.max(self.up_capacity * UP_CAPACITY_DECAY);
        // Silent peers are gone; peers that do not read what we send them, or whose queues
        // overflowed, are cut off; quiet ones hear a keep-alive.
        let mut cut: Vec<(PeerKey, String)> = Vec::new();
        for (key, p) in &self.peers {
            let stats = &p.conn.stats;
            if now.duration_since(stats.last_frame()) > connection::IDLE_TIMEOUT {
                cut.push((*key, "nothing received for two minutes".into()));
            } else if let Some(stalled) = stats.send_stalled_for(now).filter(|d| *d > connection::SEND_STALL) {
                cut.push((*key, format!("has not read what we sent for {} s", stalled.as_secs())));
            } else if stats.overflowed() {
                cut.push((*key, format!("left {} KiB of our messages unread", connection::MAX_CONTROL_BYTES >> 10)));
            } else if p.fetches.dropping_since().is_some_and(|at| now.duration_since(at) > DROP_CONFIRM) {
                // Its reader is stuck inside a frame: the pieces we dropped keep their buffers.
                let mib = p.fetches.held_bytes() as f64 / (1 << 20) as f64;
                cut.push((*key, format!("stopped inside a block, holding {mib:.1} MiB of pieces we cancelled")));
            }
        }
        for (key, why) in cut {
            if let Some(p) = self.peers.get(&key) {
                info!("{}: disconnecting {}: {why}", self.name, p.conn.addr);
            }
            self.close(key, &why);
        }
        if now.duration_since(self.last_keepalive) >= connection::KEEPALIVE_EVERY {
            self.last_keepalive = now;
            for p in self.peers.values() {
                p.conn.send(Message::KeepAlive);
            }
        }
        for key in stalled {
            let Some(p) = self.peers.get_mut(&key) else { continue };
            let pieces: Vec<u32> = p.fetches.asked().collect();
            info!(
                "{}: {} stalled with {} pieces outstanding; fetching them elsewhere",
                self.name,
                p.conn.addr,
                pieces.len()
            );
            p.snubbed_at = Some(now);
            for &piece in &pieces {
                p.fetches.drop_piece(piece, now);
                p.conn.drop_piece(piece);
            }
            for piece in pieces {
                self.picker.release(piece as usize, key);
            }
        }
        if now.duration_since(self.last_rotation) >= ROTATE_EVERY {
            self.last_rotation = now;
            self.choke(now, true);
        } else {
            self.fill_free_slots(now);
        }
        self.exchange_peers(now);
        self.connect_candidates(now);
    }

    /// Declines past their window are forgotten: those pieces may be asked again.
    fn forget_declines(&mut self, now: Instant) {
        for p in self.peers.values_mut() {
            if p.declined_until.is_some_and(|until| until <= now) {
                p.declined = Bitfield::new(self.layout.piece_count());
                p.declined_until = None;
                p.exhausted = None;
            }
        }
    }

    /// When the timer should fire: the next tick, a batch of `have`s falling due, or a
    /// decline expiring before it.
    fn next_wake(&self) -> Instant {
        self.peers.values().filter_map(|p| p.declined_until).chain(self.haves.due()).fold(self.next_tick, Instant::min)
    }

    /// Tells every peer about `pieces` (a batch from [`HaveBatch`]), one write each (a peer
    /// connected meanwhile had them in its bitfield; a repeated `have` is harmless).
    fn send_haves(&self, pieces: &[u32]) {
        if pieces.is_empty() {
            return;
        }
        let haves: Vec<Message> = pieces.iter().copied().map(Message::Have).collect();
        for p in self.peers.values() {
            p.conn.send_all(&haves);
        }
    }

    /// Debug builds (and so every test) check the `useful` counts against the bitfields: a
    /// count that drifts to zero makes us lose interest in a peer we still need.
    #[cfg(debug_assertions)]
    fn check_useful(&self) {
        let have = self.have.read().unwrap_or_else(|x| x.into_inner());
        for p in self.peers.values() {
            let useful = p.bits.ones().filter(|&i| !have.get(i)).count();
            assert_eq!(p.useful, useful, "{}: useful count drifted for {}", self.name, p.conn.addr);
        }
    }

    /// The upload slots in use: as many as the uplink serves a piece each within
    /// [`SLOT_PIECE_TIME`], at most `limits.upload_slots`. Every node's, not only the seed's:
    /// a piece crosses the swarm in hops, and a hop through a leecher whose uplink is split
    /// 32 ways is as slow as the seed's first copy.
    fn upload_slots(&self) -> usize {
        upload_slots(
            self.ctx.upload_slots.load(Ordering::Relaxed),
            self.up_capacity.max(MIN_UPLOAD_RATE),
            self.layout.piece_length(),
        )
    }

    /// Unchokes interested peers while upload slots are free. O(peers),
    /// whatever a peer sends: this is all an `interested` costs.
    fn fill_free_slots(&mut self, now: Instant) {
        let slots = self.upload_slots();
        let mut unchoked = self.peers.values().filter(|p| p.unchoked_at.is_some()).count();
        while unchoked < slots {
            let Some(p) = self.peers.values_mut().find(|p| p.peer_interested && p.unchoked_at.is_none()) else {
                return;
            };
            debug!("{}: unchoking {}", self.name, p.conn.addr);
            p.conn.set_choking(false);
            p.unchoked_at = Some(now);
            unchoked += 1;
        }
    }

    /// Chooses the unchoked set: all interested peers if they fit in the upload slots;
    /// otherwise the best `slots - 1` (those giving us the most, or when seeding those needing
    /// the most) and one rotating slot.
    fn choke(&mut self, now: Instant, rotate: bool) {
        let slots = self.upload_slots();
        let seeding = self.seeding();
        let mut interested: Vec<(PeerKey, f64, Option<Instant>)> = self
            .peers
            .iter()
            .filter(|(_, p)| p.peer_interested)
            .map(|(k, p)| {
                let score = if seeding { -(p.bits.count() as f64) } else { p.down_rate };
                (*k, score, p.unchoked_at)
            })
            .collect();
        let chosen: HashSet<PeerKey> = if interested.len() <= slots {
            interested.iter().map(|(k, _, _)| *k).collect()
        } else {
            interested.sort_by(|a, b| b.1.total_cmp(&a.1));
            let mut chosen: HashSet<PeerKey> = interested.iter().take(slots - 1).map(|(k, _, _)| *k).collect();
            // The rotating slot: keep the current holder until rotation, then the longest waiting.
            let rest: Vec<&(PeerKey, f64, Option<Instant>)> = interested.iter().skip(slots - 1).collect();
            let keep = rest.iter().find(|(_, _, at)| at.is_some() && !rotate).map(|(k, _, _)| *k);
            let next = keep.or_else(|| rest.iter().min_by_key(|(_, _, at)| *at).map(|(k, _, _)| *k));
            if let Some(k) = next {
                chosen.insert(k);
            }
            chosen
        };
        for (k, p) in self.peers.iter_mut() {
            let unchoke = chosen.contains(k);
            if p.conn.is_choking() == unchoke {
                debug!("{}: {} {}", self.name, if unchoke { "unchoking" } else { "choking" }, p.conn.addr);
            }
            p.conn.set_choking(!unchoke);
            if unchoke && p.unchoked_at.is_none() {
                p.unchoked_at = Some(now);
            } else if !unchoke {
                p.unchoked_at = None;
            }
        }
    }

    /// The torrent completed: stop fetching, drop connections to other seeds, free the piece
    /// buffers kept for reuse.
    pub fn on_complete(&mut self) {
        self.first_copies.set_active(true);
        self.pool.close();
        let seeds: Vec<PeerKey> = self.peers.iter().filter(|(_, p)| p.bits.is_complete()).map(|(k, _)| *k).collect();
        for k in seeds {
            self.close(k, "both seeding");
        }
        for p in self.peers.values_mut() {
            if p.am_interested {
                p.am_interested = false;
                p.conn.send(Message::NotInterested);
            }
        }
    }

    /// Stops accepting connections and closes every connection.
    pub fn shutdown(&mut self) {
        self.ctx.registry.unregister(&self.info_hash);
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for k in keys {
            self.close(k, "torrent stopped");
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The upload slots for an uplink measured at `capacity` bytes/s: enough that each peer
/// receives a piece of `piece_length` within [`SLOT_PIECE_TIME`], within
/// [`MIN_UPLOAD_SLOTS`]…`configured` (and never more than `configured`, nor fewer than one).
fn upload_slots(configured: usize, capacity: f64, piece_length: u64) -> usize {
    let configured = configured.max(1);
    let per_slot = piece_length.max(1) as f64 / SLOT_PIECE_TIME.as_secs_f64();
    let by_rate = (capacity / per_slot).ceil();
    // A rate is finite and non-negative, but a float never becomes a count unchecked.
    let by_rate = if by_rate.is_nan() { 0 } else { by_rate.clamp(0.0, configured as f64) as usize };
    by_rate.clamp(MIN_UPLOAD_SLOTS.min(configured), configured)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIECE: u64 = 256 * 1024;
    const MBIT: f64 = 1e6 / 8.0;

    #[test]
    fn upload_slots_follow_the_uplink() {
        // 20 Mbit/s serves 256 KiB in 0.5 s to 4.8 peers at once: 5 slots, not 32.
        assert_eq!(upload_slots(32, 20.0 * MBIT, PIECE), 5);
        // 100 Mbit/s: 24.
        assert_eq!(upload_slots(32, 100.0 * MBIT, PIECE), 24);
        // A fast uplink is capped by the configuration.
        assert_eq!(upload_slots(32, 10_000.0 * MBIT, PIECE), 32);
        // Smaller pieces need fewer bytes per slot: more slots.
        assert_eq!(upload_slots(32, 20.0 * MBIT, 64 * 1024), 20);
    }

    #[test]
    fn upload_slots_before_any_rate_is_measured_keep_a_few_peers_busy() {
        assert_eq!(upload_slots(32, 0.0, PIECE), MIN_UPLOAD_SLOTS);
        assert_eq!(upload_slots(32, 1.0, PIECE), MIN_UPLOAD_SLOTS);
        // The operator's limit wins over the minimum.
        assert_eq!(upload_slots(2, 0.0, PIECE), 2);
        assert_eq!(upload_slots(0, 0.0, PIECE), 1);
        assert_eq!(upload_slots(32, f64::NAN, PIECE), MIN_UPLOAD_SLOTS);
        assert_eq!(upload_slots(32, f64::INFINITY, PIECE), 32);
        assert_eq!(upload_slots(32, -5.0, PIECE), MIN_UPLOAD_SLOTS);
    }
}
