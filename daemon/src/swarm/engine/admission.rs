//! Which connections a torrent admits (pure).
//!
//! Two connections between the same pair of nodes: the one opened by the lower node id stays,
//! which both ends decide the same way. Only between the same addresses: an id is only a claim.
//! A connection from another address claiming the id of a connected peer is a peer of its own —
//! it never displaces the established one, and is not refused either (the first to connect
//! under an id must not lock the real owner of that id out).
//!
//! Invariants: a connection from this node's own id or a banned address is never admitted;
//! a replacement needs no room (one connection goes as one comes); otherwise a connection
//! needs room.

use std::net::SocketAddr;

use crate::node_id::NodeId;
use crate::swarm::picker::PeerKey;

/// Why a connection is not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Us,
    Banned,
    /// Already connected in the direction both ends agree on.
    Duplicate,
    NoRoom,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Us => write!(f, "it is this node"),
            Refusal::Banned => write!(f, "its address is banned"),
            Refusal::Duplicate => write!(f, "already connected in the direction both ends agree on"),
            Refusal::NoRoom => write!(f, "no room for more peers"),
        }
    }
}

/// A connection, as admission sees it.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    pub key: PeerKey,
    pub node_id: NodeId,
    /// The peer's listen address.
    pub addr: SocketAddr,
    /// Whether this node opened it.
    pub outgoing: bool,
}

/// What the torrent looks like to a new connection.
pub struct Torrent<'a> {
    pub own_id: NodeId,
    pub connected: &'a [Link],
    pub banned: bool,
    pub room: bool,
}

/// Whether `new` (its `key` unused) may start: `Ok` with the connection it replaces, if any,
/// or why not.
pub fn admission(t: &Torrent<'_>, new: Link) -> Result<Option<PeerKey>, Refusal> {
    if new.node_id == t.own_id {
        return Err(Refusal::Us);
    }
    if t.banned {
        return Err(Refusal::Banned);
    }
    let initiator = |outgoing: bool| if outgoing { t.own_id } else { new.node_id };
    let same = t.connected.iter().find(|l| l.node_id == new.node_id && l.addr.ip() == new.addr.ip());
    let replaces = match same {
        None => None,
        Some(existing) => {
            if initiator(new.outgoing) >= initiator(existing.outgoing) {
                return Err(Refusal::Duplicate);
            }
            Some(existing.key)
        }
    };
    if replaces.is_none() && !t.room {
        return Err(Refusal::NoRoom);
    }
    Ok(replaces)
}

/// The address of a connected peer claiming `node_id` from another address than `addr`, if
/// any (worth a log line: one of them is not who it says).
pub fn claimed_elsewhere(connected: &[Link], node_id: NodeId, addr: SocketAddr) -> Option<SocketAddr> {
    if connected.iter().any(|l| l.node_id == node_id && l.addr.ip() == addr.ip()) {
        return None;
    }
    connected.iter().find(|l| l.node_id == node_id).map(|l| l.addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOW: NodeId = NodeId([1; 32]);
    const HIGH: NodeId = NodeId([9; 32]);

    fn link(key: PeerKey, node_id: NodeId, addr: &str, outgoing: bool) -> Link {
        Link { key, node_id, addr: addr.parse().unwrap(), outgoing }
    }

    fn torrent(own_id: NodeId, connected: &[Link]) -> Torrent<'_> {
        Torrent { own_id, connected, banned: false, room: true }
    }

    #[test]
    fn this_node_and_banned_addresses_are_refused() {
        let t = torrent(LOW, &[]);
        assert_eq!(admission(&t, link(0, LOW, "10.0.0.2:1", false)), Err(Refusal::Us));
        let banned = Torrent { banned: true, ..torrent(LOW, &[]) };
        assert_eq!(admission(&banned, link(0, HIGH, "10.0.0.2:1", false)), Err(Refusal::Banned));
    }

    #[test]
    fn of_two_connections_between_a_pair_the_lower_ids_stays_on_both_ends() {
        // We are LOW, the peer HIGH: the connection we open stays.
        let incoming = [link(4, HIGH, "10.0.0.2:6690", false)];
        let t = torrent(LOW, &incoming);
        assert_eq!(admission(&t, link(0, HIGH, "10.0.0.2:6690", true)), Ok(Some(4)));
        let outgoing = [link(4, HIGH, "10.0.0.2:6690", true)];
        let t = torrent(LOW, &outgoing);
        assert_eq!(admission(&t, link(0, HIGH, "10.0.0.2:6690", false)), Err(Refusal::Duplicate));
        // The other end, HIGH, decides the same.
        let outgoing = [link(4, LOW, "10.0.0.1:6690", true)];
        let t = torrent(HIGH, &outgoing);
        assert_eq!(admission(&t, link(0, LOW, "10.0.0.1:6690", false)), Ok(Some(4)));
        // A second connection the same way is a duplicate.
        assert_eq!(admission(&t, link(0, LOW, "10.0.0.1:6690", true)), Err(Refusal::Duplicate));
    }

    #[test]
    fn a_replacement_needs_no_room_but_a_new_peer_does() {
        let incoming = [link(4, HIGH, "10.0.0.2:6690", false)];
        let full = Torrent { room: false, ..torrent(LOW, &incoming) };
        assert_eq!(admission(&full, link(0, HIGH, "10.0.0.2:6690", true)), Ok(Some(4)));
        assert_eq!(admission(&full, link(0, NodeId([5; 32]), "10.0.0.3:6690", true)), Err(Refusal::NoRoom));
    }

    #[test]
    fn an_id_claimed_from_another_address_is_a_peer_of_its_own() {
        let connected = [link(4, HIGH, "10.0.0.2:6690", true)];
        let t = torrent(LOW, &connected);
        // Never displaces the connected one, never refused as a duplicate.
        assert_eq!(admission(&t, link(0, HIGH, "10.0.0.66:6690", true)), Ok(None));
        assert_eq!(admission(&t, link(0, HIGH, "10.0.0.66:6690", false)), Ok(None));
        assert_eq!(claimed_elsewhere(&connected, HIGH, "10.0.0.66:6690".parse().unwrap()), Some(connected[0].addr));
        assert_eq!(claimed_elsewhere(&connected, HIGH, "10.0.0.2:7000".parse().unwrap()), None);
        assert_eq!(claimed_elsewhere(&connected, LOW, "10.0.0.66:6690".parse().unwrap()), None);
    }
}
