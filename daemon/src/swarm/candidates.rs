//! Swarm members we may connect to: the addresses discovery told us about. Pure bookkeeping.
//!
//! Discovery passes on addresses that other nodes announced; nothing proves an address is a
//! p2pd node until a handshake succeeds there. So the list is bounded and forgets what does
//! not work:
//! - at most [`MAX_CANDIDATES`] per torrent; a newcomer beyond that replaces the entry with
//!   the most failed connects, or is dropped when none has failed;
//! - a failed connect is retried after 10 s, 20 s, 40 s, then every 60 s, and after
//!   [`MAX_CONNECT_FAILURES`] in a row the address is dropped, until discovery names it again;
//! - a candidate whose address is already connected is not dialled (the address is the
//!   identity: a node id is only what a peer claims);
//! - addresses a connected peer passed on (peer exchange) are weaker still: at most
//!   [`MAX_EXCHANGED`] of them are kept, they never displace another entry, and the first
//!   failed connect drops one; exchange cannot name it again for [`EXCHANGED_FAILURE_MEMORY`]
//!   (up to [`MAX_FAILED_REMEMBERED`] such addresses; discovery still can).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::discovery::wire::{PeerRecord, PeerStatus};

/// Most candidates kept per torrent (discovery keeps at most 512 members per swarm).
pub const MAX_CANDIDATES: usize = 1024;
/// Failed connects in a row after which a candidate is dropped.
pub const MAX_CONNECT_FAILURES: u32 = 5;
/// Most candidates kept that only peer exchange named.
pub const MAX_EXCHANGED: usize = 256;
/// How long an exchanged address that failed is not taken from exchange again.
pub const EXCHANGED_FAILURE_MEMORY: Duration = Duration::from_secs(600);
/// Most such addresses remembered (the oldest is forgotten first).
pub const MAX_FAILED_REMEMBERED: usize = 1024;
/// Before reconnecting to a peer whose connection closed.
const AFTER_CLOSE: Duration = Duration::from_secs(5);

/// The wait before dialling again after `failures` failed connects in a row.
fn backoff(failures: u32) -> Duration {
    Duration::from_secs((5u64 << failures.min(4)).min(60))
}

#[derive(Debug, Clone)]
struct Candidate {
    status: PeerStatus,
    next_attempt: Instant,
    /// Failed connects in a row.
    failures: u32,
    connecting: bool,
    /// Named only by a connected peer (peer exchange), not by discovery.
    exchanged: bool,
}

#[derive(Debug, Default)]
pub struct Candidates {
    by_addr: HashMap<SocketAddr, Candidate>,
    /// How many entries are `exchanged`.
    exchanged: usize,
    /// Exchanged addresses whose connect failed, and when.
    failed_exchanged: HashMap<SocketAddr, Instant>,
}

impl Candidates {
    pub fn len(&self) -> usize {
        self.by_addr.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_addr.is_empty()
    }

    fn remove(&mut self, addr: &SocketAddr) {
        if self.by_addr.remove(addr).is_some_and(|c| c.exchanged) {
            self.exchanged -= 1;
        }
    }

    /// A member discovery told us about (again: its failures are forgiven).
    pub fn learn(&mut self, peer: &PeerRecord, now: Instant) {
        if peer.status == PeerStatus::Leaving {
            self.remove(&peer.addr);
            return;
        }
        if let Some(c) = self.by_addr.get_mut(&peer.addr) {
            let changed = std::mem::replace(&mut c.status, peer.status) != peer.status;
            if std::mem::replace(&mut c.exchanged, false) {
                self.exchanged -= 1;
            }
            // Named again with news (it announced a new status: restarted, or done): its
            // failures are forgiven. The same news again does not cut a back-off short — a
            // node without room would otherwise be dialled at every announce.
            if changed && c.failures > 0 && !c.connecting {
                c.failures = 0;
                c.next_attempt = now;
            }
            return;
        }
        if self.by_addr.len() >= MAX_CANDIDATES {
            let worst =
                self.by_addr.iter().filter(|(_, c)| c.failures > 0 && !c.connecting).max_by_key(|(_, c)| c.failures);
            match worst.map(|(a, _)| *a) {
                Some(addr) => self.remove(&addr),
                None => return,
            };
        }
        // An address that just failed when exchange named it (discovery's answer often
        // arrives a moment after a peer's): its back-off holds, not a second dial at once.
        let (failures, next_attempt) = match self.failed_exchanged.get(&peer.addr) {
            Some(&at) if at + backoff(1) > now => (1, at + backoff(1)),
            _ => (0, now),
        };
        let c = Candidate { status: peer.status, next_attempt, failures, connecting: false, exchanged: false };
        self.by_addr.insert(peer.addr, c);
    }

    /// An address a connected peer passed on; returns whether it was taken (new, and room for
    /// it). Its status is unknown: taken as leeching until a connection shows otherwise.
    pub fn learn_exchanged(&mut self, addr: SocketAddr, now: Instant) -> bool {
        if self.by_addr.contains_key(&addr) || self.exchanged >= MAX_EXCHANGED || self.by_addr.len() >= MAX_CANDIDATES {
            return false;
        }
        if self.failed_exchanged.get(&addr).is_some_and(|at| now.duration_since(*at) < EXCHANGED_FAILURE_MEMORY) {
            return false;
        }
        let c = Candidate {
            status: PeerStatus::Leeching,
            next_attempt: now,
            failures: 0,
            connecting: false,
            exchanged: true,
        };
        self.by_addr.insert(addr, c);
        self.exchanged += 1;
        true
    }

    /// A connection showed the peer has every piece: a seed does not dial it again.
    pub fn complete(&mut self, addr: &SocketAddr) {
        if let Some(c) = self.by_addr.get_mut(addr) {
            c.status = PeerStatus::Seeding;
        }
    }

    pub fn forget(&mut self, addr: &SocketAddr) {
        self.remove(addr);
    }

    /// Candidates worth dialling now: not being dialled, not waiting out a back-off, not
    /// connected already, and (when we seed) not seeds.
    pub fn due(&self, now: Instant, seeding: bool, connected: &HashSet<SocketAddr>) -> Vec<SocketAddr> {
        self.by_addr
            .iter()
            .filter(|(addr, c)| {
                let busy = c.connecting || c.next_attempt > now || connected.contains(addr);
                // A seed has nothing to gain from another seed.
                let pointless = seeding && matches!(c.status, PeerStatus::Seeding | PeerStatus::Draining);
                !(busy || pointless)
            })
            .map(|(a, _)| *a)
            .collect()
    }

    pub fn dialling(&mut self, addr: &SocketAddr) {
        if let Some(c) = self.by_addr.get_mut(addr) {
            c.connecting = true;
        }
    }

    /// A handshake succeeded.
    pub fn connected(&mut self, addr: &SocketAddr) {
        if let Some(c) = self.by_addr.get_mut(addr) {
            c.connecting = false;
            c.failures = 0;
        }
    }

    /// A connect failed: back off, or drop the address after [`MAX_CONNECT_FAILURES`] (an
    /// exchanged one at once). Returns whether it was dropped.
    pub fn failed(&mut self, addr: &SocketAddr, now: Instant) -> bool {
        let Some(c) = self.by_addr.get_mut(addr) else { return false };
        c.connecting = false;
        c.failures += 1;
        if c.exchanged {
            self.remove(addr);
            self.remember_failure(*addr, now);
            return true;
        }
        if c.failures >= MAX_CONNECT_FAILURES {
            self.remove(addr);
            return true;
        }
        c.next_attempt = now + backoff(c.failures);
        false
    }

    fn remember_failure(&mut self, addr: SocketAddr, now: Instant) {
        self.failed_exchanged.retain(|_, at| now.duration_since(*at) < EXCHANGED_FAILURE_MEMORY);
        if self.failed_exchanged.len() >= MAX_FAILED_REMEMBERED
            && let Some(oldest) = self.failed_exchanged.iter().min_by_key(|(_, at)| **at).map(|(a, _)| *a)
        {
            self.failed_exchanged.remove(&oldest);
        }
        self.failed_exchanged.insert(addr, now);
    }

    /// A connection to it closed: wait a little before dialling again.
    pub fn closed(&mut self, addr: &SocketAddr, now: Instant) {
        if let Some(c) = self.by_addr.get_mut(addr) {
            c.next_attempt = now + AFTER_CLOSE;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node_id::NodeId;

    fn peer(i: u32, status: PeerStatus) -> PeerRecord {
        let ip = std::net::Ipv4Addr::from_bits(0x0a00_0000 + i);
        PeerRecord { id: NodeId([0; 32]), addr: SocketAddr::new(ip.into(), 6690), status }
    }

    /// Exchange named a full seed, the connect failed, and discovery named it a moment later:
    /// not dialled again until the back-off of that failure is over.
    #[test]
    fn discovery_naming_an_address_that_just_failed_keeps_its_back_off() {
        let mut c = Candidates::default();
        let now = Instant::now();
        let p = peer(1, PeerStatus::Seeding);
        assert!(c.learn_exchanged(p.addr, now));
        c.dialling(&p.addr);
        assert!(c.failed(&p.addr, now), "an exchanged address is dropped at its first failure");
        c.learn(&p, now + Duration::from_millis(1));
        let none = HashSet::new();
        assert!(c.due(now + Duration::from_secs(9), false, &none).is_empty(), "dialled again at once");
        assert_eq!(c.due(now + Duration::from_secs(10), false, &none), vec![p.addr]);
        // Long after, discovery's word is fresh.
        let mut c2 = Candidates::default();
        assert!(c2.learn_exchanged(p.addr, now));
        c2.failed(&p.addr, now);
        c2.learn(&p, now + Duration::from_secs(30));
        assert_eq!(c2.due(now + Duration::from_secs(30), false, &none), vec![p.addr]);
    }

    #[test]
    fn failing_addresses_back_off_then_are_dropped_until_rediscovered() {
        let mut c = Candidates::default();
        let now = Instant::now();
        let p = peer(1, PeerStatus::Seeding);
        c.learn(&p, now);
        assert_eq!(c.due(now, false, &HashSet::new()), vec![p.addr]);
        c.dialling(&p.addr);
        assert!(c.due(now, false, &HashSet::new()).is_empty(), "not dialled twice at once");
        for i in 1..MAX_CONNECT_FAILURES {
            assert!(!c.failed(&p.addr, now));
            assert!(c.due(now, false, &HashSet::new()).is_empty(), "backing off after failure {i}");
            assert!(!c.due(now + Duration::from_secs(61), false, &HashSet::new()).is_empty());
            c.dialling(&p.addr);
        }
        assert!(c.failed(&p.addr, now), "dropped after {MAX_CONNECT_FAILURES} failures");
        assert!(c.is_empty());
        c.learn(&p, now);
        assert_eq!(c.due(now, false, &HashSet::new()), vec![p.addr], "rediscovered");
    }

    #[test]
    fn failed_exchanged_addresses_are_remembered_up_to_the_bound() {
        let mut c = Candidates::default();
        let now = Instant::now();
        let addr = |i: u32| peer(i, PeerStatus::Leeching).addr;
        for i in 0..(MAX_FAILED_REMEMBERED as u32 + 10) {
            assert!(c.learn_exchanged(addr(i), now));
            c.dialling(&addr(i));
            assert!(c.failed(&addr(i), now + Duration::from_millis(i as u64)));
            assert!(c.failed_exchanged.len() <= MAX_FAILED_REMEMBERED);
        }
        assert!(c.learn_exchanged(addr(0), now), "the oldest was forgotten to make room");
        assert!(!c.learn_exchanged(addr(MAX_FAILED_REMEMBERED as u32 + 9), now), "the newest is remembered");
    }

    #[test]
    fn the_same_news_again_keeps_a_back_off_and_new_news_forgives_it() {
        let mut c = Candidates::default();
        let now = Instant::now();
        let p = peer(1, PeerStatus::Leeching);
        c.learn(&p, now);
        c.dialling(&p.addr);
        c.failed(&p.addr, now);
        c.learn(&p, now);
        assert!(c.due(now, false, &HashSet::new()).is_empty(), "announced again, still backing off");
        c.learn(&PeerRecord { status: PeerStatus::Seeding, ..p }, now);
        assert_eq!(c.due(now, false, &HashSet::new()), vec![p.addr], "a new status: dialled again at once");
    }

    #[test]
    fn connected_addresses_and_seeds_when_seeding_are_not_dialled() {
        let mut c = Candidates::default();
        let now = Instant::now();
        let (a, b) = (peer(1, PeerStatus::Leeching), peer(2, PeerStatus::Seeding));
        c.learn(&a, now);
        c.learn(&b, now);
        assert_eq!(c.due(now, true, &HashSet::new()), vec![a.addr]);
        assert!(c.due(now, true, &HashSet::from([a.addr])).is_empty());
        c.learn(&PeerRecord { status: PeerStatus::Leaving, ..a }, now);
        assert_eq!(c.len(), 1, "a leaving member is forgotten");
    }

    #[test]
    fn exchanged_addresses_are_bounded_dropped_at_the_first_failure_and_upgraded_by_discovery() {
        let mut c = Candidates::default();
        let now = Instant::now();
        let addr = |i: u32| peer(i, PeerStatus::Leeching).addr;
        for i in 0..MAX_EXCHANGED as u32 {
            assert!(c.learn_exchanged(addr(i), now));
        }
        assert!(!c.learn_exchanged(addr(9999), now), "no more than {MAX_EXCHANGED}");
        assert!(!c.learn_exchanged(addr(0), now), "already known");
        // Discovery names one: it is a discovery candidate now, and makes room.
        c.learn(&peer(0, PeerStatus::Leeching), now);
        assert!(c.learn_exchanged(addr(9999), now));
        // One failed connect drops an exchanged address, not a discovered one.
        for i in [0, 1] {
            c.dialling(&addr(i));
        }
        assert!(!c.failed(&addr(0), now), "discovered: backs off");
        assert!(c.failed(&addr(1), now), "exchanged: dropped");
        assert!(!c.learn_exchanged(addr(1), now), "not taken from exchange again soon");
        assert!(c.learn_exchanged(addr(1), now + EXCHANGED_FAILURE_MEMORY), "but later");
        c.forget(&addr(1));
        assert!(c.learn_exchanged(addr(10_000), now), "its place is free again");
        assert_eq!(c.exchanged, MAX_EXCHANGED);
        assert_eq!(c.by_addr.values().filter(|x| x.exchanged).count(), c.exchanged);
        // A peer found complete is not dialled by a seed.
        c.complete(&addr(2));
        assert!(!c.due(now, true, &HashSet::new()).contains(&addr(2)));
        assert!(c.due(now, false, &HashSet::new()).contains(&addr(2)));
    }

    #[test]
    fn the_list_is_bounded_and_prefers_addresses_that_work() {
        let mut c = Candidates::default();
        let now = Instant::now();
        for i in 0..MAX_CANDIDATES as u32 {
            c.learn(&peer(i, PeerStatus::Leeching), now);
        }
        // Full of untried addresses: a newcomer waits for room.
        c.learn(&peer(5000, PeerStatus::Leeching), now);
        assert_eq!(c.len(), MAX_CANDIDATES);
        assert!(!c.by_addr.contains_key(&peer(5000, PeerStatus::Leeching).addr));
        // One failed: the newcomer takes its place.
        let bad = peer(7, PeerStatus::Leeching).addr;
        c.dialling(&bad);
        c.failed(&bad, now);
        c.learn(&peer(5000, PeerStatus::Leeching), now);
        assert_eq!(c.len(), MAX_CANDIDATES);
        assert!(c.by_addr.contains_key(&peer(5000, PeerStatus::Leeching).addr));
        assert!(!c.by_addr.contains_key(&bad));
    }
}
