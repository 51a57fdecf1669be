//! A seed's upload policy: each piece goes out once while the leechers can pass it on.
//!
//! A seed's upload is the scarcest resource of a fresh swarm: every byte it sends twice is a
//! byte the swarm could have had from a leecher. Leechers already ask seeds for pieces no other
//! leecher has announced ([`super::picker`]), but they cannot see what the seed is *sending*
//! to another leecher right now. The seed can: it records which connection got the first copy
//! of each piece, and declines (a `reject`) a second leecher's request for that piece once, so
//! that it asks elsewhere — the first holder announces the piece as soon as it is verified.
//! A request for a piece asked for again after a decline is served (the asker found no better
//! source); when the first holder disconnects, or its request is dropped after all (a choke
//! discards it, it cancels, its queue is full), the piece may go out to another; so a decline
//! costs a round trip at most and never a stuck download.
//!
//! Invariants: the policy applies only while this node is a seed (`active`); a piece's holder
//! is a connected connection whose request for the piece was accepted and not dropped, or
//! [`NONE`]. Shared by a torrent's connections; lock-free.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::picker::PeerKey;

/// No connection holds the piece's first copy. Connection keys start at 1.
const NONE: PeerKey = 0;

#[derive(Debug)]
pub struct FirstCopies {
    active: AtomicBool,
    holder: Box<[AtomicU64]>,
}

impl FirstCopies {
    pub fn new(pieces: usize) -> FirstCopies {
        FirstCopies { active: AtomicBool::new(false), holder: (0..pieces).map(|_| AtomicU64::new(NONE)).collect() }
    }

    /// Applies the policy (this node is a seed) or not.
    pub fn set_active(&self, active: bool) {
        self.active.store(active, Ordering::Relaxed);
    }

    /// Whether `key` should be sent `piece` now: true if the policy is off, nobody holds the
    /// piece's first copy (then `key` does), or `key` does.
    pub fn claim(&self, piece: usize, key: PeerKey) -> bool {
        if !self.active.load(Ordering::Relaxed) {
            return true;
        }
        let Some(holder) = self.holder.get(piece) else { return true };
        match holder.compare_exchange(NONE, key, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => true,
            Err(current) => current == key,
        }
    }

    /// `key` will not be sent `piece` after all (choked, cancelled, refused): another
    /// connection may have the first copy.
    pub fn release(&self, piece: usize, key: PeerKey) {
        if let Some(holder) = self.holder.get(piece) {
            let _ = holder.compare_exchange(key, NONE, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// `key` disconnected: the pieces it got first may go out again.
    pub fn forget(&self, key: PeerKey) {
        for holder in &self.holder {
            let _ = holder.compare_exchange(key, NONE, Ordering::Relaxed, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inactive_serves_everyone() {
        let f = FirstCopies::new(4);
        assert!(f.claim(0, 1));
        assert!(f.claim(0, 2));
    }

    #[test]
    fn a_seed_sends_each_first_copy_to_one_connection() {
        let f = FirstCopies::new(4);
        f.set_active(true);
        assert!(f.claim(0, 1));
        assert!(f.claim(0, 1), "the holder may ask again");
        assert!(!f.claim(0, 2));
        assert!(f.claim(1, 2));
        assert!(!f.claim(1, 1));
        assert!(f.claim(9, 3), "out-of-range pieces are left to the request checks");
    }

    #[test]
    fn a_holder_that_is_not_served_after_all_frees_the_piece() {
        let f = FirstCopies::new(2);
        f.set_active(true);
        assert!(f.claim(0, 1));
        f.release(0, 2);
        assert!(!f.claim(0, 2), "only the holder's release counts");
        f.release(0, 1);
        assert!(f.claim(0, 2));
    }

    #[test]
    fn a_holder_that_leaves_frees_its_pieces() {
        let f = FirstCopies::new(2);
        f.set_active(true);
        assert!(f.claim(0, 1));
        assert!(f.claim(1, 2));
        f.forget(1);
        assert!(f.claim(0, 3));
        assert!(!f.claim(1, 3), "other holders are untouched");
    }
}
