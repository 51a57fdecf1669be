//! Per-source rate limiting with bounded memory.
//!
//! [`SourceLimiter`] limits packets, on two levels: each source address (IP and port) has a
//! budget, and each IP a budget ten times larger, so several daemons on one host do not starve
//! each other while one host rotating ports still hits a cap. [`HostLimiter`] limits one kind of
//! action (creating a stored swarm) per source host: an IPv4 address, or an IPv6 /64, the block
//! one subscriber usually holds. [`ByteCredit`] counts the bytes each source address sent, so
//! that what this node sends on a source's word never exceeds them.
//!
//! Sources hash (with a random key, so an attacker cannot aim collisions) into fixed arrays of
//! token buckets: memory does not grow with the number of sources, however many addresses an
//! attacker spoofs. Two sources sharing a slot of a limiter share its budget; with 4096 slots
//! that is rare. [`ByteCredit`] tags its entries, so that credit never passes between sources.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Instant;

const SLOTS: usize = 4096;

/// One level of buckets.
#[derive(Debug, Clone)]
struct Buckets {
    rate: f64,
    burst: f64,
    slots: Vec<(f64, Option<Instant>)>,
}

impl Buckets {
    fn new(rate: f64, burst: f64) -> Buckets {
        Buckets { rate, burst, slots: vec![(burst, None); SLOTS] }
    }

    fn refill(&mut self, i: usize, now: Instant) -> f64 {
        let (tokens, last) = &mut self.slots[i];
        if let Some(last) = last {
            *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(self.burst);
        }
        *last = Some(now);
        *tokens
    }
}

#[derive(Debug, Clone)]
pub struct SourceLimiter {
    /// Keyed SipHash with random keys: slot choice cannot be predicted from outside.
    hasher: std::collections::hash_map::RandomState,
    by_addr: Buckets,
    by_ip: Buckets,
}

impl SourceLimiter {
    /// `rate` packets per second per source address, with bursts of `burst`; ten times that
    /// per IP.
    pub fn new(rate: f64, burst: f64) -> SourceLimiter {
        SourceLimiter {
            hasher: std::collections::hash_map::RandomState::new(),
            by_addr: Buckets::new(rate, burst),
            by_ip: Buckets::new(rate * 10.0, burst * 10.0),
        }
    }

    fn slot<T: std::hash::Hash>(&self, key: &T) -> usize {
        use std::hash::BuildHasher;
        (self.hasher.hash_one(key) % SLOTS as u64) as usize
    }

    /// Whether a packet from `addr` at `now` is within both budgets (and spends them).
    pub fn allow(&mut self, addr: &SocketAddr, now: Instant) -> bool {
        let (a, i) = (self.slot(addr), self.slot(&addr.ip()));
        if self.by_addr.refill(a, now) < 1.0 || self.by_ip.refill(i, now) < 1.0 {
            return false;
        }
        self.by_addr.slots[a].0 -= 1.0;
        self.by_ip.slots[i].0 -= 1.0;
        true
    }
}

/// Bytes received from each source address, less what was spent on its word, up to a cap, in
/// fixed memory: [`CREDIT_SETS`] sets of [`CREDIT_WAYS`] entries, each tagged with the full
/// 64-bit keyed hash of its address.
///
/// Credit never passes from one address to another: an address whose tag is not in its set has
/// none, and earning places it in the set's entry with the least credit, which starts over from
/// what it brought. So displacing a source's credit costs whoever does it the ways' worth of
/// datagrams with more credit than that source, from addresses hashing into its set — which the
/// random key keeps them from aiming at. (Two addresses sharing a tag, one chance in 2^64 per
/// pair, would share credit.)
#[derive(Debug, Clone)]
pub struct ByteCredit {
    /// Keyed SipHash with random keys, as in [`SourceLimiter`].
    hasher: std::collections::hash_map::RandomState,
    /// `sets × CREDIT_WAYS` entries, set by set.
    entries: Vec<CreditEntry>,
    sets: usize,
    /// Most credit an entry holds, so that a long conversation does not bank a large burst.
    cap: usize,
}

/// Sets of [`ByteCredit`] (4,096 entries in all).
pub const CREDIT_SETS: usize = 1024;
/// Entries per set.
pub const CREDIT_WAYS: usize = 4;

/// One address's credit.
#[derive(Debug, Clone, Copy, Default)]
struct CreditEntry {
    /// The keyed hash of the address; meaningful only while `credit > 0`.
    tag: u64,
    credit: usize,
}

impl ByteCredit {
    pub fn new(cap: usize) -> ByteCredit {
        ByteCredit::with_sets(cap, CREDIT_SETS)
    }

    /// With `sets` sets: one makes every address share a set (tests).
    fn with_sets(cap: usize, sets: usize) -> ByteCredit {
        ByteCredit {
            hasher: std::collections::hash_map::RandomState::new(),
            entries: vec![CreditEntry::default(); sets * CREDIT_WAYS],
            sets,
            cap,
        }
    }

    /// Where `addr`'s set starts in `entries`, and its tag.
    fn locate(&self, addr: &SocketAddr) -> (usize, u64) {
        use std::hash::BuildHasher;
        let tag = self.hasher.hash_one(addr);
        ((tag % self.sets as u64) as usize * CREDIT_WAYS, tag)
    }

    /// `addr`'s entry, if it has credit.
    fn entry(&mut self, addr: &SocketAddr) -> Option<&mut CreditEntry> {
        let (first, tag) = self.locate(addr);
        self.entries[first..first + CREDIT_WAYS].iter_mut().find(|e| e.credit > 0 && e.tag == tag)
    }

    /// `bytes` arrived from `addr`.
    pub fn earn(&mut self, addr: &SocketAddr, bytes: usize) {
        let cap = self.cap;
        if let Some(e) = self.entry(addr) {
            e.credit = (e.credit + bytes).min(cap);
            return;
        }
        // A newcomer takes the entry with the least credit.
        let (first, tag) = self.locate(addr);
        let set = &mut self.entries[first..first + CREDIT_WAYS];
        if let Some(e) = set.iter_mut().min_by_key(|e| e.credit) {
            *e = CreditEntry { tag, credit: bytes.min(cap) };
        }
    }

    /// `addr`'s credit.
    pub fn balance(&mut self, addr: &SocketAddr) -> usize {
        self.entry(addr).map_or(0, |e| e.credit)
    }

    /// Spends `bytes` of `addr`'s credit, or all it has if that is less.
    pub fn spend_up_to(&mut self, addr: &SocketAddr, bytes: usize) {
        if let Some(e) = self.entry(addr) {
            e.credit -= e.credit.min(bytes);
        }
    }

    /// Spends `bytes` of `addr`'s credit if it has that much and `keep` more; false (nothing
    /// spent) if not.
    pub fn spend(&mut self, addr: &SocketAddr, bytes: usize, keep: usize) -> bool {
        match self.entry(addr) {
            Some(e) if e.credit >= bytes + keep => {
                e.credit -= bytes;
                true
            }
            _ => false,
        }
    }
}

/// The host an address belongs to, as [`HostLimiter`] counts it: an IPv4 address (IPv4-mapped
/// IPv6 addresses included), or the /64 of an IPv6 address.
pub fn host_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// A budget of some action per source host (see [`host_of`]), in fixed memory.
#[derive(Debug, Clone)]
pub struct HostLimiter {
    /// Keyed SipHash with random keys, as in [`SourceLimiter`].
    hasher: std::collections::hash_map::RandomState,
    buckets: Buckets,
}

impl HostLimiter {
    /// `rate` actions per second per host, with bursts of `burst`.
    pub fn new(rate: f64, burst: f64) -> HostLimiter {
        HostLimiter { hasher: std::collections::hash_map::RandomState::new(), buckets: Buckets::new(rate, burst) }
    }

    /// Whether one more action by the host of `ip` at `now` is within its budget (and spends
    /// it).
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        use std::hash::BuildHasher;
        let i = (self.hasher.hash_one(host_of(ip)) % SLOTS as u64) as usize;
        if self.buckets.refill(i, now) < 1.0 {
            return false;
        }
        self.buckets.slots[i].0 -= 1.0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_then_steady_rate() {
        let mut l = SourceLimiter::new(100.0, 10.0);
        let a: SocketAddr = "10.0.0.1:1000".parse().unwrap();
        let t = Instant::now();
        assert_eq!((0..20).filter(|_| l.allow(&a, t)).count(), 10);
        assert!(l.allow(&a, t + Duration::from_millis(20)));
        let other: SocketAddr = "10.9.9.9:1000".parse().unwrap();
        assert!(l.allow(&other, t), "another source has its own budget");
    }

    #[test]
    fn rotating_ports_hits_the_per_ip_cap() {
        let mut l = SourceLimiter::new(100.0, 10.0);
        let t = Instant::now();
        let allowed = (0..1000u16).filter(|p| l.allow(&SocketAddr::from(([10, 0, 0, 1], 2000 + p)), t)).count();
        assert_eq!(allowed, 100, "ten times one address's burst, no more");
    }

    #[test]
    fn a_host_budget_covers_every_port_and_an_ipv6_slash_64() {
        let mut l = HostLimiter::new(0.1, 4.0);
        let t = Instant::now();
        let v4 = |port: u16| SocketAddr::from(([10, 0, 0, 1], port)).ip();
        assert_eq!((0..10u16).filter(|p| l.allow(v4(*p), t)).count(), 4, "the burst, whatever the port");
        assert!(!l.allow(v4(1), t + Duration::from_secs(5)), "0.1/s: not yet");
        assert!(l.allow(v4(1), t + Duration::from_secs(11)), "one more after 10 s");
        let in_64 = |last: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0xabcd, 0, 0, last));
        assert_eq!((0..10u16).filter(|i| l.allow(in_64(*i), t)).count(), 4, "one /64 is one host");
        assert!(l.allow(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 3, 0, 0, 0, 1)), t), "another /64");
        let mapped = IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0x0a00, 0x0001));
        assert_eq!(host_of(mapped), v4(0), "an IPv4-mapped address is its IPv4 host");
    }

    #[test]
    fn credit_is_spent_only_as_far_as_it_was_earned_and_is_capped() {
        let mut c = ByteCredit::new(1000);
        let (a, b): (SocketAddr, SocketAddr) = ("10.0.0.1:1".parse().unwrap(), "10.0.0.2:1".parse().unwrap());
        c.earn(&a, 150);
        assert!(!c.spend(&a, 192, 0), "150 bytes do not pay for 192");
        c.earn(&a, 75);
        assert!(!c.spend(&a, 192, 192), "225 bytes do not pay for 192 and keep 192");
        assert!(c.spend(&a, 192, 0));
        assert!(!c.spend(&a, 192, 0), "33 left");
        assert!(!c.spend(&b, 1, 0), "another source has nothing");
        c.earn(&b, 5000);
        assert_eq!((0..10).filter(|_| c.spend(&b, 192, 0)).count(), 5, "capped at 1000 bytes");
        assert_eq!(c.balance(&b), 40);
    }

    /// Regression (issue 11 review): two addresses hashed into one slot shared its credit, so
    /// a list's author could spend bytes that honest sources had sent.
    #[test]
    fn credit_never_passes_between_addresses_that_share_a_set() {
        let mut c = ByteCredit::with_sets(4928, 1);
        let addr = |i: u8| SocketAddr::from(([10, 0, 0, i], 6690));
        c.earn(&addr(1), 1000);
        assert!(!c.spend(&addr(2), 192, 0), "another address in the set has nothing");
        c.earn(&addr(2), 100);
        assert!(!c.spend(&addr(2), 192, 0), "its own 100 bytes do not pay for 192");
        assert_eq!((0..10).filter(|_| c.spend(&addr(1), 192, 0)).count(), 5, "the first keeps its own 1000");
        // Newcomers take the entry with the least credit: however many small datagrams come
        // from other addresses, a source with more credit than theirs keeps its credit.
        c.earn(&addr(1), 3000);
        for i in 10..200u8 {
            c.earn(&addr(i), 192);
        }
        assert_eq!(c.balance(&addr(1)), 3040);
        assert_eq!(c.balance(&addr(199)), 192, "the latest newcomer has what it sent");
        // It goes only once every other entry of its set holds more.
        for i in 2..=4u8 {
            c.earn(&addr(i), 3100);
        }
        c.earn(&addr(5), 56);
        assert_eq!(c.balance(&addr(1)), 0, "displaced by three sources of more credit and a newcomer");
        assert_eq!(c.balance(&addr(5)), 56, "the newcomer starts from what it sent, nothing inherited");
    }
}
