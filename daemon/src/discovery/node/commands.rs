//! Commands from the daemon: joining the network and swarms, status changes, leaving.

use super::*;

impl Node {
    /// Joins the network through `addrs` (pings them; a find_node for our own id follows).
    pub fn bootstrap(&mut self, now: Instant, addrs: &[SocketAddr]) {
        for &addr in addrs {
            let addr = canonical(addr);
            if !self.bootstrap.contains(&addr) {
                self.bootstrap.push(addr);
            }
            let attempts = self.config.rpc_attempts;
            self.send_request(now, addr, Body::Ping, Purpose::Ping { then: Some(After::SelfLookup) }, attempts);
        }
    }

    /// Starts (or refreshes) membership of a swarm: look up its peers through the routing
    /// table and `bootstrap`, announce `status` to them and to the nodes closest to the hash.
    pub fn join(&mut self, now: Instant, info_hash: InfoHash, status: PeerStatus, bootstrap: &[SocketAddr]) {
        let status = self.own_status(status);
        // A node that barely knows the network joins it through the descriptor's nodes too.
        if self.routing.len() < self.config.k && !bootstrap.is_empty() {
            self.bootstrap(now, bootstrap);
        }
        self.swarms.set_membership(info_hash, Some(status), now);
        // Members we already know (e.g. from a persisted table) hear from us right away.
        self.announce_to_known(now, info_hash, status);
        self.start_lookup(now, info_hash, bootstrap, Some(status));
        self.start_node_lookup(now, key_of_hash(&info_hash), NodeLookupPurpose::Announce(info_hash, status));
        self.next_announce.insert(info_hash, now + self.config.announce_interval);
        self.follow_ups.retain(|(_, h)| *h != info_hash);
        self.top_ups.insert(info_hash, MAX_TOP_UPS);
        self.join_contacts.insert(info_hash, HashMap::new());
        for after in FOLLOW_UP_LOOKUPS {
            self.follow_ups.push_back((now + after, info_hash));
        }
        self.follow_ups.make_contiguous().sort_by_key(|(at, _)| *at);
    }

    /// A find_node for our own id (unless one is running); bucket refreshes follow it.
    pub(super) fn self_lookup(&mut self, now: Instant) {
        if self.node_lookups.values().all(|l| l.purpose != NodeLookupPurpose::SelfLookup) {
            self.start_node_lookup(now, key_of_node(&self.id), NodeLookupPurpose::SelfLookup);
        }
    }

    /// Announces a new status to the swarm's known members ([`STATUS_FANOUT`] of a large one).
    pub fn set_status(&mut self, now: Instant, info_hash: InfoHash, status: PeerStatus) {
        let status = self.own_status(status);
        if self.swarms.get(&info_hash).and_then(|s| s.membership) == Some(status) {
            return;
        }
        self.swarms.set_membership(info_hash, Some(status), now);
        self.announce_to_known(now, info_hash, status);
    }

    /// Leaves a swarm: tells its members, forgets our membership.
    pub fn leave(&mut self, now: Instant, info_hash: InfoHash) {
        if !self.swarms.is_member(&info_hash) {
            return;
        }
        self.announce_to_known(now, info_hash, PeerStatus::Leaving);
        self.swarms.set_membership(info_hash, None, now);
        self.next_announce.remove(&info_hash);
        self.top_ups.remove(&info_hash);
        self.join_contacts.remove(&info_hash);
    }

    /// Begins draining (`p2pctl drain`): in every swarm we seed, our status becomes
    /// `draining`, told to every member we know — not a sample: a member is counted as another
    /// copy only once it has acknowledged it ([`crate::discovery::swarms::PeerEntry::heard_our_drain`]) — and, from then
    /// on, to each member we learn of. So of two nodes draining at once, each hears of the
    /// other's drain before it may count the other, and at most one can: a swarm never loses
    /// its last seeds to simultaneous drains. There is no way back: a drain ends with the node
    /// stopping.
    pub fn drain(&mut self, now: Instant) {
        self.draining = true;
        let seeding: Vec<InfoHash> =
            self.swarms.swarms().filter(|(_, s)| s.membership == Some(PeerStatus::Seeding)).map(|(h, _)| *h).collect();
        for hash in seeding {
            self.swarms.set_membership(hash, Some(PeerStatus::Draining), now);
        }
        self.tell_drain(now);
    }

    /// Our status as we announce it: `draining` in place of `seeding` once we drain.
    fn own_status(&self, status: PeerStatus) -> PeerStatus {
        if self.draining && status == PeerStatus::Seeding { PeerStatus::Draining } else { status }
    }

    /// Announces `draining` to every member of a swarm we drain from that has not
    /// acknowledged it, or not been heard from for [`DRAIN_RECONFIRM`], and is not being told
    /// already (one that never answers is dropped from the table, as for any announce).
    pub(super) fn tell_drain(&mut self, now: Instant) {
        self.next_drain_tell = now + DRAIN_TELL_EVERY;
        let draining: Vec<InfoHash> =
            self.swarms.swarms().filter(|(_, s)| s.membership == Some(PeerStatus::Draining)).map(|(h, _)| *h).collect();
        for info_hash in draining {
            let telling = self.announcing(&info_hash);
            let untold: Vec<SocketAddr> = self
                .swarms
                .get(&info_hash)
                .map(|s| {
                    s.peers
                        .values()
                        .filter(|p| p.status != PeerStatus::Leaving && p.id != self.id)
                        .filter(|p| !p.heard_our_drain || now.saturating_duration_since(p.last_seen) >= DRAIN_RECONFIRM)
                        .filter(|p| !telling.contains(&p.addr))
                        .map(|p| p.addr)
                        .collect()
                })
                .unwrap_or_default();
            for addr in untold {
                let need = Need::Announce { info_hash, status: PeerStatus::Draining, listed: None };
                self.with_token(now, addr, need, Reach::Proven);
            }
        }
    }

    /// Members we are announcing to in swarm `info_hash` now (waiting for an answer or for
    /// the token to send it with).
    pub(super) fn announcing(&self, info_hash: &InfoHash) -> HashSet<SocketAddr> {
        self.pending
            .values()
            .filter(|p| match &p.purpose {
                Purpose::Need { need: Need::Announce { info_hash: h, .. }, .. }
                | Purpose::Ping { then: Some(After::Need(Need::Announce { info_hash: h, .. })) } => h == info_hash,
                _ => false,
            })
            .map(|p| p.to)
            .collect()
    }

    /// Starts a get_peers lookup without joining (returns its request id).
    pub fn lookup(&mut self, now: Instant, info_hash: InfoHash, first_hops: &[SocketAddr]) -> u64 {
        self.start_lookup(now, info_hash, first_hops, None)
    }

    /// Announces `status` to the members we know: all of a small swarm, [`STATUS_FANOUT`] of
    /// a large one ([`SwarmStore::announce_targets`]).
    pub(super) fn announce_to_known(&mut self, now: Instant, info_hash: InfoHash, status: PeerStatus) {
        let targets = self.swarms.announce_targets(&info_hash, &self.id, STATUS_FANOUT, self.config.k, &mut self.rng);
        // Every entry was validated: it announced itself with our token, or answered our
        // announce (or was, in an earlier run).
        for addr in targets {
            self.with_token(now, addr, Need::Announce { info_hash, status, listed: None }, Reach::Proven);
        }
    }
}
