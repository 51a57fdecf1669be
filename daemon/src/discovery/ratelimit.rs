//! Per-source packet rate limiting with bounded memory.
//!
//! Two levels: each source address (IP and port) has a budget, and each IP a budget ten times
//! larger, so several daemons on one host do not starve each other while one host rotating
//! ports still hits a cap. Sources hash (with a random key, so an attacker cannot aim
//! collisions) into fixed arrays of token buckets: memory does not grow with the number of
//! sources, however many addresses an attacker spoofs. Two sources sharing a slot share its
//! budget; with 4096 slots that is rare.

use std::net::SocketAddr;
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
}
