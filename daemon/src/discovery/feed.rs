//! Members delivered to the torrents subscribed to their swarms (owned by the discovery
//! driver's task).
//!
//! Invariants: every member the node accepts reaches every subscriber of its swarm, once per
//! change, in one batch per flush; what a busy torrent cannot take is kept (one record per
//! address, the latest, at most [`MAX_UNDELIVERED`]) and offered again; a torrent gone is
//! forgotten at the next delivery.

use std::collections::HashMap;

use log::debug;

use crate::descriptor::InfoHash;
use crate::discovery::wire::PeerRecord;

/// Batches of members queued for one subscribed torrent.
pub const SUBSCRIBER_QUEUE: usize = 64;
/// Members kept for a subscribed torrent whose queue is full, at most (twice a swarm's peer
/// table at its default size: every member and as many leavers).
pub const MAX_UNDELIVERED: usize = 1024;

/// Members for the torrents subscribed to their swarms, owned by the service task.
///
/// Every member the node accepts ([`super::node::Event::Peers`]) is queued for each subscriber of its swarm
/// and delivered in one batch per [`PeerFeed::deliver`] (once per flush of the node). A torrent
/// busy elsewhere may leave its queue full ([`SUBSCRIBER_QUEUE`] batches): what could not be
/// sent is kept, merged with what comes next, and offered again at the next flush, so an
/// accepted member is never lost to a burst — the torrent would otherwise not hear of it until
/// its next re-announce, 10 minutes later.
#[derive(Default)]
pub struct PeerFeed {
    subscribers: HashMap<InfoHash, Vec<Subscriber>>,
}

/// One torrent waiting for members of a swarm.
struct Subscriber {
    peers: async_channel::Sender<Vec<PeerRecord>>,
    /// Accepted, not yet delivered: one record per address, the latest (a status change or a
    /// leave replaces what was queued for that address), at most [`MAX_UNDELIVERED`].
    undelivered: Vec<PeerRecord>,
}

impl PeerFeed {
    /// A torrent subscribes to `info_hash`; `known` (the members known now) comes first.
    pub fn subscribe(
        &mut self,
        info_hash: InfoHash,
        peers: async_channel::Sender<Vec<PeerRecord>>,
        known: Vec<PeerRecord>,
    ) {
        let mut sub = Subscriber { peers, undelivered: Vec::new() };
        sub.merge(&info_hash, &known);
        self.subscribers.entry(info_hash).or_default().push(sub);
    }

    pub fn unsubscribe(&mut self, info_hash: &InfoHash) {
        self.subscribers.remove(info_hash);
    }

    /// Members accepted for `info_hash`, for every subscriber of it.
    pub fn queue(&mut self, info_hash: &InfoHash, peers: &[PeerRecord]) {
        if let Some(subs) = self.subscribers.get_mut(info_hash) {
            for sub in subs.iter_mut() {
                sub.merge(info_hash, peers);
            }
        }
    }

    /// Sends each subscriber what it has not received yet, as one batch; keeps the batch for
    /// the next call if its queue is full, and forgets subscribers that went away.
    pub fn deliver(&mut self) {
        for subs in self.subscribers.values_mut() {
            subs.retain_mut(|sub| {
                if sub.undelivered.is_empty() {
                    return !sub.peers.is_closed();
                }
                match sub.peers.try_send(std::mem::take(&mut sub.undelivered)) {
                    Ok(()) => true,
                    Err(async_channel::TrySendError::Full(batch)) => {
                        sub.undelivered = batch;
                        true
                    }
                    Err(async_channel::TrySendError::Closed(_)) => false,
                }
            });
        }
        self.subscribers.retain(|_, subs| !subs.is_empty());
    }
}

impl Subscriber {
    fn merge(&mut self, info_hash: &InfoHash, peers: &[PeerRecord]) {
        for p in peers {
            match self.undelivered.iter().position(|q| q.addr == p.addr) {
                Some(i) => self.undelivered[i] = *p,
                None if self.undelivered.len() < MAX_UNDELIVERED => self.undelivered.push(*p),
                None => debug!(
                    "discovery: {info_hash}: {MAX_UNDELIVERED} members wait for a torrent that takes none; {} not passed on",
                    p.addr
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::discovery::wire::PeerStatus;
    use crate::node_id::NodeId;

    fn member(i: u16, status: PeerStatus) -> PeerRecord {
        PeerRecord {
            id: NodeId([i as u8; 32]),
            addr: SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 6690)),
            status,
        }
    }

    fn drain(rx: &async_channel::Receiver<Vec<PeerRecord>>) -> Vec<Vec<PeerRecord>> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    /// Members accepted in one flush reach each subscriber as one batch.
    #[test]
    fn members_accepted_together_arrive_as_one_batch() {
        let hash = InfoHash([1; 32]);
        let mut feed = PeerFeed::default();
        let (tx, rx) = async_channel::bounded(SUBSCRIBER_QUEUE);
        let (tx2, rx2) = async_channel::bounded(SUBSCRIBER_QUEUE);
        feed.subscribe(hash, tx, vec![member(0, PeerStatus::Seeding)]);
        feed.subscribe(hash, tx2, Vec::new());
        for i in 1..=100 {
            feed.queue(&hash, &[member(i, PeerStatus::Idle)]);
        }
        // A status change within the same flush replaces what was queued for that address.
        feed.queue(&hash, &[member(7, PeerStatus::Leeching)]);
        feed.queue(&InfoHash([2; 32]), &[member(500, PeerStatus::Idle)]);
        feed.deliver();
        let batches = drain(&rx);
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].len(), 101, "the known member and the 100 accepted");
        assert_eq!(
            batches[0].iter().find(|p| p.addr == member(7, PeerStatus::Idle).addr).unwrap().status,
            PeerStatus::Leeching
        );
        let other = drain(&rx2);
        assert_eq!((other.len(), other[0].len()), (1, 100), "every subscriber gets its own batch");
    }

    /// Regression (issue 11 review): each accepted announce was one `try_send` into a queue of
    /// 64; a burst while the torrent was busy lost the rest until the next re-announce (10 min).
    #[test]
    fn a_burst_larger_than_the_queue_loses_no_member() {
        let hash = InfoHash([1; 32]);
        let mut feed = PeerFeed::default();
        let (tx, rx) = async_channel::bounded(SUBSCRIBER_QUEUE);
        feed.subscribe(hash, tx, Vec::new());
        // 200 flushes with one accepted member each, while the torrent takes nothing.
        for i in 0..200 {
            feed.queue(&hash, &[member(i, PeerStatus::Leeching)]);
            feed.deliver();
        }
        let mut got: Vec<PeerRecord> = drain(&rx).into_iter().flatten().collect();
        assert_eq!(got.len(), SUBSCRIBER_QUEUE, "the queue held 64 batches");
        // The torrent took its queue; the next flush brings the rest, with what came meanwhile.
        feed.queue(&hash, &[member(300, PeerStatus::Seeding)]);
        feed.deliver();
        let rest = drain(&rx);
        assert_eq!(rest.len(), 1, "one batch");
        got.extend(rest.into_iter().flatten());
        let mut addrs: Vec<SocketAddr> = got.iter().map(|p| p.addr).collect();
        addrs.sort();
        addrs.dedup();
        assert_eq!(addrs.len(), 201, "every member accepted reached the torrent, once");
        // A torrent gone is forgotten.
        drop(rx);
        feed.queue(&hash, &[member(301, PeerStatus::Idle)]);
        feed.deliver();
        assert!(feed.subscribers.is_empty());
    }

    /// What waits for a torrent that never takes anything stays bounded.
    #[test]
    fn undelivered_members_are_bounded() {
        let hash = InfoHash([1; 32]);
        let mut feed = PeerFeed::default();
        let (tx, _rx) = async_channel::bounded(1);
        feed.subscribe(hash, tx, Vec::new());
        feed.queue(&hash, &[member(0, PeerStatus::Idle)]);
        feed.deliver();
        for i in 1..=3000 {
            feed.queue(&hash, &[member(i, PeerStatus::Idle)]);
        }
        feed.deliver();
        assert_eq!(feed.subscribers[&hash][0].undelivered.len(), MAX_UNDELIVERED);
    }
}
