//! Timers: retries, follow-up lookups, housekeeping (expiry, re-announce, bucket refresh).

use super::*;

impl Node {
    /// Retries, timeouts and periodic work due at `now`.
    pub fn poll(&mut self, now: Instant) {
        let due: Vec<u32> = self.pending.iter().filter(|(_, p)| p.deadline <= now).map(|(t, _)| *t).collect();
        for txid in due {
            if let Some(p) = self.pending.get_mut(&txid)
                && p.attempts < p.max_attempts
            {
                p.attempts += 1;
                p.timeout *= 2;
                p.deadline = now + p.timeout;
                let (to, bytes) = (p.to, p.bytes.clone());
                self.counters.retries += 1;
                self.push(to, bytes);
                continue;
            }
            let Some(p) = self.take_pending(txid) else { continue };
            self.counters.timeouts += 1;
            self.routing.failed(p.to);
            match p.purpose {
                Purpose::Ping { then: Some(After::Need(need)) } | Purpose::Need { need, .. } => {
                    self.need_failed(now, p.to, need)
                }
                Purpose::Ping { .. } => {}
            }
        }
        self.lookup_timers(now);
        while let Some(&(at, hash)) = self.follow_ups.front() {
            if at > now {
                break;
            }
            self.follow_ups.pop_front();
            if let Some(status) = self.swarms.get(&hash).and_then(|s| s.membership) {
                self.start_lookup(now, hash, &[], Some(status));
            }
        }
        if self.draining && now >= self.next_drain_tell {
            self.tell_drain(now);
        }
        if now >= self.next_maintenance {
            self.next_maintenance = now + self.config.maintenance_interval;
            self.maintain(now);
        }
    }

    pub(super) fn maintain(&mut self, now: Instant) {
        self.swarms.expire(now, self.config.peer_ttl);
        self.tokens.retain(|_, (_, got)| now.duration_since(*got) < TOKEN_REUSE);
        self.lookups.retain(|_, l| !l.done || now.duration_since(l.started) < l.deadline.duration_since(l.started) * 2);
        let live: HashSet<u64> = self.lookups.keys().copied().collect();
        self.request_ids.retain(|_, key| live.contains(key));
        // Re-announce member swarms on schedule.
        let due: Vec<InfoHash> = self.next_announce.iter().filter(|(_, t)| **t <= now).map(|(h, _)| *h).collect();
        for hash in due {
            if let Some(status) = self.swarms.get(&hash).and_then(|s| s.membership) {
                self.announce_to_known(now, hash, status);
                self.start_lookup(now, hash, &[], Some(status));
                self.start_node_lookup(now, key_of_hash(&hash), NodeLookupPurpose::Announce(hash, status));
            }
            self.next_announce.insert(hash, now + self.config.announce_interval);
        }
        // Keep the routing table fresh; rejoin through the bootstrap nodes if it emptied.
        if now >= self.next_refresh {
            self.next_refresh = now + self.config.refresh_interval;
            if !self.routing.is_empty() {
                self.self_lookup(now);
            }
        }
        let before = now.checked_sub(self.config.refresh_interval).unwrap_or(now);
        let attempts = self.config.rpc_attempts;
        for e in self.routing.stale(before).into_iter().take(16) {
            self.send_request(now, e.addr, Body::Ping, Purpose::Ping { then: None }, attempts);
        }
        if self.routing.is_empty() {
            let addrs = self.bootstrap.clone();
            for addr in addrs {
                self.send_request(now, addr, Body::Ping, Purpose::Ping { then: Some(After::SelfLookup) }, attempts);
            }
        }
    }
}
