//! Peer-wire connection counters since start-up, over every torrent (`status --json`,
//! `node.peer_connections`).
//!
//! Invariants: every connection this node dials is counted once in `dialed` and, if it ends
//! before the handshakes are exchanged, once in `dial_failed` (and in `dial_timed_out` too
//! when it was the handshake timeout that ended it); every connection accepted on the peer
//! port is counted once in `accepted` and, if it is closed before it reaches a torrent, once
//! in `incoming_dropped`. A connection that reaches a torrent (either direction) is counted
//! once in `established` or once in `refused`.
//!
//! Besides connections, the payload moved since start-up over every torrent (block bytes
//! received and sent, as they pass the socket) and the pieces that failed their hash check:
//! the daemon-wide counters of `/metrics`, which go on counting after a torrent is removed.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::control::protocol::ConnectionCounters;

/// The live counters, shared by the listener and every engine.
#[derive(Debug, Default)]
pub struct WireCounters {
    dialed: AtomicU64,
    dial_failed: AtomicU64,
    dial_timed_out: AtomicU64,
    accepted: AtomicU64,
    incoming_dropped: AtomicU64,
    established: AtomicU64,
    refused: AtomicU64,
    payload_received: AtomicU64,
    payload_sent: AtomicU64,
    hash_failures: AtomicU64,
}

/// Payload and hash failures since start-up, over every torrent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PayloadTotals {
    pub received: u64,
    pub sent: u64,
    pub hash_failures: u64,
}

/// What [`WireCounters::count`] records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireEvent {
    Dialed,
    /// A dialled connection failed before the handshakes were exchanged; `timed_out` when the
    /// handshake timeout ended it.
    DialFailed {
        timed_out: bool,
    },
    Accepted,
    /// An accepted connection closed before it reached a torrent.
    IncomingDropped,
    Established,
    Refused,
}

impl WireCounters {
    pub fn count(&self, event: WireEvent) {
        let counter = match event {
            WireEvent::Dialed => &self.dialed,
            WireEvent::DialFailed { timed_out } => {
                if timed_out {
                    self.dial_timed_out.fetch_add(1, Ordering::Relaxed);
                }
                &self.dial_failed
            }
            WireEvent::Accepted => &self.accepted,
            WireEvent::IncomingDropped => &self.incoming_dropped,
            WireEvent::Established => &self.established,
            WireEvent::Refused => &self.refused,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Block bytes read from a peer.
    pub fn received(&self, bytes: u64) {
        self.payload_received.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Block bytes sent to a peer.
    pub fn sent(&self, bytes: u64) {
        self.payload_sent.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A piece failed its hash check.
    pub fn hash_failed(&self) {
        self.hash_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn payload(&self) -> PayloadTotals {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PayloadTotals {
            received: get(&self.payload_received),
            sent: get(&self.payload_sent),
            hash_failures: get(&self.hash_failures),
        }
    }

    pub fn snapshot(&self) -> ConnectionCounters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ConnectionCounters {
            dialed: get(&self.dialed),
            dial_failed: get(&self.dial_failed),
            dial_timed_out: get(&self.dial_timed_out),
            accepted: get(&self.accepted),
            incoming_dropped: get(&self.incoming_dropped),
            established: get(&self.established),
            refused: get(&self.refused),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_is_also_a_failure() {
        let c = WireCounters::default();
        c.count(WireEvent::Dialed);
        c.count(WireEvent::DialFailed { timed_out: true });
        c.count(WireEvent::Dialed);
        c.count(WireEvent::DialFailed { timed_out: false });
        let s = c.snapshot();
        assert_eq!((s.dialed, s.dial_failed, s.dial_timed_out), (2, 2, 1));
        assert_eq!((s.accepted, s.incoming_dropped, s.established, s.refused), (0, 0, 0, 0));
    }
}
