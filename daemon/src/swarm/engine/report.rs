//! What the engine shows of its peers (for `p2pctl peers`): its own view types, turned into
//! the control protocol's at the control edge (`shared.rs`), never here.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::peer::Peer;
use crate::node_id::NodeId;
use crate::swarm::bans::Bans;

/// A connected or banned peer, as the engine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerView {
    /// Its listen address (IP and announced port).
    pub addr: SocketAddr,
    pub node_id: NodeId,
    /// It has every piece.
    pub complete: bool,
    /// Pieces it sent that failed verification.
    pub strikes: u32,
    /// Its address is banned (then there is no connection).
    pub banned: bool,
    pub downloaded: u64,
    pub uploaded: u64,
    /// The open connection's state; `None` for a banned address.
    pub link: Option<LinkView>,
}

/// Who is choking and who is interested on a connection, and what is owed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkView {
    pub interested: bool,
    pub choked_by_peer: bool,
    pub peer_interested: bool,
    pub choking: bool,
    pub requested_bytes: u64,
    /// Since it last sent a block we asked for, if it ever did.
    pub last_block: Option<Duration>,
    pub snubbed: bool,
}

/// One view per connected peer, then one per banned address.
pub fn peer_views<'a>(peers: impl Iterator<Item = &'a Peer>, bans: &Bans) -> Vec<PeerView> {
    let mut out: Vec<PeerView> = peers
        .map(|p| {
            let downloaded = p.conn.stats.downloaded.load(Ordering::Relaxed);
            PeerView {
                addr: p.conn.addr,
                node_id: p.conn.node_id,
                complete: p.bits.is_complete(),
                strikes: bans.strikes(p.conn.addr.ip()),
                banned: false,
                downloaded,
                uploaded: p.conn.stats.uploaded.load(Ordering::Relaxed),
                link: Some(LinkView {
                    interested: p.am_interested,
                    choked_by_peer: p.peer_choking,
                    peer_interested: p.peer_interested,
                    choking: p.conn.is_choking(),
                    requested_bytes: p.fetches.asked_bytes(),
                    last_block: (downloaded > 0).then(|| p.conn.stats.last_block().elapsed()),
                    snubbed: p.snubbed_at.is_some(),
                }),
            }
        })
        .collect();
    out.extend(bans.banned().map(|(_, banned)| PeerView {
        addr: banned.addr,
        node_id: banned.node_id,
        complete: false,
        strikes: banned.strikes,
        banned: true,
        downloaded: 0,
        uploaded: 0,
        link: None,
    }));
    out
}
