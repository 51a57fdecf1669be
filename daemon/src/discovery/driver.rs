//! The discovery service: the daemon's driver for the sans-IO [`Node`].
//!
//! One task owns the node and the UDP socket. It feeds the node every datagram, polls it at its
//! deadlines, sends what it produces, and takes commands from torrents ([`DiscoveryHandle`]):
//! join a swarm, change status, leave. It publishes swarm views and counters into
//! [`DaemonShared`] for `status` and `peers`, forwards new members to torrents that subscribed
//! (one batch per flush, none lost while a torrent's queue is full: [`PeerFeed`]), and persists
//! the routing table and peer tables (atomically, at most every [`SAVE_EVERY`], and at
//! shutdown). At start it restores them and pings every remembered node, so a restarted node
//! rejoins its swarms and the network even when every bootstrap node is gone.

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_lite::future;
use log::{debug, info, warn};
use serde::{Deserialize, Serialize};
use smol::Async;

use super::node::{DiscoveryConfig, Event, Node};
use super::wire::{MAX_DATAGRAM, NodeRecord, PeerRecord, PeerStatus};
use crate::config::DiscoverySettings;
use crate::control::protocol::{LookupStats, PeerInfo, RpcCounters};
use crate::descriptor::{InfoHash, NodeAddr};
use crate::node_id::NodeId;
use crate::shared::DaemonShared;
use crate::state::{Loaded, StateDir, StateKind};

/// Longest interval between saves of changed tables.
pub const SAVE_EVERY: Duration = Duration::from_secs(30);
/// How often views and counters are published (and members a torrent could not take yet
/// offered again, [`PeerFeed::deliver`]).
const PUBLISH_EVERY: Duration = Duration::from_millis(500);
/// Batches of members queued for one subscribed torrent.
const SUBSCRIBER_QUEUE: usize = 64;
/// Members kept for a subscribed torrent whose queue is full, at most (twice a swarm's peer
/// table at its default size: every member and as many leavers).
const MAX_UNDELIVERED: usize = 1024;
const STATE_VERSION: u32 = 1;

/// Turns the operator's settings into the node's configuration.
pub fn node_config(s: &DiscoverySettings) -> DiscoveryConfig {
    DiscoveryConfig { token_period: token_period(), ..DiscoveryConfig::from(s) }
}

/// How often the token secret rotates (a token lives one to two periods): 5 minutes. With the
/// `fault-injection` feature, `P2PD_FAULT_TOKEN_PERIOD_MS` sets it, so that a test sees a token
/// expire end to end without waiting ten minutes.
fn token_period() -> Duration {
    #[cfg(feature = "fault-injection")]
    if let Some(ms) = std::env::var("P2PD_FAULT_TOKEN_PERIOD_MS").ok().and_then(|v| v.parse::<u64>().ok()) {
        return Duration::from_millis(ms.max(1));
    }
    DiscoveryConfig::default().token_period
}

enum Command {
    /// Join a swarm, and send its members to `peers`.
    Join {
        info_hash: InfoHash,
        status: PeerStatus,
        bootstrap: Vec<SocketAddr>,
        peers: async_channel::Sender<Vec<PeerRecord>>,
    },
    SetStatus {
        info_hash: InfoHash,
        status: PeerStatus,
    },
    Leave {
        info_hash: InfoHash,
    },
    Bootstrap(Vec<SocketAddr>),
    Shutdown {
        done: async_channel::Sender<()>,
    },
}

/// How torrents (and the runtime) talk to the discovery service. Cheap to clone.
#[derive(Clone)]
pub struct DiscoveryHandle {
    commands: async_channel::Sender<Command>,
}

/// Resolves `host:port` addresses (DNS names through the system resolver).
pub async fn resolve(addrs: &[NodeAddr]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for a in addrs {
        if let Some(sa) = a.as_socket_addr() {
            out.push(sa);
            continue;
        }
        match smol::net::resolve((a.host.as_str(), a.port)).await {
            Ok(list) => out.extend(list),
            Err(e) => warn!("discovery: cannot resolve bootstrap node {a}: {e}"),
        }
    }
    out
}

impl DiscoveryHandle {
    /// Joins a swarm (announcing `status`), using `bootstrap` nodes besides the routing table.
    /// Its members arrive on the returned channel as they are accepted (their announces stored,
    /// or ours answered): those already known at once, then each as it comes.
    pub async fn join(
        &self,
        info_hash: InfoHash,
        status: PeerStatus,
        bootstrap: &[NodeAddr],
    ) -> async_channel::Receiver<Vec<PeerRecord>> {
        let bootstrap = resolve(bootstrap).await;
        let (peers, members) = async_channel::bounded(SUBSCRIBER_QUEUE);
        let _ = self.commands.send(Command::Join { info_hash, status, bootstrap, peers }).await;
        members
    }

    pub async fn set_status(&self, info_hash: InfoHash, status: PeerStatus) {
        let _ = self.commands.send(Command::SetStatus { info_hash, status }).await;
    }

    pub async fn leave(&self, info_hash: InfoHash) {
        let _ = self.commands.send(Command::Leave { info_hash }).await;
    }

    /// Joins the network through these nodes (config `bootstrap:`).
    pub async fn bootstrap(&self, addrs: &[NodeAddr]) {
        let addrs = resolve(addrs).await;
        if !addrs.is_empty() {
            let _ = self.commands.send(Command::Bootstrap(addrs)).await;
        }
    }

    /// Persists state, sends what is queued, and stops the service.
    pub async fn shutdown(&self) {
        let (tx, rx) = async_channel::bounded(1);
        if self.commands.send(Command::Shutdown { done: tx }).await.is_ok() {
            let _ = rx.recv().await;
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct RoutingState {
    version: u32,
    nodes: Vec<SavedNode>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedNode {
    id: NodeId,
    addr: SocketAddr,
}

#[derive(Debug, Serialize, Deserialize)]
struct PeersState {
    version: u32,
    info_hash: InfoHash,
    peers: Vec<SavedPeer>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedPeer {
    id: NodeId,
    addr: SocketAddr,
    status: PeerStatus,
    /// When last seen, in seconds since the Unix epoch.
    seen: u64,
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Receive buffer asked for: bursts (or floods) queue here rather than being dropped by the
/// kernel before the service can read and count them.
const RECEIVE_BUFFER: usize = 4 << 20;
/// Datagrams handled per wake-up before the service looks at its other work.
const MAX_BATCH: usize = 256;

/// Binds the UDP socket (at start-up, so a port in use is a start-up error).
pub fn bind(listen: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = UdpSocket::bind(listen)?;
    socket.set_nonblocking(true)?;
    // Best effort: the kernel caps it at net.core.rmem_max.
    let _ = nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::RcvBuf, &RECEIVE_BUFFER);
    Ok(socket)
}

/// Sets the service up: its handle, and the future to run as its task (until
/// [`DiscoveryHandle::shutdown`]).
pub fn start(
    socket: UdpSocket,
    node_id: NodeId,
    settings: &DiscoverySettings,
    state: StateDir,
    shared: Arc<DaemonShared>,
) -> std::io::Result<(DiscoveryHandle, impl Future<Output = ()> + Send + 'static)> {
    let socket = Async::new(socket)?;
    let now = Instant::now();
    let mut node = Node::new(node_id, node_config(settings), rand::random(), now);
    restore(&mut node, &state, &shared, now);
    let (tx, rx) = async_channel::unbounded();
    let service = Service {
        node,
        socket,
        state,
        shared,
        feed: PeerFeed::default(),
        dirty: true,
        last_save: now,
        saved: HashMap::new(),
        lookups: (0, 0, std::collections::VecDeque::new()),
    };
    Ok((DiscoveryHandle { commands: tx }, service.run(rx)))
}

/// Loads the routing table and peer tables saved by an earlier run.
fn restore(node: &mut Node, state: &StateDir, shared: &DaemonShared, now: Instant) {
    let report = |what: &str, moved_to: &std::path::Path, reason: &str| {
        let line = format!("{what} unreadable ({reason}); moved to {}; starting without it", moved_to.display());
        warn!("discovery: {line}");
        shared.warnings.lock().unwrap_or_else(|p| p.into_inner()).push(line);
    };
    match state.load::<RoutingState>(StateKind::Routing, None) {
        Loaded::Ok(r) if r.version == STATE_VERSION => {
            let nodes: Vec<NodeRecord> = r.nodes.iter().map(|n| NodeRecord { id: n.id, addr: n.addr }).collect();
            info!("discovery: {} nodes remembered from the last run; pinging them", nodes.len());
            node.restore_routing(now, &nodes);
        }
        Loaded::Ok(_) | Loaded::Missing => {}
        Loaded::Quarantined { moved_to, reason } => report("routing table", &moved_to, &reason),
    }
    let dir = state.root().join("peers");
    let Ok(entries) = std::fs::read_dir(&dir) else { return };
    let unix = unix_now();
    for entry in entries.flatten().take(100_000) {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("state") {
            continue;
        }
        match crate::state::load_file::<PeersState>(&path, StateKind::Peers) {
            Loaded::Ok(p) if p.version == STATE_VERSION => {
                let peers: Vec<(PeerRecord, Duration)> = p
                    .peers
                    .iter()
                    .map(|s| {
                        let age = Duration::from_secs(unix.saturating_sub(s.seen));
                        (PeerRecord { id: s.id, addr: s.addr, status: s.status }, age)
                    })
                    .collect();
                node.restore_peers(now, p.info_hash, &peers);
            }
            Loaded::Ok(_) | Loaded::Missing => {}
            Loaded::Quarantined { moved_to, reason } => report("peer table", &moved_to, &reason),
        }
    }
}

/// Members for the torrents subscribed to their swarms, owned by the service task.
///
/// Every member the node accepts ([`Event::Peers`]) is queued for each subscriber of its swarm
/// and delivered in one batch per [`PeerFeed::deliver`] (once per flush of the node). A torrent
/// busy elsewhere may leave its queue full ([`SUBSCRIBER_QUEUE`] batches): what could not be
/// sent is kept, merged with what comes next, and offered again at the next flush, so an
/// accepted member is never lost to a burst — the torrent would otherwise not hear of it until
/// its next re-announce, 10 minutes later.
#[derive(Default)]
struct PeerFeed {
    subscribers: HashMap<InfoHash, Vec<Subscriber>>,
}

/// One torrent waiting for members of a swarm.
struct Subscriber {
    peers: async_channel::Sender<Vec<PeerRecord>>,
    /// Accepted, not yet delivered: one record per address, the latest (a status change or a
    /// leave replaces what was queued for that address), at most [`MAX_UNDELIVERED`].
    undelivered: Vec<PeerRecord>,
}

impl PeerFeed {
    /// A torrent subscribes to `info_hash`; `known` (the members known now) comes first.
    fn subscribe(
        &mut self,
        info_hash: InfoHash,
        peers: async_channel::Sender<Vec<PeerRecord>>,
        known: Vec<PeerRecord>,
    ) {
        let mut sub = Subscriber { peers, undelivered: Vec::new() };
        sub.merge(&info_hash, &known);
        self.subscribers.entry(info_hash).or_default().push(sub);
    }

    fn unsubscribe(&mut self, info_hash: &InfoHash) {
        self.subscribers.remove(info_hash);
    }

    /// Members accepted for `info_hash`, for every subscriber of it.
    fn queue(&mut self, info_hash: &InfoHash, peers: &[PeerRecord]) {
        if let Some(subs) = self.subscribers.get_mut(info_hash) {
            for sub in subs.iter_mut() {
                sub.merge(info_hash, peers);
            }
        }
    }

    /// Sends each subscriber what it has not received yet, as one batch; keeps the batch for
    /// the next call if its queue is full, and forgets subscribers that went away.
    fn deliver(&mut self) {
        for subs in self.subscribers.values_mut() {
            subs.retain_mut(|sub| {
                if sub.undelivered.is_empty() {
                    return !sub.peers.is_closed();
                }
                match sub.peers.try_send(std::mem::take(&mut sub.undelivered)) {
                    Ok(()) => true,
                    Err(async_channel::TrySendError::Full(batch)) => {
                        sub.undelivered = batch;
                        true
                    }
                    Err(async_channel::TrySendError::Closed(_)) => false,
                }
            });
        }
        self.subscribers.retain(|_, subs| !subs.is_empty());
    }
}

impl Subscriber {
    fn merge(&mut self, info_hash: &InfoHash, peers: &[PeerRecord]) {
        for p in peers {
            match self.undelivered.iter().position(|q| q.addr == p.addr) {
                Some(i) => self.undelivered[i] = *p,
                None if self.undelivered.len() < MAX_UNDELIVERED => self.undelivered.push(*p),
                None => debug!(
                    "discovery: {info_hash}: {MAX_UNDELIVERED} members wait for a torrent that takes none; {} not passed on",
                    p.addr
                ),
            }
        }
    }
}

struct Service {
    node: Node,
    socket: Async<UdpSocket>,
    state: StateDir,
    shared: Arc<DaemonShared>,
    /// Torrents waiting for members of their swarm.
    feed: PeerFeed,
    /// Tables changed since the last save.
    dirty: bool,
    last_save: Instant,
    /// Lookups completed and found, and the latencies of the most recent successful ones.
    lookups: (u64, u64, std::collections::VecDeque<Duration>),
    /// Fingerprint of every table as last saved (the routing table under its own id).
    saved: HashMap<InfoHash, u64>,
}

/// A cheap summary of a table's content; minute-granular in `seen` so that refreshes do not
/// rewrite files every few seconds.
fn fingerprint<T: std::hash::Hash + Ord>(items: &mut [T]) -> u64 {
    use std::hash::{Hash, Hasher};
    items.sort();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    items.hash(&mut h);
    h.finish()
}

enum Wake {
    Datagram(std::io::Result<(usize, SocketAddr)>),
    Command(Option<Command>),
    Timer,
}

impl Service {
    async fn run(mut self, commands: async_channel::Receiver<Command>) {
        let mut buf = vec![0u8; MAX_DATAGRAM * 2];
        let mut next_publish = Instant::now();
        loop {
            self.flush().await;
            let now = Instant::now();
            if now >= next_publish {
                self.publish(now);
                next_publish = now + PUBLISH_EVERY;
            }
            if self.dirty && now.duration_since(self.last_save) >= SAVE_EVERY {
                self.save(now).await;
            }
            // The next save is due only when there is something to save: a deadline in the past
            // would fire at once, every time round, and the loop would spin without ever
            // yielding — a quiet node did that 30 s after its last save, at full CPU, starving
            // the executor thread so that even SIGTERM could not stop it.
            let mut deadline = self.node.next_deadline().min(next_publish);
            if self.dirty {
                deadline = deadline.min(self.last_save + SAVE_EVERY);
            }
            let wake = future::or(
                async { Wake::Datagram(self.socket.recv_from(&mut buf).await) },
                future::or(async { Wake::Command(commands.recv().await.ok()) }, async {
                    smol::Timer::at(deadline).await;
                    Wake::Timer
                }),
            )
            .await;
            let now = Instant::now();
            match wake {
                Wake::Datagram(Ok((n, from))) => {
                    self.node.handle_datagram(now, from, &buf[..n]);
                    // Drain what else is queued before doing anything else.
                    for _ in 1..MAX_BATCH {
                        match self.socket.get_ref().recv_from(&mut buf) {
                            Ok((n, from)) => self.node.handle_datagram(now, from, &buf[..n]),
                            Err(_) => break,
                        }
                    }
                    self.dirty = true;
                }
                Wake::Datagram(Err(e)) => {
                    // ICMP errors for earlier sends surface here on Linux; nothing to do.
                    debug!("discovery: receive: {e}");
                }
                Wake::Command(Some(Command::Shutdown { done })) => {
                    self.flush().await;
                    self.save(now).await;
                    let _ = done.send(()).await;
                    return;
                }
                Wake::Command(Some(cmd)) => self.command(now, cmd),
                Wake::Command(None) => return,
                Wake::Timer => self.node.poll(now),
            }
        }
    }

    fn command(&mut self, now: Instant, cmd: Command) {
        match cmd {
            Command::Join { info_hash, status, bootstrap, peers } => {
                info!("discovery: joining swarm {info_hash} as {}", status.as_str());
                self.node.join(now, info_hash, status, &bootstrap);
                // Members already known (a persisted table) are delivered at once.
                let known: Vec<PeerRecord> = self
                    .node
                    .swarms()
                    .get(&info_hash)
                    .map(|s| s.peers.values().map(|p| p.record()).collect())
                    .unwrap_or_default();
                self.feed.subscribe(info_hash, peers, known);
                self.feed.deliver();
            }
            Command::SetStatus { info_hash, status } => self.node.set_status(now, info_hash, status),
            Command::Leave { info_hash } => {
                self.node.leave(now, info_hash);
                self.feed.unsubscribe(&info_hash);
            }
            Command::Bootstrap(addrs) => self.node.bootstrap(now, &addrs),
            Command::Shutdown { .. } => unreachable!("handled by the loop"),
        }
        self.dirty = true;
    }

    /// Sends everything the node produced and hands its events on.
    async fn flush(&mut self) {
        let v6 = self.socket.get_ref().local_addr().map(|a| a.is_ipv6()).unwrap_or(false);
        for t in self.node.take_transmits() {
            let to = match (t.to, v6) {
                (SocketAddr::V4(a), true) => SocketAddr::new(a.ip().to_ipv6_mapped().into(), a.port()),
                (SocketAddr::V6(_), false) => continue,
                (a, _) => a,
            };
            if let Err(e) = self.socket.send_to(&t.bytes, to).await {
                debug!("discovery: send to {to}: {e}");
            }
        }
        for event in self.node.take_events() {
            match event {
                Event::Peers { info_hash, peers } => self.feed.queue(&info_hash, &peers),
                Event::LookupDone(report) => {
                    self.lookups.0 += 1;
                    if report.found {
                        self.lookups.1 += 1;
                        self.lookups.2.push_back(report.elapsed);
                        if self.lookups.2.len() > 1024 {
                            self.lookups.2.pop_front();
                        }
                    }
                }
            }
        }
        // One batch per subscriber per flush, whatever the number of announces accepted.
        self.feed.deliver();
    }

    /// Counters and swarm views for `status` and `peers`.
    fn publish(&self, now: Instant) {
        let rpc: RpcCounters = self.node.counters;
        let mut views = HashMap::new();
        for (hash, swarm) in self.node.swarms().swarms() {
            let peers = swarm
                .peers
                .values()
                .map(|p| PeerInfo {
                    address: p.addr.to_string(),
                    node_id: p.id.to_hex(),
                    status: p.status.as_str().to_string(),
                    last_seen_secs: now.duration_since(p.last_seen).as_secs(),
                    connected: false,
                    strikes: 0,
                    banned: false,
                    downloaded: 0,
                    uploaded: 0,
                    wire: None,
                })
                .collect();
            views.insert(*hash, peers);
        }
        let mut recent: Vec<f64> = self.lookups.2.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        recent.sort_by(|a, b| a.total_cmp(b));
        let pct = |p: f64| recent.get(((recent.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0.0);
        let lookups = LookupStats {
            completed: self.lookups.0,
            found: self.lookups.1,
            latency_p50_ms: pct(0.5),
            latency_p99_ms: pct(0.99),
        };
        self.shared.publish_discovery(rpc, self.node.routing().len() as u64, lookups, views);
    }

    /// Writes the routing table and the peer tables that changed, atomically; removes files of
    /// swarms no longer known.
    async fn save(&mut self, now: Instant) {
        self.last_save = now;
        self.dirty = false;
        let unix = unix_now();
        let mut writes: Vec<(Option<InfoHash>, Vec<u8>)> = Vec::new();
        let mut nodes: Vec<(NodeId, SocketAddr)> = self.node.routing().entries().map(|e| (e.id, e.addr)).collect();
        let routing_fp = fingerprint(&mut nodes);
        // The routing table is filed under the all-zero hash in `saved`.
        let routing_key = InfoHash([0; 32]);
        if self.saved.get(&routing_key) != Some(&routing_fp) {
            let r = RoutingState {
                version: STATE_VERSION,
                nodes: nodes.iter().map(|(id, addr)| SavedNode { id: *id, addr: *addr }).collect(),
            };
            writes.push((None, serde_json::to_vec(&r).unwrap_or_default()));
            self.saved.insert(routing_key, routing_fp);
        }
        let mut current = HashSet::new();
        for (hash, swarm) in self.node.swarms().swarms() {
            current.insert(*hash);
            let mut entries: Vec<(SocketAddr, NodeId, u8, u64)> = swarm
                .peers
                .values()
                .map(|p| {
                    let seen = unix.saturating_sub(now.duration_since(p.last_seen).as_secs());
                    (p.addr, p.id, p.status as u8, seen / 60)
                })
                .collect();
            let fp = fingerprint(&mut entries);
            if self.saved.get(hash) == Some(&fp) {
                continue;
            }
            self.saved.insert(*hash, fp);
            let state = PeersState {
                version: STATE_VERSION,
                info_hash: *hash,
                peers: swarm
                    .peers
                    .values()
                    .map(|p| SavedPeer {
                        id: p.id,
                        addr: p.addr,
                        status: p.status,
                        seen: unix.saturating_sub(now.duration_since(p.last_seen).as_secs()),
                    })
                    .collect(),
            };
            writes.push((Some(*hash), serde_json::to_vec(&state).unwrap_or_default()));
        }
        let gone: Vec<InfoHash> =
            self.saved.keys().filter(|h| **h != routing_key && !current.contains(h)).copied().collect();
        for h in &gone {
            self.saved.remove(h);
        }
        if writes.is_empty() && gone.is_empty() {
            return;
        }
        let state = self.state.clone();
        let result = smol::unblock(move || -> std::io::Result<()> {
            for (hash, body) in writes {
                match hash {
                    None => state.save_raw(StateKind::Routing, None, &body)?,
                    Some(h) => state.save_raw(StateKind::Peers, Some(&h), &body)?,
                }
            }
            for h in gone {
                state.remove(StateKind::Peers, Some(&h))?;
            }
            Ok(())
        })
        .await;
        if let Err(e) = result {
            warn!("discovery: saving tables: {e}");
            self.saved.clear();
            self.dirty = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The routing table and a peer table of format version 1 load, with what they held.
    #[test]
    fn discovery_state_of_format_version_1_loads() {
        let (_dir, path) = crate::state::fixture("routing.state");
        let Loaded::Ok(r) = crate::state::load_file::<RoutingState>(&path, StateKind::Routing) else {
            panic!("routing table not loaded")
        };
        let seed: SocketAddr = "127.0.0.1:46985".parse().unwrap();
        let seed_id = "f17335341612772ef0901c28ec4674530ca9488b0441b333e1a53055abc8171a";
        assert_eq!(r.version, STATE_VERSION);
        assert_eq!(r.nodes.iter().map(|n| (n.id.to_hex(), n.addr)).collect::<Vec<_>>(), [(seed_id.to_string(), seed)]);
        let (_dir, path) = crate::state::fixture("peers.state");
        let Loaded::Ok(p) = crate::state::load_file::<PeersState>(&path, StateKind::Peers) else {
            panic!("peer table not loaded")
        };
        assert_eq!(p.version, STATE_VERSION);
        assert_eq!(p.info_hash.to_hex(), crate::state::FIXTURE_HASH);
        let peers: Vec<_> = p.peers.iter().map(|s| (s.id.to_hex(), s.addr, s.status, s.seen)).collect();
        assert_eq!(peers, [(seed_id.to_string(), seed, PeerStatus::Seeding, 1_796_224_745)]);
    }

    fn member(i: u16, status: PeerStatus) -> PeerRecord {
        PeerRecord {
            id: NodeId([i as u8; 32]),
            addr: SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 6690)),
            status,
        }
    }

    fn drain(rx: &async_channel::Receiver<Vec<PeerRecord>>) -> Vec<Vec<PeerRecord>> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    /// Members accepted in one flush reach each subscriber as one batch.
    #[test]
    fn members_accepted_together_arrive_as_one_batch() {
        let hash = InfoHash([1; 32]);
        let mut feed = PeerFeed::default();
        let (tx, rx) = async_channel::bounded(SUBSCRIBER_QUEUE);
        let (tx2, rx2) = async_channel::bounded(SUBSCRIBER_QUEUE);
        feed.subscribe(hash, tx, vec![member(0, PeerStatus::Seeding)]);
        feed.subscribe(hash, tx2, Vec::new());
        for i in 1..=100 {
            feed.queue(&hash, &[member(i, PeerStatus::Idle)]);
        }
        // A status change within the same flush replaces what was queued for that address.
        feed.queue(&hash, &[member(7, PeerStatus::Leeching)]);
        feed.queue(&InfoHash([2; 32]), &[member(500, PeerStatus::Idle)]);
        feed.deliver();
        let batches = drain(&rx);
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].len(), 101, "the known member and the 100 accepted");
        assert_eq!(
            batches[0].iter().find(|p| p.addr == member(7, PeerStatus::Idle).addr).unwrap().status,
            PeerStatus::Leeching
        );
        let other = drain(&rx2);
        assert_eq!((other.len(), other[0].len()), (1, 100), "every subscriber gets its own batch");
    }

    /// Regression (issue 11 review): each accepted announce was one `try_send` into a queue of
    /// 64; a burst while the torrent was busy lost the rest until the next re-announce (10 min).
    #[test]
    fn a_burst_larger_than_the_queue_loses_no_member() {
        let hash = InfoHash([1; 32]);
        let mut feed = PeerFeed::default();
        let (tx, rx) = async_channel::bounded(SUBSCRIBER_QUEUE);
        feed.subscribe(hash, tx, Vec::new());
        // 200 flushes with one accepted member each, while the torrent takes nothing.
        for i in 0..200 {
            feed.queue(&hash, &[member(i, PeerStatus::Leeching)]);
            feed.deliver();
        }
        let mut got: Vec<PeerRecord> = drain(&rx).into_iter().flatten().collect();
        assert_eq!(got.len(), SUBSCRIBER_QUEUE, "the queue held 64 batches");
        // The torrent took its queue; the next flush brings the rest, with what came meanwhile.
        feed.queue(&hash, &[member(300, PeerStatus::Seeding)]);
        feed.deliver();
        let rest = drain(&rx);
        assert_eq!(rest.len(), 1, "one batch");
        got.extend(rest.into_iter().flatten());
        let mut addrs: Vec<SocketAddr> = got.iter().map(|p| p.addr).collect();
        addrs.sort();
        addrs.dedup();
        assert_eq!(addrs.len(), 201, "every member accepted reached the torrent, once");
        // A torrent gone is forgotten.
        drop(rx);
        feed.queue(&hash, &[member(301, PeerStatus::Idle)]);
        feed.deliver();
        assert!(feed.subscribers.is_empty());
    }

    /// What waits for a torrent that never takes anything stays bounded.
    #[test]
    fn undelivered_members_are_bounded() {
        let hash = InfoHash([1; 32]);
        let mut feed = PeerFeed::default();
        let (tx, _rx) = async_channel::bounded(1);
        feed.subscribe(hash, tx, Vec::new());
        feed.queue(&hash, &[member(0, PeerStatus::Idle)]);
        feed.deliver();
        for i in 1..=3000 {
            feed.queue(&hash, &[member(i, PeerStatus::Idle)]);
        }
        feed.deliver();
        assert_eq!(feed.subscribers[&hash][0].undelivered.len(), MAX_UNDELIVERED);
    }
}
