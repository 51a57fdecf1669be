//! The discovery service: the daemon's driver for the sans-IO [`Node`].
//!
//! One task owns the node and the UDP socket. It feeds the node every datagram, polls it at its
//! deadlines, sends what it produces, and takes commands from torrents ([`DiscoveryHandle`]):
//! join a swarm, change status, leave. It publishes swarm views and counters into
//! [`DaemonShared`] for `status` and `peers`, forwards new members to torrents that subscribed
//! (one batch per flush, none lost while a torrent's queue is full: [`super::feed`]), and persists
//! the routing table and peer tables ([`super::persist`]: atomically, at most every
//! [`SAVE_EVERY`], and at shutdown). At start it restores them and pings every remembered node, so a restarted node
//! rejoins its swarms and the network even when every bootstrap node is gone.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use log::{debug, info, warn};
use smol::Async;

use super::feed::{PeerFeed, SUBSCRIBER_QUEUE};
use super::node::{DiscoveryConfig, Event, Node};
use super::persist;
use super::wire::{MAX_DATAGRAM, PeerRecord, PeerStatus};
use crate::config::DiscoverySettings;
use crate::control::protocol::{LookupStats, RpcCounters};
use crate::descriptor::{InfoHash, NodeAddr};
use crate::node_id::NodeId;
use crate::shared::DaemonShared;
use crate::state::StateDir;
use crate::units::unix_now;

/// Commands from torrents waiting for the service; a torrent sending more waits (each is
/// handled in microseconds, so only a burst of hundreds of torrents starting at once meets it).
const COMMAND_QUEUE: usize = 256;
/// Longest interval between saves of changed tables.
pub const SAVE_EVERY: Duration = Duration::from_secs(30);
/// How often views and counters are published (and members a torrent could not take yet
/// offered again, [`PeerFeed::deliver`]).
const PUBLISH_EVERY: Duration = Duration::from_millis(500);

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
    /// `p2pctl drain` began ([`Node::drain`]).
    Drain,
    Shutdown {
        done: async_channel::Sender<()>,
    },
}

/// A member of a swarm as discovery knows it (published for `p2pctl peers`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmMember {
    pub record: PeerRecord,
    /// Since it was last heard from.
    pub last_seen: Duration,
    /// Its own status as it answered our latest `draining` announce, and how long ago (what a
    /// drain counts copies by).
    pub drain_answer: Option<(PeerStatus, Duration)>,
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

    /// Tells every swarm this node seeds that it is draining ([`Node::drain`]).
    pub async fn drain(&self) {
        let _ = self.commands.send(Command::Drain).await;
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
    persist::restore(&mut node, &state, &shared, now, unix_now());
    let (tx, rx) = async_channel::bounded(COMMAND_QUEUE);
    let service = Service {
        node,
        socket,
        state,
        shared,
        feed: PeerFeed::default(),
        dirty: true,
        last_save: now,
        saved: persist::Saved::default(),
        lookups: (0, 0, std::collections::VecDeque::new()),
    };
    Ok((DiscoveryHandle { commands: tx }, service.run(rx)))
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
    /// What the last save wrote.
    saved: persist::Saved,
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
                    // A receive with datagrams waiting never waits: without a turn, a flood
                    // would hold the one network thread (see `runtime::run`).
                    future::yield_now().await;
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
            Command::Drain => self.node.drain(now),
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
                .map(|p| SwarmMember {
                    record: PeerRecord { id: p.id, addr: p.addr, status: p.status },
                    last_seen: now.saturating_duration_since(p.last_seen),
                    drain_answer: p.drain_answer.map(|(s, at)| (s, now.saturating_duration_since(at))),
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
    /// swarms no longer known ([`persist`]).
    async fn save(&mut self, now: Instant) {
        self.last_save = now;
        self.dirty = false;
        let changes = self.saved.changes(&self.node, now, unix_now());
        if changes.is_empty() {
            return;
        }
        let state = self.state.clone();
        if let Err(e) = smol::unblock(move || changes.apply(&state)).await {
            warn!("discovery: saving tables: {e}");
            self.saved.forget();
            self.dirty = true;
        }
    }
}
