//! The pieces this node asked one peer for, and the bytes of piece buffers that costs. Pure
//! bookkeeping, owned by the engine.
//!
//! A piece asked for has a whole-piece buffer in the connection's reader until its last block
//! arrives, the peer releases it (reject, choke), or the reader drops it on the engine's word
//! (a stall, or another peer's copy won the endgame). The engine may tell the reader to drop a
//! piece at any moment, but the reader only does so between frames — a peer that stops in the
//! middle of a block keeps it from ever getting there. So a dropped piece is not forgotten
//! here until the reader confirms it (`ConnEvent::Dropped`): until then its bytes still count
//! against the peer's budget and the torrent's cap, and a peer whose drops stay unconfirmed is
//! cut off by the engine. Counting them as freed at once let a peer that sent one block
//! header and went silent keep every piece buffer it had been given while the engine handed the
//! same budget to the next peer.
//!
//! Invariants: a piece is in at most one of `asked` and `dropping`; `asked_bytes` and
//! `dropping_bytes` are the sums of the lengths in each; only the engine's own asks add bytes.

use std::collections::HashMap;
use std::time::Instant;

#[derive(Debug, Default)]
pub struct Fetches {
    /// Asked for and not yet arrived, released or dropped: piece → length.
    asked: HashMap<u32, u64>,
    /// Told to drop; the reader has not confirmed yet: piece → length.
    dropping: HashMap<u32, u64>,
    asked_bytes: u64,
    dropping_bytes: u64,
    /// Since when some drop has waited for its confirmation.
    dropping_since: Option<Instant>,
}

impl Fetches {
    /// Bytes asked for and not yet arrived (what the peer owes us).
    pub fn asked_bytes(&self) -> u64 {
        self.asked_bytes
    }

    /// Bytes of piece buffers the peer's reader holds for us: asked and dropping.
    pub fn held_bytes(&self) -> u64 {
        self.asked_bytes + self.dropping_bytes
    }

    /// Pieces asked for (not dropping).
    pub fn asked(&self) -> impl Iterator<Item = u32> + '_ {
        self.asked.keys().copied()
    }

    /// Since when a drop has waited for the reader, if one does.
    pub fn dropping_since(&self) -> Option<Instant> {
        self.dropping_since
    }

    pub fn ask(&mut self, piece: u32, len: u64) {
        if self.asked.insert(piece, len).is_none() {
            self.asked_bytes += len;
        }
    }

    /// The piece arrived whole, or the peer released it: its buffer is gone from the reader.
    /// Returns whether it was asked for (not dropping).
    pub fn done(&mut self, piece: u32, now: Instant) -> bool {
        if let Some(len) = self.asked.remove(&piece) {
            self.asked_bytes -= len;
            return true;
        }
        self.confirm_drop(piece, now);
        false
    }

    /// Tells the bookkeeping the reader was told to drop `piece`. Returns whether it was asked.
    pub fn drop_piece(&mut self, piece: u32, now: Instant) -> bool {
        let Some(len) = self.asked.remove(&piece) else { return false };
        self.asked_bytes -= len;
        self.dropping.insert(piece, len);
        self.dropping_bytes += len;
        self.dropping_since.get_or_insert(now);
        true
    }

    /// The reader dropped `piece` (or had nothing of it).
    pub fn confirm_drop(&mut self, piece: u32, now: Instant) {
        if let Some(len) = self.dropping.remove(&piece) {
            self.dropping_bytes -= len;
            // The clock restarts for what is still waiting: each drop gets its own time.
            self.dropping_since = (!self.dropping.is_empty()).then_some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dropped_pieces_count_until_the_reader_confirms() {
        let now = Instant::now();
        let mut f = Fetches::default();
        f.ask(1, 100);
        f.ask(2, 50);
        assert_eq!((f.asked_bytes(), f.held_bytes()), (150, 150));
        assert!(f.drop_piece(1, now));
        assert_eq!((f.asked_bytes(), f.held_bytes()), (50, 150), "a dropped buffer is still held");
        assert_eq!(f.dropping_since(), Some(now));
        assert!(!f.drop_piece(1, now), "dropped once");
        let later = now + Duration::from_secs(1);
        f.confirm_drop(1, later);
        assert_eq!((f.asked_bytes(), f.held_bytes()), (50, 50));
        assert_eq!(f.dropping_since(), None);
    }

    #[test]
    fn a_copy_that_crossed_the_drop_frees_it_and_counts_once() {
        let now = Instant::now();
        let mut f = Fetches::default();
        f.ask(7, 100);
        f.drop_piece(7, now);
        assert!(!f.done(7, now), "it was no longer asked");
        assert_eq!(f.held_bytes(), 0);
        // A late confirmation or a second arrival changes nothing.
        f.confirm_drop(7, now);
        assert!(!f.done(7, now));
        assert_eq!(f.held_bytes(), 0);
        f.ask(7, 100);
        assert!(f.done(7, now));
        assert!(!f.done(7, now), "released once");
        assert_eq!(f.held_bytes(), 0);
    }

    #[test]
    fn the_oldest_unconfirmed_drop_sets_the_clock_until_it_is_confirmed() {
        let now = Instant::now();
        let mut f = Fetches::default();
        f.ask(1, 10);
        f.ask(2, 10);
        f.drop_piece(1, now);
        f.drop_piece(2, now + Duration::from_secs(5));
        assert_eq!(f.dropping_since(), Some(now));
        f.confirm_drop(1, now + Duration::from_secs(6));
        assert_eq!(f.dropping_since(), Some(now + Duration::from_secs(6)));
    }
}
