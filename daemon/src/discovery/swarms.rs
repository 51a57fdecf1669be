//! Peer tables: for each swarm this node knows, its members.
//!
//! A node keeps the table of every swarm it is a member of, and of swarms announced to it as
//! one of the nodes closest to their info hash ("stored" swarms), so that lookups converge
//! even when no member is near. Which announces are stored (the closest nodes, members, and a
//! budget of new swarms per source host) is decided by the node before calling [`SwarmStore::upsert`];
//! every entry is an address that proved itself (a token-bearing announce, or an answer to
//! ours). Entries carry address, node id, announced status and last-seen time, and expire
//! unless refreshed by a new announce.
//!
//! A member is `idle` from its join until it declares itself leeching or seeding; an `idle`
//! record for a member (same node id) already known to be leeching or seeding refreshes it
//! without changing its status: announces travel as separate datagrams, with retries, and a
//! join that arrives after the declaration that followed it (or a third node's older record)
//! must not set the member back.
//!
//! Bounds: at most `max_peers` entries per swarm (the least recently seen is evicted), at most
//! `max_per_ip` per IP address within a swarm, and at most `max_stored` stored swarms (the
//! least recently refreshed is dropped); member swarms are never dropped for room.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::Rng;
use rand::seq::SliceRandom;

use super::key::{distance, key_of_hash, key_of_node};
use super::wire::{PeerRecord, PeerStatus};
use crate::descriptor::InfoHash;
use crate::node_id::NodeId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerEntry {
    pub id: NodeId,
    pub addr: SocketAddr,
    pub status: PeerStatus,
    pub last_seen: Instant,
    /// Its own status in the swarm as it answered our latest `draining` announce, and when
    /// (see [`crate::discovery::node::Node::drain`]).
    pub drain_answer: Option<(PeerStatus, Instant)>,
    /// When we last sent it our `draining` announce.
    pub drain_asked: Option<Instant>,
}

impl PeerEntry {
    pub fn record(&self) -> PeerRecord {
        PeerRecord { id: self.id, addr: self.addr, status: self.status }
    }
}

/// One swarm's table.
#[derive(Debug, Clone)]
pub struct Swarm {
    /// Our own status when we are a member.
    pub membership: Option<PeerStatus>,
    pub peers: HashMap<SocketAddr, PeerEntry>,
    /// Last time anything was added or refreshed.
    pub touched: Instant,
}

/// Outcome of recording an announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsert {
    New,
    StatusChanged(PeerStatus),
    Refreshed,
    /// An `idle` record for a member already declared leeching or seeding: refreshed, status
    /// kept.
    StaleIdle(PeerStatus),
    Rejected,
}

#[derive(Debug, Clone)]
pub struct SwarmStore {
    swarms: HashMap<InfoHash, Swarm>,
    max_peers: usize,
    max_per_ip: usize,
    max_stored: usize,
}

impl SwarmStore {
    pub fn new(max_peers: usize, max_per_ip: usize, max_stored: usize) -> SwarmStore {
        SwarmStore { swarms: HashMap::new(), max_peers, max_per_ip, max_stored }
    }

    pub fn get(&self, hash: &InfoHash) -> Option<&Swarm> {
        self.swarms.get(hash)
    }

    pub fn is_member(&self, hash: &InfoHash) -> bool {
        self.swarms.get(hash).is_some_and(|s| s.membership.is_some())
    }

    /// Whether we can answer a lookup for this swarm: we are in it, or know live members.
    pub fn knows(&self, hash: &InfoHash) -> bool {
        self.swarms
            .get(hash)
            .is_some_and(|s| s.membership.is_some() || s.peers.values().any(|p| p.status != PeerStatus::Leaving))
    }

    pub fn set_membership(&mut self, hash: InfoHash, status: Option<PeerStatus>, now: Instant) {
        match status {
            Some(status) => {
                let swarm = self.swarms.entry(hash).or_insert_with(|| Swarm {
                    membership: None,
                    peers: HashMap::new(),
                    touched: now,
                });
                swarm.membership = Some(status);
            }
            None => {
                if let Some(s) = self.swarms.get_mut(&hash) {
                    s.membership = None;
                    if s.peers.is_empty() {
                        self.swarms.remove(&hash);
                    }
                }
            }
        }
        self.enforce_stored_limit();
    }

    /// Records a member (from an announce, or a verified answer).
    pub fn upsert(&mut self, hash: InfoHash, peer: PeerRecord, now: Instant) -> Upsert {
        let max_peers = self.max_peers;
        let max_per_ip = self.max_per_ip;
        let swarm =
            self.swarms.entry(hash).or_insert_with(|| Swarm { membership: None, peers: HashMap::new(), touched: now });
        swarm.touched = now;
        let result = if let Some(e) = swarm.peers.get_mut(&peer.addr) {
            if peer.status == PeerStatus::Idle && e.status != PeerStatus::Idle && e.id == peer.id {
                e.last_seen = now;
                return Upsert::StaleIdle(e.status);
            }
            let changed = e.status != peer.status || e.id != peer.id;
            // Another node at that address has told us nothing.
            if e.id != peer.id {
                (e.drain_answer, e.drain_asked) = (None, None);
            }
            e.id = peer.id;
            e.status = peer.status;
            e.last_seen = now;
            if changed { Upsert::StatusChanged(peer.status) } else { Upsert::Refreshed }
        } else {
            let same_ip = swarm.peers.keys().filter(|a| a.ip() == peer.addr.ip()).count();
            if same_ip >= max_per_ip {
                Upsert::Rejected
            } else {
                if swarm.peers.len() >= max_peers
                    && let Some(oldest) = swarm.peers.values().min_by_key(|p| p.last_seen).map(|p| p.addr)
                {
                    swarm.peers.remove(&oldest);
                }
                let entry = PeerEntry {
                    id: peer.id,
                    addr: peer.addr,
                    status: peer.status,
                    last_seen: now,
                    drain_answer: None,
                    drain_asked: None,
                };
                swarm.peers.insert(peer.addr, entry);
                Upsert::New
            }
        };
        self.enforce_stored_limit();
        result
    }

    /// `addr` answered our `draining` announce in swarm `hash` with its own `status`: stored as
    /// that, whatever was stored (the member's own word, fresh, outranks what it announced).
    pub fn record_drain_answer(&mut self, hash: &InfoHash, addr: &SocketAddr, status: PeerStatus, now: Instant) {
        if let Some(e) = self.swarms.get_mut(hash).and_then(|s| s.peers.get_mut(addr)) {
            (e.status, e.drain_answer) = (status, Some((status, now)));
        }
    }

    /// We sent `addr` our `draining` announce in swarm `hash`.
    pub fn asked_to_drain(&mut self, hash: &InfoHash, addr: &SocketAddr, now: Instant) {
        if let Some(e) = self.swarms.get_mut(hash).and_then(|s| s.peers.get_mut(addr)) {
            e.drain_asked = Some(now);
        }
    }

    /// Removes `addr` from swarm `hash`; whether it was there.
    pub fn remove_peer(&mut self, hash: &InfoHash, addr: &SocketAddr) -> bool {
        self.swarms.get_mut(hash).is_some_and(|s| s.peers.remove(addr).is_some())
    }

    /// Drops entries not refreshed within `ttl`, and stored swarms left empty.
    pub fn expire(&mut self, now: Instant, ttl: Duration) -> usize {
        let mut dropped = 0;
        for swarm in self.swarms.values_mut() {
            let before = swarm.peers.len();
            swarm.peers.retain(|_, p| now.duration_since(p.last_seen) < ttl);
            dropped += before - swarm.peers.len();
        }
        self.swarms.retain(|_, s| s.membership.is_some() || !s.peers.is_empty());
        dropped
    }

    fn enforce_stored_limit(&mut self) {
        let stored = self.swarms.values().filter(|s| s.membership.is_none()).count();
        if stored <= self.max_stored {
            return;
        }
        let mut candidates: Vec<(Instant, InfoHash)> =
            self.swarms.iter().filter(|(_, s)| s.membership.is_none()).map(|(h, s)| (s.touched, *h)).collect();
        candidates.sort();
        for (_, h) in candidates.into_iter().take(stored - self.max_stored) {
            self.swarms.remove(&h);
        }
    }

    /// Up to `n` members to give a newcomer, live ones first, in random order (so newcomers
    /// spread over the swarm instead of all meeting the same peers), each with its status as
    /// lists carry it ([`PeerStatus::listed`]).
    pub fn sample(&self, hash: &InfoHash, n: usize, rng: &mut impl Rng) -> Vec<PeerRecord> {
        let Some(s) = self.swarms.get(hash) else { return Vec::new() };
        let mut peers: Vec<PeerRecord> = s
            .peers
            .values()
            .filter(|p| p.status != PeerStatus::Leaving)
            .map(|p| PeerRecord { status: p.status.listed(), ..p.record() })
            .collect();
        peers.shuffle(rng);
        // Seeders first among the sample: a newcomer benefits most from them.
        peers.sort_by_key(|p| p.status != PeerStatus::Seeding);
        peers.truncate(n);
        peers
    }

    /// Whom to tell of a change of our own status in a swarm: every live member (not us)
    /// when there are at most `fanout`; otherwise the `closest` members nearest the swarm's
    /// key — the nodes most likely to store it and answer lookups with our record — and a
    /// random sample of the others, `fanout` in all. The rest learn it from those storers'
    /// answers, peer exchange and our periodic re-announce: telling every member of an
    /// N-member swarm costs O(N) per change and O(N²) for the swarm.
    pub fn announce_targets(
        &self,
        hash: &InfoHash,
        own: &NodeId,
        fanout: usize,
        closest: usize,
        rng: &mut impl Rng,
    ) -> Vec<SocketAddr> {
        let Some(s) = self.swarms.get(hash) else { return Vec::new() };
        let mut members: Vec<&PeerEntry> =
            s.peers.values().filter(|p| p.id != *own && p.status != PeerStatus::Leaving).collect();
        if members.len() > fanout {
            let target = key_of_hash(hash);
            members.sort_by_key(|p| (distance(&key_of_node(&p.id), &target), p.addr));
            let near = closest.min(fanout);
            members[near..].shuffle(rng);
            members.truncate(fanout);
        }
        members.into_iter().map(|p| p.addr).collect()
    }

    pub fn swarms(&self) -> impl Iterator<Item = (&InfoHash, &Swarm)> {
        self.swarms.iter()
    }

    pub fn peer_count(&self) -> usize {
        self.swarms.values().map(|s| s.peers.len()).sum()
    }

    /// Number of peers at each IP across a swarm, for tests of the bounds.
    pub fn per_ip(&self, hash: &InfoHash) -> HashMap<IpAddr, usize> {
        let mut m = HashMap::new();
        if let Some(s) = self.swarms.get(hash) {
            for a in s.peers.keys() {
                *m.entry(a.ip()).or_insert(0) += 1;
            }
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn peer(i: u16, ip: u8, status: PeerStatus) -> PeerRecord {
        PeerRecord { id: NodeId([i as u8; 32]), addr: SocketAddr::from(([10, 0, 0, ip], 1000 + i)), status }
    }

    /// A small swarm hears of every change; a large one only the members closest to the
    /// swarm's key and a random sample of the rest, never us or a leaver.
    #[test]
    fn status_changes_go_to_the_closest_members_and_a_sample() {
        let now = Instant::now();
        let mut s = SwarmStore::new(512, 512, 10);
        let h = InfoHash([0; 32]);
        let own = NodeId([0xee; 32]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for i in 1..=10u16 {
            s.upsert(h, peer(i, i as u8, PeerStatus::Leeching), now);
        }
        s.upsert(h, PeerRecord { id: own, ..peer(50, 50, PeerStatus::Leeching) }, now);
        s.upsert(h, peer(51, 51, PeerStatus::Leaving), now);
        let mut all = s.announce_targets(&h, &own, 16, 4, &mut rng);
        all.sort();
        assert_eq!(all, (1..=10u16).map(|i| peer(i, i as u8, PeerStatus::Idle).addr).collect::<Vec<_>>());

        for i in 11..=200u16 {
            s.upsert(h, peer(i, i as u8, PeerStatus::Leeching), now);
        }
        let mut seen = std::collections::HashSet::new();
        for _ in 0..20 {
            let some = s.announce_targets(&h, &own, 16, 4, &mut rng);
            assert_eq!(some.len(), 16);
            // Ids 1..4 are nearest the all-zero key: always told.
            for i in 1..=4u16 {
                assert!(some.contains(&peer(i, i as u8, PeerStatus::Idle).addr), "closest member {i} left out");
            }
            seen.extend(some);
        }
        assert!(seen.len() > 100, "the sample varies ({} members told over 20 changes)", seen.len());
    }

    #[test]
    fn bounded_per_swarm_and_per_ip() {
        let now = Instant::now();
        let mut s = SwarmStore::new(4, 2, 10);
        let h = InfoHash([1; 32]);
        assert_eq!(s.upsert(h, peer(1, 1, PeerStatus::Idle), now), Upsert::New);
        assert_eq!(s.upsert(h, peer(2, 1, PeerStatus::Idle), now), Upsert::New);
        assert_eq!(s.upsert(h, peer(3, 1, PeerStatus::Idle), now), Upsert::Rejected, "third from one IP");
        for i in 4..10 {
            s.upsert(h, peer(i, i as u8, PeerStatus::Idle), now + Duration::from_secs(i as u64));
        }
        assert_eq!(s.get(&h).unwrap().peers.len(), 4);
        assert_eq!(s.upsert(h, peer(9, 9, PeerStatus::Leeching), now), Upsert::StatusChanged(PeerStatus::Leeching));
    }

    #[test]
    fn a_late_join_does_not_set_a_declared_member_back_to_idle() {
        let now = Instant::now();
        let mut s = SwarmStore::new(8, 8, 10);
        let h = InfoHash([1; 32]);
        assert_eq!(s.upsert(h, peer(1, 1, PeerStatus::Leeching), now), Upsert::New);
        let later = now + Duration::from_secs(5);
        assert_eq!(s.upsert(h, peer(1, 1, PeerStatus::Idle), later), Upsert::StaleIdle(PeerStatus::Leeching));
        let entry = s.get(&h).unwrap().peers.values().next().copied().unwrap();
        assert_eq!((entry.status, entry.last_seen), (PeerStatus::Leeching, later), "kept, and refreshed");
        assert_eq!(s.upsert(h, peer(1, 1, PeerStatus::Seeding), now), Upsert::StatusChanged(PeerStatus::Seeding));
        let mut restarted = peer(1, 1, PeerStatus::Idle);
        restarted.id = NodeId([9; 32]);
        assert_eq!(
            s.upsert(h, restarted, now),
            Upsert::StatusChanged(PeerStatus::Idle),
            "another node at that address"
        );
    }

    #[test]
    fn entries_expire_and_empty_stored_swarms_go() {
        let now = Instant::now();
        let mut s = SwarmStore::new(8, 8, 10);
        let (a, b) = (InfoHash([1; 32]), InfoHash([2; 32]));
        s.upsert(a, peer(1, 1, PeerStatus::Seeding), now);
        s.set_membership(b, Some(PeerStatus::Leeching), now);
        s.upsert(b, peer(2, 2, PeerStatus::Seeding), now);
        assert_eq!(s.expire(now + Duration::from_secs(100), Duration::from_secs(60)), 2);
        assert!(s.get(&a).is_none(), "stored swarm with no peers left is gone");
        assert!(s.get(&b).is_some() && s.knows(&b), "our own swarm stays");
    }

    #[test]
    fn stored_swarms_are_bounded() {
        let now = Instant::now();
        let mut s = SwarmStore::new(8, 8, 3);
        for i in 0..10u8 {
            s.upsert(InfoHash([i; 32]), peer(1, 1, PeerStatus::Idle), now + Duration::from_secs(i as u64));
        }
        assert_eq!(s.swarms().count(), 3);
        assert!(s.get(&InfoHash([9; 32])).is_some(), "most recent kept");
    }

    #[test]
    fn samples_prefer_seeders_and_skip_leavers() {
        let now = Instant::now();
        let mut s = SwarmStore::new(64, 64, 3);
        let h = InfoHash([1; 32]);
        for i in 0..10 {
            let status = if i == 3 {
                PeerStatus::Seeding
            } else if i == 4 {
                PeerStatus::Leaving
            } else {
                PeerStatus::Idle
            };
            s.upsert(h, peer(i, i as u8, status), now);
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let sample = s.sample(&h, 5, &mut rng);
        assert_eq!(sample.len(), 5);
        assert_eq!(sample[0].status, PeerStatus::Seeding);
        assert!(sample.iter().all(|p| p.status != PeerStatus::Leaving));
    }
}
