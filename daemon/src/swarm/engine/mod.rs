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
//!
//! The policies are pure modules beside this one, each with its unit tests: [`admission`]
//! (who may connect), [`choking`] (upload slots and who holds them), [`peer`] (per-peer
//! budget, stall and health rules), [`verify`] (the verify pipeline's queue); [`report`] turns
//! the engine's view of its peers ([`PeerView`], turned into `p2pctl peers` lines at the control
//! edge). This file wires them to the connections.

pub mod admission;
pub mod choking;
mod connections;
mod messages;
pub mod peer;
pub mod report;
pub mod verify;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures_lite::future;
use log::{debug, info};

use self::choking::Candidate;
use self::peer::{Health, Peer};
use self::verify::{Verified, VerifyQueue};
use super::bans::Bans;
use super::candidates::Candidates;
use super::connection::{self, BufferPool, ConnEvent};
use super::counters::WireCounters;
use super::first_copies::FirstCopies;
use super::have_batch::HaveBatch;
use super::limiter::RateLimit;
use super::listener::{Incoming, IpSlot, Registry};
use super::picker::{PeerKey, Picker};
use super::wire::{Handshake, Message};
use crate::bitfield::Bitfield;
use crate::descriptor::{InfoHash, PieceHash};
use crate::discovery::wire::PeerRecord;
use crate::node_id::NodeId;
use crate::storage::{Layout, Storage, StorageError};
use crate::tasks::TaskGroup;

pub use self::peer::{DROP_CONFIRM, STALL_AFTER};
pub use self::report::{LinkView, PeerView};
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
/// The upload rate (bytes/s) slots are counted for at least: 20 Mbit/s, a modest uplink.
/// Until a rate is measured (each tick, a second) the slots are those this rate allows, so a
/// swarm shorter than that is not held to four peers: a 16 MiB swarm on 200 Mbit/s links
/// with 64 KiB pieces is done in 0.7 s, and its seed starts with 20 slots.
const MIN_UPLOAD_RATE: f64 = 2_500_000.0;
/// Per tick, how much of its peak the measured upload capacity keeps: a peak is forgotten
/// within a minute or so (half-life about 35 s) when the uplink has become slower.
const UP_CAPACITY_DECAY: f64 = 0.98;
/// Events from a torrent's connections waiting for the engine; a reader waits for room.
const EVENT_QUEUE: usize = 1024;
/// Connects one torrent has started and not yet seen answered, at most: what a peer naming
/// addresses (exchange) or a discovery answer can make this node dial at once.
pub const MAX_DIALS_IN_FLIGHT: usize = 16;
/// Peer messages handled per wake-up, at most, before requests are filled and the other
/// sources looked at again.
const EVENT_BATCH: usize = 256;

/// An outgoing connection set up (or the candidate that could not be reached).
type Connected = Result<(SocketAddr, smol::Async<std::net::TcpStream>, Handshake, IpSlot), SocketAddr>;

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

enum Wake {
    Conn(ConnEvent),
    Incoming(Incoming),
    Connected(Connected),
    Verified(Verified),
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
    verified: (async_channel::Sender<Verified>, async_channel::Receiver<Verified>),
    verify_queue: VerifyQueue,
    /// Connects started and not yet answered (at most [`MAX_DIALS_IN_FLIGHT`]).
    dialling: usize,
    /// The tasks dialling (cancelled with the engine).
    dials: TaskGroup,
    /// The tasks verifying pieces.
    verifiers: TaskGroup,
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
            verified: async_channel::bounded(verify::MAX_VERIFYING),
            verify_queue: VerifyQueue::default(),
            dialling: 0,
            dials: TaskGroup::new("dial"),
            verifiers: TaskGroup::new("verify"),
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
    pub fn peer_views(&self) -> Vec<PeerView> {
        report::peer_views(self.peers.values(), &self.bans)
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
            while let Ok(v) = self.verified.1.try_recv() {
                if let Some(event) = self.handle(Wake::Verified(v)) {
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
                        async { self.verified.1.recv().await.map(Wake::Verified).unwrap_or(Wake::Tick) },
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
            Wake::Verified(Verified { key, piece, result, data }) => {
                self.pool.give(data);
                self.verify_queue.finished();
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

    /// Bytes to keep in flight with a peer ([`peer::budget`]).
    fn budget(&self, p: &Peer) -> u64 {
        let cap = self.ctx.in_flight.per_peer.load(Ordering::Relaxed);
        peer::budget(p.down_rate, p.snubbed_at.is_some(), self.layout.piece_length(), cap)
    }

    fn fill_requests(&mut self) {
        // Seeding, or hashing is behind: asking for more would only pile up buffers.
        if self.seeding() || self.verify_queue.behind() {
            return;
        }
        // Every piece buffer this torrent holds: in flight, queued for and being verified.
        let torrent_cap = self.ctx.in_flight.per_torrent.load(Ordering::Relaxed);
        let mut held = self.verify_queue.held_bytes(self.layout.piece_length())
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
            let stats = &p.conn.stats;
            let (d, u) = (stats.downloaded.load(Ordering::Relaxed), stats.uploaded.load(Ordering::Relaxed));
            p.update_rates(d, u, TICK);
            down += p.down_rate;
            up += p.up_rate;
            let last_block = p.conn.stats.last_block();
            if p.snubbed_at.is_some_and(|at| peer::snub_over(at, last_block, now)) {
                p.snubbed_at = None;
            }
            if peer::stalled(p.fetches.asked_bytes(), p.peer_choking, last_block, p.owed_since, now) {
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
            let health = Health {
                last_frame: stats.last_frame(),
                send_stalled_for: stats.send_stalled_for(now),
                overflowed: stats.overflowed(),
                dropping_since: p.fetches.dropping_since(),
                held_bytes: p.fetches.held_bytes(),
            };
            if let Some(why) = peer::cut_reason(health, now) {
                cut.push((*key, why));
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

    /// The upload slots in use ([`choking::upload_slots`]) for the uplink's measured capacity.
    fn upload_slots(&self) -> usize {
        choking::upload_slots(
            self.ctx.upload_slots.load(Ordering::Relaxed),
            self.up_capacity.max(MIN_UPLOAD_RATE),
            self.layout.piece_length(),
        )
    }

    /// Unchokes interested peers while upload slots are free. O(peers),
    /// whatever a peer sends: this is all an `interested` costs.
    fn fill_free_slots(&mut self, now: Instant) {
        let unchoked = self.peers.values().filter(|p| p.unchoked_at.is_some()).count();
        let waiting = self.peers.iter().filter(|(_, p)| p.peer_interested && p.unchoked_at.is_none()).map(|(k, _)| *k);
        for key in choking::free_slot_takers(self.upload_slots(), unchoked, waiting) {
            let Some(p) = self.peers.get_mut(&key) else { continue };
            debug!("{}: unchoking {}", self.name, p.conn.addr);
            p.conn.set_choking(false);
            p.unchoked_at = Some(now);
        }
    }

    /// Chooses the unchoked set ([`choking::choose`]): all interested peers if they fit in the
    /// upload slots; otherwise the best `slots - 1` (those giving us the most, or when seeding
    /// those needing the most) and one rotating slot.
    fn choke(&mut self, now: Instant, rotate: bool) {
        let seeding = self.seeding();
        let interested: Vec<Candidate> = self
            .peers
            .iter()
            .filter(|(_, p)| p.peer_interested)
            .map(|(&key, p)| Candidate {
                key,
                score: if seeding { -(p.bits.count() as f64) } else { p.down_rate },
                unchoked_at: p.unchoked_at,
            })
            .collect();
        let chosen = choking::choose(interested, self.upload_slots(), rotate);
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
