//! What the control server may read without asking the supervisor.
//!
//! The supervisor owns the set of torrents; it publishes each torrent's [`TorrentShared`] here
//! when it starts one and withdraws it when it stops one. Status requests read this index and
//! the torrents' status cells — short `std::sync` locks, never held across `.await` or I/O —
//! so `status` answers even while the supervisor is busy with a slow disk.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use crate::config::Locations;
use crate::control::access::AccessPolicy;
use crate::control::protocol::{
    DrainReport, ErrorKind, ErrorReply, LookupStats, NodeStatus, PeerInfo, PeersReport, RpcCounters,
    STATUS_SCHEMA_VERSION, StatusReport, TorrentState, WireState,
};
use crate::descriptor::InfoHash;
use crate::discovery::driver::SwarmMember;
use crate::node_id::NodeId;
use crate::swarm::PeerView;
use crate::swarm::counters::WireCounters;
use crate::torrent::TorrentShared;

/// How recently a swarm member must have answered a draining node to count as a copy ([`DaemonShared::complete_copies`]).
pub const FRESH_SEED: std::time::Duration = std::time::Duration::from_secs(120);

/// Facts about the node fixed at start-up.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub node_id: NodeId,
    pub listen: SocketAddr,
    pub locations: Locations,
}

/// Shared between the supervisor (writer) and the control server (reader).
#[derive(Debug)]
pub struct DaemonShared {
    pub node: NodeInfo,
    started: Instant,
    /// Every running torrent, by info hash.
    torrents: RwLock<BTreeMap<InfoHash, Arc<TorrentShared>>>,
    /// State-file problems found since start-up (`node.state_warnings`).
    pub warnings: Arc<Mutex<Vec<String>>>,
    /// Who may use the control socket; replaced on reload when `control_group` changes.
    access: Mutex<AccessPolicy>,
    /// Discovery counters, routing-table size and lookup statistics, published by the
    /// discovery service.
    rpc: Mutex<(RpcCounters, u64, LookupStats)>,
    /// Every swarm's members as discovery knows them, published by the discovery service.
    swarm_views: Mutex<HashMap<InfoHash, Vec<SwarmMember>>>,
    /// Peer-wire connection counters (`node.peer_connections`).
    wire: Arc<WireCounters>,
    /// Starting, ready or stopping (`/ready`).
    phase: std::sync::atomic::AtomicU8,
    /// Cache torrents evicted under `retention:` (counted by the supervisor).
    pub evictions: Evictions,
    /// The drain in progress, as the supervisor last published it.
    drain: Mutex<Option<DrainReport>>,
}

/// Evictions since start-up (`p2pd_evictions_total`, `p2pd_evicted_bytes_total`).
#[derive(Debug, Default)]
pub struct Evictions {
    pub count: std::sync::atomic::AtomicU64,
    /// Content bytes of the torrents evicted.
    pub bytes: std::sync::atomic::AtomicU64,
}

/// Where the daemon is in its life, for `/ready`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Loading state, binding, starting torrents.
    Starting = 0,
    /// State loaded and every socket bound and served.
    Ready = 1,
    /// Shutting down: torrents stopping, state being saved.
    Stopping = 2,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl DaemonShared {
    pub fn new(
        node: NodeInfo,
        access: AccessPolicy,
        warnings: Arc<Mutex<Vec<String>>>,
        wire: Arc<WireCounters>,
    ) -> DaemonShared {
        DaemonShared {
            node,
            started: Instant::now(),
            torrents: RwLock::new(BTreeMap::new()),
            warnings,
            access: Mutex::new(access),
            rpc: Mutex::new((RpcCounters::default(), 0, LookupStats::default())),
            swarm_views: Mutex::new(HashMap::new()),
            wire,
            phase: std::sync::atomic::AtomicU8::new(Phase::Starting as u8),
            evictions: Evictions::default(),
            drain: Mutex::new(None),
        }
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn phase(&self) -> Phase {
        match self.phase.load(std::sync::atomic::Ordering::SeqCst) {
            0 => Phase::Starting,
            1 => Phase::Ready,
            _ => Phase::Stopping,
        }
    }

    /// Payload moved and pieces failed since start-up, over every torrent.
    pub fn payload(&self) -> crate::swarm::counters::PayloadTotals {
        self.wire.payload()
    }

    /// Discovery's counters and routing-table size, as last published.
    pub fn discovery_counters(&self) -> (RpcCounters, u64) {
        let (rpc, nodes, _) = *lock(&self.rpc);
        (rpc, nodes)
    }

    /// Called by the discovery service with its latest counters and swarm tables.
    pub fn publish_discovery(
        &self,
        rpc: RpcCounters,
        routing_table_size: u64,
        lookups: LookupStats,
        views: HashMap<InfoHash, Vec<SwarmMember>>,
    ) {
        *lock(&self.rpc) = (rpc, routing_table_size, lookups);
        *lock(&self.swarm_views) = views;
    }

    /// Discovery's view of one swarm.
    pub fn swarm_view(&self, hash: &InfoHash) -> Vec<SwarmMember> {
        lock(&self.swarm_views).get(hash).cloned().unwrap_or_default()
    }

    pub fn publish(&self, torrent: Arc<TorrentShared>) {
        self.torrents.write().unwrap_or_else(|p| p.into_inner()).insert(torrent.info_hash, torrent);
    }

    pub fn withdraw(&self, hash: &InfoHash) {
        self.torrents.write().unwrap_or_else(|p| p.into_inner()).remove(hash);
    }

    /// All published torrents, ordered by info hash.
    pub fn torrents(&self) -> Vec<Arc<TorrentShared>> {
        self.torrents.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    pub fn set_access(&self, policy: AccessPolicy) {
        *lock(&self.access) = policy;
    }

    pub fn check_access(&self, uid: u32, gid: u32) -> Result<(), crate::control::access::Refused> {
        lock(&self.access).check(uid, gid)
    }

    /// Finds the torrent an operator means by `id`.
    pub fn resolve(&self, id: &str) -> Result<Arc<TorrentShared>, ErrorReply> {
        let torrents = self.torrents();
        let hash = resolve_id(id, torrents.iter().map(|t| (t.info_hash, t.name.as_str())))?;
        torrents.into_iter().find(|t| t.info_hash == hash).ok_or_else(|| not_found(id))
    }

    /// Publishes where the drain stands (`node.drain` in `status`).
    pub fn publish_drain(&self, report: DrainReport) {
        *lock(&self.drain) = Some(report);
    }

    /// Other nodes holding all of `t` by their own word to this draining node: swarm members
    /// whose latest answer to our `draining` announce, within [`FRESH_SEED`], said `seeding`
    /// ([`SwarmMember::drain_answer`]), and that have not announced `draining` or `leaving`
    /// since — counted once each (by node id), never this node or a banned address. On the
    /// safe side: a member that did not answer lately is not counted, and of nodes draining at
    /// once, at least one counts none of the others (see
    /// [`crate::discovery::node::Node::drain`]).
    pub fn complete_copies(&self, t: &TorrentShared) -> u32 {
        use crate::discovery::wire::PeerStatus;
        let me = self.node.node_id;
        let banned: HashSet<SocketAddr> = t.live().peers.iter().filter(|p| p.banned).map(|p| p.addr).collect();
        let holders: HashSet<NodeId> = self
            .swarm_view(&t.info_hash)
            .iter()
            .filter(|m| matches!(m.drain_answer, Some((PeerStatus::Seeding, age)) if age <= FRESH_SEED))
            .filter(|m| !matches!(m.record.status, PeerStatus::Draining | PeerStatus::Leaving))
            .filter(|m| !banned.contains(&m.record.addr) && m.record.id != me)
            .map(|m| m.record.id)
            .collect();
        u32::try_from(holders.len()).unwrap_or(u32::MAX)
    }

    /// `status [ID]`.
    pub fn status(&self, id: Option<&str>) -> Result<StatusReport, ErrorReply> {
        let all = self.torrents();
        let torrents = match id {
            None => all.iter().map(|t| t.snapshot()).collect::<Vec<_>>(),
            Some(id) => vec![self.resolve(id)?.snapshot()],
        };
        let (rpc, routing_table_size, lookups) = *lock(&self.rpc);
        let l = &self.node.locations;
        let node = NodeStatus {
            daemon_version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            uptime_secs: self.started.elapsed().as_secs(),
            node_id: self.node.node_id.to_hex(),
            listen: self.node.listen.to_string(),
            config_dir: l.config_dir.clone(),
            state_dir: l.state_dir.clone(),
            data_dir: l.data_dir.clone(),
            control_socket: l.control_socket.clone(),
            torrents: all.len(),
            download_rate: torrents.iter().map(|t| t.download_rate).sum(),
            upload_rate: torrents.iter().map(|t| t.upload_rate).sum(),
            routing_table_size,
            rpc,
            lookups,
            peer_connections: self.wire.snapshot(),
            state_warnings: lock(&self.warnings).clone(),
            drain: lock(&self.drain).clone(),
        };
        Ok(StatusReport { version: STATUS_SCHEMA_VERSION, node, torrents })
    }

    /// `peers ID`.
    pub fn peers(&self, id: &str) -> Result<PeersReport, ErrorReply> {
        let t = self.resolve(id)?;
        // Discovery's table, with what the torrent knows of its connections laid over it (by
        // address; of two connections to one address, the later one).
        let members = self.swarm_view(&t.info_hash);
        let engine = t.live().peers;
        let by_addr: HashMap<SocketAddr, &PeerView> = engine.iter().map(|p| (p.addr, p)).collect();
        let mut peers: Vec<PeerInfo> =
            members.iter().map(|m| member_line(m, by_addr.get(&m.record.addr).copied())).collect();
        peers.extend(
            by_addr.values().filter(|p| !members.iter().any(|m| m.record.addr == p.addr)).map(|p| engine_line(p)),
        );
        peers.sort_by(|a, b| a.address.cmp(&b.address));
        Ok(PeersReport { info_hash: t.info_hash.to_hex(), name: t.name.clone(), peers })
    }

    /// A one-line summary for systemd's `STATUS=`.
    pub fn summary(&self) -> String {
        let all = self.torrents();
        let count = |s: TorrentState| all.iter().filter(|t| t.live().state == s).count();
        let (down, up): (u64, u64) = all.iter().fold((0, 0), |(d, u), t| {
            let l = t.live();
            (d + l.download_rate, u + l.upload_rate)
        });
        format!(
            "{} torrents: {} seeding, {} leeching, {} checking, {} error; down {}/s, up {}/s",
            all.len(),
            count(TorrentState::Seeding),
            count(TorrentState::Leeching),
            count(TorrentState::Checking),
            count(TorrentState::Error),
            crate::units::human_bytes(down),
            crate::units::human_bytes(up),
        )
    }
}

/// A line of `p2pctl peers` for a member discovery knows: its announced status and when it was
/// last heard from, with what the engine knows of its connection (matched by address) if any.
fn member_line(m: &SwarmMember, conn: Option<&PeerView>) -> PeerInfo {
    let mut line = conn.map(engine_line).unwrap_or_else(|| PeerInfo {
        address: m.record.addr.to_string(),
        node_id: m.record.id.to_hex(),
        status: String::new(),
        last_seen_secs: 0,
        connected: false,
        strikes: 0,
        banned: false,
        downloaded: 0,
        uploaded: 0,
        wire: None,
    });
    line.status = m.record.status.as_str().to_string();
    line.last_seen_secs = m.last_seen.as_secs();
    line
}

/// A line of `p2pctl peers` for a peer only the engine knows: `seeding`, `leeching` or
/// `banned` by what it has and did.
fn engine_line(p: &PeerView) -> PeerInfo {
    let status = if p.banned {
        "banned"
    } else if p.complete {
        "seeding"
    } else {
        "leeching"
    };
    PeerInfo {
        address: p.addr.to_string(),
        node_id: p.node_id.to_hex(),
        status: status.to_string(),
        last_seen_secs: 0,
        connected: p.link.is_some(),
        strikes: p.strikes,
        banned: p.banned,
        downloaded: p.downloaded,
        uploaded: p.uploaded,
        wire: p.link.as_ref().map(|l| WireState {
            interested: l.interested,
            choked_by_peer: l.choked_by_peer,
            peer_interested: l.peer_interested,
            choking: l.choking,
            requested_bytes: l.requested_bytes,
            last_block_secs: l.last_block.map(|d| d.as_secs()),
            snubbed: l.snubbed,
        }),
    }
}

fn not_found(id: &str) -> ErrorReply {
    ErrorReply { kind: ErrorKind::NotFound, message: format!("no torrent matches `{id}` (see `p2pctl list`)") }
}

/// Resolves an operator's ID: the exact info hash, else the exact name, else a unique prefix of
/// an info hash.
pub fn resolve_id<'a>(id: &str, torrents: impl Iterator<Item = (InfoHash, &'a str)>) -> Result<InfoHash, ErrorReply> {
    let torrents: Vec<(InfoHash, &str)> = torrents.collect();
    let needle = id.trim().to_ascii_lowercase();
    if needle.is_empty() {
        return Err(ErrorReply { kind: ErrorKind::Invalid, message: "empty torrent ID".into() });
    }
    if let Some((h, _)) = torrents.iter().find(|(h, _)| h.to_hex() == needle) {
        return Ok(*h);
    }
    let by_name: Vec<_> = torrents.iter().filter(|(_, n)| *n == id).collect();
    match by_name.len() {
        1 => return Ok(by_name[0].0),
        0 => {}
        _ => {
            return Err(ErrorReply {
                kind: ErrorKind::Ambiguous,
                message: format!(
                    "several torrents are named `{id}`; use an info hash: {}",
                    by_name.iter().map(|(h, _)| h.to_hex()[..12].to_string()).collect::<Vec<_>>().join(", ")
                ),
            });
        }
    }
    let by_prefix: Vec<_> = torrents.iter().filter(|(h, _)| h.to_hex().starts_with(&needle)).collect();
    match by_prefix.len() {
        1 => Ok(by_prefix[0].0),
        0 => Err(not_found(id)),
        n => Err(ErrorReply {
            kind: ErrorKind::Ambiguous,
            message: format!(
                "`{id}` matches {n} torrents: {}; give more digits",
                by_prefix
                    .iter()
                    .take(5)
                    .map(|(h, name)| format!("{} ({name})", &h.to_hex()[..12]))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(first: u8) -> InfoHash {
        let mut h = [0x11; 32];
        h[0] = first;
        InfoHash(h)
    }

    #[test]
    fn ids_resolve_by_hash_name_or_prefix() {
        let list = [(hash(0xab), "alpha"), (hash(0xac), "beta"), (hash(0x12), "ab")];
        let r = |id: &str| resolve_id(id, list.iter().copied());
        assert_eq!(r(&hash(0xab).to_hex()).unwrap(), hash(0xab));
        assert_eq!(r("beta").unwrap(), hash(0xac));
        assert_eq!(r("ab").unwrap(), hash(0x12), "an exact name wins over a prefix");
        assert_eq!(r("ABA").unwrap_err().kind, ErrorKind::NotFound);
        assert_eq!(r("ab1").unwrap(), hash(0xab));
        assert_eq!(r("a").unwrap_err().kind, ErrorKind::Ambiguous);
        assert_eq!(r("zzz").unwrap_err().kind, ErrorKind::NotFound);
    }

    #[test]
    fn a_peers_line_has_discoverys_status_and_the_connections_state() {
        use crate::discovery::wire::{PeerRecord, PeerStatus};
        use crate::swarm::LinkView;
        let addr: SocketAddr = "10.0.0.2:6690".parse().unwrap();
        let member = SwarmMember {
            record: PeerRecord { id: NodeId([2; 32]), addr, status: PeerStatus::Leeching },
            last_seen: std::time::Duration::from_secs(7),
            drain_answer: None,
        };
        let conn = PeerView {
            addr,
            node_id: NodeId([2; 32]),
            complete: true,
            strikes: 1,
            banned: false,
            downloaded: 10,
            uploaded: 20,
            link: Some(LinkView {
                interested: true,
                choked_by_peer: false,
                peer_interested: false,
                choking: true,
                requested_bytes: 5,
                last_block: Some(std::time::Duration::from_secs(3)),
                snubbed: false,
            }),
        };
        let alone = member_line(&member, None);
        assert_eq!((alone.status.as_str(), alone.last_seen_secs, alone.connected), ("leeching", 7, false));
        assert_eq!((alone.address.as_str(), alone.wire.is_none()), ("10.0.0.2:6690", true));
        let both = member_line(&member, Some(&conn));
        assert_eq!((both.status.as_str(), both.last_seen_secs), ("leeching", 7), "the announced status");
        assert_eq!((both.connected, both.strikes, both.downloaded, both.uploaded), (true, 1, 10, 20));
        assert_eq!(both.wire.as_ref().map(|w| (w.requested_bytes, w.last_block_secs)), Some((5, Some(3))));
        let unannounced = engine_line(&conn);
        assert_eq!((unannounced.status.as_str(), unannounced.last_seen_secs), ("seeding", 0));
        let banned = engine_line(&PeerView { banned: true, link: None, ..conn });
        assert_eq!((banned.status.as_str(), banned.connected, banned.banned), ("banned", false, true));
    }
}
