//! Peer exchange: which members to tell a connected peer about, and when (the `peers`
//! message, docs/PROTOCOL.md). Pure bookkeeping; the engine sends and receives.
//!
//! Invariants, per connection:
//! - at most one message per [`EXCHANGE_INTERVAL`], of at most [`MAX_EXCHANGED_PEERS`]
//!   addresses, never the recipient's own;
//! - only addresses of peers connected at that moment (each has completed a handshake with
//!   us), never one already sent on this connection — up to [`MAX_REMEMBERED`] remembered,
//!   then the memory starts again (a repeat costs 18 bytes, not a connection).
//!
//! What is received is only a list of addresses to try: the candidate list bounds how many
//! such addresses are kept and drops one at its first failed connect
//! ([`super::candidates::Candidates::learn_exchanged`]).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Instant;

use rand::seq::SliceRandom;

pub use super::connection::EXCHANGE_INTERVAL;
pub use super::wire::MAX_EXCHANGED_PEERS;

/// Addresses remembered as sent, per connection.
pub const MAX_REMEMBERED: usize = 1024;

/// What one connection has been told.
#[derive(Debug)]
pub struct Exchange {
    told: HashSet<SocketAddr>,
    next: Instant,
}

impl Exchange {
    /// A new connection: the first message may go at once.
    pub fn new(now: Instant) -> Exchange {
        Exchange { told: HashSet::new(), next: now }
    }

    /// The addresses to send `recipient` now, if it is time and there is anything new among
    /// `connected`; they are remembered as sent.
    pub fn due(&mut self, now: Instant, recipient: SocketAddr, connected: &[SocketAddr]) -> Option<Vec<SocketAddr>> {
        if now < self.next {
            return None;
        }
        let mut fresh: Vec<SocketAddr> =
            connected.iter().copied().filter(|a| *a != recipient && !self.told.contains(a)).collect();
        if fresh.is_empty() {
            return None;
        }
        fresh.shuffle(&mut rand::rng());
        fresh.truncate(MAX_EXCHANGED_PEERS);
        if self.told.len() + fresh.len() > MAX_REMEMBERED {
            self.told.clear();
        }
        self.told.extend(&fresh);
        self.next = now + EXCHANGE_INTERVAL;
        Some(fresh)
    }
}

/// Up to [`MAX_EXCHANGED_PEERS`] of `connected`, at random, without `recipient`: what a node
/// with no room sends a peer before it closes the connection.
pub fn sample(connected: &[SocketAddr], recipient: SocketAddr) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = connected.iter().copied().filter(|a| *a != recipient).collect();
    out.shuffle(&mut rand::rng());
    out.truncate(MAX_EXCHANGED_PEERS);
    out
}

/// Whether an address that the peer at `from` named in a `peers` message is worth a connect:
/// a unicast address with a port, not link-local (its scope does not cross the wire, and
/// 169.254.169.254 is where clouds serve instance secrets), and loopback only when the peer is
/// on loopback itself.
pub fn plausible(addr: &SocketAddr, from: &SocketAddr) -> bool {
    let ip = addr.ip();
    let link_local = match ip {
        std::net::IpAddr::V4(v4) => v4.is_link_local() || v4 == std::net::Ipv4Addr::BROADCAST,
        std::net::IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    };
    addr.port() != 0
        && !ip.is_unspecified()
        && !ip.is_multicast()
        && !link_local
        && (!ip.is_loopback() || from.ip().is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn addrs(n: u32) -> Vec<SocketAddr> {
        (0..n).map(|i| SocketAddr::new(std::net::Ipv4Addr::from_bits(0x0a00_0000 + i).into(), 6690)).collect()
    }

    #[test]
    fn each_address_once_no_more_than_fifty_and_not_too_often() {
        let now = Instant::now();
        let all = addrs(120);
        let me = all[0];
        let mut x = Exchange::new(now);
        let first = x.due(now, me, &all).unwrap();
        assert_eq!(first.len(), MAX_EXCHANGED_PEERS);
        assert!(!first.contains(&me), "never the recipient itself");
        assert_eq!(x.due(now + Duration::from_millis(10), me, &all), None, "not again before the interval");
        let later = now + EXCHANGE_INTERVAL;
        let second = x.due(later, me, &all).unwrap();
        assert!(second.iter().all(|a| !first.contains(a)), "nothing twice");
        let third = x.due(later + EXCHANGE_INTERVAL, me, &all).unwrap();
        assert_eq!(first.len() + second.len() + third.len(), 119);
        assert_eq!(x.due(later + EXCHANGE_INTERVAL * 2, me, &all), None, "nothing new: nothing sent");
        // A newly connected peer is told about at the next turn.
        let mut more = all.clone();
        more.extend(addrs(121).last());
        assert_eq!(x.due(later + EXCHANGE_INTERVAL * 3, me, &more), Some(vec![more[120]]));
    }

    #[test]
    fn memory_is_bounded() {
        let now = Instant::now();
        let all = addrs(MAX_REMEMBERED as u32 + 100);
        let mut x = Exchange::new(now);
        let mut t = now;
        for _ in 0..(all.len() / MAX_EXCHANGED_PEERS + 3) {
            let _ = x.due(t, all[0], &all);
            assert!(x.told.len() <= MAX_REMEMBERED);
            t += EXCHANGE_INTERVAL;
        }
    }

    #[test]
    fn samples_and_plausibility() {
        let all = addrs(80);
        let s = sample(&all, all[3]);
        assert_eq!(s.len(), MAX_EXCHANGED_PEERS);
        assert!(!s.contains(&all[3]));
        let remote: SocketAddr = "10.0.0.9:6690".parse().unwrap();
        let local: SocketAddr = "127.0.0.2:6690".parse().unwrap();
        assert!(plausible(&"10.0.0.1:6690".parse().unwrap(), &remote));
        assert!(plausible(&"[fd00::1]:6690".parse().unwrap(), &remote));
        assert!(plausible(&"127.0.0.3:6690".parse().unwrap(), &local), "loopback from loopback");
        for bad in [
            "0.0.0.0:6690",
            "10.0.0.1:0",
            "224.0.0.1:6690",
            "255.255.255.255:6690",
            "[::]:6690",
            "169.254.169.254:80",
            "[fe80::1]:6690",
            "127.0.0.1:6690",
            "[::1]:6690",
        ] {
            assert!(!plausible(&bad.parse().unwrap(), &remote), "{bad}");
        }
    }
}
