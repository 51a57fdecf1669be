//! A seed's upload policy: each piece goes out once while the leechers can pass it on.
//!
//! A seed's upload is the scarcest resource of a fresh swarm: every byte it sends twice is a
//! byte the swarm could have had from a leecher. Leechers already ask seeds for pieces no other
//! leecher has announced ([`super::picker`]), but they cannot see what the seed is *sending*
//! to another leecher right now. The seed can: it records which connection got the first copy
//! of each piece and whether that copy has gone out completely.
//!
//! A second connection asking for a piece is declined (a `reject`; it asks elsewhere or again
//! later):
//! - while the first copy is still queued or on the wire ([`Claim::Pending`]) — the asker
//!   would otherwise get its copy no sooner than the first holder, which will pass it on as
//!   soon as it is verified; a seed split among many leechers needs more than a second to
//!   work through each one's queue, so "decline once" alone sent many pieces twice;
//! - once, after the first copy went out ([`Claim::Sent`]), so that it asks the holder, which
//!   announces the piece as soon as it is verified. Asked again, the seed serves it.
//!
//! A first copy pending for longer than [`PATIENCE`] (a holder that receives slowly) counts as
//! sent, and a holder that disconnects or whose request is dropped after all (a choke
//! discards it, it cancels, its queue is full) frees the piece; so a decline costs a retry at
//! most and never a stuck download.
//!
//! Invariants: the policy applies only while this node is a seed (`active`); a piece's holder
//! is a connection whose request for the piece was accepted and not dropped, or nobody; the
//! `sent` mark is set only by the holder. Shared by a torrent's connections; lock-free.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::picker::PeerKey;

/// No connection holds the piece's first copy. Connection keys start at 1.
const NONE: PeerKey = 0;
/// Set in a holder's key once the first copy has gone out completely.
const SENT: u64 = 1 << 63;
/// How long a pending first copy keeps second copies away.
pub const PATIENCE: Duration = Duration::from_secs(3);

/// What a seed should do with a connection's request for a piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Serve it: the policy is off, the piece's first copy is this connection's, or it is
    /// this connection's now.
    Mine,
    /// Another connection's first copy is still on its way: decline.
    Pending,
    /// Another connection has the first copy: decline once, then serve.
    Sent,
}

#[derive(Debug)]
pub struct FirstCopies {
    active: AtomicBool,
    /// The holder's key, with [`SENT`] once its copy went out.
    holder: Box<[AtomicU64]>,
    /// When the holder claimed the piece, in milliseconds since `epoch`.
    claimed_at: Box<[AtomicU32]>,
    epoch: Instant,
}

impl FirstCopies {
    pub fn new(pieces: usize) -> FirstCopies {
        FirstCopies {
            active: AtomicBool::new(false),
            holder: (0..pieces).map(|_| AtomicU64::new(NONE)).collect(),
            claimed_at: (0..pieces).map(|_| AtomicU32::new(0)).collect(),
            epoch: Instant::now(),
        }
    }

    /// Applies the policy (this node is a seed) or not.
    pub fn set_active(&self, active: bool) {
        self.active.store(active, Ordering::Relaxed);
    }

    fn millis(&self, now: Instant) -> u32 {
        u32::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u32::MAX)
    }

    /// Whether `key` should be sent `piece` now; `key` becomes the holder if nobody is.
    pub fn claim(&self, piece: usize, key: PeerKey, now: Instant) -> Claim {
        if !self.active.load(Ordering::Relaxed) {
            return Claim::Mine;
        }
        let (Some(holder), Some(claimed_at)) = (self.holder.get(piece), self.claimed_at.get(piece)) else {
            return Claim::Mine;
        };
        match holder.compare_exchange(NONE, key, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                claimed_at.store(self.millis(now), Ordering::Release);
                Claim::Mine
            }
            Err(current) if current & !SENT == key => Claim::Mine,
            Err(current) if current & SENT != 0 => Claim::Sent,
            Err(_) => {
                let age = self.millis(now).saturating_sub(claimed_at.load(Ordering::Acquire));
                if u128::from(age) >= PATIENCE.as_millis() { Claim::Sent } else { Claim::Pending }
            }
        }
    }

    /// `key`'s copy of `piece` has gone out completely.
    pub fn sent(&self, piece: usize, key: PeerKey) {
        if let Some(holder) = self.holder.get(piece) {
            let _ = holder.compare_exchange(key, key | SENT, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    /// `key` will not be sent `piece` after all (choked, cancelled, refused): another
    /// connection may have the first copy. A copy already sent stays the first.
    pub fn release(&self, piece: usize, key: PeerKey) {
        if let Some(holder) = self.holder.get(piece) {
            let _ = holder.compare_exchange(key, NONE, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    /// `key` disconnected: the pieces it got first may go out again.
    pub fn forget(&self, key: PeerKey) {
        for holder in &self.holder {
            let current = holder.load(Ordering::Acquire);
            if current != NONE && current & !SENT == key {
                let _ = holder.compare_exchange(current, NONE, Ordering::AcqRel, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(pieces: usize) -> FirstCopies {
        let f = FirstCopies::new(pieces);
        f.set_active(true);
        f
    }

    #[test]
    fn inactive_serves_everyone() {
        let f = FirstCopies::new(4);
        let now = Instant::now();
        assert_eq!(f.claim(0, 1, now), Claim::Mine);
        assert_eq!(f.claim(0, 2, now), Claim::Mine);
    }

    #[test]
    fn a_second_copy_waits_while_the_first_is_on_its_way() {
        let f = seed(4);
        let now = Instant::now();
        assert_eq!(f.claim(0, 1, now), Claim::Mine);
        assert_eq!(f.claim(0, 1, now), Claim::Mine, "the holder may ask again");
        assert_eq!(f.claim(0, 2, now), Claim::Pending);
        assert_eq!(f.claim(0, 2, now + PATIENCE / 2), Claim::Pending);
        assert_eq!(f.claim(1, 2, now), Claim::Mine);
        assert_eq!(f.claim(1, 1, now), Claim::Pending);
        assert_eq!(f.claim(9, 3, now), Claim::Mine, "out-of-range pieces are left to the request checks");
    }

    #[test]
    fn once_sent_a_second_copy_is_possible() {
        let f = seed(2);
        let now = Instant::now();
        assert_eq!(f.claim(0, 1, now), Claim::Mine);
        f.sent(0, 2);
        assert_eq!(f.claim(0, 2, now), Claim::Pending, "only the holder marks its copy sent");
        f.sent(0, 1);
        assert_eq!(f.claim(0, 2, now), Claim::Sent);
        assert_eq!(f.claim(0, 1, now), Claim::Mine, "the holder stays the holder");
    }

    #[test]
    fn a_slow_first_copy_does_not_hold_the_piece_forever() {
        let f = seed(1);
        let now = Instant::now();
        assert_eq!(f.claim(0, 1, now), Claim::Mine);
        assert_eq!(f.claim(0, 2, now + PATIENCE), Claim::Sent);
    }

    #[test]
    fn a_holder_that_is_not_served_after_all_frees_the_piece() {
        let f = seed(2);
        let now = Instant::now();
        assert_eq!(f.claim(0, 1, now), Claim::Mine);
        f.release(0, 2);
        assert_eq!(f.claim(0, 2, now), Claim::Pending, "only the holder's release counts");
        f.release(0, 1);
        assert_eq!(f.claim(0, 2, now), Claim::Mine);
        f.sent(0, 2);
        f.release(0, 2);
        assert_eq!(f.claim(0, 3, now), Claim::Sent, "a copy already sent is not taken back");
    }

    #[test]
    fn a_holder_that_leaves_frees_its_pieces() {
        let f = seed(3);
        let now = Instant::now();
        assert_eq!(f.claim(0, 1, now), Claim::Mine);
        assert_eq!(f.claim(1, 2, now), Claim::Mine);
        assert_eq!(f.claim(2, 1, now), Claim::Mine);
        f.sent(2, 1);
        f.forget(1);
        assert_eq!(f.claim(0, 3, now), Claim::Mine);
        assert_eq!(f.claim(2, 3, now), Claim::Mine, "sent or not, a holder that left frees the piece");
        assert_eq!(f.claim(1, 3, now), Claim::Pending, "other holders are untouched");
    }
}
