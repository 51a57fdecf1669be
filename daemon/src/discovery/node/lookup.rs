//! get_peers lookups, origin side: attempts, first hops, holders, top-ups, completion.

use super::*;

impl Node {
    pub(super) fn start_lookup(
        &mut self,
        now: Instant,
        info_hash: InfoHash,
        extra: &[SocketAddr],
        join: Option<PeerStatus>,
    ) -> u64 {
        let mut candidates: Vec<SocketAddr> =
            self.routing.closest(&key_of_hash(&info_hash), self.config.k).iter().map(|e| e.addr).collect();
        for &a in extra {
            let a = canonical(a);
            if !candidates.contains(&a) {
                candidates.push(a);
            }
        }
        let lookup = Lookup::new(now, self.config.lookup_timeout, info_hash, candidates, self.config.hop_limit, join);
        self.run_lookup(now, lookup)
    }

    /// Starts `lookup`'s first attempt; returns its key.
    pub(super) fn run_lookup(&mut self, now: Instant, lookup: Lookup) -> u64 {
        let mut key: u64 = self.rng.random();
        while self.lookups.contains_key(&key) {
            key = self.rng.random();
        }
        self.lookups.insert(key, lookup);
        self.new_attempt(now, key);
        key
    }

    /// Asks `lister`, which has just answered a join's lookup with members (so it knows the
    /// swarm, and proved its address), for more: one `get_peers` with hop limit 0, no further
    /// attempt, no other node (see [`MAX_TOP_UPS`]).
    pub(super) fn start_top_up(&mut self, now: Instant, info_hash: InfoHash, lister: SocketAddr, status: PeerStatus) {
        let timeout = self.config.lookup_timeout;
        let lookup = Lookup { top_up: true, ..Lookup::new(now, timeout, info_hash, vec![lister], 0, Some(status)) };
        self.run_lookup(now, lookup);
    }

    /// Starts an attempt: a new request id, sent to the next first hops.
    pub(super) fn new_attempt(&mut self, now: Instant, key: u64) {
        let mut rid: u64 = self.rng.random();
        while self.request_ids.contains_key(&rid) {
            rid = self.rng.random();
        }
        let path_timeout = self.config.path_timeout;
        let Some(l) = self.lookups.get_mut(&key) else { return };
        l.request_id = rid;
        l.attempts += 1;
        l.attempt_deadline = now + path_timeout;
        l.not_found.clear();
        l.holders.clear();
        l.named_holders = 0;
        l.asked.clear();
        l.open_paths = 0;
        self.request_ids.insert(rid, key);
        let mut sent = 0;
        while sent < self.config.first_hops && self.next_first_hop(now, key) {
            sent += 1;
        }
        self.check_lookup_exhausted(now, key);
    }

    /// Asks the next live candidate of the current attempt; false if none is left.
    pub(super) fn next_first_hop(&mut self, now: Instant, key: u64) -> bool {
        let Some(l) = self.lookups.get_mut(&key) else { return false };
        let hop_limit = l.hop_limit;
        let n = l.candidates.len();
        for _ in 0..n {
            let addr = l.candidates[l.next % n];
            l.next += 1;
            if l.dead.contains(&addr) || l.not_found.contains(&addr) {
                continue;
            }
            l.open_paths += 1;
            l.named_holders += 1;
            l.asked.push(addr);
            let need = Need::GetPeers { lookup: key, request_id: l.request_id, info_hash: l.info_hash, hop_limit };
            // First hops come from the routing table and from the operator (descriptors).
            self.with_token(now, addr, need, Reach::Proven);
            return true;
        }
        false
    }

    /// Ends the lookup if nothing is in flight and no first hop is left to ask in this
    /// attempt: every live first hop said `not_found` (nobody knows the swarm), or all are dead.
    pub(super) fn check_lookup_exhausted(&mut self, now: Instant, key: u64) {
        let Some(l) = self.lookups.get(&key) else { return };
        if l.done || l.open_paths > 0 {
            return;
        }
        let left = l.candidates.iter().any(|a| !l.dead.contains(a) && !l.not_found.contains(a));
        if left {
            return;
        }
        if l.not_found.is_empty() && !l.candidates.is_empty() && now < l.deadline && !l.top_up {
            // Every first hop looked dead; under heavy loss some were not. Try them all again.
            if let Some(l) = self.lookups.get_mut(&key) {
                l.dead.clear();
            }
            self.new_attempt(now, key);
        } else {
            self.complete_lookup(now, key, Vec::new());
        }
    }

    pub(super) fn on_first_hop_failed(&mut self, now: Instant, key: u64, addr: SocketAddr) {
        let named = !self.validated(&addr, now);
        let Some(l) = self.lookups.get_mut(&key) else { return };
        if l.done {
            return;
        }
        if !l.holders.contains(&addr) {
            l.dead.insert(addr);
        }
        l.open_paths = l.open_paths.saturating_sub(1);
        if named && l.holders.contains(&addr) && l.holder_reattempts < HOLDER_REATTEMPTS {
            // A holder asked once (never validated) did not answer: go through a path again at
            // once rather than after `path_timeout`. Each attempt is a new request to a
            // validated first hop, and pays for one more datagram to the holder.
            l.holder_reattempts += 1;
            self.new_attempt(now, key);
            return;
        }
        self.next_first_hop(now, key);
        self.check_lookup_exhausted(now, key);
    }

    pub(super) fn lookup_of(&self, request_id: u64, info_hash: &InfoHash) -> Option<u64> {
        let key = *self.request_ids.get(&request_id)?;
        (self.lookups.get(&key)?.info_hash == *info_hash).then_some(key)
    }

    pub(super) fn on_get_peers_answer(&mut self, now: Instant, key: u64, from: SocketAddr, sender: NodeId, body: Body) {
        match body {
            Body::Peers { info_hash, holder, peers, .. } => {
                let Some(l) = self.lookups.get_mut(&key) else { return };
                if l.done || l.info_hash != info_hash {
                    return;
                }
                if l.hops.is_none() {
                    l.hops = Some(0);
                }
                let mut records: Vec<PeerRecord> = peers.into_iter().filter(|p| p.id != self.id).collect();
                if let Some(status) = holder {
                    records.insert(0, PeerRecord { id: sender, addr: from, status });
                }
                self.on_peers(now, key, from, records);
            }
            Body::Forwarded { .. } => {}
            Body::NotFound { request_id, .. } => {
                let Some(l) = self.lookups.get_mut(&key) else { return };
                if request_id == l.request_id {
                    l.not_found.insert(from);
                    l.open_paths = l.open_paths.saturating_sub(1);
                    self.next_first_hop(now, key);
                    self.check_lookup_exhausted(now, key);
                }
            }
            other => debug!("discovery: unexpected {} answering get_peers", other.name()),
        }
    }

    pub(super) fn on_found(
        &mut self,
        now: Instant,
        from: SocketAddr,
        request_id: u64,
        info_hash: InfoHash,
        hops: u8,
        token: Token,
    ) -> bool {
        let Some(key) = self.lookup_of(request_id, &info_hash) else { return false };
        let validated = self.validated(&from, now);
        let Some(l) = self.lookups.get_mut(&key) else { return false };
        if l.done || l.holders.contains(&from) {
            return true;
        }
        // A `found` can come from anywhere (its source is not proven): a holder never validated
        // is asked once, only as many of them as this attempt opened paths, and only as far as
        // the bytes received pay for the request.
        if !validated {
            // Payers: the first hops of this attempt still on a path (not dead, not `not_found`).
            let on_path: Vec<SocketAddr> =
                l.asked.iter().filter(|a| !l.dead.contains(*a) && !l.not_found.contains(*a)).copied().collect();
            let payable = l.named_holders > 0 && self.pay_for_holder(from, &on_path);
            let Some(l) = self.lookups.get_mut(&key) else { return false };
            if !payable {
                self.counters.amplification_suppressed += 1;
                return true;
            }
            l.named_holders -= 1;
        }
        let Some(l) = self.lookups.get_mut(&key) else { return false };
        l.holders.insert(from);
        l.hops = Some(l.hops.map_or(hops, |h| h.min(hops)));
        l.open_paths += 1;
        let rid = l.request_id;
        // The token is used for this request only: it proves nothing about `from`, so it is not
        // kept with the tokens that do (see `validated`).
        let need = Need::GetPeers { lookup: key, request_id: rid, info_hash, hop_limit: 0 };
        let body = self.body_for(&need, token);
        let attempts = if validated { self.config.rpc_attempts } else { 1 };
        if !self.send_request(now, from, body, Purpose::Need { need, retried: false }, attempts) {
            self.on_first_hop_failed(now, key, from);
        }
        true
    }

    /// `not_found` from a node deep on a path (not the first hop): that path ended.
    pub(super) fn on_not_found(&mut self, now: Instant, request_id: u64, info_hash: InfoHash) -> bool {
        let Some(key) = self.lookup_of(request_id, &info_hash) else { return false };
        let Some(l) = self.lookups.get_mut(&key) else { return false };
        // The path ran to the nodes closest to the info hash and none knows the swarm: nobody
        // does (we may be its first member). Other first hops would lead to the same place.
        if !l.done && request_id == l.request_id {
            l.open_paths = l.open_paths.saturating_sub(1);
            if l.open_paths == 0 {
                self.complete_lookup(now, key, Vec::new());
            }
        }
        true
    }

    /// Peers from an answer by `from`. Nothing is recorded yet, nor told to the torrent:
    /// when joining, we announce ourselves to those [`Node::affordable`] allows, and each that
    /// answers is recorded then ([`Node::on_announced`]). The others learn of us through the
    /// swarm's storers, or a later lookup lists them again.
    pub(super) fn on_peers(&mut self, now: Instant, key: u64, from: SocketAddr, peers: Vec<PeerRecord>) {
        let Some(l) = self.lookups.get(&key) else { return };
        let info_hash = l.info_hash;
        let join = l.join;
        if let Some(status) = join
            && self.swarms.is_member(&info_hash)
        {
            let status = self.swarms.get(&info_hash).and_then(|s| s.membership).unwrap_or(status);
            // Members we are already announcing to are not paid for twice.
            let contacting: HashSet<SocketAddr> =
                self.announcing().into_iter().filter(|(h, _)| *h == info_hash).map(|(_, a)| a).collect();
            // Members that acknowledged our current status are not contacted again; those that
            // did not answer (a lost datagram), or heard an older status (ours changed while
            // the announce was on its way), are, when a later look lists them again.
            let contacted: HashMap<SocketAddr, PeerStatus> =
                self.join_contacts.get(&info_hash).cloned().unwrap_or_default();
            let budget = JOIN_FANOUT.saturating_sub(contacted.len() + contacting.len());
            let live: Vec<PeerRecord> = peers
                .iter()
                .filter(|p| {
                    p.status != PeerStatus::Leaving
                        && p.id != self.id
                        && !contacting.contains(&p.addr)
                        && contacted.get(&p.addr) != Some(&status)
                })
                .copied()
                .collect();
            let unvalidated = |node: &Node, list: &[PeerRecord]| {
                list.iter().filter(|p| p.addr != from && !node.validated(&p.addr, now)).count()
            };
            let named = unvalidated(self, &live);
            // Paid for closest to our own id first: nodes joining at once then spread their
            // first contacts over the swarm instead of all picking the same members.
            let target = key_of_node(&self.id);
            let paid = self.affordable(now, from, 0, live, |p| key_of_node(&p.id), &target, |p| p.addr);
            // Telling a member contacted before of our new status takes no new slot.
            let (mut paid, new): (Vec<PeerRecord>, Vec<PeerRecord>) =
                paid.into_iter().partition(|p| contacted.contains_key(&p.addr));
            let new_contacts = new.len().min(budget);
            paid.extend(new.into_iter().take(budget));
            let paid_named = unvalidated(self, &paid);
            let unpaid = named - paid_named;
            let budget_left = budget - new_contacts;
            for p in paid {
                let need = Need::Announce { info_hash, status, listed: Some(p.status) };
                self.with_token(now, p.addr, need, Reach::Named);
            }
            // Members left unpaid while this answer paid for some: ask the same node again at
            // once (our routing table may not know anyone yet); its next answer pays for more.
            // A top-up asks only that node, which just proved its address, and follows only an
            // answer that bought a first contact (192 bytes of its author's credit), at most
            // `MAX_TOP_UPS` times per join.
            if unpaid > 0
                && paid_named > 0
                && budget_left > 0
                && let Some(left) = self.top_ups.get_mut(&info_hash)
                && *left > 0
            {
                *left -= 1;
                self.start_top_up(now, info_hash, from, status);
            }
        }
        self.complete_lookup(now, key, peers);
    }

    /// Attempt and lookup deadlines.
    pub(super) fn lookup_timers(&mut self, now: Instant) {
        let keys: Vec<u64> = self.lookups.iter().filter(|(_, l)| !l.done).map(|(k, _)| *k).collect();
        for key in keys {
            let Some(l) = self.lookups.get(&key) else { continue };
            if now >= l.deadline || (l.top_up && now >= l.attempt_deadline) {
                self.complete_lookup(now, key, Vec::new());
            } else if now >= l.attempt_deadline {
                debug!("discovery: lookup {} attempt {} unanswered; trying again", l.info_hash, l.attempts);
                self.new_attempt(now, key);
            }
        }
    }

    pub(super) fn complete_lookup(&mut self, now: Instant, key: u64, peers: Vec<PeerRecord>) {
        let Some(l) = self.lookups.get_mut(&key) else { return };
        if l.done {
            return;
        }
        l.done = true;
        let found = !peers.is_empty();
        let report = LookupReport {
            info_hash: l.info_hash,
            request_id: l.request_id,
            found,
            peers,
            attempts: l.attempts,
            hops: if found { l.hops } else { None },
            elapsed: now.duration_since(l.started),
        };
        debug!(
            "discovery: lookup {} {}: {} peers, {:?} hops, {} attempts, {:?}",
            report.info_hash,
            if found { "found the swarm" } else { "found nothing" },
            report.peers.len(),
            report.hops,
            report.attempts,
            report.elapsed
        );
        self.events.push(Event::LookupDone(report));
    }
}
