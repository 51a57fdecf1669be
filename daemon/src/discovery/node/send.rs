//! Sending: requests with retries and their slots, answers, the anti-amplification rule for
//! unvalidated addresses, tokens.

use super::*;

impl Node {
    pub(super) fn packet(&mut self, txid: u32, body: Body) -> Vec<u8> {
        wire::encode(&Packet { txid, sender: self.id, body })
    }

    pub(super) fn push(&mut self, to: SocketAddr, bytes: Vec<u8>) {
        self.counters.sent += 1;
        self.outbox.push(Transmit { to, bytes });
    }

    /// Sends a request, at most `max_attempts` times in all (the first send and retries after
    /// timeouts); false if it was not sent for want of a free slot.
    pub(super) fn send_request(
        &mut self,
        now: Instant,
        to: SocketAddr,
        body: Body,
        purpose: Purpose,
        max_attempts: u32,
    ) -> bool {
        let for_others = purpose.for_others();
        if self.pending.len() >= self.config.max_pending
            || (for_others && self.pending_for_others >= self.config.max_pending_forwards)
        {
            debug!("discovery: too many requests in flight; dropping a {}", body.name());
            if for_others {
                self.counters.forwards_refused += 1;
            }
            return false;
        }
        let mut txid: u32 = self.rng.random();
        while self.pending.contains_key(&txid) || txid == 0 {
            txid = self.rng.random();
        }
        let bytes = self.packet(txid, body);
        self.push(to, bytes.clone());
        let timeout = self.config.rpc_timeout;
        let deadline = now + timeout;
        self.pending.insert(txid, Pending { to, bytes, attempts: 1, max_attempts, timeout, deadline, purpose });
        if for_others {
            self.pending_for_others += 1;
        }
        true
    }

    /// Removes a request from those in flight.
    pub(super) fn take_pending(&mut self, txid: u32) -> Option<Pending> {
        let p = self.pending.remove(&txid)?;
        if p.purpose.for_others() {
            self.pending_for_others -= 1;
        }
        Some(p)
    }

    /// Whether a request for others (a forward) may be taken on now.
    pub(super) fn forward_slot_free(&self) -> bool {
        self.pending.len() < self.config.max_pending && self.pending_for_others < self.config.max_pending_forwards
    }

    /// Whether `addr` proved it receives traffic there: it is in the routing table (it
    /// answered a request of ours there, or presented our token), or answered one of ours
    /// lately (we hold a token it sent us in answer).
    pub(super) fn validated(&self, addr: &SocketAddr, now: Instant) -> bool {
        self.routing.get_by_addr(addr).is_some() || self.fresh_token(addr, now).is_some()
    }

    /// Sends allowed for a request to `to`: one to an address only named by others and never
    /// validated, the configured number otherwise.
    pub(super) fn attempts_for(&self, now: Instant, to: &SocketAddr, reach: Reach) -> u32 {
        if reach == Reach::Proven || self.validated(to, now) { self.config.rpc_attempts } else { 1 }
    }

    /// Sends an answer to a validated address.
    pub(super) fn reply(&mut self, to: SocketAddr, txid: u32, body: Body) {
        let bytes = self.packet(txid, body);
        self.push(to, bytes);
    }

    /// Sends to an address that has not proven it receives: only if no larger than `budget`,
    /// the size of the datagram that caused this send.
    pub(super) fn send_unvalidated(&mut self, to: SocketAddr, txid: u32, body: Body, budget: usize) {
        let bytes = self.packet(txid, body);
        if bytes.len() > budget {
            self.counters.amplification_suppressed += 1;
            return;
        }
        self.push(to, bytes);
    }

    /// Sends a forward's answer (`found`, `not_found`) to its origin, never validated, on the
    /// forward's bytes (`budget`) — which also earned `forwarder` byte credit when they arrived.
    /// That credit is spent by as much, so the same bytes do not pay twice: once for this
    /// answer, and again for first contacts on the forwarder's word (together up to 1.5 times
    /// what one contact sent, found by the amplification property test).
    pub(super) fn answer_forward(&mut self, forwarder: SocketAddr, origin: SocketAddr, body: Body, budget: usize) {
        let bytes = self.packet(0, body);
        if bytes.len() > budget {
            self.counters.amplification_suppressed += 1;
            return;
        }
        self.credit.spend_up_to(&forwarder, bytes.len());
        self.push(origin, bytes);
    }

    pub(super) fn fresh_token(&self, addr: &SocketAddr, now: Instant) -> Option<Token> {
        self.tokens.get(addr).filter(|(_, got)| now.duration_since(*got) < TOKEN_REUSE).map(|(t, _)| *t)
    }

    pub(super) fn store_token(&mut self, addr: SocketAddr, token: Token, now: Instant) {
        if self.tokens.len() >= MAX_TOKENS_KEPT && !self.tokens.contains_key(&addr) {
            self.tokens.retain(|_, (_, got)| now.duration_since(*got) < TOKEN_REUSE);
            if self.tokens.len() >= MAX_TOKENS_KEPT {
                return;
            }
        }
        self.tokens.insert(addr, (token, now));
    }

    pub(super) fn body_for(&self, need: &Need, token: Token) -> Body {
        match need {
            Need::FindNode { target, .. } => Body::FindNode { target: *target, token },
            Need::GetPeers { request_id, info_hash, hop_limit, .. } => {
                Body::GetPeers { info_hash: *info_hash, request_id: *request_id, hop_limit: *hop_limit, token }
            }
            Need::Forward(job) => Body::Forward {
                info_hash: job.info_hash,
                request_id: job.request_id,
                hops: job.hops,
                hops_left: job.hops_left,
                origin: job.origin,
                token,
            },
            Need::Announce { info_hash, status, .. } => {
                Body::Announce { info_hash: *info_hash, status: *status, token }
            }
        }
    }

    /// Sends a token-bearing request, pinging first for a token if we have none; false if it
    /// was not sent for want of a free slot.
    pub(super) fn with_token(&mut self, now: Instant, to: SocketAddr, need: Need, reach: Reach) -> bool {
        let attempts = self.attempts_for(now, &to, reach);
        match self.fresh_token(&to, now) {
            Some(token) => {
                let body = self.body_for(&need, token);
                self.send_request(now, to, body, Purpose::Need { need, retried: false }, attempts)
            }
            None => self.send_request(now, to, Body::Ping, Purpose::Ping { then: Some(After::Need(need)) }, attempts),
        }
    }
}
