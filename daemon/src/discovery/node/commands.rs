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
    /// `draining`, told to every member we know — not a sample — and, from then on, to each
    /// member we learn of, each whose status changed since it answered, and each not heard
    /// from for [`DRAIN_RECONFIRM`]. Each answers with its own status in the swarm
    /// (`announced_draining`), and a member counts as another copy only while its latest
    /// answer said `seeding` ([`crate::discovery::swarms::PeerEntry::drain_answer`]). So if
    /// A counts B, B answered A after A began draining and before B began: A began first.
    /// Around any set of nodes draining at once that order has no cycle, so at least one of
    /// them counts none of the others, and a swarm never loses its last seeds to
    /// simultaneous drains. There is no way back: a drain ends with the node stopping.
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

    /// Announces `draining` to the members of the swarms we drain from that need to hear it
    /// (see [`Node::drain`]) and are not being told already, at most [`DRAIN_TELL_BATCH`] at a
    /// time (one that never answers leaves the table, as for any announce).
    pub(super) fn tell_drain(&mut self, now: Instant) {
        self.next_drain_tell = now + DRAIN_TELL_EVERY;
        let telling = self.announcing();
        let since = |at: Option<Instant>| at.map(|at| now.saturating_duration_since(at));
        let due = |p: &crate::discovery::swarms::PeerEntry| {
            let asked = since(p.drain_asked);
            match p.drain_answer {
                // Never asked, or asked long ago without an answer (a build that never gives
                // one is asked once a minute, not every second).
                None => asked.is_none_or(|a| a >= DRAIN_RECONFIRM),
                Some((answered, at)) => {
                    since(Some(at)).is_some_and(|a| a >= DRAIN_RECONFIRM)
                        || (answered != p.status && asked.is_none_or(|a| a >= DRAIN_REASK))
                }
            }
        };
        let untold: Vec<(InfoHash, SocketAddr)> = self
            .swarms
            .swarms()
            .filter(|(_, s)| s.membership == Some(PeerStatus::Draining))
            .flat_map(|(hash, s)| s.peers.values().map(move |p| (*hash, p)))
            .filter(|(_, p)| p.status != PeerStatus::Leaving && p.id != self.id && due(p))
            .map(|(hash, p)| (hash, p.addr))
            .filter(|told| !telling.contains(told))
            .take(DRAIN_TELL_BATCH)
            .collect();
        for (info_hash, addr) in untold {
            self.swarms.asked_to_drain(&info_hash, &addr, now);
            let need = Need::Announce { info_hash, status: PeerStatus::Draining, listed: None };
            self.with_token(now, addr, need, Reach::Proven);
        }
    }

    /// The members we are announcing to now (waiting for an answer, or for the token to send
    /// it with), by swarm.
    pub(super) fn announcing(&self) -> HashSet<(InfoHash, SocketAddr)> {
        self.pending
            .values()
            .filter_map(|p| match &p.purpose {
                Purpose::Need { need: Need::Announce { info_hash, .. }, .. }
                | Purpose::Ping { then: Some(After::Need(Need::Announce { info_hash, .. })) } => {
                    Some((*info_hash, p.to))
                }
                _ => None,
            })
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
