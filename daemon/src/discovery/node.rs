//! The discovery node, sans I/O: datagrams and time go in, datagrams and events come out.
//!
//! The caller (the daemon's [`driver`](super::driver), or the simulator) feeds
//! [`Node::handle_datagram`] with every datagram and its source, calls [`Node::poll`] when
//! [`Node::next_deadline`] passes, and sends what [`Node::take_transmits`] returns. Nothing
//! here touches a socket or a clock, so the same code runs in the daemon and in a
//! deterministic simulation of 10,000 nodes.
//!
//! Protocol (details in `docs/PROTOCOL.md`):
//! - Every request except `ping` carries a token the receiver issued to the sender's address
//!   (obtained from a `pong`, or from a `retry`). A request with a missing or stale token is
//!   answered only by `retry` with a fresh token — smaller than the request.
//! - `get_peers` from an origin: a node that knows the swarm answers `peers`; otherwise it
//!   acknowledges (`forwarded`) and forwards the request towards the info hash (the routing
//!   node closest to it and closer than itself), carrying the origin as it saw it (the
//!   datagram's source address, never a claimed one). Each hop is acknowledged and retried
//!   with backoff; a dead next hop is replaced by the next closest. Each node handles a
//!   (request id, origin) once, and a hop limit bounds the path.
//! - The node on the path that knows the swarm sends the origin `found` (a token and nothing
//!   else, smaller than the request that carried the origin); the origin then asks it
//!   directly, and only that validated request gets the peer list.
//! - Joining a swarm: look up its peers, ping each and announce ourselves (`announce`, idle
//!   first), then announce every status change; also announce to the `k` nodes closest to the
//!   info hash, so that lookups from anywhere converge on a node that knows the swarm.
//!   What one node sends a swarm is O(1) in its size: a join contacts each listed member once
//!   and at most [`JOIN_FANOUT`] of them; a status change goes to at most [`STATUS_FANOUT`].
//! - Storing: a node stores an announce only for a swarm it is a member of, or for one it is
//!   among the `k` closest to by its own routing table, counting one node per host
//!   (`Node::among_closest`); creating a stored swarm spends the source host's budget
//!   ([`NEW_SWARM_BURST`], [`NEW_SWARM_RATE`]).
//!   An accepted announce, either way (theirs stored by us, ours answered by them), is what
//!   tells a member's torrent about another member ([`Event::Peers`]); a member list from a
//!   lookup answer is only a list of addresses to announce to.
//! - Our own lookups keep [`RESERVED_FOR_OWN`] of the [`MAX_PENDING`] request slots: forwards
//!   for others take at most [`MAX_PENDING_FORWARDS`].
//!
//! Invariants (anti-amplification):
//! - Every answer sent to an address that has not proven it receives traffic there is sent in
//!   answer to a datagram received from (or naming) it, and is no larger than that datagram.
//!   [`Node::send_unvalidated`] enforces it.
//! - A request to an address that never proved it receives there (only named in a `nodes` or
//!   `peers` answer, or the source of a `found`) is sent once, never retried, until it
//!   answers (`Reach::Named`). Such requests on the word of a `nodes` or `peers` answer are
//!   paid from the byte credit of its sender: never more bytes than it sent this node
//!   (`Node::affordable`). A `found` sender is asked only once per path the lookup opened
//!   (`Lookup::named_holders`), paid from what came from its address and from the credit of
//!   the first hop that carried the path (`Node::pay_for_holder`).
//! - What others' answers can make a join do beyond its own schedule is bounded: at most
//!   [`MAX_TOP_UPS`] requests to the nodes that answered, and [`HOLDER_REATTEMPTS`] early
//!   attempts per lookup, each after a holder request that was paid for.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::{debug, trace};
use rand::RngExt;

use self::rng::NodeRng;
use super::key::{Key, distance, key_of_hash, key_of_node};
use super::ratelimit::{ByteCredit, HostLimiter, SourceLimiter};
use super::routing::{Insert, RoutingTable, few_per_host};
use super::swarms::{SwarmStore, Upsert};
use super::tokens::TokenIssuer;
use super::wire::{self, Body, MAX_NODES, MAX_PEERS, NodeRecord, Packet, PeerRecord, PeerStatus, Token, canonical};
use crate::config::DiscoverySettings;
use crate::descriptor::InfoHash;
use crate::node_id::NodeId;

/// How requests travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarding {
    /// Towards the info hash: one next hop, the closest known (this design).
    Greedy,
    /// To every neighbour (the prototype's strategy; kept for the comparison benchmark).
    Flood,
}

/// Tunables. [`DiscoveryConfig::default`] is what the daemon uses unless configured.
#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    /// Bucket size, and how many nodes closest to an info hash store its swarm.
    pub k: usize,
    /// find_node queries in flight per lookup.
    pub alpha: usize,
    /// First hops asked at once by a get_peers lookup (more are tried as others fail).
    pub first_hops: usize,
    /// Most hops a get_peers may travel.
    pub hop_limit: u8,
    /// First timeout of a request; doubled on each retry.
    pub rpc_timeout: Duration,
    /// Sends of one request before giving up (1 + retries).
    pub rpc_attempts: u32,
    /// A get_peers attempt with no answer is repeated (new request id, next first hop) after
    /// this long: `found` and `not_found` are sent once and may be lost.
    pub path_timeout: Duration,
    /// A get_peers lookup gives up after this long.
    pub lookup_timeout: Duration,
    /// Peer table entries not refreshed within this expire.
    pub peer_ttl: Duration,
    /// Members re-announce this often.
    pub announce_interval: Duration,
    /// Routing entries not heard from within this are pinged.
    pub refresh_interval: Duration,
    pub max_peers_per_swarm: usize,
    pub max_stored_swarms: usize,
    /// Routing-table entries per IP address.
    pub max_nodes_per_ip: usize,
    /// Peer-table entries per IP address in one swarm.
    pub max_peers_per_ip: usize,
    /// Per-source packet rate limit (packets/s) and burst.
    pub rate_limit: f64,
    pub rate_burst: f64,
    /// Stored swarms one source host may create: per second, and in a burst.
    pub new_swarm_rate: f64,
    pub new_swarm_burst: f64,
    /// Requests in flight at most, and how many of them forwards for others may hold.
    pub max_pending: usize,
    pub max_pending_forwards: usize,
    pub forwarding: Forwarding,
    /// How long handled request ids are remembered.
    pub seen_ttl: Duration,
    pub max_seen: usize,
    /// Token secret rotation period.
    pub token_period: Duration,
    /// Period of housekeeping (expiry, re-announce, refresh).
    pub maintenance_interval: Duration,
}

impl Default for DiscoveryConfig {
    /// The operator's defaults (`discovery:` in `p2pd.yaml`, one place: [`DiscoverySettings`])
    /// and this module's own.
    fn default() -> Self {
        DiscoveryConfig::from(&DiscoverySettings::default())
    }
}

impl From<&DiscoverySettings> for DiscoveryConfig {
    /// The operator's settings; everything `p2pd.yaml` does not name at this module's values.
    fn from(s: &DiscoverySettings) -> Self {
        DiscoveryConfig {
            k: s.k as usize,
            alpha: 3,
            first_hops: 1,
            hop_limit: s.hop_limit,
            rpc_timeout: Duration::from_millis(s.rpc_timeout_ms),
            rpc_attempts: s.rpc_attempts,
            path_timeout: Duration::from_secs(2),
            lookup_timeout: Duration::from_secs(s.lookup_timeout_secs),
            peer_ttl: Duration::from_secs(s.peer_ttl_secs),
            announce_interval: Duration::from_secs(s.announce_interval_secs),
            refresh_interval: Duration::from_secs(15 * 60),
            max_peers_per_swarm: s.max_peers_per_swarm as usize,
            max_stored_swarms: s.max_stored_swarms as usize,
            max_nodes_per_ip: s.max_nodes_per_ip as usize,
            max_peers_per_ip: s.max_nodes_per_ip as usize,
            rate_limit: f64::from(s.rate_limit),
            rate_burst: 2.0 * f64::from(s.rate_limit),
            new_swarm_rate: NEW_SWARM_RATE,
            new_swarm_burst: NEW_SWARM_BURST,
            max_pending: MAX_PENDING,
            max_pending_forwards: MAX_PENDING_FORWARDS,
            forwarding: Forwarding::Greedy,
            seen_ttl: Duration::from_secs(120),
            max_seen: 1 << 16,
            token_period: Duration::from_secs(5 * 60),
            maintenance_interval: Duration::from_secs(30),
        }
    }
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

/// How a get_peers lookup ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupReport {
    pub info_hash: InfoHash,
    pub request_id: u64,
    /// Some node that knows the swarm answered.
    pub found: bool,
    pub peers: Vec<PeerRecord>,
    /// Attempts made (each with a new request id).
    pub attempts: u32,
    /// Forwarding hops until a node that knew the swarm (0: the first hop knew).
    pub hops: Option<u8>,
    pub elapsed: Duration,
}

/// What the node tells its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Members of a swarm we are in, learned or updated.
    Peers {
        info_hash: InfoHash,
        peers: Vec<PeerRecord>,
    },
    LookupDone(LookupReport),
}

/// What the node counts: the `rpc` counters of `p2pctl status --json`, kept in that type so
/// that the status needs no copy field by field. Datagram accounting:
/// `received == handled + dropped_malformed + rate_limited + dropped_unsolicited` always holds.
pub type Counters = crate::control::protocol::RpcCounters;

/// A request that needs the receiver's token.
#[derive(Debug, Clone)]
enum Need {
    FindNode {
        lookup: u64,
        target: Key,
    },
    GetPeers {
        lookup: u64,
        request_id: u64,
        info_hash: InfoHash,
        hop_limit: u8,
    },
    Forward(ForwardJob),
    /// Our `status` in a swarm; `listed`: the status a lookup answer gave the receiver, which
    /// it is recorded with once it answers (it is not in our table yet).
    Announce {
        info_hash: InfoHash,
        status: PeerStatus,
        listed: Option<PeerStatus>,
    },
}

/// A get_peers this node is forwarding for someone else.
#[derive(Debug, Clone)]
struct ForwardJob {
    info_hash: InfoHash,
    request_id: u64,
    hops: u8,
    hops_left: u8,
    origin: NodeRecord,
    /// Next hops already tried.
    tried: Vec<SocketAddr>,
    /// Size of the datagram that brought the request: the budget for anything sent to the
    /// (unvalidated) origin on its behalf.
    budget: usize,
    /// Whether the origin is validated (we are its first hop).
    origin_validated: bool,
    /// Whether the sideways last step (see [`Node::forward`]) was taken.
    sideways: bool,
}

#[derive(Debug, Clone)]
enum Purpose {
    /// A ping; then, with the token from the pong, this.
    Ping { then: Option<After> },
    /// A token-bearing request; `retried` once a `retry` answer was followed.
    Need { need: Need, retried: bool },
}

impl Purpose {
    /// Whether the request is sent on another node's behalf (a forward, or the ping that
    /// fetches a token for one): those may hold at most [`MAX_PENDING_FORWARDS`] slots.
    fn for_others(&self) -> bool {
        matches!(
            self,
            Purpose::Need { need: Need::Forward(_), .. } | Purpose::Ping { then: Some(After::Need(Need::Forward(_))) }
        )
    }
}

/// What became of a request to forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hop {
    Sent,
    /// No next hop left to try: the path ends here.
    NoneLeft,
    /// No request slot free for others ([`MAX_PENDING_FORWARDS`]).
    Busy,
}

/// Whether an address proved that it receives traffic there, which decides how often a
/// request may be sent to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// It did, or the operator gave it: in the routing table, answered us, presented our
    /// token, a bootstrap node, or remembered from an earlier run. Retried as configured.
    Proven,
    /// Only named by another node (a `nodes` or `peers` answer): one datagram, no retry,
    /// unless [`Node::validated`] finds it proven after all.
    Named,
}

#[derive(Debug, Clone)]
enum After {
    Need(Need),
    /// Start a find_node for our own id (bootstrap).
    SelfLookup,
}

#[derive(Debug, Clone)]
struct Pending {
    to: SocketAddr,
    bytes: Vec<u8>,
    attempts: u32,
    /// Sends allowed in all: `rpc_attempts`, or 1 to an address never validated.
    max_attempts: u32,
    timeout: Duration,
    deadline: Instant,
    purpose: Purpose,
}

/// An origin-side get_peers lookup.
#[derive(Debug, Clone)]
struct Lookup {
    info_hash: InfoHash,
    started: Instant,
    /// The whole lookup ends by then.
    deadline: Instant,
    /// The current attempt is repeated by then.
    attempt_deadline: Instant,
    /// The current attempt's request id (answers to earlier attempts still count).
    request_id: u64,
    attempts: u32,
    /// First hops, in the order to try them.
    candidates: Vec<SocketAddr>,
    /// Index of the next candidate to try (round robin over attempts).
    next: usize,
    /// First hops that did not answer at all.
    dead: HashSet<SocketAddr>,
    /// First hops that answered `not_found` in this attempt.
    not_found: HashSet<SocketAddr>,
    /// Requests of this attempt not yet concluded.
    open_paths: usize,
    /// Holders already asked directly.
    holders: HashSet<SocketAddr>,
    /// `found` senders never validated that this attempt may still ask directly: one per path
    /// opened (each path is one request to a validated first hop, and an honest path sends
    /// one `found`), so a node on the path cannot aim this node's requests at many addresses.
    named_holders: usize,
    /// First hops asked in this attempt: the paths a `found` may have come through, whose
    /// credit pays for asking a holder never validated ([`Node::pay_for_holder`]).
    asked: Vec<SocketAddr>,
    /// Attempts started early because a holder asked once did not answer.
    holder_reattempts: u32,
    /// Hop limit of its requests: the configured one, or 0 for a top-up, which asks only the
    /// node that answered (it knows the swarm) and never goes further.
    hop_limit: u8,
    /// A top-up ([`MAX_TOP_UPS`]): one attempt, to one node, then done.
    top_up: bool,
    hops: Option<u8>,
    /// Join the swarm with this status once peers are known.
    join: Option<PeerStatus>,
    done: bool,
}

impl Lookup {
    /// A lookup not started yet ([`Node::new_attempt`] starts it).
    fn new(
        now: Instant,
        timeout: Duration,
        info_hash: InfoHash,
        candidates: Vec<SocketAddr>,
        hop_limit: u8,
        join: Option<PeerStatus>,
    ) -> Lookup {
        Lookup {
            info_hash,
            started: now,
            deadline: now + timeout,
            attempt_deadline: now,
            request_id: 0,
            attempts: 0,
            candidates,
            next: 0,
            dead: HashSet::new(),
            not_found: HashSet::new(),
            open_paths: 0,
            holders: HashSet::new(),
            named_holders: 0,
            asked: Vec::new(),
            holder_reattempts: 0,
            hop_limit,
            top_up: false,
            hops: None,
            join,
            done: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Candidate {
    Fresh,
    Asked,
    Answered,
    Failed,
}

/// Why a find_node lookup runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeLookupPurpose {
    /// Our own id: joining, or refreshing; bucket refreshes follow.
    SelfLookup,
    /// A random id in one bucket's range, to fill that bucket.
    Refresh,
    /// An info hash: announce to the closest nodes found (the swarm's storers).
    Announce(InfoHash, PeerStatus),
}

/// An iterative find_node: for bootstrap (our own id) and to find an info hash's storers.
#[derive(Debug, Clone)]
struct NodeLookup {
    target: Key,
    purpose: NodeLookupPurpose,
    candidates: Vec<(NodeRecord, Candidate)>,
    in_flight: usize,
}

/// The discovery node. A clone is independent (its random generator forked: [`rng`]), for
/// running several scenarios on one simulated network.
#[derive(Clone)]
pub struct Node {
    id: NodeId,
    config: DiscoveryConfig,
    rng: NodeRng,
    routing: RoutingTable,
    swarms: SwarmStore,
    issuer: TokenIssuer,
    limiter: SourceLimiter,
    /// Each source host's budget for creating stored swarms.
    new_swarms: HostLimiter,
    /// Bytes each source sent us (within the rate limit), which pay for the requests to
    /// addresses only it named ([`Node::affordable`]).
    credit: ByteCredit,
    /// Tokens others gave us in answer to our requests (so each proves its address), with
    /// when we got them.
    tokens: HashMap<SocketAddr, (Token, Instant)>,
    pending: HashMap<u32, Pending>,
    /// How many of `pending` are for others ([`Purpose::for_others`]).
    pending_for_others: usize,
    lookups: HashMap<u64, Lookup>,
    /// Request id of every attempt → its lookup.
    request_ids: HashMap<u64, u64>,
    node_lookups: HashMap<u64, NodeLookup>,
    /// Handled (request id, origin) pairs, with expiry order.
    seen: HashSet<(u64, SocketAddr)>,
    seen_order: VecDeque<(Instant, (u64, SocketAddr))>,
    /// Addresses to re-bootstrap from when the routing table empties.
    bootstrap: Vec<SocketAddr>,
    /// Member swarms: when they next re-announce.
    next_announce: HashMap<InfoHash, Instant>,
    /// Second looks after a join ([`FOLLOW_UP_LOOKUPS`]), soonest first.
    follow_ups: VecDeque<(Instant, InfoHash)>,
    /// Top-up lookups a join may still make ([`MAX_TOP_UPS`]).
    top_ups: HashMap<InfoHash, u32>,
    /// Members that answered each join's announce from lookup answers, with the status they
    /// acknowledged ([`JOIN_FANOUT`]).
    join_contacts: HashMap<InfoHash, HashMap<SocketAddr, PeerStatus>>,
    next_maintenance: Instant,
    /// Draining ([`Node::drain`]): our `seeding` is announced as `draining`.
    draining: bool,
    /// When members learnt of since are next told we drain.
    next_drain_tell: Instant,
    /// When the next self-lookup (and bucket refresh) is due.
    next_refresh: Instant,
    outbox: Vec<Transmit>,
    events: Vec<Event>,
    pub counters: Counters,
}

/// After joining a swarm, look its members up again this long after the join. Nodes that join
/// at the same moment (a fleet-wide deploy) each find the swarm before the others announced;
/// a second look finds them, so that the leechers form a mesh rather than a star around the
/// seed.
/// Looks in the first second find members that joined a moment after us: each pays for first
/// contacts with them (see [`MAX_TOP_UPS`]), which lists from a single look no longer do for
/// a whole fresh swarm.
const FOLLOW_UP_LOOKUPS: [Duration; 4] =
    [Duration::from_millis(300), Duration::from_secs(1), Duration::from_secs(2), Duration::from_secs(8)];

/// Top-ups a join may make: asking the node whose answer named members its author's credit
/// did not cover (see [`Node::affordable`]) again at once, for more. A member list of 20 pays
/// for about four first contacts; each repeat's answer pays for more, and members already being
/// contacted are not paid twice, so a fresh swarm of 20 meshes in a few round trips instead of
/// waiting for the follow-up lookups (a 16-host swarm that did took 2–4 × the minimum
/// distribution time instead of 1.5 ×).
///
/// Answers come from others, so a top-up is kept cheap and bounded: one `get_peers` with hop
/// limit 0 to the answering node alone (validated: it just answered), sent only after an answer
/// that bought at least one first contact, at most this many per join. The victim of a lying
/// list still receives no more bytes than the liar sent: every answer pays only for what it
/// bought.
const MAX_TOP_UPS: u32 = 8;

/// Members told of a change of our status (a join, leeching, seeding, leaving, the periodic
/// re-announce) in a swarm larger than this: the `k` nearest the swarm's key and a random
/// sample of the rest. Members that connected to us see the change on the connection; the
/// others learn it from the swarm's storers, peer exchange or a later re-announce.
const STATUS_FANOUT: usize = 16;

/// Distinct members a join announces itself to from lookup answers (answered, or being
/// contacted): enough to fill the torrent's peer list (50 by default) together with the members
/// that announce themselves to us, and with peer exchange. A member that answered is not
/// contacted again by a later lookup of the same join that lists it too; one that did not (its
/// first ping is never retried) may be, so a lost datagram costs one look, not the member.
const JOIN_FANOUT: usize = 32;

/// While draining, how often the members that need to hear it are told (see [`Node::drain`]).
const DRAIN_TELL_EVERY: Duration = Duration::from_secs(1);
/// Most `draining` announces sent at once (a node in many swarms tells their members over
/// several seconds rather than in one burst that peers' rate limits would drop).
const DRAIN_TELL_BATCH: usize = 256;
/// While draining, a member that answered is asked again once its answer is this old, so that
/// each one counted as a copy answered within the last [`crate::shared::FRESH_SEED`] (one that
/// does not answer leaves the table).
const DRAIN_RECONFIRM: Duration = Duration::from_secs(60);
/// While draining, a member whose status changed since it answered is asked again at most this
/// often.
const DRAIN_REASK: Duration = Duration::from_secs(5);

/// How long a token from another node is used before asking for a fresh one (the issuer
/// accepts it for at least one rotation period).
const TOKEN_REUSE: Duration = Duration::from_secs(4 * 60);
const MAX_TOKENS_KEPT: usize = 1 << 14;
/// Requests in flight (each with its retries) at most.
pub const MAX_PENDING: usize = 1 << 14;
/// Of those, the most that requests sent for others (forwards) may hold: the rest,
/// [`RESERVED_FOR_OWN`], stays free for this node's own lookups, announces and pings however
/// many forwards others ask of it.
pub const MAX_PENDING_FORWARDS: usize = MAX_PENDING - RESERVED_FOR_OWN;
/// Request slots forwards for others can never take.
pub const RESERVED_FOR_OWN: usize = 1 << 12;
/// How many times a lookup starts a new attempt at once when a holder it could ask only once
/// did not answer (as many as the retries a validated holder gets); later ones wait for
/// `path_timeout`.
const HOLDER_REATTEMPTS: u32 = 3;
/// Most bytes of credit a source address banks (see `Node::affordable`): 25 requests' worth.
pub const MAX_CREDIT: usize = 4 * wire::MAX_DATAGRAM;
/// Stored swarms one source host (IPv4 address, IPv6 /64) may create: a burst of this many...
pub const NEW_SWARM_BURST: f64 = 64.0;
/// ... then one every 10 s.
pub const NEW_SWARM_RATE: f64 = 0.1;

impl Node {
    pub fn new(id: NodeId, config: DiscoveryConfig, seed: u64, now: Instant) -> Node {
        let mut rng = NodeRng::seed_from_u64(seed);
        let issuer = TokenIssuer::new(&mut rng, now, config.token_period);
        Node {
            id,
            routing: RoutingTable::new(&id, config.k, config.max_nodes_per_ip),
            swarms: SwarmStore::new(config.max_peers_per_swarm, config.max_peers_per_ip, config.max_stored_swarms),
            limiter: SourceLimiter::new(config.rate_limit, config.rate_burst),
            new_swarms: HostLimiter::new(config.new_swarm_rate, config.new_swarm_burst),
            credit: ByteCredit::new(MAX_CREDIT),
            issuer,
            rng,
            tokens: HashMap::new(),
            pending: HashMap::new(),
            pending_for_others: 0,
            lookups: HashMap::new(),
            request_ids: HashMap::new(),
            node_lookups: HashMap::new(),
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
            bootstrap: Vec::new(),
            next_announce: HashMap::new(),
            follow_ups: VecDeque::new(),
            top_ups: HashMap::new(),
            join_contacts: HashMap::new(),
            next_maintenance: now + config.maintenance_interval,
            draining: false,
            next_drain_tell: now,
            next_refresh: now + config.refresh_interval,
            outbox: Vec::new(),
            events: Vec::new(),
            counters: Counters::default(),
            config,
        }
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn routing(&self) -> &RoutingTable {
        &self.routing
    }

    pub fn routing_mut(&mut self) -> &mut RoutingTable {
        &mut self.routing
    }

    pub fn swarms(&self) -> &SwarmStore {
        &self.swarms
    }

    pub fn swarms_mut(&mut self) -> &mut SwarmStore {
        &mut self.swarms
    }

    pub fn config(&self) -> &DiscoveryConfig {
        &self.config
    }

    /// Changes tunables (e.g. the forwarding strategy, for the comparison benchmark).
    pub fn config_mut(&mut self) -> &mut DiscoveryConfig {
        &mut self.config
    }

    /// Puts nodes known from an earlier run back in the routing table, and pings them all so
    /// that those still alive are confirmed (and the dead ones dropped in due course).
    pub fn restore_routing(&mut self, now: Instant, nodes: &[NodeRecord]) {
        for n in nodes {
            self.routing.insert_verified(n.id, canonical(n.addr), now);
        }
        let addrs: Vec<SocketAddr> = nodes.iter().map(|n| canonical(n.addr)).collect();
        for addr in addrs {
            let attempts = self.config.rpc_attempts;
            self.send_request(now, addr, Body::Ping, Purpose::Ping { then: Some(After::SelfLookup) }, attempts);
        }
    }

    /// Puts a swarm's members known from an earlier run back, each last seen `age` ago.
    pub fn restore_peers(&mut self, now: Instant, info_hash: InfoHash, peers: &[(PeerRecord, Duration)]) {
        for (p, age) in peers {
            if *age < self.config.peer_ttl && p.id != self.id {
                let seen = now.checked_sub(*age).unwrap_or(now);
                self.swarms.upsert(info_hash, *p, seen);
            }
        }
    }

    /// Requests awaiting an answer.
    pub fn pending_requests(&self) -> usize {
        self.pending.len()
    }

    /// Datagrams to send now.
    pub fn take_transmits(&mut self) -> Vec<Transmit> {
        std::mem::take(&mut self.outbox)
    }

    /// What happened since the last call.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// When [`Node::poll`] should next be called.
    pub fn next_deadline(&self) -> Instant {
        let mut t = self.next_maintenance;
        if let Some((at, _)) = self.follow_ups.front() {
            t = t.min(*at);
        }
        for p in self.pending.values() {
            t = t.min(p.deadline);
        }
        for l in self.lookups.values().filter(|l| !l.done) {
            t = t.min(l.deadline).min(l.attempt_deadline);
        }
        if self.draining {
            t = t.min(self.next_drain_tell);
        }
        t
    }
}

mod commands;
mod find_node;
mod lookup;
mod receive;
mod rng;
mod send;
mod timers;

#[cfg(test)]
mod tests;
