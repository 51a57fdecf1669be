//! Which piece to fetch next, and from whom. Pure bookkeeping: no I/O, no clock.
//!
//! Rules:
//! - **Rarest first**: among the pieces a peer has that nobody is fetching, the one the fewest
//!   connected peers have; ties broken at random (a random starting point), so that leechers
//!   do not all chase the same piece.
//! - **First copies from seeds**: from a complete peer (a seed) prefer pieces no *incomplete*
//!   peer has yet — the seed's upload is best spent on pieces the swarm lacks, while the
//!   leechers pass the rest among themselves.
//! - **Endgame**: when every missing piece is being fetched, a peer with spare capacity fetches
//!   a piece that another peer is already fetching (fewest fetchers first, at most
//!   [`MAX_FETCHERS`] at once); when one copy verifies, the others are cancelled. No download
//!   sticks at 99.9 % behind one slow peer.
//!
//! Invariants: a piece is `Missing` iff nobody fetches it and we do not have it;
//! `fetchers[p]` is empty unless the piece is `Fetching`; availability counts equal the sum
//! of the connected peers' bitfields; [`Picker::generation`] changes whenever a piece that
//! could not be picked (or picked again in the endgame) may now be — so a caller that found
//! nothing for a peer need not scan again until the generation or that peer's bitfield
//! changes. Scanning every piece for every peer on every event once took most of a leecher's
//! CPU.

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use crate::bitfield::Bitfield;

/// Identifies a connection.
pub type PeerKey = u64;

/// Most peers fetching one piece at once (endgame).
pub const MAX_FETCHERS: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceState {
    Missing,
    Fetching,
    Verifying,
    Have,
}

#[derive(Debug)]
pub struct Picker {
    state: Vec<PieceState>,
    fetchers: Vec<Vec<PeerKey>>,
    /// Connected peers having each piece.
    avail: Vec<u32>,
    /// Connected incomplete peers having each piece.
    avail_leechers: Vec<u32>,
    missing: usize,
    generation: u64,
    rng: SmallRng,
}

impl Picker {
    pub fn new(have: &Bitfield, seed: u64) -> Picker {
        let n = have.len();
        let state: Vec<PieceState> =
            (0..n).map(|i| if have.get(i) { PieceState::Have } else { PieceState::Missing }).collect();
        let missing = state.iter().filter(|s| **s == PieceState::Missing).count();
        Picker {
            state,
            fetchers: vec![Vec::new(); n],
            avail: vec![0; n],
            avail_leechers: vec![0; n],
            missing,
            generation: 0,
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    pub fn state(&self, piece: usize) -> PieceState {
        self.state[piece]
    }

    pub fn availability(&self, piece: usize) -> u32 {
        self.avail[piece]
    }

    /// Pieces nobody fetches and we lack.
    pub fn missing(&self) -> usize {
        self.missing
    }

    /// Changes whenever [`Picker::pick`] or [`Picker::pick_duplicate`] may find a piece it did
    /// not find before for an unchanged bitfield: a piece became `Missing`, a fetcher left a
    /// piece, or the endgame began.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether every piece we lack is already being fetched (or verified).
    pub fn endgame(&self) -> bool {
        self.missing == 0
    }

    /// A connected peer's bitfield counts towards availability.
    pub fn add_peer(&mut self, bits: &Bitfield) {
        let complete = bits.is_complete();
        for i in bits.ones() {
            self.avail[i] += 1;
            if !complete {
                self.avail_leechers[i] += 1;
            }
        }
    }

    /// A peer left: its pieces no longer count and its fetches are released.
    pub fn remove_peer(&mut self, key: PeerKey, bits: &Bitfield) {
        let complete = bits.is_complete();
        for i in bits.ones() {
            self.avail[i] = self.avail[i].saturating_sub(1);
            if !complete {
                self.avail_leechers[i] = self.avail_leechers[i].saturating_sub(1);
            }
        }
        for piece in 0..self.fetchers.len() {
            if self.fetchers[piece].contains(&key) {
                self.release(piece, key);
            }
        }
    }

    /// A peer announced a piece; `bits` is its bitfield *after* the announcement.
    pub fn peer_has(&mut self, piece: usize, bits: &Bitfield) {
        self.avail[piece] += 1;
        if bits.is_complete() {
            // It just became a seed: it no longer counts among the leechers.
            for i in bits.ones() {
                if i != piece {
                    self.avail_leechers[i] = self.avail_leechers[i].saturating_sub(1);
                }
            }
        } else {
            self.avail_leechers[piece] += 1;
        }
    }

    /// The next piece to fetch from a peer with bitfield `bits`, other than those in `declined`
    /// (pieces it refused lately), or `None`.
    pub fn pick(&mut self, bits: &Bitfield, declined: &Bitfield) -> Option<usize> {
        let n = self.state.len();
        if n == 0 || self.missing == 0 {
            return None;
        }
        let seed = bits.is_complete();
        let start = self.rng.random_range(0..n);
        let mut best: Option<(u64, usize)> = None;
        for k in 0..n {
            let i = (start + k) % n;
            if self.state[i] != PieceState::Missing || !bits.get(i) || declined.get(i) {
                continue;
            }
            let rank = if seed {
                ((self.avail_leechers[i] as u64) << 32) | self.avail[i] as u64
            } else {
                self.avail[i] as u64
            };
            if best.is_none_or(|(r, _)| rank < r) {
                best = Some((rank, i));
                if rank == 1 {
                    // Nothing is rarer than "only this peer has it".
                    break;
                }
            }
        }
        best.map(|(_, i)| i)
    }

    /// In the endgame: a piece `key` may fetch in parallel with others (fewest fetchers).
    pub fn pick_duplicate(&mut self, key: PeerKey, bits: &Bitfield, declined: &Bitfield) -> Option<usize> {
        let n = self.state.len();
        if n == 0 {
            return None;
        }
        let start = self.rng.random_range(0..n);
        let mut best: Option<(usize, usize)> = None;
        for k in 0..n {
            let i = (start + k) % n;
            let f = &self.fetchers[i];
            if self.state[i] != PieceState::Fetching
                || !bits.get(i)
                || declined.get(i)
                || f.contains(&key)
                || f.len() >= MAX_FETCHERS
            {
                continue;
            }
            if best.is_none_or(|(c, _)| f.len() < c) {
                best = Some((f.len(), i));
            }
        }
        best.map(|(_, i)| i)
    }

    /// `key` fetches `piece`.
    pub fn assign(&mut self, piece: usize, key: PeerKey) {
        if self.state[piece] == PieceState::Missing {
            self.missing -= 1;
            self.state[piece] = PieceState::Fetching;
            if self.missing == 0 {
                // The endgame begins: duplicates may be picked.
                self.generation += 1;
            }
        }
        debug_assert_eq!(self.state[piece], PieceState::Fetching);
        if !self.fetchers[piece].contains(&key) {
            self.fetchers[piece].push(key);
        }
    }

    /// `key` stops fetching `piece` (cancelled, rejected, stalled, gone).
    pub fn release(&mut self, piece: usize, key: PeerKey) {
        let before = self.fetchers[piece].len();
        self.fetchers[piece].retain(|k| *k != key);
        if self.fetchers[piece].len() != before {
            self.generation += 1;
        }
        if self.state[piece] == PieceState::Fetching && self.fetchers[piece].is_empty() {
            self.state[piece] = PieceState::Missing;
            self.missing += 1;
        }
    }

    /// A complete copy from `key` is being verified; returns the other fetchers, whose copies
    /// are no longer needed.
    pub fn verifying(&mut self, piece: usize, key: PeerKey) -> Vec<PeerKey> {
        if self.state[piece] != PieceState::Fetching {
            return Vec::new();
        }
        self.state[piece] = PieceState::Verifying;
        let others: Vec<PeerKey> = self.fetchers[piece].iter().copied().filter(|k| *k != key).collect();
        self.fetchers[piece].clear();
        others
    }

    pub fn verified(&mut self, piece: usize) {
        if self.state[piece] == PieceState::Missing {
            self.missing -= 1;
        }
        self.fetchers[piece].clear();
        self.state[piece] = PieceState::Have;
    }

    /// The copy failed its hash: fetch the piece again.
    pub fn failed(&mut self, piece: usize) {
        if self.state[piece] == PieceState::Verifying {
            self.state[piece] = PieceState::Missing;
            self.missing += 1;
            self.generation += 1;
        }
    }

    /// Pieces `key` is fetching.
    pub fn fetching(&self, key: PeerKey) -> Vec<usize> {
        (0..self.fetchers.len()).filter(|&i| self.fetchers[i].contains(&key)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(n: usize, ones: &[usize]) -> Bitfield {
        let mut b = Bitfield::new(n);
        for &i in ones {
            b.set(i);
        }
        b
    }

    /// Nothing declined.
    fn none(like: &Bitfield) -> Bitfield {
        Bitfield::new(like.len())
    }

    #[test]
    fn declined_pieces_are_not_asked_of_that_peer() {
        let mut p = Picker::new(&Bitfield::new(3), 1);
        let seed = Bitfield::full(3);
        p.add_peer(&seed);
        assert_eq!(p.pick(&seed, &bits(3, &[0, 1])), Some(2));
        p.assign(2, 1);
        assert_eq!(p.pick(&seed, &bits(3, &[0, 1])), None);
        assert!(p.pick(&seed, &none(&seed)).is_some());
        p.assign(0, 1);
        p.assign(1, 1);
        assert_eq!(p.pick_duplicate(2, &seed, &bits(3, &[0, 1, 2])), None, "declines hold in the endgame too");
    }

    #[test]
    fn rarest_first() {
        let mut p = Picker::new(&Bitfield::new(4), 1);
        p.add_peer(&bits(4, &[0, 1, 2]));
        p.add_peer(&bits(4, &[0, 1]));
        p.add_peer(&bits(4, &[0]));
        let peer = bits(4, &[0, 1, 2]);
        assert_eq!(p.pick(&peer, &none(&peer)), Some(2));
        p.assign(2, 1);
        assert_eq!(p.pick(&peer, &none(&peer)), Some(1));
    }

    #[test]
    fn ties_are_broken_at_random() {
        let mut seen = std::collections::HashSet::new();
        for seed in 0..40 {
            let mut p = Picker::new(&Bitfield::new(64), seed);
            let all = Bitfield::full(64);
            p.add_peer(&all);
            seen.insert(p.pick(&all, &none(&all)).unwrap());
        }
        assert!(seen.len() > 10, "{seen:?}");
    }

    #[test]
    fn seeds_are_asked_for_first_copies() {
        let mut p = Picker::new(&Bitfield::new(3), 1);
        let seed = Bitfield::full(3);
        let leecher = bits(3, &[0, 1]);
        p.add_peer(&seed);
        p.add_peer(&leecher);
        // Piece 2 is rarest anyway; after it is taken, the seed gets pieces 0/1 only if asked.
        assert_eq!(p.pick(&seed, &none(&seed)), Some(2));
        p.assign(2, 9);
        // From the leecher, 0 and 1 are equally rare.
        assert!(matches!(p.pick(&leecher, &none(&leecher)), Some(0 | 1)));
    }

    #[test]
    fn endgame_duplicates_then_cancels_the_rest() {
        let mut p = Picker::new(&bits(3, &[0, 1]), 1);
        let a = Bitfield::full(3);
        p.add_peer(&a);
        p.add_peer(&a);
        assert_eq!(p.pick(&a, &none(&a)), Some(2));
        p.assign(2, 1);
        assert!(p.endgame());
        assert_eq!(p.pick(&a, &none(&a)), None);
        assert_eq!(p.pick_duplicate(1, &a, &none(&a)), None, "not twice from the same peer");
        assert_eq!(p.pick_duplicate(2, &a, &none(&a)), Some(2));
        p.assign(2, 2);
        assert_eq!(p.verifying(2, 2), vec![1]);
        p.verified(2);
        assert_eq!(p.state(2), PieceState::Have);
        assert_eq!(p.missing(), 0);
    }

    #[test]
    fn released_and_failed_pieces_are_fetched_again() {
        let mut p = Picker::new(&Bitfield::new(2), 1);
        let a = Bitfield::full(2);
        p.add_peer(&a);
        p.assign(0, 1);
        p.assign(1, 1);
        assert_eq!(p.missing(), 0);
        p.remove_peer(1, &a);
        assert_eq!(p.missing(), 2);
        p.add_peer(&a);
        p.assign(0, 2);
        p.verifying(0, 2);
        p.failed(0);
        assert_eq!(p.state(0), PieceState::Missing);
        assert_eq!(p.pick(&a, &none(&a)).map(|i| i < 2), Some(true));
    }

    #[test]
    fn the_endgame_starts_a_generation() {
        let mut p = Picker::new(&Bitfield::new(2), 1);
        p.add_peer(&Bitfield::full(2));
        let probe = bits(2, &[0]);
        p.assign(0, 2);
        assert_eq!(p.pick(&probe, &none(&probe)), None, "piece 0 is being fetched, piece 1 not had");
        let before = p.generation();
        p.assign(1, 3);
        assert!(p.endgame());
        assert_ne!(p.generation(), before);
        assert_eq!(p.pick_duplicate(1, &probe, &none(&probe)), Some(0));
    }

    mod generation {
        use proptest::prelude::*;

        use super::*;

        #[derive(Debug, Clone)]
        enum Op {
            Assign(usize, PeerKey),
            Release(usize, PeerKey),
            Verifying(usize, PeerKey),
            Verified(usize),
            Failed(usize),
            RemovePeer(PeerKey),
        }

        fn op() -> impl Strategy<Value = Op> {
            let piece = 0..8usize;
            let key = 1..4u64;
            prop_oneof![
                (piece.clone(), key.clone()).prop_map(|(p, k)| Op::Assign(p, k)),
                (piece.clone(), key.clone()).prop_map(|(p, k)| Op::Release(p, k)),
                (piece.clone(), key.clone()).prop_map(|(p, k)| Op::Verifying(p, k)),
                piece.clone().prop_map(Op::Verified),
                piece.prop_map(Op::Failed),
                key.prop_map(Op::RemovePeer),
            ]
        }

        proptest! {
            /// Once a peer has nothing to pick, it has nothing until the generation changes.
            #[test]
            fn nothing_new_is_pickable_within_a_generation(
                ops in proptest::collection::vec(op(), 1..60),
                have in proptest::collection::vec(any::<bool>(), 8),
            ) {
                let probe: PeerKey = 1;
                let mut probe_bits = Bitfield::new(8);
                for (i, h) in have.iter().enumerate() {
                    if *h {
                        probe_bits.set(i);
                    }
                }
                let all = Bitfield::full(8);
                let mut p = Picker::new(&Bitfield::new(8), 7);
                p.add_peer(&all);
                let nothing = |p: &mut Picker| {
                    p.pick(&probe_bits, &Bitfield::new(8)).is_none()
                        && (!p.endgame() || p.pick_duplicate(probe, &probe_bits, &Bitfield::new(8)).is_none())
                };
                let mut exhausted_at = nothing(&mut p).then(|| p.generation());
                for op in ops {
                    match op {
                        Op::Assign(i, k) => {
                            if matches!(p.state(i), PieceState::Missing | PieceState::Fetching) {
                                p.assign(i, k);
                            }
                        }
                        Op::Release(i, k) => p.release(i, k),
                        Op::Verifying(i, k) => {
                            p.verifying(i, k);
                        }
                        Op::Verified(i) => {
                            if p.state(i) == PieceState::Verifying {
                                p.verified(i);
                            }
                        }
                        Op::Failed(i) => p.failed(i),
                        Op::RemovePeer(k) => {
                            p.remove_peer(k, &Bitfield::new(8));
                        }
                    }
                    if exhausted_at == Some(p.generation()) {
                        prop_assert!(nothing(&mut p), "a piece became pickable without a new generation");
                    } else {
                        exhausted_at = nothing(&mut p).then(|| p.generation());
                    }
                }
            }
        }
    }
}
