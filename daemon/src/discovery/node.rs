//! The discovery node, sans I/O: datagrams and time go in, datagrams and events come out.
//!
//! The caller (the daemon's [`service`](super::service), or the simulator) feeds
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
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::key::{Key, distance, key_of_hash, key_of_node};
use super::ratelimit::{ByteCredit, HostLimiter, SourceLimiter};
use super::routing::{Insert, RoutingTable, few_per_host};
use super::swarms::{SwarmStore, Upsert};
use super::tokens::TokenIssuer;
use super::wire::{self, Body, MAX_NODES, MAX_PEERS, NodeRecord, Packet, PeerRecord, PeerStatus, Token, canonical};
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
    fn default() -> Self {
        DiscoveryConfig {
            k: 8,
            alpha: 3,
            first_hops: 1,
            hop_limit: 16,
            rpc_timeout: Duration::from_millis(250),
            rpc_attempts: 4,
            path_timeout: Duration::from_secs(2),
            lookup_timeout: Duration::from_secs(30),
            peer_ttl: Duration::from_secs(30 * 60),
            announce_interval: Duration::from_secs(10 * 60),
            refresh_interval: Duration::from_secs(15 * 60),
            max_peers_per_swarm: 512,
            max_stored_swarms: 4096,
            max_nodes_per_ip: 16,
            max_peers_per_ip: 16,
            rate_limit: 500.0,
            rate_burst: 1000.0,
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

/// Datagram accounting: `received == handled + dropped_malformed + rate_limited +
/// dropped_unsolicited` always holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub received: u64,
    pub handled: u64,
    pub dropped_malformed: u64,
    pub rate_limited: u64,
    /// Answers nobody asked for, or datagrams from ourselves.
    pub dropped_unsolicited: u64,
    pub sent: u64,
    pub timeouts: u64,
    pub retries: u64,
    /// Requests refused for a missing or stale token (answered with `retry`).
    pub bad_tokens: u64,
    /// Requests seen again (loops, duplicates): acknowledged, not handled twice.
    pub duplicates: u64,
    pub forwarded: u64,
    /// Datagrams not sent because they would have exceeded the anti-amplification budget.
    pub amplification_suppressed: u64,
    /// Announces answered but not stored: for a swarm this node is neither a member of nor
    /// among the `k` closest to.
    pub announces_not_stored: u64,
    /// Announces not stored because their source host created stored swarms too fast.
    pub new_swarms_limited: u64,
    /// Requests for others (get_peers, forward) dropped unanswered because forwards held
    /// every slot they may take ([`MAX_PENDING_FORWARDS`]).
    pub forwards_refused: u64,
}

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

/// The discovery node.
pub struct Node {
    id: NodeId,
    config: DiscoveryConfig,
    rng: StdRng,
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
    /// Members each join has announced itself to from lookup answers ([`JOIN_FANOUT`]).
    join_contacts: HashMap<InfoHash, HashSet<SocketAddr>>,
    next_maintenance: Instant,
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

/// Distinct members a join announces itself to from lookup answers: enough to fill the
/// torrent's peer list (50 by default) together with the members that announce themselves to
/// us, and with peer exchange. Every member contacted once per join, never again for a later
/// lookup that lists it too.
const JOIN_FANOUT: usize = 32;

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
        let mut rng = StdRng::seed_from_u64(seed);
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

    /// An independent copy (its random generator reseeded from this one), for running
    /// several scenarios on one simulated network.
    pub fn fork(&mut self) -> Node {
        Node {
            id: self.id,
            config: self.config.clone(),
            rng: StdRng::seed_from_u64(self.rng.random()),
            routing: self.routing.clone(),
            swarms: self.swarms.clone(),
            issuer: self.issuer.clone(),
            limiter: self.limiter.clone(),
            new_swarms: self.new_swarms.clone(),
            credit: self.credit.clone(),
            tokens: self.tokens.clone(),
            pending: self.pending.clone(),
            pending_for_others: self.pending_for_others,
            lookups: self.lookups.clone(),
            request_ids: self.request_ids.clone(),
            node_lookups: self.node_lookups.clone(),
            seen: self.seen.clone(),
            seen_order: self.seen_order.clone(),
            bootstrap: self.bootstrap.clone(),
            next_announce: self.next_announce.clone(),
            follow_ups: self.follow_ups.clone(),
            top_ups: self.top_ups.clone(),
            join_contacts: self.join_contacts.clone(),
            next_maintenance: self.next_maintenance,
            next_refresh: self.next_refresh,
            outbox: self.outbox.clone(),
            events: self.events.clone(),
            counters: self.counters,
        }
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
        t
    }

    // ----- commands -------------------------------------------------------------------------

    /// Joins the network through `addrs` (pings them; a find_node for our own id follows).
    pub fn bootstrap(&mut self, now: Instant, addrs: &[SocketAddr]) {
        for &addr in addrs {
            let addr = canonical(addr);
            if !self.bootstrap.contains(&addr) {
                self.bootstrap.push(addr);
            }
            let attempts = self.config.rpc_attempts;
            self.send_request(now, addr, Body::Ping, Purpose::Ping { then: Some(After::SelfLookup) }, attempts);
        }
    }

    /// Starts (or refreshes) membership of a swarm: look up its peers through the routing
    /// table and `bootstrap`, announce `status` to them and to the nodes closest to the hash.
    pub fn join(&mut self, now: Instant, info_hash: InfoHash, status: PeerStatus, bootstrap: &[SocketAddr]) {
        // A node that barely knows the network joins it through the descriptor's nodes too.
        if self.routing.len() < self.config.k && !bootstrap.is_empty() {
            self.bootstrap(now, bootstrap);
        }
        self.swarms.set_membership(info_hash, Some(status), now);
        // Members we already know (e.g. from a persisted table) hear from us right away.
        self.announce_to_known(now, info_hash, status);
        self.start_lookup(now, info_hash, bootstrap, Some(status));
        self.start_node_lookup(now, key_of_hash(&info_hash), NodeLookupPurpose::Announce(info_hash, status));
        self.next_announce.insert(info_hash, now + self.config.announce_interval);
        self.follow_ups.retain(|(_, h)| *h != info_hash);
        self.top_ups.insert(info_hash, MAX_TOP_UPS);
        self.join_contacts.insert(info_hash, HashSet::new());
        for after in FOLLOW_UP_LOOKUPS {
            self.follow_ups.push_back((now + after, info_hash));
        }
        self.follow_ups.make_contiguous().sort_by_key(|(at, _)| *at);
    }

    /// A find_node for our own id (unless one is running); bucket refreshes follow it.
    fn self_lookup(&mut self, now: Instant) {
        if self.node_lookups.values().all(|l| l.purpose != NodeLookupPurpose::SelfLookup) {
            self.start_node_lookup(now, key_of_node(&self.id), NodeLookupPurpose::SelfLookup);
        }
    }

    /// Announces a new status to the swarm's known members ([`STATUS_FANOUT`] of a large one).
    pub fn set_status(&mut self, now: Instant, info_hash: InfoHash, status: PeerStatus) {
        if self.swarms.get(&info_hash).and_then(|s| s.membership) == Some(status) {
            return;
        }
        self.swarms.set_membership(info_hash, Some(status), now);
        self.announce_to_known(now, info_hash, status);
    }

    /// Leaves a swarm: tells its members, forgets our membership.
    pub fn leave(&mut self, now: Instant, info_hash: InfoHash) {
        if !self.swarms.is_member(&info_hash) {
            return;
        }
        self.announce_to_known(now, info_hash, PeerStatus::Leaving);
        self.swarms.set_membership(info_hash, None, now);
        self.next_announce.remove(&info_hash);
        self.top_ups.remove(&info_hash);
        self.join_contacts.remove(&info_hash);
    }

    /// Starts a get_peers lookup without joining (returns its request id).
    pub fn lookup(&mut self, now: Instant, info_hash: InfoHash, first_hops: &[SocketAddr]) -> u64 {
        self.start_lookup(now, info_hash, first_hops, None)
    }

    /// Announces `status` to the members we know: all of a small swarm, [`STATUS_FANOUT`] of
    /// a large one ([`SwarmStore::announce_targets`]).
    fn announce_to_known(&mut self, now: Instant, info_hash: InfoHash, status: PeerStatus) {
        let targets = self.swarms.announce_targets(&info_hash, &self.id, STATUS_FANOUT, self.config.k, &mut self.rng);
        // Every entry was validated: it announced itself with our token, or answered our
        // announce (or was, in an earlier run).
        for addr in targets {
            self.with_token(now, addr, Need::Announce { info_hash, status, listed: None }, Reach::Proven);
        }
    }

    // ----- sending ----------------------------------------------------------------------------

    fn packet(&mut self, txid: u32, body: Body) -> Vec<u8> {
        wire::encode(&Packet { txid, sender: self.id, body })
    }

    fn push(&mut self, to: SocketAddr, bytes: Vec<u8>) {
        self.counters.sent += 1;
        self.outbox.push(Transmit { to, bytes });
    }

    /// Sends a request, at most `max_attempts` times in all (the first send and retries after
    /// timeouts); false if it was not sent for want of a free slot.
    fn send_request(&mut self, now: Instant, to: SocketAddr, body: Body, purpose: Purpose, max_attempts: u32) -> bool {
        let for_others = purpose.for_others();
        if self.pending.len() >= self.config.max_pending
            || (for_others && self.pending_for_others >= self.config.max_pending_forwards)
        {
            debug!("discovery: too many requests in flight; dropping a {}", body.name());
            if for_others {
                self.counters.forwards_refused += 1;
            }
            return false;
        }
        let mut txid: u32 = self.rng.random();
        while self.pending.contains_key(&txid) || txid == 0 {
            txid = self.rng.random();
        }
        let bytes = self.packet(txid, body);
        self.push(to, bytes.clone());
        let timeout = self.config.rpc_timeout;
        let deadline = now + timeout;
        self.pending.insert(txid, Pending { to, bytes, attempts: 1, max_attempts, timeout, deadline, purpose });
        if for_others {
            self.pending_for_others += 1;
        }
        true
    }

    /// Removes a request from those in flight.
    fn take_pending(&mut self, txid: u32) -> Option<Pending> {
        let p = self.pending.remove(&txid)?;
        if p.purpose.for_others() {
            self.pending_for_others -= 1;
        }
        Some(p)
    }

    /// Whether a request for others (a forward) may be taken on now.
    fn forward_slot_free(&self) -> bool {
        self.pending.len() < self.config.max_pending && self.pending_for_others < self.config.max_pending_forwards
    }

    /// Whether `addr` proved it receives traffic there: it is in the routing table (it
    /// answered a request of ours there, or presented our token), or answered one of ours
    /// lately (we hold a token it sent us in answer).
    fn validated(&self, addr: &SocketAddr, now: Instant) -> bool {
        self.routing.get_by_addr(addr).is_some() || self.fresh_token(addr, now).is_some()
    }

    /// Sends allowed for a request to `to`: one to an address only named by others and never
    /// validated, the configured number otherwise.
    fn attempts_for(&self, now: Instant, to: &SocketAddr, reach: Reach) -> u32 {
        if reach == Reach::Proven || self.validated(to, now) { self.config.rpc_attempts } else { 1 }
    }

    /// Sends an answer to a validated address.
    fn reply(&mut self, to: SocketAddr, txid: u32, body: Body) {
        let bytes = self.packet(txid, body);
        self.push(to, bytes);
    }

    /// Sends to an address that has not proven it receives: only if no larger than `budget`,
    /// the size of the datagram that caused this send.
    fn send_unvalidated(&mut self, to: SocketAddr, txid: u32, body: Body, budget: usize) {
        let bytes = self.packet(txid, body);
        if bytes.len() > budget {
            self.counters.amplification_suppressed += 1;
            return;
        }
        self.push(to, bytes);
    }

    /// Sends a forward's answer (`found`, `not_found`) to its origin, never validated, on the
    /// forward's bytes (`budget`) — which also earned `forwarder` byte credit when they arrived.
    /// That credit is spent by as much, so the same bytes do not pay twice: once for this
    /// answer, and again for first contacts on the forwarder's word (together up to 1.5 times
    /// what one contact sent, found by the amplification property test).
    fn answer_forward(&mut self, forwarder: SocketAddr, origin: SocketAddr, body: Body, budget: usize) {
        let bytes = self.packet(0, body);
        if bytes.len() > budget {
            self.counters.amplification_suppressed += 1;
            return;
        }
        self.credit.spend_up_to(&forwarder, bytes.len());
        self.push(origin, bytes);
    }

    fn fresh_token(&self, addr: &SocketAddr, now: Instant) -> Option<Token> {
        self.tokens.get(addr).filter(|(_, got)| now.duration_since(*got) < TOKEN_REUSE).map(|(t, _)| *t)
    }

    fn store_token(&mut self, addr: SocketAddr, token: Token, now: Instant) {
        if self.tokens.len() >= MAX_TOKENS_KEPT && !self.tokens.contains_key(&addr) {
            self.tokens.retain(|_, (_, got)| now.duration_since(*got) < TOKEN_REUSE);
            if self.tokens.len() >= MAX_TOKENS_KEPT {
                return;
            }
        }
        self.tokens.insert(addr, (token, now));
    }

    fn body_for(&self, need: &Need, token: Token) -> Body {
        match need {
            Need::FindNode { target, .. } => Body::FindNode { target: *target, token },
            Need::GetPeers { request_id, info_hash, hop_limit, .. } => {
                Body::GetPeers { info_hash: *info_hash, request_id: *request_id, hop_limit: *hop_limit, token }
            }
            Need::Forward(job) => Body::Forward {
                info_hash: job.info_hash,
                request_id: job.request_id,
                hops: job.hops,
                hops_left: job.hops_left,
                origin: job.origin,
                token,
            },
            Need::Announce { info_hash, status, .. } => {
                Body::Announce { info_hash: *info_hash, status: *status, token }
            }
        }
    }

    /// Sends a token-bearing request, pinging first for a token if we have none; false if it
    /// was not sent for want of a free slot.
    fn with_token(&mut self, now: Instant, to: SocketAddr, need: Need, reach: Reach) -> bool {
        let attempts = self.attempts_for(now, &to, reach);
        match self.fresh_token(&to, now) {
            Some(token) => {
                let body = self.body_for(&need, token);
                self.send_request(now, to, body, Purpose::Need { need, retried: false }, attempts)
            }
            None => self.send_request(now, to, Body::Ping, Purpose::Ping { then: Some(After::Need(need)) }, attempts),
        }
    }

    // ----- receiving --------------------------------------------------------------------------

    /// Handles one datagram from `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let from = canonical(from);
        self.counters.received += 1;
        // Decoding is cheap and bounded; it tells answers we asked for (never limited: their
        // rate is our own) from everything else (limited per source).
        let packet = match wire::decode(bytes) {
            Ok(p) => p,
            Err(e) => {
                trace!("discovery: dropped {} bytes from {from}: {e}", bytes.len());
                self.counters.dropped_malformed += 1;
                return;
            }
        };
        let expected = !packet.body.is_request() && self.pending.get(&packet.txid).is_some_and(|p| p.to == from);
        if !expected && !self.limiter.allow(&from, now) {
            self.counters.rate_limited += 1;
            return;
        }
        if packet.sender == self.id {
            self.counters.dropped_unsolicited += 1;
            return;
        }
        // Whoever sent it (spoofed or not), only answers from that address to our requests can
        // spend this: what we send on its word never exceeds what it sent.
        self.credit.earn(&from, bytes.len());
        let handled = if packet.body.is_request() {
            self.handle_request(now, from, packet, bytes.len());
            true
        } else {
            self.handle_answer(now, from, packet)
        };
        if handled {
            self.counters.handled += 1;
        } else {
            self.counters.dropped_unsolicited += 1;
        }
    }

    fn token_ok(&mut self, now: Instant, from: SocketAddr, sender: &NodeId, token: &Token) -> bool {
        self.issuer.check(&mut self.rng, now, from, sender, token)
    }

    fn refuse_token(&mut self, now: Instant, from: SocketAddr, txid: u32, sender: NodeId, len: usize) {
        self.counters.bad_tokens += 1;
        let token = self.issuer.issue(&mut self.rng, now, from, &sender);
        self.send_unvalidated(from, txid, Body::Retry { token }, len);
    }

    /// A validated request proves the sender receives at its address: it may enter the
    /// routing table.
    fn learn(&mut self, now: Instant, id: NodeId, addr: SocketAddr) {
        if self.routing.insert_verified(id, addr, now) == Insert::Added {
            trace!("discovery: routing table +{id:?} at {addr} ({} nodes)", self.routing.len());
        }
    }

    fn handle_request(&mut self, now: Instant, from: SocketAddr, packet: Packet, len: usize) {
        let sender = packet.sender;
        let txid = packet.txid;
        match packet.body {
            Body::Ping => {
                // The only answer: a ping proves nothing about its source. The node is learned
                // when it comes back with a token (any other request).
                let token = self.issuer.issue(&mut self.rng, now, from, &sender);
                self.send_unvalidated(from, txid, Body::Pong { token, observed: from }, len);
            }
            Body::FindNode { target, token } => {
                if !self.token_ok(now, from, &sender, &token) {
                    return self.refuse_token(now, from, txid, sender, len);
                }
                self.learn(now, sender, from);
                let nodes: Vec<NodeRecord> = self
                    .routing
                    .closest(&target, MAX_NODES.min(self.config.k * 2))
                    .iter()
                    .filter(|e| e.addr != from)
                    .map(|e| e.record())
                    .collect();
                self.reply(from, txid, Body::Nodes { nodes });
            }
            Body::GetPeers { info_hash, request_id, hop_limit, token } => {
                if !self.token_ok(now, from, &sender, &token) {
                    return self.refuse_token(now, from, txid, sender, len);
                }
                self.learn(now, sender, from);
                let origin = NodeRecord { id: sender, addr: from };
                // Answering is idempotent (and the origin asks a holder directly with the same
                // request id after `found`); forwarding is not, so only that is deduplicated.
                if self.swarms.knows(&info_hash) {
                    let peers = self.swarms.sample(&info_hash, MAX_PEERS, &mut self.rng);
                    let peers: Vec<PeerRecord> = peers.into_iter().filter(|p| p.addr != from).collect();
                    let holder = self.swarms.get(&info_hash).and_then(|s| s.membership);
                    self.reply(from, txid, Body::Peers { request_id, info_hash, holder, peers });
                    return;
                }
                let hops_left = hop_limit.min(self.config.hop_limit);
                if hops_left > 0 && !self.forward_slot_free() {
                    // Busy forwarding for others: no answer (the origin retries, then asks
                    // another first hop), and nothing remembered, so a retry is handled anew.
                    self.counters.forwards_refused += 1;
                    return;
                }
                if !self.mark_seen(now, request_id, from) {
                    self.counters.duplicates += 1;
                    self.reply(from, txid, Body::Forwarded { request_id });
                    return;
                }
                let job = ForwardJob {
                    info_hash,
                    request_id,
                    hops: 0,
                    hops_left,
                    origin,
                    tried: vec![from],
                    budget: len,
                    origin_validated: true,
                    sideways: false,
                };
                match if hops_left == 0 { Hop::NoneLeft } else { self.forward(now, job) } {
                    Hop::Sent => self.reply(from, txid, Body::Forwarded { request_id }),
                    Hop::NoneLeft => self.reply(from, txid, Body::NotFound { request_id, info_hash, hops: 0 }),
                    Hop::Busy => {}
                }
            }
            Body::Forward { info_hash, request_id, hops, hops_left, origin, token } => {
                if !self.token_ok(now, from, &sender, &token) {
                    return self.refuse_token(now, from, txid, sender, len);
                }
                self.learn(now, sender, from);
                if hops_left > 0 && !self.swarms.knows(&info_hash) && !self.forward_slot_free() {
                    // Busy forwarding for others: no acknowledgement, so the previous hop
                    // routes around this node.
                    self.counters.forwards_refused += 1;
                    return;
                }
                self.reply(from, txid, Body::Forwarded { request_id });
                if origin.id == self.id || !self.mark_seen(now, request_id, origin.addr) {
                    self.counters.duplicates += 1;
                    return;
                }
                let hops = hops.saturating_add(1);
                if self.swarms.knows(&info_hash) {
                    let token = self.issuer.issue(&mut self.rng, now, origin.addr, &origin.id);
                    let found = Body::Found { request_id, info_hash, hops, token };
                    self.answer_forward(from, origin.addr, found, len);
                    return;
                }
                let job = ForwardJob {
                    info_hash,
                    request_id,
                    hops,
                    hops_left: hops_left.saturating_sub(1),
                    origin,
                    tried: vec![from, origin.addr],
                    budget: len,
                    origin_validated: false,
                    sideways: false,
                };
                if hops_left == 0 || self.forward(now, job) == Hop::NoneLeft {
                    let not_found = Body::NotFound { request_id, info_hash, hops };
                    self.answer_forward(from, origin.addr, not_found, len);
                }
            }
            Body::Announce { info_hash, status, token } => {
                if !self.token_ok(now, from, &sender, &token) {
                    return self.refuse_token(now, from, txid, sender, len);
                }
                self.learn(now, sender, from);
                let record = PeerRecord { id: sender, addr: from, status };
                let member = self.swarms.is_member(&info_hash);
                if status == PeerStatus::Leaving {
                    self.swarms.remove_peer(&info_hash, &from);
                    debug!("discovery: {info_hash}: {from} left");
                    // The sender proved its address: its torrent-side record goes too.
                    if member {
                        self.events.push(Event::Peers { info_hash, peers: vec![record] });
                    }
                } else if let Some(stored) = self.store_announce(now, info_hash, record)
                    && member
                {
                    self.events.push(Event::Peers { info_hash, peers: vec![stored] });
                }
                // Answered whether stored or not: the announcer has nothing to retry.
                self.reply(from, txid, Body::Announced { info_hash });
            }
            _ => unreachable!("only requests reach handle_request"),
        }
    }

    /// Whether this node is among the `k` nodes closest to `info_hash` that its routing table
    /// knows: fewer than `k` hosts have a reachable node in it that is closer (one host counts
    /// once, however many identities it placed beside the hash). Those are the nodes announces
    /// are sent to (the announcer's find_node converges on them) and where greedy get_peers
    /// paths end.
    fn among_closest(&self, info_hash: &InfoHash) -> bool {
        let target = key_of_hash(info_hash);
        let mine = distance(&key_of_node(&self.id), &target);
        self.routing.closer_count(&target, &mine, self.config.k) < self.config.k
    }

    /// Stores a (validated) announce if this node should: for a swarm it is a member of, or one
    /// it is among the closest to — a new stored swarm only within the source host's budget.
    /// Returns the record as stored, or `None` if nothing was stored.
    fn store_announce(&mut self, now: Instant, info_hash: InfoHash, record: PeerRecord) -> Option<PeerRecord> {
        let from = record.addr;
        if !self.swarms.is_member(&info_hash) {
            if !self.among_closest(&info_hash) {
                self.counters.announces_not_stored += 1;
                trace!("discovery: {info_hash}: not storing {from}'s announce (not among the closest)");
                return None;
            }
            if self.swarms.get(&info_hash).is_none() && !self.new_swarms.allow(from.ip(), now) {
                self.counters.new_swarms_limited += 1;
                debug!("discovery: {info_hash}: not storing {from}'s announce (its host creates swarms too fast)");
                return None;
            }
        }
        let status = record.status;
        let stored = match self.swarms.upsert(info_hash, record, now) {
            Upsert::New => {
                debug!("discovery: {info_hash}: {from} joined as {}", status.as_str());
                status
            }
            Upsert::StatusChanged(s) => {
                debug!("discovery: {info_hash}: {from} is now {}", s.as_str());
                s
            }
            Upsert::StaleIdle(s) => {
                debug!("discovery: {info_hash}: {from} is still {} (its join arrived late)", s.as_str());
                s
            }
            Upsert::Refreshed => status,
            Upsert::Rejected => return None,
        };
        Some(PeerRecord { status: stored, ..record })
    }

    /// Records a handled request; false if it was seen before.
    fn mark_seen(&mut self, now: Instant, request_id: u64, origin: SocketAddr) -> bool {
        while let Some(&(t, key)) = self.seen_order.front() {
            if now.duration_since(t) < self.config.seen_ttl && self.seen_order.len() < self.config.max_seen {
                break;
            }
            self.seen_order.pop_front();
            self.seen.remove(&key);
        }
        if !self.seen.insert((request_id, origin)) {
            return false;
        }
        self.seen_order.push_back((now, (request_id, origin)));
        true
    }

    /// Sends a forward job to the best next hop not tried yet; false if there is none.
    ///
    /// Greedy: the known node closest to the info hash and closer than this node. When there is
    /// none (this node believes itself the closest) but it does not know the swarm, the request
    /// takes one sideways step to the nearest other node with one hop left — the swarm's
    /// storers are this node's nearest neighbours in the keyspace, and its table may be missing
    /// the one that is closer still. The path stays a single path: no fan-out, so one request
    /// never makes more than one `found`/`not_found` reach the origin.
    fn forward(&mut self, now: Instant, job: ForwardJob) -> Hop {
        if !self.forward_slot_free() {
            self.counters.forwards_refused += 1;
            return Hop::Busy;
        }
        let target = key_of_hash(&job.info_hash);
        match self.config.forwarding {
            Forwarding::Greedy => {
                let mine = distance(&key_of_node(&self.id), &target);
                let candidates = self.routing.closest(&target, self.config.k * 2);
                let closer = candidates
                    .iter()
                    .find(|e| !job.tried.contains(&e.addr) && distance(&key_of_node(&e.id), &target) < mine);
                let mut job = job;
                let next = match closer {
                    Some(n) if !job.sideways => *n,
                    _ => {
                        let side = candidates.iter().find(|e| !job.tried.contains(&e.addr));
                        match side {
                            Some(n) if job.hops_left > 0 => {
                                job.sideways = true;
                                job.hops_left = 1;
                                *n
                            }
                            _ => return Hop::NoneLeft,
                        }
                    }
                };
                job.tried.push(next.addr);
                self.counters.forwarded += 1;
                // Next hops come from the routing table.
                if self.with_token(now, next.addr, Need::Forward(job), Reach::Proven) { Hop::Sent } else { Hop::Busy }
            }
            Forwarding::Flood => {
                let all: Vec<SocketAddr> = self
                    .routing
                    .entries()
                    .filter(|e| e.reachable() && !job.tried.contains(&e.addr))
                    .map(|e| e.addr)
                    .collect();
                if all.is_empty() {
                    return Hop::NoneLeft;
                }
                for addr in all {
                    self.counters.forwarded += 1;
                    self.with_token(now, addr, Need::Forward(job.clone()), Reach::Proven);
                }
                Hop::Sent
            }
        }
    }

    /// Handles an answer; false if nobody asked for it.
    fn handle_answer(&mut self, now: Instant, from: SocketAddr, packet: Packet) -> bool {
        // `found` and `not_found` come from nodes the origin never asked: match by request id.
        match &packet.body {
            Body::Found { request_id, info_hash, hops, token } => {
                return self.on_found(now, from, *request_id, *info_hash, *hops, *token);
            }
            Body::NotFound { request_id, info_hash, .. }
                if self.pending.get(&packet.txid).is_none_or(|p| p.to != from) =>
            {
                return self.on_not_found(now, *request_id, *info_hash);
            }
            _ => {}
        }
        let Some(pending) = self.pending.get(&packet.txid) else { return false };
        if pending.to != from {
            return false;
        }
        let Some(pending) = self.take_pending(packet.txid) else { return false };
        // It answered, at the address we asked: a verified node.
        self.routing.insert_verified(packet.sender, from, now);
        self.routing.seen(&packet.sender, now);
        match (pending.purpose, packet.body) {
            (Purpose::Ping { then }, Body::Pong { token, .. }) => {
                self.store_token(from, token, now);
                match then {
                    Some(After::Need(need)) => {
                        let body = self.body_for(&need, token);
                        let attempts = self.config.rpc_attempts;
                        if !self.send_request(
                            now,
                            from,
                            body,
                            Purpose::Need { need: need.clone(), retried: false },
                            attempts,
                        ) {
                            self.need_failed(now, from, need);
                        }
                    }
                    Some(After::SelfLookup) => self.self_lookup(now),
                    None => {}
                }
            }
            (Purpose::Need { need, retried }, Body::Retry { token }) => {
                self.store_token(from, token, now);
                if retried {
                    self.need_failed(now, from, need);
                } else {
                    let body = self.body_for(&need, token);
                    let attempts = self.config.rpc_attempts;
                    self.send_request(now, from, body, Purpose::Need { need, retried: true }, attempts);
                }
            }
            (Purpose::Need { need: Need::FindNode { lookup, .. }, .. }, Body::Nodes { nodes }) => {
                self.on_nodes(now, lookup, from, nodes);
            }
            (Purpose::Need { need: Need::GetPeers { lookup, .. }, .. }, body) => {
                self.on_get_peers_answer(now, lookup, from, packet.sender, body);
            }
            (Purpose::Need { need: Need::Forward(_), .. }, Body::Forwarded { .. }) => {}
            (Purpose::Need { need: Need::Announce { info_hash, listed, .. }, .. }, Body::Announced { .. }) => {
                self.on_announced(now, info_hash, from, packet.sender, listed);
            }
            (purpose, body) => {
                debug!("discovery: unexpected {} from {from} for {purpose:?}", body.name());
            }
        }
        true
    }

    /// Our announce to `from` was answered: it is alive at that address. A member already in
    /// our table is refreshed; one a lookup answer listed is recorded now, with the status it
    /// was listed with. Either way the torrent hears of it.
    fn on_announced(
        &mut self,
        now: Instant,
        info_hash: InfoHash,
        from: SocketAddr,
        sender: NodeId,
        listed: Option<PeerStatus>,
    ) {
        if !self.swarms.is_member(&info_hash) {
            return;
        }
        let known = self.swarms.get(&info_hash).and_then(|s| s.peers.get(&from)).map(|p| p.status);
        let Some(status) = known.or(listed) else { return };
        let record = PeerRecord { id: sender, addr: from, status };
        let stored = match self.swarms.upsert(info_hash, record, now) {
            Upsert::New | Upsert::Refreshed => status,
            Upsert::StatusChanged(s) | Upsert::StaleIdle(s) => s,
            Upsert::Rejected => return,
        };
        if known.is_none() {
            debug!("discovery: {info_hash}: {from} answered as a member listed {}", status.as_str());
        }
        self.events.push(Event::Peers { info_hash, peers: vec![PeerRecord { status: stored, ..record }] });
    }

    fn need_failed(&mut self, now: Instant, to: SocketAddr, need: Need) {
        match need {
            Need::FindNode { lookup, .. } => self.on_node_failed(now, lookup, to),
            Need::GetPeers { lookup, .. } => self.on_first_hop_failed(now, lookup, to),
            // Flooding never re-routes a failed hop: every neighbour was tried anyway.
            Need::Forward(_) if self.config.forwarding == Forwarding::Flood => {}
            Need::Forward(job) => {
                // Replace the dead hop by the next closest (when busy, the origin's own
                // timers take over).
                if self.forward(now, job.clone()) == Hop::NoneLeft {
                    let body = Body::NotFound { request_id: job.request_id, info_hash: job.info_hash, hops: job.hops };
                    if job.origin_validated {
                        self.reply(job.origin.addr, 0, body);
                    } else {
                        // The first address tried is the node that sent the forward.
                        match job.tried.first().copied() {
                            Some(forwarder) => self.answer_forward(forwarder, job.origin.addr, body, job.budget),
                            None => self.send_unvalidated(job.origin.addr, 0, body, job.budget),
                        }
                    }
                }
            }
            Need::Announce { info_hash, .. } => {
                // A member that does not answer is gone.
                self.swarms.remove_peer(&info_hash, &to);
            }
        }
    }

    // ----- timers -----------------------------------------------------------------------------

    /// Retries, timeouts and periodic work due at `now`.
    pub fn poll(&mut self, now: Instant) {
        let due: Vec<u32> = self.pending.iter().filter(|(_, p)| p.deadline <= now).map(|(t, _)| *t).collect();
        for txid in due {
            if let Some(p) = self.pending.get_mut(&txid)
                && p.attempts < p.max_attempts
            {
                p.attempts += 1;
                p.timeout *= 2;
                p.deadline = now + p.timeout;
                let (to, bytes) = (p.to, p.bytes.clone());
                self.counters.retries += 1;
                self.push(to, bytes);
                continue;
            }
            let Some(p) = self.take_pending(txid) else { continue };
            self.counters.timeouts += 1;
            self.routing.failed(p.to);
            match p.purpose {
                Purpose::Ping { then: Some(After::Need(need)) } | Purpose::Need { need, .. } => {
                    self.need_failed(now, p.to, need)
                }
                Purpose::Ping { .. } => {}
            }
        }
        self.lookup_timers(now);
        while let Some(&(at, hash)) = self.follow_ups.front() {
            if at > now {
                break;
            }
            self.follow_ups.pop_front();
            if let Some(status) = self.swarms.get(&hash).and_then(|s| s.membership) {
                self.start_lookup(now, hash, &[], Some(status));
            }
        }
        if now >= self.next_maintenance {
            self.next_maintenance = now + self.config.maintenance_interval;
            self.maintain(now);
        }
    }

    fn maintain(&mut self, now: Instant) {
        self.swarms.expire(now, self.config.peer_ttl);
        self.tokens.retain(|_, (_, got)| now.duration_since(*got) < TOKEN_REUSE);
        self.lookups.retain(|_, l| !l.done || now.duration_since(l.started) < l.deadline.duration_since(l.started) * 2);
        let live: HashSet<u64> = self.lookups.keys().copied().collect();
        self.request_ids.retain(|_, key| live.contains(key));
        // Re-announce member swarms on schedule.
        let due: Vec<InfoHash> = self.next_announce.iter().filter(|(_, t)| **t <= now).map(|(h, _)| *h).collect();
        for hash in due {
            if let Some(status) = self.swarms.get(&hash).and_then(|s| s.membership) {
                self.announce_to_known(now, hash, status);
                self.start_lookup(now, hash, &[], Some(status));
                self.start_node_lookup(now, key_of_hash(&hash), NodeLookupPurpose::Announce(hash, status));
            }
            self.next_announce.insert(hash, now + self.config.announce_interval);
        }
        // Keep the routing table fresh; rejoin through the bootstrap nodes if it emptied.
        if now >= self.next_refresh {
            self.next_refresh = now + self.config.refresh_interval;
            if !self.routing.is_empty() {
                self.self_lookup(now);
            }
        }
        let before = now.checked_sub(self.config.refresh_interval).unwrap_or(now);
        let attempts = self.config.rpc_attempts;
        for e in self.routing.stale(before).into_iter().take(16) {
            self.send_request(now, e.addr, Body::Ping, Purpose::Ping { then: None }, attempts);
        }
        if self.routing.is_empty() {
            let addrs = self.bootstrap.clone();
            for addr in addrs {
                self.send_request(now, addr, Body::Ping, Purpose::Ping { then: Some(After::SelfLookup) }, attempts);
            }
        }
    }

    // ----- get_peers lookups (origin side) ------------------------------------------------------

    fn start_lookup(
        &mut self,
        now: Instant,
        info_hash: InfoHash,
        extra: &[SocketAddr],
        join: Option<PeerStatus>,
    ) -> u64 {
        let mut candidates: Vec<SocketAddr> =
            self.routing.closest(&key_of_hash(&info_hash), self.config.k).iter().map(|e| e.addr).collect();
        for &a in extra {
            let a = canonical(a);
            if !candidates.contains(&a) {
                candidates.push(a);
            }
        }
        let lookup = Lookup::new(now, self.config.lookup_timeout, info_hash, candidates, self.config.hop_limit, join);
        self.run_lookup(now, lookup)
    }

    /// Starts `lookup`'s first attempt; returns its key.
    fn run_lookup(&mut self, now: Instant, lookup: Lookup) -> u64 {
        let mut key: u64 = self.rng.random();
        while self.lookups.contains_key(&key) {
            key = self.rng.random();
        }
        self.lookups.insert(key, lookup);
        self.new_attempt(now, key);
        key
    }

    /// Asks `lister`, which has just answered a join's lookup with members (so it knows the
    /// swarm, and proved its address), for more: one `get_peers` with hop limit 0, no further
    /// attempt, no other node (see [`MAX_TOP_UPS`]).
    fn start_top_up(&mut self, now: Instant, info_hash: InfoHash, lister: SocketAddr, status: PeerStatus) {
        let timeout = self.config.lookup_timeout;
        let lookup = Lookup { top_up: true, ..Lookup::new(now, timeout, info_hash, vec![lister], 0, Some(status)) };
        self.run_lookup(now, lookup);
    }

    /// Starts an attempt: a new request id, sent to the next first hops.
    fn new_attempt(&mut self, now: Instant, key: u64) {
        let mut rid: u64 = self.rng.random();
        while self.request_ids.contains_key(&rid) {
            rid = self.rng.random();
        }
        let path_timeout = self.config.path_timeout;
        let Some(l) = self.lookups.get_mut(&key) else { return };
        l.request_id = rid;
        l.attempts += 1;
        l.attempt_deadline = now + path_timeout;
        l.not_found.clear();
        l.holders.clear();
        l.named_holders = 0;
        l.asked.clear();
        l.open_paths = 0;
        self.request_ids.insert(rid, key);
        let mut sent = 0;
        while sent < self.config.first_hops && self.next_first_hop(now, key) {
            sent += 1;
        }
        self.check_lookup_exhausted(now, key);
    }

    /// Asks the next live candidate of the current attempt; false if none is left.
    fn next_first_hop(&mut self, now: Instant, key: u64) -> bool {
        let Some(l) = self.lookups.get_mut(&key) else { return false };
        let hop_limit = l.hop_limit;
        let n = l.candidates.len();
        for _ in 0..n {
            let addr = l.candidates[l.next % n];
            l.next += 1;
            if l.dead.contains(&addr) || l.not_found.contains(&addr) {
                continue;
            }
            l.open_paths += 1;
            l.named_holders += 1;
            l.asked.push(addr);
            let need = Need::GetPeers { lookup: key, request_id: l.request_id, info_hash: l.info_hash, hop_limit };
            // First hops come from the routing table and from the operator (descriptors).
            self.with_token(now, addr, need, Reach::Proven);
            return true;
        }
        false
    }

    /// Ends the lookup if nothing is in flight and no first hop is left to ask in this
    /// attempt: every live first hop said `not_found` (nobody knows the swarm), or all are dead.
    fn check_lookup_exhausted(&mut self, now: Instant, key: u64) {
        let Some(l) = self.lookups.get(&key) else { return };
        if l.done || l.open_paths > 0 {
            return;
        }
        let left = l.candidates.iter().any(|a| !l.dead.contains(a) && !l.not_found.contains(a));
        if left {
            return;
        }
        if l.not_found.is_empty() && !l.candidates.is_empty() && now < l.deadline && !l.top_up {
            // Every first hop looked dead; under heavy loss some were not. Try them all again.
            if let Some(l) = self.lookups.get_mut(&key) {
                l.dead.clear();
            }
            self.new_attempt(now, key);
        } else {
            self.complete_lookup(now, key, Vec::new());
        }
    }

    fn on_first_hop_failed(&mut self, now: Instant, key: u64, addr: SocketAddr) {
        let named = !self.validated(&addr, now);
        let Some(l) = self.lookups.get_mut(&key) else { return };
        if l.done {
            return;
        }
        if !l.holders.contains(&addr) {
            l.dead.insert(addr);
        }
        l.open_paths = l.open_paths.saturating_sub(1);
        if named && l.holders.contains(&addr) && l.holder_reattempts < HOLDER_REATTEMPTS {
            // A holder asked once (never validated) did not answer: go through a path again at
            // once rather than after `path_timeout`. Each attempt is a new request to a
            // validated first hop, and pays for one more datagram to the holder.
            l.holder_reattempts += 1;
            self.new_attempt(now, key);
            return;
        }
        self.next_first_hop(now, key);
        self.check_lookup_exhausted(now, key);
    }

    fn lookup_of(&self, request_id: u64, info_hash: &InfoHash) -> Option<u64> {
        let key = *self.request_ids.get(&request_id)?;
        (self.lookups.get(&key)?.info_hash == *info_hash).then_some(key)
    }

    fn on_get_peers_answer(&mut self, now: Instant, key: u64, from: SocketAddr, sender: NodeId, body: Body) {
        match body {
            Body::Peers { info_hash, holder, peers, .. } => {
                let Some(l) = self.lookups.get_mut(&key) else { return };
                if l.done || l.info_hash != info_hash {
                    return;
                }
                if l.hops.is_none() {
                    l.hops = Some(0);
                }
                let mut records: Vec<PeerRecord> = peers.into_iter().filter(|p| p.id != self.id).collect();
                if let Some(status) = holder {
                    records.insert(0, PeerRecord { id: sender, addr: from, status });
                }
                self.on_peers(now, key, from, records);
            }
            Body::Forwarded { .. } => {}
            Body::NotFound { request_id, .. } => {
                let Some(l) = self.lookups.get_mut(&key) else { return };
                if request_id == l.request_id {
                    l.not_found.insert(from);
                    l.open_paths = l.open_paths.saturating_sub(1);
                    self.next_first_hop(now, key);
                    self.check_lookup_exhausted(now, key);
                }
            }
            other => debug!("discovery: unexpected {} answering get_peers", other.name()),
        }
    }

    fn on_found(
        &mut self,
        now: Instant,
        from: SocketAddr,
        request_id: u64,
        info_hash: InfoHash,
        hops: u8,
        token: Token,
    ) -> bool {
        let Some(key) = self.lookup_of(request_id, &info_hash) else { return false };
        let validated = self.validated(&from, now);
        let Some(l) = self.lookups.get_mut(&key) else { return false };
        if l.done || l.holders.contains(&from) {
            return true;
        }
        // A `found` can come from anywhere (its source is not proven): a holder never validated
        // is asked once, only as many of them as this attempt opened paths, and only as far as
        // the bytes received pay for the request.
        if !validated {
            // Payers: the first hops of this attempt still on a path (not dead, not `not_found`).
            let on_path: Vec<SocketAddr> =
                l.asked.iter().filter(|a| !l.dead.contains(*a) && !l.not_found.contains(*a)).copied().collect();
            let payable = l.named_holders > 0 && self.pay_for_holder(from, &on_path);
            let Some(l) = self.lookups.get_mut(&key) else { return false };
            if !payable {
                self.counters.amplification_suppressed += 1;
                return true;
            }
            l.named_holders -= 1;
        }
        let Some(l) = self.lookups.get_mut(&key) else { return false };
        l.holders.insert(from);
        l.hops = Some(l.hops.map_or(hops, |h| h.min(hops)));
        l.open_paths += 1;
        let rid = l.request_id;
        // The token is used for this request only: it proves nothing about `from`, so it is not
        // kept with the tokens that do (see `validated`).
        let need = Need::GetPeers { lookup: key, request_id: rid, info_hash, hop_limit: 0 };
        let body = self.body_for(&need, token);
        let attempts = if validated { self.config.rpc_attempts } else { 1 };
        if !self.send_request(now, from, body, Purpose::Need { need, retried: false }, attempts) {
            self.on_first_hop_failed(now, key, from);
        }
        true
    }

    /// `not_found` from a node deep on a path (not the first hop): that path ended.
    fn on_not_found(&mut self, now: Instant, request_id: u64, info_hash: InfoHash) -> bool {
        let Some(key) = self.lookup_of(request_id, &info_hash) else { return false };
        let Some(l) = self.lookups.get_mut(&key) else { return false };
        // The path ran to the nodes closest to the info hash and none knows the swarm: nobody
        // does (we may be its first member). Other first hops would lead to the same place.
        if !l.done && request_id == l.request_id {
            l.open_paths = l.open_paths.saturating_sub(1);
            if l.open_paths == 0 {
                self.complete_lookup(now, key, Vec::new());
            }
        }
        true
    }

    /// Peers from an answer by `from`. Nothing is recorded yet, nor told to the torrent:
    /// when joining, we announce ourselves to those [`Node::affordable`] allows, and each that
    /// answers is recorded then ([`Node::on_announced`]). The others learn of us through the
    /// swarm's storers, or a later lookup lists them again.
    fn on_peers(&mut self, now: Instant, key: u64, from: SocketAddr, peers: Vec<PeerRecord>) {
        let Some(l) = self.lookups.get(&key) else { return };
        let info_hash = l.info_hash;
        let join = l.join;
        if let Some(status) = join
            && self.swarms.is_member(&info_hash)
        {
            let status = self.swarms.get(&info_hash).and_then(|s| s.membership).unwrap_or(status);
            // Members we are already announcing to are not paid for twice.
            let contacting: HashSet<SocketAddr> = self
                .pending
                .values()
                .filter(|p| match &p.purpose {
                    Purpose::Need { need: Need::Announce { info_hash: h, .. }, .. }
                    | Purpose::Ping { then: Some(After::Need(Need::Announce { info_hash: h, .. })) } => *h == info_hash,
                    _ => false,
                })
                .map(|p| p.to)
                .collect();
            let contacted = self.join_contacts.get(&info_hash);
            let budget = JOIN_FANOUT.saturating_sub(contacted.map_or(0, HashSet::len));
            let live: Vec<PeerRecord> = peers
                .iter()
                .filter(|p| {
                    p.status != PeerStatus::Leaving
                        && p.id != self.id
                        && !contacting.contains(&p.addr)
                        && !contacted.is_some_and(|c| c.contains(&p.addr))
                })
                .copied()
                .collect();
            let unvalidated = |node: &Node, list: &[PeerRecord]| {
                list.iter().filter(|p| p.addr != from && !node.validated(&p.addr, now)).count()
            };
            let named = unvalidated(self, &live);
            // Paid for closest to our own id first: nodes joining at once then spread their
            // first contacts over the swarm instead of all picking the same members.
            let target = key_of_node(&self.id);
            let mut paid = self.affordable(now, from, 0, live, |p| key_of_node(&p.id), &target, |p| p.addr);
            paid.truncate(budget);
            let paid_named = unvalidated(self, &paid);
            let unpaid = named - paid_named;
            let budget_left = budget - paid.len();
            if let Some(contacted) = self.join_contacts.get_mut(&info_hash) {
                contacted.extend(paid.iter().map(|p| p.addr));
            }
            for p in paid {
                let need = Need::Announce { info_hash, status, listed: Some(p.status) };
                self.with_token(now, p.addr, need, Reach::Named);
            }
            // Members left unpaid while this answer paid for some: ask the same node again at
            // once (our routing table may not know anyone yet); its next answer pays for more.
            // A top-up asks only that node, which just proved its address, and follows only an
            // answer that bought a first contact (192 bytes of its author's credit), at most
            // `MAX_TOP_UPS` times per join.
            if unpaid > 0
                && paid_named > 0
                && budget_left > 0
                && let Some(left) = self.top_ups.get_mut(&info_hash)
                && *left > 0
            {
                *left -= 1;
                self.start_top_up(now, info_hash, from, status);
            }
        }
        self.complete_lookup(now, key, peers);
    }

    /// Attempt and lookup deadlines.
    fn lookup_timers(&mut self, now: Instant) {
        let keys: Vec<u64> = self.lookups.iter().filter(|(_, l)| !l.done).map(|(k, _)| *k).collect();
        for key in keys {
            let Some(l) = self.lookups.get(&key) else { continue };
            if now >= l.deadline || (l.top_up && now >= l.attempt_deadline) {
                self.complete_lookup(now, key, Vec::new());
            } else if now >= l.attempt_deadline {
                debug!("discovery: lookup {} attempt {} unanswered; trying again", l.info_hash, l.attempts);
                self.new_attempt(now, key);
            }
        }
    }

    fn complete_lookup(&mut self, now: Instant, key: u64, peers: Vec<PeerRecord>) {
        let Some(l) = self.lookups.get_mut(&key) else { return };
        if l.done {
            return;
        }
        l.done = true;
        let found = !peers.is_empty();
        let report = LookupReport {
            info_hash: l.info_hash,
            request_id: l.request_id,
            found,
            peers,
            attempts: l.attempts,
            hops: if found { l.hops } else { None },
            elapsed: now.duration_since(l.started),
        };
        debug!(
            "discovery: lookup {} {}: {} peers, {:?} hops, {} attempts, {:?}",
            report.info_hash,
            if found { "found the swarm" } else { "found nothing" },
            report.peers.len(),
            report.hops,
            report.attempts,
            report.elapsed
        );
        self.events.push(Event::LookupDone(report));
    }

    // ----- find_node lookups ------------------------------------------------------------------

    fn start_node_lookup(&mut self, now: Instant, target: Key, purpose: NodeLookupPurpose) {
        let mut id: u64 = self.rng.random();
        while self.node_lookups.contains_key(&id) {
            id = self.rng.random();
        }
        let candidates =
            self.routing.closest(&target, self.config.k).into_iter().map(|e| (e.record(), Candidate::Fresh)).collect();
        self.node_lookups.insert(id, NodeLookup { target, purpose, candidates, in_flight: 0 });
        self.step_node_lookup(now, id);
    }

    fn step_node_lookup(&mut self, now: Instant, id: u64) {
        let (k, alpha) = (self.config.k, self.config.alpha);
        let Some(l) = self.node_lookups.get_mut(&id) else { return };
        let target = l.target;
        l.candidates.sort_by_key(|(n, _)| distance(&key_of_node(&n.id), &target));
        let mut to_ask = Vec::new();
        // Among the k closest not known dead (a few per host), ask those not yet asked.
        let window: Vec<SocketAddr> =
            few_per_host(l.candidates.iter().filter(|(_, s)| *s != Candidate::Failed).map(|(n, _)| n.addr), |a| *a, k);
        for (n, state) in l.candidates.iter_mut().filter(|(n, _)| window.contains(&n.addr)) {
            if l.in_flight + to_ask.len() >= alpha {
                break;
            }
            if *state == Candidate::Fresh {
                *state = Candidate::Asked;
                to_ask.push(*n);
            }
        }
        l.in_flight += to_ask.len();
        let finished = l.in_flight == 0;
        // Candidates from answers were only named; those from the routing table are validated.
        for n in to_ask {
            self.with_token(now, n.addr, Need::FindNode { lookup: id, target }, Reach::Named);
        }
        if finished {
            self.finish_node_lookup(now, id);
        }
    }

    /// Keeps the items of an answer from `source` that this node may contact: all those it
    /// has validated ([`Node::validated`]), and, closest to `target` first, as many others as
    /// `source` pays for. Each costs one request of `MIN_REQUEST_LEN` bytes (sent once, never
    /// retried, see [`Reach::Named`]), spent from the bytes `source` sent this node (the
    /// answer included; [`ByteCredit`]). So a forged list never makes this node send victims
    /// more bytes than its author sent, and a lone small answer (one record: 80 to 122
    /// bytes) pays for nothing until its author has sent more. `keep` bytes of credit are left
    /// unspent (see [`Node::on_nodes`]).
    #[allow(clippy::too_many_arguments)]
    fn affordable<T>(
        &mut self,
        now: Instant,
        source: SocketAddr,
        keep: usize,
        mut items: Vec<T>,
        key: impl Fn(&T) -> Key,
        target: &Key,
        addr: impl Fn(&T) -> SocketAddr,
    ) -> Vec<T> {
        items.sort_by_key(|i| distance(&key(i), target));
        // The source itself has just answered us: it is validated by this very answer.
        let validated: Vec<bool> = items.iter().map(|i| addr(i) == source || self.validated(&addr(i), now)).collect();
        let listed = items.len();
        let mut validated = validated.into_iter();
        items.retain(|_| validated.next().unwrap_or(false) || self.credit.spend(&source, wire::MIN_REQUEST_LEN, keep));
        if items.len() < listed {
            debug!(
                "discovery: {} of {listed} addresses {source} listed not contacted (not paid for)",
                listed - items.len()
            );
        }
        items
    }

    /// Pays for one request to `holder`, the never-validated source of a `found`: first from
    /// the bytes that came from its address (the `found` itself included: a spoofer pays for
    /// its own datagrams), the rest from the credit of a first hop of the attempt (`asked`),
    /// the validated node that carried the path the `found` answers. Anyone able to send a
    /// `found` for this request id is on such a path, which that first hop chose. So the bytes
    /// sent to such holders never exceed the bytes received from them and from the first hops
    /// together, whoever on the path spoofs; false (nothing spent) if they do not cover 192.
    fn pay_for_holder(&mut self, holder: SocketAddr, asked: &[SocketAddr]) -> bool {
        let own = self.credit.balance(&holder).min(wire::MIN_REQUEST_LEN);
        let rest = wire::MIN_REQUEST_LEN - own;
        let payer = match rest {
            0 => None,
            _ => match asked.iter().copied().find(|a| *a != holder && self.credit.balance(a) >= rest) {
                Some(a) => Some(a),
                None => return false,
            },
        };
        if own > 0 {
            self.credit.spend(&holder, own, 0);
        }
        if let Some(payer) = payer {
            self.credit.spend(&payer, rest, 0);
        }
        true
    }

    /// Nodes from a find_node answer by `from` (see [`Node::affordable`]). While we also await
    /// a swarm's members from `from`, one request's worth of its credit is kept for them: in a
    /// small network both answers are small, and the members matter more.
    fn on_nodes(&mut self, now: Instant, id: u64, from: SocketAddr, nodes: Vec<NodeRecord>) {
        let own = self.id;
        let Some(l) = self.node_lookups.get(&id) else { return };
        let target = l.target;
        // Only new candidates are worth paying for.
        let mut nodes = nodes;
        nodes.retain(|n| n.id != own && !l.candidates.iter().any(|(c, _)| c.id == n.id || c.addr == n.addr));
        let members_awaited = self.pending.values().any(|p| {
            p.to == from
                && matches!(
                    p.purpose,
                    Purpose::Need { need: Need::GetPeers { .. }, .. }
                        | Purpose::Ping { then: Some(After::Need(Need::GetPeers { .. })) }
                )
        });
        let keep = if members_awaited { wire::MIN_REQUEST_LEN } else { 0 };
        let nodes = self.affordable(now, from, keep, nodes, |n| key_of_node(&n.id), &target, |n| n.addr);
        let Some(l) = self.node_lookups.get_mut(&id) else { return };
        l.in_flight = l.in_flight.saturating_sub(1);
        for (n, state) in l.candidates.iter_mut() {
            if n.addr == from {
                *state = Candidate::Answered;
            }
        }
        for n in nodes {
            if !l.candidates.iter().any(|(c, _)| c.id == n.id || c.addr == n.addr) {
                l.candidates.push((n, Candidate::Fresh));
            }
        }
        // Keep the candidate list bounded, and a few per host (one host's many ids beside the
        // target must not push every other host out).
        l.candidates.sort_by_key(|(n, _)| distance(&key_of_node(&n.id), &target));
        let candidates = std::mem::take(&mut l.candidates);
        l.candidates = few_per_host(candidates, |(n, _)| n.addr, self.config.k * 4);
        self.step_node_lookup(now, id);
    }

    fn on_node_failed(&mut self, now: Instant, id: u64, addr: SocketAddr) {
        let Some(l) = self.node_lookups.get_mut(&id) else { return };
        l.in_flight = l.in_flight.saturating_sub(1);
        for (n, state) in l.candidates.iter_mut() {
            if n.addr == addr {
                *state = Candidate::Failed;
            }
        }
        self.step_node_lookup(now, id);
    }

    /// Looks up a random id in every bucket farther from us than our closest neighbour, so that
    /// the table knows some node in every part of the keyspace (Kademlia's join refresh).
    fn refresh_buckets(&mut self, now: Instant) {
        let own = key_of_node(&self.id);
        let Some(closest) = self.routing.closest(&own, 1).first().map(|e| key_of_node(&e.id)) else { return };
        let depth = super::key::common_prefix_len(&own, &closest).min(64);
        for bit in 0..depth {
            let mut target: Key = self.rng.random();
            // Share our first `bit` bits, differ at bit `bit`.
            for b in 0..bit {
                let (byte, mask) = (b / 8, 0x80u8 >> (b % 8));
                target[byte] = (target[byte] & !mask) | (own[byte] & mask);
            }
            let (byte, mask) = (bit / 8, 0x80u8 >> (bit % 8));
            target[byte] = (target[byte] & !mask) | (!own[byte] & mask);
            self.start_node_lookup(now, target, NodeLookupPurpose::Refresh);
        }
    }

    fn finish_node_lookup(&mut self, now: Instant, id: u64) {
        let Some(l) = self.node_lookups.remove(&id) else { return };
        let info_hash = match l.purpose {
            NodeLookupPurpose::SelfLookup => return self.refresh_buckets(now),
            NodeLookupPurpose::Refresh => return,
            NodeLookupPurpose::Announce(info_hash, _) => info_hash,
        };
        // Announce to the k closest nodes that answered (the swarm's storers; a few per host),
        // and take part ourselves if we are among the closest.
        let status = self.swarms.get(&info_hash).and_then(|s| s.membership);
        let Some(status) = status else { return };
        let answered = l.candidates.iter().filter(|(_, s)| *s == Candidate::Answered).map(|(n, _)| n.addr);
        let closest = few_per_host(answered, |a| *a, self.config.k);
        for addr in closest {
            self.with_token(now, addr, Need::Announce { info_hash, status, listed: None }, Reach::Proven);
        }
    }
}

#[cfg(test)]
mod tests;
