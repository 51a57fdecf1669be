//! What the engine does with each message from a peer and each verified piece.
//!
//! Invariants: a peer's `useful` count is the number of pieces it has that we lack (checked
//! against the bitfields every tick in debug builds); each piece is verified once (a copy
//! arriving after another is verifying is dropped); a bad piece strikes the address that sent
//! it, never the id it claims.

use std::time::Instant;

use log::{debug, warn};

use super::verify::{self, Received};
use super::{DECLINED_ALONE, DECLINED_FOR, Engine, EngineEvent};
use crate::storage::StorageError;
use crate::swarm::bans::{BanKey, Strike};
use crate::swarm::connection::ConnEvent;
use crate::swarm::picker::{PeerKey, PieceState};
use crate::swarm::wire::Message;

impl Engine {
    pub(super) fn update_interest(&mut self, key: PeerKey) {
        let Some(p) = self.peers.get_mut(&key) else { return };
        let want = p.useful > 0;
        if want != p.am_interested {
            p.am_interested = want;
            p.conn.send(if want { Message::Interested } else { Message::NotInterested });
        }
    }

    pub(super) fn on_conn_event(&mut self, e: ConnEvent) {
        match e {
            ConnEvent::Bitfield(key, bits) => {
                let seeding = self.seeding();
                let Some(p) = self.peers.get_mut(&key) else { return };
                p.heard = true;
                self.picker.remove_peer(key, &p.bits);
                let have = self.have.read().unwrap_or_else(|x| x.into_inner());
                p.useful = bits.ones().filter(|&i| !have.get(i)).count();
                drop(have);
                self.picker.add_peer(&bits);
                p.bits = bits;
                p.exhausted = None;
                // Two seeds have nothing to say to each other.
                if seeding && p.bits.is_complete() {
                    return self.close(key, "both seeding");
                }
                self.update_interest(key);
            }
            ConnEvent::Have(key, piece) => {
                let Some(p) = self.peers.get_mut(&key) else { return };
                if !p.bits.set(piece as usize) {
                    return;
                }
                p.exhausted = None;
                self.picker.peer_has(piece as usize, &p.bits);
                if !self.have.read().unwrap_or_else(|x| x.into_inner()).get(piece as usize) {
                    p.useful += 1;
                }
                let both_seeds = p.bits.is_complete() && self.seeding();
                if both_seeds {
                    return self.close(key, "both seeding");
                }
                self.update_interest(key);
            }
            ConnEvent::Choke(key) => {
                if let Some(p) = self.peers.get_mut(&key) {
                    p.peer_choking = true;
                }
            }
            ConnEvent::Unchoke(key) => {
                if let Some(p) = self.peers.get_mut(&key) {
                    p.peer_choking = false;
                }
            }
            ConnEvent::Interested(key) => {
                if let Some(p) = self.peers.get_mut(&key) {
                    p.peer_interested = true;
                }
                self.fill_free_slots(Instant::now());
            }
            ConnEvent::NotInterested(key) => {
                let Some(p) = self.peers.get_mut(&key) else { return };
                p.peer_interested = false;
                p.conn.set_choking(true);
                if p.unchoked_at.take().is_some() {
                    self.fill_free_slots(Instant::now());
                }
            }
            ConnEvent::Released { key, piece } => {
                let window =
                    if self.peers.values().any(|p| !p.bits.is_complete()) { DECLINED_FOR } else { DECLINED_ALONE };
                let Some(p) = self.peers.get_mut(&key) else { return };
                // Released after we dropped it: the reader has freed it, nothing more.
                if !p.fetches.done(piece, Instant::now()) {
                    return;
                }
                debug!("{}: {} will not send piece {piece}", self.name, p.conn.addr);
                p.declined.set(piece as usize);
                if p.declined_until.is_none() {
                    p.declined_until = Some(Instant::now() + window);
                    self.timer.set_at(self.next_wake());
                }
                self.picker.release(piece as usize, key);
            }
            ConnEvent::Dropped { key, piece } => {
                if let Some(p) = self.peers.get_mut(&key) {
                    p.fetches.confirm_drop(piece, Instant::now());
                }
            }
            ConnEvent::Piece { key, piece, data } => {
                let now = Instant::now();
                if let Some(p) = self.peers.get_mut(&key) {
                    p.fetches.done(piece, now);
                }
                // A second copy that crossed our cancel (endgame): one copy is verified, once.
                if matches!(self.picker.state(piece as usize), PieceState::Verifying | PieceState::Have) {
                    debug!("{}: piece {piece} arrived again; one copy is enough", self.name);
                    self.pool.give(data);
                    return;
                }
                for other in self.picker.verifying(piece as usize, key) {
                    if let Some(p) = self.peers.get_mut(&other)
                        && p.fetches.drop_piece(piece, now)
                    {
                        p.conn.drop_piece(piece);
                    }
                }
                self.verify_queue.push(Received { key, piece, data });
                self.start_verifying();
            }
            ConnEvent::Peers { key, addrs } => self.on_exchanged(key, addrs),
            ConnEvent::Closed { key, reason, misbehaved } => {
                if misbehaved && let Some(p) = self.peers.get(&key) {
                    warn!("{}: {} broke the protocol: {reason}; disconnected", self.name, p.conn.addr);
                }
                self.close(key, &reason);
                self.fill_free_slots(Instant::now());
            }
        }
    }

    pub(super) fn start_verifying(&mut self) {
        while let Some(r) = self.verify_queue.start_next() {
            let expected = self.hashes[r.piece as usize];
            let (storage, done) = (self.storage.clone(), self.verified.0.clone());
            self.verifiers.spawn(&self.ctx.executor, verify::run(storage, expected, r, done));
        }
    }

    pub(super) fn on_verified(
        &mut self,
        key: PeerKey,
        piece: usize,
        result: Result<bool, StorageError>,
    ) -> Option<EngineEvent> {
        match result {
            Ok(true) => {
                if self.picker.state(piece) == PieceState::Have {
                    return None;
                }
                self.picker.verified(piece);
                self.have.write().unwrap_or_else(|x| x.into_inner()).set(piece);
                let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
                for k in keys {
                    if let Some(p) = self.peers.get_mut(&k)
                        && p.bits.get(piece)
                    {
                        p.useful = p.useful.saturating_sub(1);
                    }
                    self.update_interest(k);
                }
                let now = Instant::now();
                let ready = self.haves.push(piece as u32, now, self.seeding());
                if ready.is_empty() {
                    self.timer.set_at(self.next_wake());
                }
                self.send_haves(&ready);
                Some(EngineEvent::Verified(piece))
            }
            Ok(false) => {
                self.picker.failed(piece);
                self.ctx.counters.hash_failed();
                let p = self.peers.get(&key)?;
                let (node, addr) = (p.conn.node_id, p.conn.addr);
                match self.bans.strike(addr, node) {
                    Strike::Counted(n) => {
                        warn!("{}: piece {piece} from {addr} failed verification (strike {n})", self.name)
                    }
                    Strike::Banned(n) => {
                        warn!("{}: piece {piece} from {addr} failed verification (strike {n})", self.name);
                        warn!(
                            "{}: banning {} (claimed node id {node}) after {n} bad pieces",
                            self.name,
                            BanKey::of(addr.ip())
                        );
                        self.candidates.forget(&addr);
                        let same: Vec<PeerKey> = self
                            .peers
                            .iter()
                            .filter(|(_, p)| self.bans.is_banned(p.conn.addr.ip()))
                            .map(|(k, _)| *k)
                            .collect();
                        for k in same {
                            self.close(k, "banned");
                        }
                    }
                }
                None
            }
            Err(e) => {
                self.picker.failed(piece);
                Some(EngineEvent::StorageFailed(e))
            }
        }
    }
}
