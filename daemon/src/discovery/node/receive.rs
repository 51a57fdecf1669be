//! Receiving: every datagram, requests (answered, forwarded, stored) and answers to ours.

use super::*;

impl Node {
    /// Handles one datagram from `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let from = canonical(from);
        self.counters.received += 1;
        // Decoding is cheap and bounded; it tells answers we asked for (never limited: their
        // rate is our own) from everything else (limited per source).
        let packet = match wire::decode(bytes) {
            Ok(p) => p,
            Err(e) => {
                trace!("discovery: dropped {} bytes from {from}: {e}", bytes.len());
                self.counters.dropped_malformed += 1;
                return;
            }
        };
        let expected = !packet.body.is_request() && self.pending.get(&packet.txid).is_some_and(|p| p.to == from);
        if !expected && !self.limiter.allow(&from, now) {
            self.counters.rate_limited += 1;
            return;
        }
        if packet.sender == self.id {
            self.counters.dropped_unsolicited += 1;
            return;
        }
        // Whoever sent it (spoofed or not), only answers from that address to our requests can
        // spend this: what we send on its word never exceeds what it sent.
        self.credit.earn(&from, bytes.len());
        let handled = if packet.body.is_request() {
            self.handle_request(now, from, packet, bytes.len());
            true
        } else {
            self.handle_answer(now, from, packet)
        };
        if handled {
            self.counters.handled += 1;
        } else {
            self.counters.dropped_unsolicited += 1;
        }
    }

    pub(super) fn token_ok(&mut self, now: Instant, from: SocketAddr, sender: &NodeId, token: &Token) -> bool {
        self.issuer.check(&mut self.rng, now, from, sender, token)
    }

    pub(super) fn refuse_token(&mut self, now: Instant, from: SocketAddr, txid: u32, sender: NodeId, len: usize) {
        self.counters.bad_tokens += 1;
        let token = self.issuer.issue(&mut self.rng, now, from, &sender);
        self.send_unvalidated(from, txid, Body::Retry { token }, len);
    }

    /// A validated request proves the sender receives at its address: it may enter the
    /// routing table.
    pub(super) fn learn(&mut self, now: Instant, id: NodeId, addr: SocketAddr) {
        if self.routing.insert_verified(id, addr, now) == Insert::Added {
            trace!("discovery: routing table +{id:?} at {addr} ({} nodes)", self.routing.len());
        }
    }

    pub(super) fn handle_request(&mut self, now: Instant, from: SocketAddr, packet: Packet, len: usize) {
        let sender = packet.sender;
        let txid = packet.txid;
        match packet.body {
            Body::Ping => {
                // The only answer: a ping proves nothing about its source. The node is learned
                // when it comes back with a token (any other request).
                let token = self.issuer.issue(&mut self.rng, now, from, &sender);
                self.send_unvalidated(from, txid, Body::Pong { token, observed: from }, len);
            }
            Body::FindNode { target, token } => {
                if !self.token_ok(now, from, &sender, &token) {
                    return self.refuse_token(now, from, txid, sender, len);
                }
                self.learn(now, sender, from);
                let nodes: Vec<NodeRecord> = self
                    .routing
                    .closest(&target, MAX_NODES.min(self.config.k * 2))
                    .iter()
                    .filter(|e| e.addr != from)
                    .map(|e| e.record())
                    .collect();
                self.reply(from, txid, Body::Nodes { nodes });
            }
            Body::GetPeers { info_hash, request_id, hop_limit, token } => {
                if !self.token_ok(now, from, &sender, &token) {
                    return self.refuse_token(now, from, txid, sender, len);
                }
                self.learn(now, sender, from);
                let origin = NodeRecord { id: sender, addr: from };
                // Answering is idempotent (and the origin asks a holder directly with the same
                // request id after `found`); forwarding is not, so only that is deduplicated.
                if self.swarms.knows(&info_hash) {
                    let peers = self.swarms.sample(&info_hash, MAX_PEERS, &mut self.rng);
                    let peers: Vec<PeerRecord> = peers.into_iter().filter(|p| p.addr != from).collect();
                    let holder = self.swarms.get(&info_hash).and_then(|s| s.membership).map(PeerStatus::listed);
                    self.reply(from, txid, Body::Peers { request_id, info_hash, holder, peers });
                    return;
                }
                let hops_left = hop_limit.min(self.config.hop_limit);
                if hops_left > 0 && !self.forward_slot_free() {
                    // Busy forwarding for others: no answer (the origin retries, then asks
                    // another first hop), and nothing remembered, so a retry is handled anew.
                    self.counters.forwards_refused += 1;
                    return;
                }
                if !self.mark_seen(now, request_id, from) {
                    self.counters.duplicates += 1;
                    self.reply(from, txid, Body::Forwarded { request_id });
                    return;
                }
                let job = ForwardJob {
                    info_hash,
                    request_id,
                    hops: 0,
                    hops_left,
                    origin,
                    tried: vec![from],
                    budget: len,
                    origin_validated: true,
                    sideways: false,
                };
                match if hops_left == 0 { Hop::NoneLeft } else { self.forward(now, job) } {
                    Hop::Sent => self.reply(from, txid, Body::Forwarded { request_id }),
                    Hop::NoneLeft => self.reply(from, txid, Body::NotFound { request_id, info_hash, hops: 0 }),
                    Hop::Busy => {}
                }
            }
            Body::Forward { info_hash, request_id, hops, hops_left, origin, token } => {
                if !self.token_ok(now, from, &sender, &token) {
                    return self.refuse_token(now, from, txid, sender, len);
                }
                self.learn(now, sender, from);
                if hops_left > 0 && !self.swarms.knows(&info_hash) && !self.forward_slot_free() {
                    // Busy forwarding for others: no acknowledgement, so the previous hop
                    // routes around this node.
                    self.counters.forwards_refused += 1;
                    return;
                }
                self.reply(from, txid, Body::Forwarded { request_id });
                if origin.id == self.id || !self.mark_seen(now, request_id, origin.addr) {
                    self.counters.duplicates += 1;
                    return;
                }
                let hops = hops.saturating_add(1);
                if self.swarms.knows(&info_hash) {
                    let token = self.issuer.issue(&mut self.rng, now, origin.addr, &origin.id);
                    let found = Body::Found { request_id, info_hash, hops, token };
                    self.answer_forward(from, origin.addr, found, len);
                    return;
                }
                let job = ForwardJob {
                    info_hash,
                    request_id,
                    hops,
                    hops_left: hops_left.saturating_sub(1),
                    origin,
                    tried: vec![from, origin.addr],
                    budget: len,
                    origin_validated: false,
                    sideways: false,
                };
                if hops_left == 0 || self.forward(now, job) == Hop::NoneLeft {
                    let not_found = Body::NotFound { request_id, info_hash, hops };
                    self.answer_forward(from, origin.addr, not_found, len);
                }
            }
            Body::Announce { info_hash, status, token } => {
                if !self.token_ok(now, from, &sender, &token) {
                    return self.refuse_token(now, from, txid, sender, len);
                }
                self.learn(now, sender, from);
                let record = PeerRecord { id: sender, addr: from, status };
                let member = self.swarms.is_member(&info_hash);
                if status == PeerStatus::Leaving {
                    self.swarms.remove_peer(&info_hash, &from);
                    debug!("discovery: {info_hash}: {from} left");
                    // The sender proved its address: its torrent-side record goes too.
                    if member {
                        self.events.push(Event::Peers { info_hash, peers: vec![record] });
                    }
                } else if let Some(stored) = self.store_announce(now, info_hash, record)
                    && member
                {
                    self.events.push(Event::Peers { info_hash, peers: vec![stored] });
                }
                // Answered whether stored or not: the announcer has nothing to retry. A draining
                // announcer counts us as a copy only by our own status, from us (`Node::drain`).
                let answer = if status == PeerStatus::Draining {
                    let holder = self.swarms.get(&info_hash).and_then(|s| s.membership);
                    Body::AnnouncedDraining { info_hash, holder }
                } else {
                    Body::Announced { info_hash }
                };
                self.reply(from, txid, answer);
            }
            _ => unreachable!("only requests reach handle_request"),
        }
    }

    /// Whether this node is among the `k` nodes closest to `info_hash` that its routing table
    /// knows: fewer than `k` hosts have a reachable node in it that is closer (one host counts
    /// once, however many identities it placed beside the hash). Those are the nodes announces
    /// are sent to (the announcer's find_node converges on them) and where greedy get_peers
    /// paths end.
    pub(super) fn among_closest(&self, info_hash: &InfoHash) -> bool {
        let target = key_of_hash(info_hash);
        let mine = distance(&key_of_node(&self.id), &target);
        self.routing.closer_count(&target, &mine, self.config.k) < self.config.k
    }

    /// Stores a (validated) announce if this node should: for a swarm it is a member of, or one
    /// it is among the closest to — a new stored swarm only within the source host's budget.
    /// Returns the record as stored, or `None` if nothing was stored.
    pub(super) fn store_announce(
        &mut self,
        now: Instant,
        info_hash: InfoHash,
        record: PeerRecord,
    ) -> Option<PeerRecord> {
        let from = record.addr;
        if !self.swarms.is_member(&info_hash) {
            if !self.among_closest(&info_hash) {
                self.counters.announces_not_stored += 1;
                trace!("discovery: {info_hash}: not storing {from}'s announce (not among the closest)");
                return None;
            }
            if self.swarms.get(&info_hash).is_none() && !self.new_swarms.allow(from.ip(), now) {
                self.counters.new_swarms_limited += 1;
                debug!("discovery: {info_hash}: not storing {from}'s announce (its host creates swarms too fast)");
                return None;
            }
        }
        let status = record.status;
        let stored = match self.swarms.upsert(info_hash, record, now) {
            Upsert::New => {
                debug!("discovery: {info_hash}: {from} joined as {}", status.as_str());
                status
            }
            Upsert::StatusChanged(s) => {
                debug!("discovery: {info_hash}: {from} is now {}", s.as_str());
                s
            }
            Upsert::StaleIdle(s) => {
                debug!("discovery: {info_hash}: {from} is still {} (its join arrived late)", s.as_str());
                s
            }
            Upsert::Refreshed => status,
            Upsert::Rejected => return None,
        };
        Some(PeerRecord { status: stored, ..record })
    }

    /// Records a handled request; false if it was seen before.
    pub(super) fn mark_seen(&mut self, now: Instant, request_id: u64, origin: SocketAddr) -> bool {
        while let Some(&(t, key)) = self.seen_order.front() {
            if now.duration_since(t) < self.config.seen_ttl && self.seen_order.len() < self.config.max_seen {
                break;
            }
            self.seen_order.pop_front();
            self.seen.remove(&key);
        }
        if !self.seen.insert((request_id, origin)) {
            return false;
        }
        self.seen_order.push_back((now, (request_id, origin)));
        true
    }

    /// Sends a forward job to the best next hop not tried yet; false if there is none.
    ///
    /// Greedy: the known node closest to the info hash and closer than this node. When there is
    /// none (this node believes itself the closest) but it does not know the swarm, the request
    /// takes one sideways step to the nearest other node with one hop left — the swarm's
    /// storers are this node's nearest neighbours in the keyspace, and its table may be missing
    /// the one that is closer still. The path stays a single path: no fan-out, so one request
    /// never makes more than one `found`/`not_found` reach the origin.
    pub(super) fn forward(&mut self, now: Instant, job: ForwardJob) -> Hop {
        if !self.forward_slot_free() {
            self.counters.forwards_refused += 1;
            return Hop::Busy;
        }
        let target = key_of_hash(&job.info_hash);
        match self.config.forwarding {
            Forwarding::Greedy => {
                let mine = distance(&key_of_node(&self.id), &target);
                let candidates = self.routing.closest(&target, self.config.k * 2);
                let closer = candidates
                    .iter()
                    .find(|e| !job.tried.contains(&e.addr) && distance(&key_of_node(&e.id), &target) < mine);
                let mut job = job;
                let next = match closer {
                    Some(n) if !job.sideways => *n,
                    _ => {
                        let side = candidates.iter().find(|e| !job.tried.contains(&e.addr));
                        match side {
                            Some(n) if job.hops_left > 0 => {
                                job.sideways = true;
                                job.hops_left = 1;
                                *n
                            }
                            _ => return Hop::NoneLeft,
                        }
                    }
                };
                job.tried.push(next.addr);
                self.counters.forwarded += 1;
                // Next hops come from the routing table.
                if self.with_token(now, next.addr, Need::Forward(job), Reach::Proven) { Hop::Sent } else { Hop::Busy }
            }
            Forwarding::Flood => {
                let all: Vec<SocketAddr> = self
                    .routing
                    .entries()
                    .filter(|e| e.reachable() && !job.tried.contains(&e.addr))
                    .map(|e| e.addr)
                    .collect();
                if all.is_empty() {
                    return Hop::NoneLeft;
                }
                for addr in all {
                    self.counters.forwarded += 1;
                    self.with_token(now, addr, Need::Forward(job.clone()), Reach::Proven);
                }
                Hop::Sent
            }
        }
    }

    /// Handles an answer; false if nobody asked for it.
    pub(super) fn handle_answer(&mut self, now: Instant, from: SocketAddr, packet: Packet) -> bool {
        // `found` and `not_found` come from nodes the origin never asked: match by request id.
        match &packet.body {
            Body::Found { request_id, info_hash, hops, token } => {
                return self.on_found(now, from, *request_id, *info_hash, *hops, *token);
            }
            Body::NotFound { request_id, info_hash, .. }
                if self.pending.get(&packet.txid).is_none_or(|p| p.to != from) =>
            {
                return self.on_not_found(now, *request_id, *info_hash);
            }
            _ => {}
        }
        let Some(pending) = self.pending.get(&packet.txid) else { return false };
        if pending.to != from {
            return false;
        }
        let Some(pending) = self.take_pending(packet.txid) else { return false };
        // It answered, at the address we asked: a verified node.
        self.routing.insert_verified(packet.sender, from, now);
        self.routing.seen(&packet.sender, now);
        match (pending.purpose, packet.body) {
            (Purpose::Ping { then }, Body::Pong { token, .. }) => {
                self.store_token(from, token, now);
                match then {
                    Some(After::Need(need)) => {
                        let body = self.body_for(&need, token);
                        let attempts = self.config.rpc_attempts;
                        if !self.send_request(
                            now,
                            from,
                            body,
                            Purpose::Need { need: need.clone(), retried: false },
                            attempts,
                        ) {
                            self.need_failed(now, from, need);
                        }
                    }
                    Some(After::SelfLookup) => self.self_lookup(now),
                    None => {}
                }
            }
            (Purpose::Need { need, retried }, Body::Retry { token }) => {
                self.store_token(from, token, now);
                if retried {
                    self.need_failed(now, from, need);
                } else {
                    let body = self.body_for(&need, token);
                    let attempts = self.config.rpc_attempts;
                    self.send_request(now, from, body, Purpose::Need { need, retried: true }, attempts);
                }
            }
            (Purpose::Need { need: Need::FindNode { lookup, .. }, .. }, Body::Nodes { nodes }) => {
                self.on_nodes(now, lookup, from, nodes);
            }
            (Purpose::Need { need: Need::GetPeers { lookup, .. }, .. }, body) => {
                self.on_get_peers_answer(now, lookup, from, packet.sender, body);
            }
            (Purpose::Need { need: Need::Forward(_), .. }, Body::Forwarded { .. }) => {}
            (Purpose::Need { need: Need::Announce { info_hash, status, listed }, .. }, Body::Announced { .. }) => {
                self.on_announced(now, info_hash, from, packet.sender, status, listed);
            }
            (
                Purpose::Need { need: Need::Announce { info_hash, status: PeerStatus::Draining, listed }, .. },
                Body::AnnouncedDraining { info_hash: answered, holder },
            ) if answered == info_hash => {
                self.on_drain_answer(now, info_hash, from, packet.sender, holder, listed);
            }
            (purpose, body) => {
                debug!("discovery: unexpected {} from {from} for {purpose:?}", body.name());
            }
        }
        true
    }

    /// Our announce to `from` was answered: it is alive at that address. A member already in
    /// our table is refreshed; one a lookup answer listed is recorded now, with the status it
    /// was listed with. Either way the torrent hears of it.
    pub(super) fn on_announced(
        &mut self,
        now: Instant,
        info_hash: InfoHash,
        from: SocketAddr,
        sender: NodeId,
        announced: PeerStatus,
        listed: Option<PeerStatus>,
    ) {
        if !self.swarms.is_member(&info_hash) {
            return;
        }
        // A member a lookup listed acknowledged this status: later looks of this join need not
        // tell it again (unless ours changes).
        if listed.is_some()
            && let Some(contacted) = self.join_contacts.get_mut(&info_hash)
        {
            contacted.insert(from, announced);
        }
        let known = self.swarms.get(&info_hash).and_then(|s| s.peers.get(&from)).map(|p| p.status);
        let Some(status) = known.or(listed) else { return };
        let record = PeerRecord { id: sender, addr: from, status };
        let stored = match self.swarms.upsert(info_hash, record, now) {
            Upsert::New | Upsert::Refreshed => status,
            Upsert::StatusChanged(s) | Upsert::StaleIdle(s) => s,
            Upsert::Rejected => return,
        };
        if known.is_none() {
            debug!("discovery: {info_hash}: {from} answered as a member listed {}", status.as_str());
        }
        self.events.push(Event::Peers { info_hash, peers: vec![PeerRecord { status: stored, ..record }] });
    }

    /// A node answered our `draining` announce with its own status in the swarm (none: not a
    /// member): a member is recorded with that status, which is what the drain counts; one no
    /// longer in the swarm leaves our table and the torrent's candidates. `listed`: as for
    /// [`Node::on_announced`].
    pub(super) fn on_drain_answer(
        &mut self,
        now: Instant,
        info_hash: InfoHash,
        from: SocketAddr,
        sender: NodeId,
        holder: Option<PeerStatus>,
        listed: Option<PeerStatus>,
    ) {
        if !self.swarms.is_member(&info_hash) {
            return;
        }
        if listed.is_some()
            && let Some(contacted) = self.join_contacts.get_mut(&info_hash)
        {
            contacted.insert(from, PeerStatus::Draining);
        }
        match holder {
            // Most nodes near the hash that a re-announce tells are storers, not members.
            None | Some(PeerStatus::Leaving) => {
                if self.swarms.remove_peer(&info_hash, &from) {
                    debug!("discovery: {info_hash}: {from} is not in the swarm (it answered our drain)");
                    let gone = PeerRecord { id: sender, addr: from, status: PeerStatus::Leaving };
                    self.events.push(Event::Peers { info_hash, peers: vec![gone] });
                }
            }
            Some(status) => {
                let record = PeerRecord { id: sender, addr: from, status };
                if self.swarms.upsert(info_hash, record, now) == Upsert::Rejected {
                    return;
                }
                self.swarms.record_drain_answer(&info_hash, &from, status, now);
                self.events.push(Event::Peers { info_hash, peers: vec![record] });
            }
        }
    }

    pub(super) fn need_failed(&mut self, now: Instant, to: SocketAddr, need: Need) {
        match need {
            Need::FindNode { lookup, .. } => self.on_node_failed(now, lookup, to),
            Need::GetPeers { lookup, .. } => self.on_first_hop_failed(now, lookup, to),
            // Flooding never re-routes a failed hop: every neighbour was tried anyway.
            Need::Forward(_) if self.config.forwarding == Forwarding::Flood => {}
            Need::Forward(job) => {
                // Replace the dead hop by the next closest (when busy, the origin's own
                // timers take over).
                if self.forward(now, job.clone()) == Hop::NoneLeft {
                    let body = Body::NotFound { request_id: job.request_id, info_hash: job.info_hash, hops: job.hops };
                    if job.origin_validated {
                        self.reply(job.origin.addr, 0, body);
                    } else {
                        // The first address tried is the node that sent the forward.
                        match job.tried.first().copied() {
                            Some(forwarder) => self.answer_forward(forwarder, job.origin.addr, body, job.budget),
                            None => self.send_unvalidated(job.origin.addr, 0, body, job.budget),
                        }
                    }
                }
            }
            Need::Announce { info_hash, .. } => {
                // A member that does not answer is gone.
                self.swarms.remove_peer(&info_hash, &to);
            }
        }
    }
}
