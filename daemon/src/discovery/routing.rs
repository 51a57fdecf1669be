//! The routing table: Kademlia k-buckets by XOR distance from our own id.
//!
//! Invariants:
//! - Only *verified* nodes enter a bucket: nodes that answered a request we sent, from the
//!   address we sent it to (never nodes merely named by others or heard from unsolicited).
//! - A bucket holds at most `k` nodes; candidates for a full bucket wait in a replacement list
//!   of at most `k`. At most `max_per_ip` nodes share an IP address across the table, so one
//!   host cannot fill it with made-up identities.
//! - A node that misses [`UNREACHABLE_AFTER`] requests in a row is unreachable: it is no
//!   longer offered for routing but keeps its slot, and is dropped once a replacement has
//!   answered or after [`DROP_AFTER`] misses — not at the first loss.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::key::{Key, common_prefix_len, distance, key_of_node};
use super::ratelimit::host_of;
use super::wire::NodeRecord;
use crate::node_id::NodeId;

/// Misses in a row after which a node is not used for routing.
pub const UNREACHABLE_AFTER: u32 = 3;
/// Misses in a row after which a node is removed.
pub const DROP_AFTER: u32 = 6;

/// One known node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub id: NodeId,
    pub addr: SocketAddr,
    pub last_seen: Instant,
    /// Requests in a row it did not answer.
    pub failures: u32,
}

impl Entry {
    pub fn reachable(&self) -> bool {
        self.failures < UNREACHABLE_AFTER
    }

    pub fn record(&self) -> NodeRecord {
        NodeRecord { id: self.id, addr: self.addr }
    }
}

#[derive(Debug, Clone, Default)]
struct Bucket {
    /// Least recently seen first.
    nodes: Vec<Entry>,
    replacements: Vec<Entry>,
}

/// What became of an offered node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    Added,
    Refreshed,
    /// The bucket is full; kept as a replacement candidate.
    Replacement,
    /// Our own id, or too many nodes at that IP.
    Rejected,
}

#[derive(Debug, Clone)]
pub struct RoutingTable {
    own: Key,
    k: usize,
    max_per_ip: usize,
    buckets: Vec<Bucket>,
}

impl RoutingTable {
    pub fn new(own: &NodeId, k: usize, max_per_ip: usize) -> RoutingTable {
        RoutingTable { own: key_of_node(own), k, max_per_ip, buckets: vec![Bucket::default(); 257] }
    }

    fn bucket_of(&self, id: &NodeId) -> usize {
        common_prefix_len(&self.own, &key_of_node(id))
    }

    fn ip_count(&self, ip: IpAddr) -> usize {
        self.buckets.iter().flat_map(|b| b.nodes.iter()).filter(|e| e.addr.ip() == ip).count()
    }

    /// Offers a node that just answered us.
    pub fn insert_verified(&mut self, id: NodeId, addr: SocketAddr, now: Instant) -> Insert {
        if key_of_node(&id) == self.own {
            return Insert::Rejected;
        }
        let b = self.bucket_of(&id);
        // Known id: refresh (and follow an address change only if the old one stopped answering).
        if let Some(pos) = self.buckets[b].nodes.iter().position(|e| e.id == id) {
            let mut e = self.buckets[b].nodes.remove(pos);
            if e.addr != addr && e.reachable() {
                self.buckets[b].nodes.insert(pos, e);
                return Insert::Rejected;
            }
            e.addr = addr;
            e.last_seen = now;
            e.failures = 0;
            self.buckets[b].nodes.push(e);
            return Insert::Refreshed;
        }
        // Another id at this address replaces the old one (a restarted node with a new id).
        let stale: Vec<NodeId> =
            self.buckets.iter().flat_map(|b| b.nodes.iter()).filter(|e| e.addr == addr).map(|e| e.id).collect();
        for old in stale {
            self.remove(&old);
        }
        if self.ip_count(addr.ip()) >= self.max_per_ip {
            return Insert::Rejected;
        }
        let entry = Entry { id, addr, last_seen: now, failures: 0 };
        let k = self.k;
        let bucket = &mut self.buckets[b];
        if bucket.nodes.len() < k {
            bucket.nodes.push(entry);
            return Insert::Added;
        }
        // Full: an unreachable node makes room; otherwise wait as a replacement.
        if let Some(pos) = bucket.nodes.iter().position(|e| !e.reachable()) {
            bucket.nodes.remove(pos);
            bucket.nodes.push(entry);
            return Insert::Added;
        }
        bucket.replacements.retain(|e| e.id != id);
        bucket.replacements.push(entry);
        if bucket.replacements.len() > k {
            bucket.replacements.remove(0);
        }
        Insert::Replacement
    }

    /// Whether a node with this id would be placed in the table (room in its bucket, or
    /// already there). Used to decide whether an unknown sender is worth verifying.
    pub fn wants(&self, id: &NodeId) -> bool {
        if key_of_node(id) == self.own {
            return false;
        }
        let b = &self.buckets[self.bucket_of(id)];
        b.nodes.len() < self.k || b.nodes.iter().any(|e| e.id == *id || !e.reachable())
    }

    /// Notes that `id` answered (resets its misses).
    pub fn seen(&mut self, id: &NodeId, now: Instant) {
        let b = self.bucket_of(id);
        if let Some(e) = self.buckets[b].nodes.iter_mut().find(|e| e.id == *id) {
            e.failures = 0;
            e.last_seen = now;
        }
    }

    /// Notes that a request to the node at `addr` went unanswered.
    pub fn failed(&mut self, addr: SocketAddr) {
        for bucket in &mut self.buckets {
            let Some(pos) = bucket.nodes.iter().position(|e| e.addr == addr) else { continue };
            bucket.nodes[pos].failures += 1;
            let f = bucket.nodes[pos].failures;
            if f >= DROP_AFTER || (f >= UNREACHABLE_AFTER && !bucket.replacements.is_empty()) {
                bucket.nodes.remove(pos);
                if let Some(r) = bucket.replacements.pop() {
                    bucket.nodes.push(r);
                }
            }
            return;
        }
    }

    pub fn remove(&mut self, id: &NodeId) {
        let b = self.bucket_of(id);
        self.buckets[b].nodes.retain(|e| e.id != *id);
        self.buckets[b].replacements.retain(|e| e.id != *id);
    }

    pub fn get(&self, id: &NodeId) -> Option<&Entry> {
        self.buckets[self.bucket_of(id)].nodes.iter().find(|e| e.id == *id)
    }

    pub fn get_by_addr(&self, addr: &SocketAddr) -> Option<&Entry> {
        self.buckets.iter().flat_map(|b| b.nodes.iter()).find(|e| e.addr == *addr)
    }

    /// The `n` reachable nodes closest to `target`, nearest first.
    pub fn closest(&self, target: &Key, n: usize) -> Vec<Entry> {
        let mut all: Vec<Entry> = self.entries().filter(|e| e.reachable()).copied().collect();
        all.sort_by_key(|e| distance(&key_of_node(&e.id), target));
        all.truncate(n);
        all
    }

    /// How many hosts (an IPv4 address, or an IPv6 /64: [`host_of`]) have a reachable node
    /// closer to `target` than `than` (a distance), counting no further than `limit`. With
    /// `than` our own distance, this tells whether we are among the `limit` nodes closest to
    /// `target` that we know of. Hosts, not nodes: ids are free to choose, so one host could
    /// otherwise place `limit` identities beside a hash (`max_per_ip` allows 16) and make every
    /// honest node believe itself too far to store that swarm.
    pub fn closer_count(&self, target: &Key, than: &Key, limit: usize) -> usize {
        let mut hosts: Vec<IpAddr> = Vec::with_capacity(limit);
        for e in self.entries().filter(|e| e.reachable()) {
            if hosts.len() >= limit {
                break;
            }
            let host = host_of(e.addr.ip());
            if distance(&key_of_node(&e.id), target) < *than && !hosts.contains(&host) {
                hosts.push(host);
            }
        }
        hosts.len()
    }

    /// Every node in the table (reachable or not).
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.buckets.iter().flat_map(|b| b.nodes.iter())
    }

    pub fn len(&self) -> usize {
        self.buckets.iter().map(|b| b.nodes.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Nodes not heard from since `before`, to be pinged.
    pub fn stale(&self, before: Instant) -> Vec<Entry> {
        self.entries().filter(|e| e.last_seen < before).copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn id_with_prefix(first: u8, n: u8) -> NodeId {
        let mut id = [0u8; 32];
        id[0] = first;
        id[31] = n;
        NodeId(id)
    }

    fn addr(i: u8, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::from([10, 0, 0, i]), port)
    }

    #[test]
    fn buckets_fill_to_k_then_keep_replacements() {
        let now = Instant::now();
        let mut t = RoutingTable::new(&NodeId([0; 32]), 2, 16);
        // All share bucket 0 (first bit set).
        assert_eq!(t.insert_verified(id_with_prefix(0x80, 1), addr(1, 1), now), Insert::Added);
        assert_eq!(t.insert_verified(id_with_prefix(0x80, 2), addr(2, 1), now), Insert::Added);
        assert_eq!(t.insert_verified(id_with_prefix(0x80, 3), addr(3, 1), now), Insert::Replacement);
        assert_eq!(t.len(), 2);
        // One loss does not evict; several in a row with a replacement waiting do.
        t.failed(addr(1, 1));
        assert!(t.get(&id_with_prefix(0x80, 1)).is_some());
        for _ in 0..UNREACHABLE_AFTER {
            t.failed(addr(1, 1));
        }
        assert!(t.get(&id_with_prefix(0x80, 1)).is_none());
        assert!(t.get(&id_with_prefix(0x80, 3)).is_some(), "replacement promoted");
    }

    #[test]
    fn unreachable_nodes_are_not_routed_to_and_dropped_later() {
        let now = Instant::now();
        let mut t = RoutingTable::new(&NodeId([0; 32]), 8, 16);
        let id = id_with_prefix(0x40, 1);
        t.insert_verified(id, addr(1, 1), now);
        for _ in 0..UNREACHABLE_AFTER {
            t.failed(addr(1, 1));
        }
        assert!(t.get(&id).is_some());
        assert!(t.closest(&[0; 32], 8).is_empty());
        t.seen(&id, now + Duration::from_secs(1));
        assert_eq!(t.closest(&[0; 32], 8).len(), 1, "an answer makes it reachable again");
        for _ in 0..DROP_AFTER {
            t.failed(addr(1, 1));
        }
        assert!(t.get(&id).is_none());
    }

    #[test]
    fn one_ip_cannot_fill_the_table() {
        let now = Instant::now();
        let mut t = RoutingTable::new(&NodeId([0; 32]), 8, 3);
        for i in 0..50u8 {
            t.insert_verified(id_with_prefix(i.wrapping_mul(37) | 1, i), addr(9, 1000 + i as u16), now);
        }
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn closer_count_counts_reachable_nodes_closer_than_a_distance() {
        let now = Instant::now();
        let mut t = RoutingTable::new(&NodeId([0; 32]), 8, 16);
        for (i, first) in [0x80u8, 0x40, 0x20, 0x10].iter().enumerate() {
            t.insert_verified(id_with_prefix(*first, 1), addr(i as u8 + 1, 1), now);
        }
        let target = [0u8; 32];
        let mut than = [0u8; 32];
        than[0] = 0x30;
        assert_eq!(t.closer_count(&target, &than, 8), 2, "0x10… and 0x20… are closer than 0x30…");
        assert_eq!(t.closer_count(&target, &than, 1), 1, "stops at the limit");
        for _ in 0..UNREACHABLE_AFTER {
            t.failed(addr(4, 1));
        }
        assert_eq!(t.closer_count(&target, &than, 8), 1, "an unreachable node does not count");
    }

    #[test]
    fn closest_orders_by_xor_distance() {
        let now = Instant::now();
        let mut t = RoutingTable::new(&NodeId([0; 32]), 8, 16);
        for (i, first) in [0x80u8, 0x40, 0x20, 0x10].iter().enumerate() {
            t.insert_verified(id_with_prefix(*first, 1), addr(i as u8 + 1, 1), now);
        }
        let mut target = [0u8; 32];
        target[0] = 0x21;
        let c = t.closest(&target, 2);
        assert_eq!(c[0].id, id_with_prefix(0x20, 1));
        assert_eq!(c.len(), 2);
    }
}
