//! The discovery tables on disk: the routing table (`STATE/routing.state`) and one peer table
//! per swarm (`STATE/peers/HASH.state`), saved by the driver and restored at start.
//!
//! Invariants: files are written atomically ([`StateDir::save_raw`]), only when their content
//! changed since the last save (a fingerprint per table, minute-granular in `seen` so that
//! refreshes do not rewrite files every few seconds); a swarm's file is removed when the node
//! no longer knows the swarm; a write that fails forgets every fingerprint, so the next save
//! writes everything again. A file that does not parse is moved aside and reported, never
//! fatal. Restoring reads at most [`MAX_PEER_FILES`] peer tables.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::{info, warn};
use serde::{Deserialize, Serialize};

use super::node::Node;
use super::wire::{NodeRecord, PeerRecord, PeerStatus};
use crate::descriptor::InfoHash;
use crate::node_id::NodeId;
use crate::shared::DaemonShared;
use crate::state::{Loaded, StateDir, StateKind};

/// The format version of both files.
pub const STATE_VERSION: u32 = 1;
/// Peer tables read at start, at most.
const MAX_PEER_FILES: usize = 100_000;

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct RoutingState {
    pub(super) version: u32,
    pub(super) nodes: Vec<SavedNode>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct SavedNode {
    pub(super) id: NodeId,
    pub(super) addr: SocketAddr,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct PeersState {
    pub(super) version: u32,
    pub(super) info_hash: InfoHash,
    pub(super) peers: Vec<SavedPeer>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct SavedPeer {
    pub(super) id: NodeId,
    pub(super) addr: SocketAddr,
    pub(super) status: PeerStatus,
    /// When last seen, in seconds since the Unix epoch.
    pub(super) seen: u64,
}

/// Loads the routing table and peer tables saved by an earlier run into `node`; a file that
/// cannot be read is moved aside and reported in `shared`'s warnings.
pub fn restore(node: &mut Node, state: &StateDir, shared: &DaemonShared, now: Instant, unix_now: u64) {
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
    for entry in entries.flatten().take(MAX_PEER_FILES) {
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
                        let age = Duration::from_secs(unix_now.saturating_sub(s.seen));
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

/// A cheap summary of a table's content.
fn fingerprint<T: std::hash::Hash + Ord>(items: &mut [T]) -> u64 {
    use std::hash::{Hash, Hasher};
    items.sort();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    items.hash(&mut h);
    h.finish()
}

/// What one save writes and removes.
#[derive(Debug, Default)]
pub struct Changes {
    /// The routing table (`None`) or a swarm's peer table, encoded.
    writes: Vec<(Option<InfoHash>, Vec<u8>)>,
    /// Swarms whose file goes.
    gone: Vec<InfoHash>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.gone.is_empty()
    }

    /// Writes and removes the files (blocking: run it off the executor).
    pub fn apply(self, state: &StateDir) -> std::io::Result<()> {
        for (hash, body) in self.writes {
            match hash {
                None => state.save_raw(StateKind::Routing, None, &body)?,
                Some(h) => state.save_raw(StateKind::Peers, Some(&h), &body)?,
            }
        }
        for h in self.gone {
            state.remove(StateKind::Peers, Some(&h))?;
        }
        Ok(())
    }
}

/// What was last saved: the fingerprint of every table (the routing table under the all-zero
/// hash).
#[derive(Debug, Default)]
pub struct Saved {
    fingerprints: HashMap<InfoHash, u64>,
}

const ROUTING_KEY: InfoHash = InfoHash([0; 32]);

impl Saved {
    /// The tables of `node` that changed since the last save, and the swarms gone; recorded as
    /// saved (call [`Saved::forget`] if applying them fails).
    pub fn changes(&mut self, node: &Node, now: Instant, unix_now: u64) -> Changes {
        let mut changes = Changes::default();
        let mut nodes: Vec<(NodeId, SocketAddr)> = node.routing().entries().map(|e| (e.id, e.addr)).collect();
        let routing_fp = fingerprint(&mut nodes);
        if self.fingerprints.get(&ROUTING_KEY) != Some(&routing_fp) {
            let r = RoutingState {
                version: STATE_VERSION,
                nodes: nodes.iter().map(|(id, addr)| SavedNode { id: *id, addr: *addr }).collect(),
            };
            changes.writes.push((None, serde_json::to_vec(&r).unwrap_or_default()));
            self.fingerprints.insert(ROUTING_KEY, routing_fp);
        }
        let mut current = HashSet::new();
        for (hash, swarm) in node.swarms().swarms() {
            current.insert(*hash);
            let seen = |last_seen: Instant| unix_now.saturating_sub(now.saturating_duration_since(last_seen).as_secs());
            let mut entries: Vec<(SocketAddr, NodeId, u8, u64)> =
                swarm.peers.values().map(|p| (p.addr, p.id, p.status as u8, seen(p.last_seen) / 60)).collect();
            let fp = fingerprint(&mut entries);
            if self.fingerprints.get(hash) == Some(&fp) {
                continue;
            }
            self.fingerprints.insert(*hash, fp);
            let state = PeersState {
                version: STATE_VERSION,
                info_hash: *hash,
                peers: swarm
                    .peers
                    .values()
                    .map(|p| SavedPeer { id: p.id, addr: p.addr, status: p.status, seen: seen(p.last_seen) })
                    .collect(),
            };
            changes.writes.push((Some(*hash), serde_json::to_vec(&state).unwrap_or_default()));
        }
        changes.gone =
            self.fingerprints.keys().filter(|h| **h != ROUTING_KEY && !current.contains(h)).copied().collect();
        for h in &changes.gone {
            self.fingerprints.remove(h);
        }
        changes
    }

    /// A save failed: the next one writes everything.
    pub fn forget(&mut self) {
        self.fingerprints.clear();
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

    #[test]
    fn only_changed_tables_are_written_and_a_forgotten_swarm_loses_its_file() {
        use super::super::node::DiscoveryConfig;
        let (now, unix) = (Instant::now(), 999_960);
        let node_with = |peers: &[(PeerRecord, Duration)]| {
            let mut node = Node::new(NodeId([1; 32]), DiscoveryConfig::default(), 1, now);
            if !peers.is_empty() {
                node.restore_peers(now, InfoHash([5; 32]), peers);
            }
            node
        };
        let hash = InfoHash([5; 32]);
        let member =
            PeerRecord { id: NodeId([2; 32]), addr: "10.0.0.2:6690".parse().unwrap(), status: PeerStatus::Seeding };
        let node = node_with(&[(member, Duration::from_secs(120))]);
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let mut saved = Saved::default();
        let first = saved.changes(&node, now, unix);
        assert_eq!(first.writes.iter().map(|(h, _)| *h).collect::<Vec<_>>(), [None, Some(hash)]);
        first.apply(&state).unwrap();
        let Loaded::Ok(p) = state.load::<PeersState>(StateKind::Peers, Some(&hash)) else { panic!("not saved") };
        assert_eq!(
            p.peers.iter().map(|s| (s.addr, s.status, s.seen)).collect::<Vec<_>>(),
            [(member.addr, PeerStatus::Seeding, unix - 120)]
        );
        // Unchanged, even as time passes within the minute: nothing to write.
        assert!(saved.changes(&node, now + Duration::from_secs(20), unix + 20).is_empty());
        // The swarm forgotten: its file goes, nothing else is written.
        let gone = saved.changes(&node_with(&[]), now, unix);
        assert_eq!((gone.writes.len(), gone.gone.clone()), (0, vec![hash]));
        gone.apply(&state).unwrap();
        assert!(matches!(state.load::<PeersState>(StateKind::Peers, Some(&hash)), Loaded::Missing));
        // After a failed save everything is written again.
        saved.forget();
        assert_eq!(saved.changes(&node, now, unix).writes.len(), 2);
    }
}
