//! When to tell peers about verified pieces: `have`s batched in a window that grows with the
//! torrent's age (pure: instants go in, pieces to announce come out).
//!
//! Each `have` sent alone costs every peer a wake-up (our writer's and their reader's, and
//! their engine's): sixteen peers × every piece. Pieces verified within a window of the last
//! batch therefore go out together, one write per peer. The window is a fiftieth of the time
//! the torrent has run ([`SHARE`]), at most [`MAX_WINDOW`]: what the peers learn late costs
//! them a small share of the transfer whatever its length (scenario 5, a 0.7 s swarm, lost
//! 10 % of its time to a fixed 100 ms).
//!
//! Invariants: a piece pushed is announced exactly once, either by the `push` that returns it
//! (the window has passed, or the caller flushes) or by [`HaveBatch::take_due`] at or after
//! [`HaveBatch::due`]; while pieces are pending, `due` is `Some` and the caller's timer must
//! fire by then (nothing else is guaranteed to wake it: a swarm that stops sending would leave
//! them unannounced until the next tick).

use std::time::{Duration, Instant};

/// The longest a verified piece waits before it is announced.
pub const MAX_WINDOW: Duration = Duration::from_millis(100);
/// The window is the torrent's running time divided by this.
pub const SHARE: u32 = 50;

#[derive(Debug)]
pub struct HaveBatch {
    pending: Vec<u32>,
    /// When the last batch went out (or the torrent started).
    sent_at: Instant,
    started: Instant,
}

impl HaveBatch {
    pub fn new(now: Instant) -> HaveBatch {
        HaveBatch { pending: Vec::new(), sent_at: now, started: now }
    }

    /// `piece` was verified at `now`. Returns the pieces to announce now — this one and any
    /// pending — when the window since the last batch has passed or `flush` is set (the torrent
    /// completed, or nobody waits on a batch); otherwise keeps it for [`HaveBatch::due`].
    pub fn push(&mut self, piece: u32, now: Instant, flush: bool) -> Vec<u32> {
        self.pending.push(piece);
        if flush || now >= self.window_end() { self.take(now) } else { Vec::new() }
    }

    /// When the pending pieces are to go out; `None` when nothing is pending.
    pub fn due(&self) -> Option<Instant> {
        (!self.pending.is_empty()).then(|| self.window_end())
    }

    /// The pending pieces, if their window has passed by `now`.
    pub fn take_due(&mut self, now: Instant) -> Vec<u32> {
        if self.due().is_some_and(|due| now >= due) { self.take(now) } else { Vec::new() }
    }

    fn window_end(&self) -> Instant {
        let window = (self.sent_at.saturating_duration_since(self.started) / SHARE).min(MAX_WINDOW);
        self.sent_at + window
    }

    fn take(&mut self, now: Instant) -> Vec<u32> {
        self.sent_at = now;
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_piece_after_a_quiet_spell_goes_at_once() {
        let t0 = Instant::now();
        let mut b = HaveBatch::new(t0);
        // Ten seconds in: the window (100 ms) since the last batch has long passed.
        assert_eq!(b.push(7, t0 + 10_000 * MS, false), vec![7]);
        assert_eq!(b.due(), None);
    }

    #[test]
    fn pieces_within_the_window_wait_for_the_timer_and_go_out_together() {
        let t0 = Instant::now();
        let mut b = HaveBatch::new(t0);
        let first = t0 + 10_000 * MS;
        assert_eq!(b.push(1, first, false), vec![1]);
        // Within 100 ms of that batch: kept, and the caller's timer is told when.
        assert!(b.push(2, first + 10 * MS, false).is_empty());
        assert!(b.push(3, first + 20 * MS, false).is_empty());
        assert_eq!(b.due(), Some(first + MAX_WINDOW));
        // The timer firing early hands out nothing; on time, both pending pieces in order.
        assert!(b.take_due(first + 99 * MS).is_empty());
        assert_eq!(b.take_due(first + MAX_WINDOW), vec![2, 3]);
        assert_eq!(b.due(), None);
        assert!(b.take_due(first + 500 * MS).is_empty(), "each piece is announced once");
    }

    #[test]
    fn the_window_grows_with_the_torrents_age() {
        let t0 = Instant::now();
        let mut b = HaveBatch::new(t0);
        // 1 s in: the window is 20 ms (a fiftieth), not 100 ms.
        let at = t0 + 1_000 * MS;
        assert_eq!(b.push(1, at, false), vec![1]);
        assert!(b.push(2, at + 5 * MS, false).is_empty());
        assert_eq!(b.due(), Some(at + 20 * MS));
        // The first piece of a fresh torrent waits for nothing.
        let mut fresh = HaveBatch::new(t0);
        assert_eq!(fresh.push(0, t0, false), vec![0]);
    }

    #[test]
    fn a_flush_announces_everything_pending_at_once() {
        let t0 = Instant::now();
        let mut b = HaveBatch::new(t0);
        let at = t0 + 10_000 * MS;
        b.push(1, at, false);
        assert!(b.push(2, at + MS, false).is_empty());
        assert_eq!(b.push(3, at + 2 * MS, true), vec![2, 3]);
        assert_eq!(b.due(), None);
    }
}
