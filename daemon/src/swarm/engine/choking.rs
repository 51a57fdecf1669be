//! Whom to upload to (pure): how many upload slots the uplink supports, and which interested
//! peers hold them.
//!
//! - Slots: as many as the uplink serves a piece each within [`SLOT_PIECE_TIME`], at least
//!   [`MIN_UPLOAD_SLOTS`], at most `limits.upload_slots` (every node's, not only the seed's: a
//!   piece crosses the swarm in hops, and a hop through a leecher whose uplink is split 32
//!   ways is as slow as the seed's first copy).
//! - Choice: all interested peers if they fit; otherwise the best `slots - 1` by score (what
//!   they give us, or when we seed what they lack) and one rotating slot, kept by its holder
//!   until the next rotation and then given to the best-scored choked peer outside the best
//!   (or, if all of them hold slots, to the one that has held its slot longest).
//! - Between rotations a peer's interest costs O(peers): it takes a free slot at once
//!   ([`free_slot_takers`]) or waits for the next rotation.
//!
//! Invariant: never more peers chosen than slots, and never fewer than
//! `min(slots, interested)`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::swarm::picker::PeerKey;

/// How long an unchoked peer should take to receive one piece from us: the upload slots in use
/// are what the uplink serves at this pace. Split among more peers, every piece crawls out at a
/// fraction of the uplink, slower than first copies keep second copies away
/// ([`crate::swarm::first_copies::PATIENCE`]). (Measurements: STATE.md.)
pub const SLOT_PIECE_TIME: Duration = Duration::from_millis(500);
/// The fewest upload slots the uplink's rate may leave (unless `limits.upload_slots` is lower).
pub const MIN_UPLOAD_SLOTS: usize = 4;

/// The upload slots for an uplink measured at `capacity` bytes/s: enough that each peer
/// receives a piece of `piece_length` within [`SLOT_PIECE_TIME`], within
/// [`MIN_UPLOAD_SLOTS`]…`configured` (and never more than `configured`, nor fewer than one).
pub fn upload_slots(configured: usize, capacity: f64, piece_length: u64) -> usize {
    let configured = configured.max(1);
    let per_slot = piece_length.max(1) as f64 / SLOT_PIECE_TIME.as_secs_f64();
    let by_rate = (capacity / per_slot).ceil();
    // A rate is finite and non-negative, but a float never becomes a count unchecked.
    let by_rate = if by_rate.is_nan() { 0 } else { by_rate.clamp(0.0, configured as f64) as usize };
    by_rate.clamp(MIN_UPLOAD_SLOTS.min(configured), configured)
}

/// An interested peer, as the choice sees it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    pub key: PeerKey,
    /// Higher is better: bytes/s it gives us, or when we seed, minus the pieces it has.
    pub score: f64,
    /// Since when it holds a slot, if it does.
    pub unchoked_at: Option<Instant>,
}

/// The peers to unchoke among the interested ones, for `slots` slots (see the module doc for
/// the rotating slot).
pub fn choose(mut interested: Vec<Candidate>, slots: usize, rotate: bool) -> HashSet<PeerKey> {
    if interested.len() <= slots {
        return interested.iter().map(|c| c.key).collect();
    }
    if slots == 0 {
        return HashSet::new();
    }
    interested.sort_by(|a, b| b.score.total_cmp(&a.score));
    let (best, rest) = interested.split_at(slots - 1);
    let mut chosen: HashSet<PeerKey> = best.iter().map(|c| c.key).collect();
    let keep = rest.iter().find(|c| c.unchoked_at.is_some() && !rotate);
    if let Some(next) = keep.or_else(|| rest.iter().min_by_key(|c| c.unchoked_at)) {
        chosen.insert(next.key);
    }
    chosen
}

/// Which waiting peers take the free slots, given how many are in use: the first
/// `slots - unchoked` of `waiting` (interested peers without a slot).
pub fn free_slot_takers(slots: usize, unchoked: usize, waiting: impl Iterator<Item = PeerKey>) -> Vec<PeerKey> {
    waiting.take(slots.saturating_sub(unchoked)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIECE: u64 = 256 * 1024;
    const MBIT: f64 = 1e6 / 8.0;

    #[test]
    fn upload_slots_follow_the_uplink() {
        // 20 Mbit/s serves 256 KiB in 0.5 s to 4.8 peers at once: 5 slots, not 32.
        assert_eq!(upload_slots(32, 20.0 * MBIT, PIECE), 5);
        // 100 Mbit/s: 24.
        assert_eq!(upload_slots(32, 100.0 * MBIT, PIECE), 24);
        // A fast uplink is capped by the configuration.
        assert_eq!(upload_slots(32, 10_000.0 * MBIT, PIECE), 32);
        // Smaller pieces need fewer bytes per slot: more slots.
        assert_eq!(upload_slots(32, 20.0 * MBIT, 64 * 1024), 20);
    }

    #[test]
    fn upload_slots_before_any_rate_is_measured_keep_a_few_peers_busy() {
        assert_eq!(upload_slots(32, 0.0, PIECE), MIN_UPLOAD_SLOTS);
        assert_eq!(upload_slots(32, 1.0, PIECE), MIN_UPLOAD_SLOTS);
        // The operator's limit wins over the minimum.
        assert_eq!(upload_slots(2, 0.0, PIECE), 2);
        assert_eq!(upload_slots(0, 0.0, PIECE), 1);
        assert_eq!(upload_slots(32, f64::NAN, PIECE), MIN_UPLOAD_SLOTS);
        assert_eq!(upload_slots(32, f64::INFINITY, PIECE), 32);
        assert_eq!(upload_slots(32, -5.0, PIECE), MIN_UPLOAD_SLOTS);
    }

    fn peer(key: PeerKey, score: f64, unchoked_at: Option<Instant>) -> Candidate {
        Candidate { key, score, unchoked_at }
    }

    fn set(keys: &[PeerKey]) -> HashSet<PeerKey> {
        keys.iter().copied().collect()
    }

    #[test]
    fn all_interested_peers_are_unchoked_when_they_fit() {
        let interested = vec![peer(1, 0.0, None), peer(2, 5.0, None)];
        assert_eq!(choose(interested.clone(), 2, false), set(&[1, 2]));
        assert_eq!(choose(interested, 8, true), set(&[1, 2]));
        assert_eq!(choose(Vec::new(), 4, true), set(&[]));
    }

    #[test]
    fn the_best_peers_and_one_rotating_slot_share_the_slots() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(10);
        // Scores 40, 30, 20, 10, 0 for peers 1..=5; three slots.
        let interested = |holder: PeerKey| {
            (1..=5).map(|k| peer(k, 50.0 - 10.0 * k as f64, (k == holder).then_some(later))).collect::<Vec<_>>()
        };
        // Between rotations the holder of the rotating slot keeps it.
        assert_eq!(choose(interested(5), 3, false), set(&[1, 2, 5]));
        // At a rotation it goes to the best choked peer outside the best.
        assert_eq!(choose(interested(5), 3, true), set(&[1, 2, 3]));
        // If all of those hold slots, to the one that has held its slot longest.
        let mut waiting = interested(0);
        waiting[3].unchoked_at = Some(later);
        waiting[4].unchoked_at = Some(t0);
        waiting[2].unchoked_at = Some(later);
        assert_eq!(choose(waiting, 3, true), set(&[1, 2, 5]));
        // One slot: only the rotating one.
        assert_eq!(choose(interested(4), 1, false), set(&[4]));
        assert_eq!(choose(interested(4), 0, false), set(&[]));
    }

    #[test]
    fn free_slots_go_to_waiting_peers_up_to_the_slots() {
        assert_eq!(free_slot_takers(4, 1, [7, 8, 9, 10].into_iter()), vec![7, 8, 9]);
        assert_eq!(free_slot_takers(4, 4, [7].into_iter()), Vec::<PeerKey>::new());
        assert_eq!(free_slot_takers(4, 6, [7].into_iter()), Vec::<PeerKey>::new());
        assert_eq!(free_slot_takers(4, 0, [7].into_iter()), vec![7]);
    }
}
