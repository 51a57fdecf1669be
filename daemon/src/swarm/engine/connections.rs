//! Peers coming and going: dialling candidates, answering incoming connections, admitting
//! ([`super::admission`]) and closing them, and peer exchange.
//!
//! Invariants: nothing here awaits (the engine's future may be dropped at any await point, and
//! a connection received must not be lost with it); at most [`MAX_DIALS_IN_FLIGHT`] dials per
//! torrent; every admitted connection counts in the daemon's connection total until
//! [`Engine::close`] takes it out.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::time::Instant;

use futures_lite::FutureExt;
use log::{debug, info};
use rand::seq::SliceRandom;

use super::admission::{self, Link, Refusal};
use super::peer::Peer;
use super::{Engine, MAX_DIALS_IN_FLIGHT};
use crate::node_id::NodeId;
use crate::swarm::connection::{self, ConnContext, ConnectError};
use crate::swarm::counters::WireEvent;
use crate::swarm::exchange;
use crate::swarm::listener::{Incoming, IpSlot};
use crate::swarm::picker::PeerKey;
use crate::swarm::wire::{self, Handshake, Message};

impl Engine {
    pub(super) fn conn_context(&self) -> ConnContext {
        ConnContext {
            pool: self.pool.clone(),
            storage: self.storage.clone(),
            have: self.have.clone(),
            layout: self.layout.clone(),
            events: self.events.0.clone(),
            upload: [self.ctx.upload.clone(), self.upload.clone()],
            download: [self.ctx.download.clone(), self.download.clone()],
            first_copies: self.first_copies.clone(),
            counters: self.ctx.counters.clone(),
        }
    }

    pub(super) fn handshake(&self, version: u8) -> Handshake {
        Handshake { info_hash: self.info_hash, node_id: self.ctx.node_id, listen_port: self.ctx.listen_port, version }
    }

    /// The listen addresses of every connected peer.
    pub(super) fn connected_addrs(&self) -> Vec<SocketAddr> {
        self.peers.values().map(|p| p.conn.addr).collect()
    }

    /// Tells each peer whose turn it is about the peers connected now that it has not heard of.
    pub(super) fn exchange_peers(&mut self, now: Instant) {
        let connected = self.connected_addrs();
        for p in self.peers.values_mut() {
            let addr = p.conn.addr;
            if let Some(addrs) = p.exchange.as_mut().and_then(|x| x.due(now, addr, &connected)) {
                p.conn.send(Message::Peers(addrs));
            }
        }
    }

    /// Members a connected peer passed on: candidates to try.
    pub(super) fn on_exchanged(&mut self, key: PeerKey, addrs: Vec<SocketAddr>) {
        let now = Instant::now();
        let Some(from) = self.peers.get(&key).map(|p| p.conn.addr) else { return };
        let connected: HashSet<SocketAddr> = self.peers.values().map(|p| p.conn.addr).collect();
        let mut taken = 0;
        for addr in addrs {
            if exchange::plausible(&addr, &from)
                && !connected.contains(&addr)
                && !self.bans.is_banned(addr.ip())
                && self.candidates.learn_exchanged(addr, now)
            {
                taken += 1;
            }
        }
        if taken > 0 {
            if let Some(p) = self.peers.get(&key) {
                debug!("{}: {} named {taken} members we did not know", self.name, p.conn.addr);
            }
            self.connect_candidates(now);
        }
    }

    pub(super) fn room(&self) -> bool {
        self.peers.len() < self.max_peers
            && self.ctx.connections.load(Ordering::SeqCst) < self.ctx.max_connections.load(Ordering::SeqCst)
    }

    pub(super) fn connect_candidates(&mut self, now: Instant) {
        let connected: HashSet<SocketAddr> = self.peers.values().map(|p| p.conn.addr).collect();
        let mut due = self.candidates.due(now, self.seeding(), &connected);
        due.shuffle(&mut rand::rng());
        for addr in due {
            if !self.room()
                || self.dialling >= MAX_DIALS_IN_FLIGHT
                || self.peers.len() + self.dialling >= self.max_peers
            {
                break;
            }
            let Some(slot) = self.ctx.registry.take_slot(addr.ip()) else { continue };
            self.candidates.dialling(&addr);
            self.dialling += 1;
            let tx = self.connected.0.clone();
            let hs = self.handshake(wire::VERSION);
            let counters = self.ctx.counters.clone();
            let local = self.ctx.listen_ip;
            counters.count(WireEvent::Dialed);
            self.dials.spawn(&self.ctx.executor, async move {
                // A result is always sent (the engine counts dials until theirs arrives), a
                // panic in the dial included: that one is a failed connect.
                let dial = AssertUnwindSafe(connection::connect(addr, local, hs)).catch_unwind().await;
                let result = match dial {
                    Ok(Ok((stream, theirs))) => Ok((addr, stream, theirs, slot)),
                    Ok(Err(e)) => {
                        debug!("connect to {addr}: {e}");
                        counters.count(WireEvent::DialFailed { timed_out: matches!(e, ConnectError::TimedOut) });
                        Err(addr)
                    }
                    Err(payload) => {
                        log::error!("connect to {addr} panicked: {}", crate::tasks::panic_message(&*payload));
                        Err(addr)
                    }
                };
                let _ = tx.send(result).await;
            });
        }
    }

    pub(super) fn on_connected(
        &mut self,
        addr: SocketAddr,
        stream: smol::Async<std::net::TcpStream>,
        hs: Handshake,
        slot: IpSlot,
    ) {
        self.candidates.connected(&addr);
        if hs.info_hash != self.info_hash {
            debug!("{}: {addr} answered for another swarm; closing", self.name);
            self.ctx.counters.count(WireEvent::Refused);
            self.candidates.closed(&addr, Instant::now());
            return;
        }
        if !self.admit(stream, hs.node_id, addr, true, slot, hs.version.min(wire::VERSION)) {
            // Not dialled again at once (it would be every tick).
            self.candidates.closed(&addr, Instant::now());
        }
    }

    /// An incoming connection for this torrent. No await in here: [`Engine::next`] may be
    /// dropped at any await point (the torrent task selects over it), and nothing received
    /// may be lost when it is.
    pub(super) fn on_incoming(&mut self, i: Incoming) {
        use std::io::Write;
        let addr = SocketAddr::new(i.remote.ip(), i.handshake.listen_port);
        let version = i.handshake.version.min(wire::VERSION);
        let hs = wire::encode_handshake(&self.handshake(version));
        if let Err(why) = self.admission(i.handshake.node_id, addr, false) {
            // No room: answer, name the peers connected here (version 2), then close — a late
            // joiner that knew only this node learns where else to go.
            if why == Refusal::NoRoom {
                let mut answer = hs.to_vec();
                let others = exchange::sample(&self.connected_addrs(), addr);
                if version >= wire::PEERS_VERSION && !others.is_empty() {
                    answer.extend_from_slice(&wire::encode(&Message::Peers(others)));
                }
                // Under 1 KiB into a fresh connection's empty send buffer: it completes.
                if let Err(e) = i.stream.get_ref().write_all(&answer) {
                    debug!("{}: {addr}: could not answer before closing: {e}", self.name);
                }
            }
            return self.refused(addr, why);
        }
        // 76 bytes into a fresh connection's empty send buffer: a non-blocking write completes.
        match i.stream.get_ref().write(&hs) {
            Ok(n) if n == hs.len() => {
                self.admit(i.stream, i.handshake.node_id, addr, false, i.slot, version);
            }
            _ => {
                self.ctx.counters.count(WireEvent::Refused);
                debug!("{}: {addr}: could not answer the handshake", self.name);
            }
        }
    }

    /// Whether a connection from or to `addr`, whose peer claims `node_id`, may start: `Ok`
    /// with the connection it replaces, if any, or why not ([`admission`]).
    pub(super) fn admission(
        &self,
        node_id: NodeId,
        addr: SocketAddr,
        outgoing: bool,
    ) -> Result<Option<PeerKey>, Refusal> {
        let connected: Vec<Link> = self
            .peers
            .iter()
            .map(|(&key, p)| Link { key, node_id: p.conn.node_id, addr: p.conn.addr, outgoing: p.conn.outgoing })
            .collect();
        let own_or_banned = node_id == self.ctx.node_id || self.bans.is_banned(addr.ip());
        if let Some(other) = admission::claimed_elsewhere(&connected, node_id, addr).filter(|_| !own_or_banned) {
            info!("{}: {addr} claims the node id of {other}, connected from another address", self.name);
        }
        let torrent = admission::Torrent {
            own_id: self.ctx.node_id,
            connected: &connected,
            banned: self.bans.is_banned(addr.ip()),
            room: self.room(),
        };
        admission::admission(&torrent, Link { key: 0, node_id, addr, outgoing })
    }

    pub(super) fn refused(&self, addr: SocketAddr, why: Refusal) {
        self.ctx.counters.count(WireEvent::Refused);
        debug!("{}: {addr} refused: {why}", self.name);
    }

    /// Starts a connection, unless [`Engine::admission`] refuses it; returns whether it did.
    pub(super) fn admit(
        &mut self,
        stream: smol::Async<std::net::TcpStream>,
        node_id: NodeId,
        addr: SocketAddr,
        outgoing: bool,
        slot: IpSlot,
        version: u8,
    ) -> bool {
        match self.admission(node_id, addr, outgoing) {
            Err(why) => {
                self.refused(addr, why);
                return false;
            }
            Ok(Some(key)) => self.close(key, "replaced by a connection in the agreed direction"),
            Ok(None) => {}
        }
        let key = self.next_key;
        self.next_key += 1;
        let exchange = version >= wire::PEERS_VERSION;
        let conn =
            connection::start(stream, key, node_id, addr, outgoing, exchange, self.conn_context(), &self.ctx.executor);
        self.ctx.connections.fetch_add(1, Ordering::SeqCst);
        self.ctx.counters.count(WireEvent::Established);
        debug!("{}: connected to {addr} ({})", self.name, if outgoing { "outgoing" } else { "incoming" });
        self.peers.insert(key, Peer::new(conn, self.layout.piece_count(), exchange, slot, Instant::now()));
        self.exchange_peers(Instant::now());
        true
    }

    pub(super) fn close(&mut self, key: PeerKey, why: &str) {
        let Some(p) = self.peers.remove(&key) else { return };
        debug!("{}: closing {}: {why}", self.name, p.conn.addr);
        self.closed_down += p.conn.stats.downloaded.load(Ordering::Relaxed);
        self.closed_up += p.conn.stats.uploaded.load(Ordering::Relaxed);
        self.picker.remove_peer(key, &p.bits);
        self.first_copies.forget(key);
        self.ctx.connections.fetch_sub(1, Ordering::SeqCst);
        let now = Instant::now();
        if p.bits.is_complete() {
            self.candidates.complete(&p.conn.addr);
        }
        if p.outgoing && !p.heard {
            // Answered and closed before its bitfield: a node without room. Back off as from
            // a failed connect (an exchanged address is dropped), not redialled in 5 s.
            self.candidates.failed(&p.conn.addr, now);
        } else {
            self.candidates.closed(&p.conn.addr, now);
        }
    }
}
