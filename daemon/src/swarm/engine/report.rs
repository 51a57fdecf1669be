//! What `p2pctl peers` shows of a torrent's connections and bans: the engine's view turned
//! into the control protocol's types, in this one place.

use std::sync::atomic::Ordering;

use super::peer::Peer;
use crate::control::protocol::{PeerInfo, WireState};
use crate::swarm::bans::Bans;

/// One line per connected peer, then one per banned address.
pub fn peer_infos<'a>(peers: impl Iterator<Item = &'a Peer>, bans: &Bans) -> Vec<PeerInfo> {
    let mut out: Vec<PeerInfo> = peers
        .map(|p| {
            let downloaded = p.conn.stats.downloaded.load(Ordering::Relaxed);
            PeerInfo {
                address: p.conn.addr.to_string(),
                node_id: p.conn.node_id.to_hex(),
                status: if p.bits.is_complete() { "seeding".into() } else { "leeching".into() },
                last_seen_secs: 0,
                connected: true,
                strikes: bans.strikes(p.conn.addr.ip()),
                banned: false,
                downloaded,
                uploaded: p.conn.stats.uploaded.load(Ordering::Relaxed),
                wire: Some(WireState {
                    interested: p.am_interested,
                    choked_by_peer: p.peer_choking,
                    peer_interested: p.peer_interested,
                    choking: p.conn.is_choking(),
                    requested_bytes: p.fetches.asked_bytes(),
                    last_block_secs: (downloaded > 0).then(|| p.conn.stats.last_block().elapsed().as_secs()),
                    snubbed: p.snubbed_at.is_some(),
                }),
            }
        })
        .collect();
    for (_, banned) in bans.banned() {
        out.push(PeerInfo {
            address: banned.addr.to_string(),
            node_id: banned.node_id.to_hex(),
            status: "banned".into(),
            last_seen_secs: 0,
            connected: false,
            strikes: banned.strikes,
            banned: true,
            downloaded: 0,
            uploaded: 0,
            wire: None,
        });
    }
    out
}
