//! find_node lookups: iterative search for the nodes closest to a key, and paying for the
//! addresses answers name.

use super::*;

impl Node {
    pub(super) fn start_node_lookup(&mut self, now: Instant, target: Key, purpose: NodeLookupPurpose) {
        let mut id: u64 = self.rng.random();
        while self.node_lookups.contains_key(&id) {
            id = self.rng.random();
        }
        let candidates =
            self.routing.closest(&target, self.config.k).into_iter().map(|e| (e.record(), Candidate::Fresh)).collect();
        self.node_lookups.insert(id, NodeLookup { target, purpose, candidates, in_flight: 0 });
        self.step_node_lookup(now, id);
    }

    pub(super) fn step_node_lookup(&mut self, now: Instant, id: u64) {
        let (k, alpha) = (self.config.k, self.config.alpha);
        let Some(l) = self.node_lookups.get_mut(&id) else { return };
        let target = l.target;
        l.candidates.sort_by_key(|(n, _)| distance(&key_of_node(&n.id), &target));
        let mut to_ask = Vec::new();
        // Among the k closest not known dead (a few per host), ask those not yet asked.
        let window: Vec<SocketAddr> =
            few_per_host(l.candidates.iter().filter(|(_, s)| *s != Candidate::Failed).map(|(n, _)| n.addr), |a| *a, k);
        for (n, state) in l.candidates.iter_mut().filter(|(n, _)| window.contains(&n.addr)) {
            if l.in_flight + to_ask.len() >= alpha {
                break;
            }
            if *state == Candidate::Fresh {
                *state = Candidate::Asked;
                to_ask.push(*n);
            }
        }
        l.in_flight += to_ask.len();
        let finished = l.in_flight == 0;
        // Candidates from answers were only named; those from the routing table are validated.
        for n in to_ask {
            self.with_token(now, n.addr, Need::FindNode { lookup: id, target }, Reach::Named);
        }
        if finished {
            self.finish_node_lookup(now, id);
        }
    }

    /// Keeps the items of an answer from `source` that this node may contact: all those it
    /// has validated ([`Node::validated`]), and, closest to `target` first, as many others as
    /// `source` pays for. Each costs one request of `MIN_REQUEST_LEN` bytes (sent once, never
    /// retried, see [`Reach::Named`]), spent from the bytes `source` sent this node (the
    /// answer included; [`ByteCredit`]). So a forged list never makes this node send victims
    /// more bytes than its author sent, and a lone small answer (one record: 80 to 122
    /// bytes) pays for nothing until its author has sent more. `keep` bytes of credit are left
    /// unspent (see [`Node::on_nodes`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn affordable<T>(
        &mut self,
        now: Instant,
        source: SocketAddr,
        keep: usize,
        mut items: Vec<T>,
        key: impl Fn(&T) -> Key,
        target: &Key,
        addr: impl Fn(&T) -> SocketAddr,
    ) -> Vec<T> {
        items.sort_by_key(|i| distance(&key(i), target));
        // The source itself has just answered us: it is validated by this very answer.
        let validated: Vec<bool> = items.iter().map(|i| addr(i) == source || self.validated(&addr(i), now)).collect();
        let listed = items.len();
        let mut validated = validated.into_iter();
        items.retain(|_| validated.next().unwrap_or(false) || self.credit.spend(&source, wire::MIN_REQUEST_LEN, keep));
        if items.len() < listed {
            debug!(
                "discovery: {} of {listed} addresses {source} listed not contacted (not paid for)",
                listed - items.len()
            );
        }
        items
    }

    /// Pays for one request to `holder`, the never-validated source of a `found`: first from
    /// the bytes that came from its address (the `found` itself included: a spoofer pays for
    /// its own datagrams), the rest from the credit of a first hop of the attempt (`asked`),
    /// the validated node that carried the path the `found` answers. Anyone able to send a
    /// `found` for this request id is on such a path, which that first hop chose. So the bytes
    /// sent to such holders never exceed the bytes received from them and from the first hops
    /// together, whoever on the path spoofs; false (nothing spent) if they do not cover 192.
    pub(super) fn pay_for_holder(&mut self, holder: SocketAddr, asked: &[SocketAddr]) -> bool {
        let own = self.credit.balance(&holder).min(wire::MIN_REQUEST_LEN);
        let rest = wire::MIN_REQUEST_LEN - own;
        let payer = match rest {
            0 => None,
            _ => match asked.iter().copied().find(|a| *a != holder && self.credit.balance(a) >= rest) {
                Some(a) => Some(a),
                None => return false,
            },
        };
        if own > 0 {
            self.credit.spend(&holder, own, 0);
        }
        if let Some(payer) = payer {
            self.credit.spend(&payer, rest, 0);
        }
        true
    }

    /// Nodes from a find_node answer by `from` (see [`Node::affordable`]). While we also await
    /// a swarm's members from `from`, one request's worth of its credit is kept for them: in a
    /// small network both answers are small, and the members matter more.
    pub(super) fn on_nodes(&mut self, now: Instant, id: u64, from: SocketAddr, nodes: Vec<NodeRecord>) {
        let own = self.id;
        let Some(l) = self.node_lookups.get(&id) else { return };
        let target = l.target;
        // Only new candidates are worth paying for.
        let mut nodes = nodes;
        nodes.retain(|n| n.id != own && !l.candidates.iter().any(|(c, _)| c.id == n.id || c.addr == n.addr));
        let members_awaited = self.pending.values().any(|p| {
            p.to == from
                && matches!(
                    p.purpose,
                    Purpose::Need { need: Need::GetPeers { .. }, .. }
                        | Purpose::Ping { then: Some(After::Need(Need::GetPeers { .. })) }
                )
        });
        let keep = if members_awaited { wire::MIN_REQUEST_LEN } else { 0 };
        let nodes = self.affordable(now, from, keep, nodes, |n| key_of_node(&n.id), &target, |n| n.addr);
        let Some(l) = self.node_lookups.get_mut(&id) else { return };
        l.in_flight = l.in_flight.saturating_sub(1);
        for (n, state) in l.candidates.iter_mut() {
            if n.addr == from {
                *state = Candidate::Answered;
            }
        }
        for n in nodes {
            if !l.candidates.iter().any(|(c, _)| c.id == n.id || c.addr == n.addr) {
                l.candidates.push((n, Candidate::Fresh));
            }
        }
        // Keep the candidate list bounded, and a few per host (one host's many ids beside the
        // target must not push every other host out).
        l.candidates.sort_by_key(|(n, _)| distance(&key_of_node(&n.id), &target));
        let candidates = std::mem::take(&mut l.candidates);
        l.candidates = few_per_host(candidates, |(n, _)| n.addr, self.config.k * 4);
        self.step_node_lookup(now, id);
    }

    pub(super) fn on_node_failed(&mut self, now: Instant, id: u64, addr: SocketAddr) {
        let Some(l) = self.node_lookups.get_mut(&id) else { return };
        l.in_flight = l.in_flight.saturating_sub(1);
        for (n, state) in l.candidates.iter_mut() {
            if n.addr == addr {
                *state = Candidate::Failed;
            }
        }
        self.step_node_lookup(now, id);
    }

    /// Looks up a random id in every bucket farther from us than our closest neighbour, so that
    /// the table knows some node in every part of the keyspace (Kademlia's join refresh).
    pub(super) fn refresh_buckets(&mut self, now: Instant) {
        let own = key_of_node(&self.id);
        let Some(closest) = self.routing.closest(&own, 1).first().map(|e| key_of_node(&e.id)) else { return };
        let depth = crate::discovery::key::common_prefix_len(&own, &closest).min(64);
        for bit in 0..depth {
            let mut target: Key = self.rng.random();
            // Share our first `bit` bits, differ at bit `bit`.
            for b in 0..bit {
                let (byte, mask) = (b / 8, 0x80u8 >> (b % 8));
                target[byte] = (target[byte] & !mask) | (own[byte] & mask);
            }
            let (byte, mask) = (bit / 8, 0x80u8 >> (bit % 8));
            target[byte] = (target[byte] & !mask) | (!own[byte] & mask);
            self.start_node_lookup(now, target, NodeLookupPurpose::Refresh);
        }
    }

    pub(super) fn finish_node_lookup(&mut self, now: Instant, id: u64) {
        let Some(l) = self.node_lookups.remove(&id) else { return };
        let info_hash = match l.purpose {
            NodeLookupPurpose::SelfLookup => return self.refresh_buckets(now),
            NodeLookupPurpose::Refresh => return,
            NodeLookupPurpose::Announce(info_hash, _) => info_hash,
        };
        // Announce to the k closest nodes that answered (the swarm's storers; a few per host),
        // and take part ourselves if we are among the closest.
        let status = self.swarms.get(&info_hash).and_then(|s| s.membership);
        let Some(status) = status else { return };
        let answered = l.candidates.iter().filter(|(_, s)| *s == Candidate::Answered).map(|(n, _)| n.addr);
        let closest = few_per_host(answered, |a| *a, self.config.k);
        for addr in closest {
            self.with_token(now, addr, Need::Announce { info_hash, status, listed: None }, Reach::Proven);
        }
    }
}
