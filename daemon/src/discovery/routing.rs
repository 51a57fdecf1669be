//! The routing table: Kademlia k-buckets by XOR distance from our own id.
//!
//! Invariants:
//! - Only *verified* nodes enter a bucket: nodes that answered a request we sent, from the
//!   address we sent it to (never nodes merely named by others or heard from unsolicited).
//! - A bucket holds at most `k` nodes; candidates for a full bucket wait in a replacement list
//!   of at most `k`. At most `max_per_ip` nodes share an IP address across the table, so one
//!   host cannot fill it with made-up identities, and at most [`MAX_PER_HOST_NEAR`] nodes of
//!   one host ([`host_key`]) share a bucket (its replacement list included).
//! - Wherever nearness to a target decides who is asked or told — [`RoutingTable::closest`],
//!   and the lookups and announces built on it — one host contributes at most
//!   [`MAX_PER_HOST_NEAR`] nodes ([`few_per_host`]): node ids are free to choose, so one host
//!   could otherwise place every identity beside a hash and be the only one asked about it or
//!   told of its swarm (an eclipse).
//! - A node that misses [`UNREACHABLE_AFTER`] requests in a row is unreachable: it is no
//!   longer offered for routing but keeps its slot, and is dropped once a replacement has
//!   answered or after [`DROP_AFTER`] misses — not at the first loss.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::key::{Key, common_prefix_len, distance, key_of_node};
use super::ratelimit::host_of;
use super::wire::NodeRecord;
use crate::node_id::NodeId;

/// Nodes of one host (see [`host_key`]) used where nearness to a target decides: per bucket,
/// per lookup window, per announce. Two, not one, so that two daemons behind one NAT address
/// both serve.
pub const MAX_PER_HOST_NEAR: usize = 2;

/// The host an address counts as for diversity: an IPv4 address or an IPv6 /64 ([`host_of`]),
/// except that each loopback address and port is its own host (nodes on this machine are
/// distinct processes an operator started — tests, the demo — not a remote host choosing ids).
pub fn host_key(addr: SocketAddr) -> (IpAddr, u16) {
    if addr.ip().is_loopback() { (addr.ip(), addr.port()) } else { (host_of(addr.ip()), 0) }
}

/// The first `n` of `items` (in their order, nearest first) taking at most
/// [`MAX_PER_HOST_NEAR`] of each host ([`host_key`] of `addr`).
pub fn few_per_host<T>(items: impl IntoIterator<Item = T>, addr: impl Fn(&T) -> SocketAddr, n: usize) -> Vec<T> {
    let mut hosts: Vec<((IpAddr, u16), usize)> = Vec::new();
    let mut kept = Vec::with_capacity(n);
    for item in items {
        if kept.len() >= n {
            break;
        }
        let key = host_key(addr(&item));
        match hosts.iter_mut().find(|(h, _)| *h == key) {
            Some((_, count)) if *count >= MAX_PER_HOST_NEAR => continue,
            Some((_, count)) => *count += 1,
            None => hosts.push((key, 1)),
        }
        kept.push(item);
    }
    kept
}

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
        let host = host_key(addr);
        let same_host = |e: &&Entry| host_key(e.addr) == host;
        if bucket.nodes.iter().filter(same_host).count() >= MAX_PER_HOST_NEAR {
            return Insert::Rejected;
        }
        if bucket.nodes.len() >= k
            && bucket.replacements.iter().filter(|e| e.id != id).filter(same_host).count() >= MAX_PER_HOST_NEAR
        {
            return Insert::Rejected;
        }
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

    /// The `n` reachable nodes closest to `target`, nearest first, at most
    /// [`MAX_PER_HOST_NEAR`] of each host.
    pub fn closest(&self, target: &Key, n: usize) -> Vec<Entry> {
        let mut all: Vec<Entry> = self.entries().filter(|e| e.reachable()).copied().collect();
        all.sort_by_key(|e| distance(&key_of_node(&e.id), target));
        few_per_host(all, |e| e.addr, n)
    }

    /// How many hosts ([`host_key`]: an IPv4 address, an IPv6 /64) have a reachable node
    /// closer to `target` than `than` (a distance), counting no further than `limit`. With
    /// `than` our own distance, this tells whether we are among the `limit` nodes closest to
    /// `target` that we know of. Hosts, not nodes: ids are free to choose, so one host could
    /// otherwise place `limit` identities beside a hash (`max_per_ip` allows 16) and make every
    /// honest node believe itself too far to store that swarm.
    pub fn closer_count(&self, target: &Key, than: &Key, limit: usize) -> usize {
        let mut hosts: Vec<(IpAddr, u16)> = Vec::with_capacity(limit);
        for e in self.entries().filter(|e| e.reachable()) {
            if hosts.len() >= limit {
                break;
            }
            let host = host_key(e.addr);
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

    /// One host gets two places in a bucket (nodes and replacements alike) and in any answer
    /// of `closest`; each loopback port is a host of its own.
    #[test]
    fn a_host_gets_two_places_near_a_target() {
        let now = Instant::now();
        let mut t = RoutingTable::new(&NodeId([0; 32]), 8, 16);
        let results: Vec<Insert> =
            (1..=4u8).map(|n| t.insert_verified(id_with_prefix(0x80, n), addr(1, 7000 + n as u16), now)).collect();
        assert_eq!(results, [Insert::Added, Insert::Added, Insert::Rejected, Insert::Rejected]);
        // Another host's nodes fill the bucket; a full bucket's replacements take two per host.
        for n in 1..=6u8 {
            assert_eq!(t.insert_verified(id_with_prefix(0x81, n), addr(10 + n, 1), now), Insert::Added);
        }
        let replacements: Vec<Insert> =
            (1..=3u8).map(|n| t.insert_verified(id_with_prefix(0x90, n), addr(2, 7000 + n as u16), now)).collect();
        assert_eq!(replacements, [Insert::Replacement, Insert::Replacement, Insert::Rejected]);
        // Loopback: every port is a host.
        let mut t = RoutingTable::new(&NodeId([0; 32]), 8, 16);
        let local = |n: u8| SocketAddr::from(([127, 0, 0, 1], 7000 + n as u16));
        for n in 1..=8u8 {
            assert_eq!(t.insert_verified(id_with_prefix(0x80, n), local(n), now), Insert::Added);
        }
        assert_eq!(t.closest(&[0x80; 32], 8).len(), 8);
        // `closest` over several buckets: one host's many ids beside the target count twice.
        let mut t = RoutingTable::new(&NodeId([0; 32]), 8, 16);
        for (n, first) in [0x80u8, 0x40, 0x20, 0x10, 0x08, 0x04].iter().enumerate() {
            t.insert_verified(id_with_prefix(*first, 1), addr(1, 7000 + n as u16), now);
            t.insert_verified(id_with_prefix(*first, 2), addr(20 + n as u8, 1), now);
        }
        let c = t.closest(&[0; 32], 8);
        assert_eq!(c.iter().filter(|e| e.addr.ip() == addr(1, 0).ip()).count(), 2, "{c:?}");
        assert_eq!(c.len(), 8);
    }
}
