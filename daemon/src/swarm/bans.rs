//! Strikes and bans for peers that send pieces failing verification. Pure bookkeeping.
//!
//! Identity is the address a connection comes from, never the node id a peer claims: a
//! claimed id costs nothing to change (a banned peer would come back under a new one) and
//! costs nothing to borrow (a liar claiming the seed's id would get the seed banned). The key
//! is the remote IP; for IPv6 its /64, the block one host is usually given (and can pick any
//! address from). An IPv4-mapped IPv6 address counts as the IPv4 address.
//!
//! Bounded: at most [`MAX_TRACKED`] addresses with strikes and as many banned; beyond that the
//! least-struck (or the oldest ban) is forgotten, so a peer with very many addresses cannot
//! grow the tables without bound.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use crate::node_id::NodeId;

/// Bad pieces after which an address is banned.
pub const BAN_AFTER: u32 = 3;
/// Most addresses with strikes, and most banned addresses, per torrent.
pub const MAX_TRACKED: usize = 4096;

/// What a strike or ban applies to: an IPv4 address, or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BanKey(IpAddr);

impl BanKey {
    pub fn of(ip: IpAddr) -> BanKey {
        match ip {
            IpAddr::V4(v4) => BanKey(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => BanKey(IpAddr::V4(v4)),
                None => BanKey(IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !((1u128 << 64) - 1)))),
            },
        }
    }
}

impl fmt::Display for BanKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// A banned address, as last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Banned {
    /// The connection that earned the ban (its address and the id it claimed).
    pub addr: SocketAddr,
    pub node_id: NodeId,
    pub strikes: u32,
    /// Order of banning, for forgetting the oldest first.
    seq: u64,
}

/// The outcome of a strike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strike {
    /// Counted: this many strikes now.
    Counted(u32),
    /// This strike banned the address.
    Banned(u32),
}

#[derive(Debug, Default)]
pub struct Bans {
    strikes: HashMap<BanKey, u32>,
    banned: HashMap<BanKey, Banned>,
    next_seq: u64,
}

impl Bans {
    /// Counts a bad piece from the connection at `addr` (which claimed `node_id`).
    pub fn strike(&mut self, addr: SocketAddr, node_id: NodeId) -> Strike {
        let key = BanKey::of(addr.ip());
        if !self.strikes.contains_key(&key) && self.strikes.len() >= MAX_TRACKED {
            // Forget the address with the fewest strikes.
            if let Some(k) = self.strikes.iter().min_by_key(|(_, n)| **n).map(|(k, _)| *k) {
                self.strikes.remove(&k);
            }
        }
        let n = self.strikes.entry(key).or_insert(0);
        *n += 1;
        let n = *n;
        if n < BAN_AFTER {
            return Strike::Counted(n);
        }
        if !self.banned.contains_key(&key)
            && self.banned.len() >= MAX_TRACKED
            && let Some(k) = self.banned.iter().min_by_key(|(_, b)| b.seq).map(|(k, _)| *k)
        {
            self.banned.remove(&k);
        }
        self.next_seq += 1;
        self.banned.insert(key, Banned { addr, node_id, strikes: n, seq: self.next_seq });
        Strike::Banned(n)
    }

    pub fn is_banned(&self, ip: IpAddr) -> bool {
        self.banned.contains_key(&BanKey::of(ip))
    }

    /// Strikes against the address `ip` belongs to.
    pub fn strikes(&self, ip: IpAddr) -> u32 {
        self.strikes.get(&BanKey::of(ip)).copied().unwrap_or(0)
    }

    pub fn banned(&self) -> impl Iterator<Item = (&BanKey, &Banned)> {
        self.banned.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn three_strikes_ban_the_address_whatever_id_it_claims() {
        let mut bans = Bans::default();
        assert_eq!(bans.strike(addr("10.0.0.5:1000"), NodeId([1; 32])), Strike::Counted(1));
        // A new id and a new port: the same address.
        assert_eq!(bans.strike(addr("10.0.0.5:2000"), NodeId([2; 32])), Strike::Counted(2));
        assert!(!bans.is_banned("10.0.0.5".parse().unwrap()));
        assert_eq!(bans.strike(addr("10.0.0.5:3000"), NodeId([3; 32])), Strike::Banned(3));
        assert!(bans.is_banned("10.0.0.5".parse().unwrap()));
        assert!(!bans.is_banned("10.0.0.6".parse().unwrap()), "another address is not banned");
        assert_eq!(bans.strikes("10.0.0.5".parse().unwrap()), 3);
    }

    #[test]
    fn an_ipv6_host_is_its_slash_64_and_a_mapped_ipv4_is_the_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(BanKey::of(a), BanKey::of(b));
        assert_ne!(BanKey::of(a), BanKey::of(other));
        assert_eq!(BanKey::of(a).to_string(), "2001:db8:1:2::/64");
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(BanKey::of(mapped), BanKey::of("10.1.2.3".parse().unwrap()));
    }

    #[test]
    fn the_tables_are_bounded() {
        let mut bans = Bans::default();
        for i in 0..(MAX_TRACKED as u32 + 100) {
            let ip = std::net::Ipv4Addr::from_bits(0x0a00_0000 + i);
            for _ in 0..BAN_AFTER {
                bans.strike(SocketAddr::new(ip.into(), 1), NodeId([0; 32]));
            }
        }
        assert!(bans.strikes.len() <= MAX_TRACKED);
        assert!(bans.banned.len() <= MAX_TRACKED);
        // The most recent ban is kept.
        let last = std::net::Ipv4Addr::from_bits(0x0a00_0000 + MAX_TRACKED as u32 + 99);
        assert!(bans.is_banned(last.into()));
    }
}
