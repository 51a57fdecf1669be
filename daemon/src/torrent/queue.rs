//! `limits.max_active_downloads`: which incomplete torrents may download now, and in what
//! order the others get their turn.
//!
//! A torrent that may have pieces to fetch takes a [`Place`] in line before it checks its data
//! (so that one still checking keeps its rank against later ones, also at start-up), asks for
//! its turn once the check found it incomplete, holds that [`Turn`] while it downloads and gives
//! it back when it completes, pauses, fails or stops.
//! Seeding takes no turn. Waiting torrents are served in their `rank` order (the time they
//! were added, or earlier when moved to the front with `p2pctl set --priority`), then by info
//! hash.
//!
//! Invariants: with a limit of n > 0, at most n turns are held at once; with f turns free, a
//! waiter gets one only if fewer than f waiters (still checking, or waiting) rank before it; every release and every
//! limit change wakes the waiters to look again; a place dropped (its task stops, or it was
//! complete) is forgotten and the others look again.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::descriptor::InfoHash;

/// Where a torrent stands in the queue: lower goes first.
pub type Rank = (u64, InfoHash);

/// The bookkeeping, without any waiting (pure).
#[derive(Debug, Default)]
pub struct QueueState {
    /// Most turns at once; 0: unlimited.
    limit: usize,
    active: HashSet<InfoHash>,
    waiting: BTreeMap<Rank, async_channel::Sender<()>>,
}

impl QueueState {
    pub fn new(limit: usize) -> QueueState {
        QueueState { limit, ..QueueState::default() }
    }

    /// Gives `rank` a turn if it may have one now.
    pub fn try_take(&mut self, rank: Rank) -> bool {
        if self.active.contains(&rank.1) {
            return true;
        }
        // Free turns go to the first waiters in rank order: one still checking keeps its turn
        // free while it checks, but does not hold back those behind it beyond that.
        let free = if self.limit == 0 { usize::MAX } else { self.limit.saturating_sub(self.active.len()) };
        let ahead = self.waiting.keys().take_while(|w| **w < rank).count();
        let admitted = ahead < free;
        if admitted {
            self.waiting.remove(&rank);
            self.active.insert(rank.1);
        }
        admitted
    }

    /// Records a waiter and how to wake it.
    pub fn wait(&mut self, rank: Rank, wake: async_channel::Sender<()>) {
        self.waiting.insert(rank, wake);
    }

    pub fn forget_waiter(&mut self, rank: &Rank) {
        self.waiting.remove(rank);
    }

    /// A turn given back; the waiters look again.
    pub fn release(&mut self, hash: &InfoHash) {
        self.active.remove(hash);
        self.wake_all();
    }

    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
        self.wake_all();
    }

    pub fn active(&self) -> usize {
        self.active.len()
    }

    pub fn wake_all(&self) {
        for w in self.waiting.values() {
            let _ = w.try_send(());
        }
    }
}

/// The daemon's queue, shared by every torrent.
#[derive(Clone, Debug)]
pub struct DownloadQueue {
    state: Arc<Mutex<QueueState>>,
}

/// A held turn to download; given back when dropped.
#[derive(Debug)]
pub struct Turn {
    queue: DownloadQueue,
    hash: InfoHash,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.queue.lock().release(&self.hash);
    }
}

/// A place in the line: taken before a torrent checks its data (so a torrent still checking
/// keeps its rank against later ones), given up when dropped (complete after all, paused,
/// stopped) or once it has its turn.
#[derive(Debug)]
pub struct Place {
    queue: DownloadQueue,
    rank: Rank,
    wake: async_channel::Receiver<()>,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut q = self.queue.lock();
        q.forget_waiter(&self.rank);
        q.wake_all();
    }
}

impl Place {
    pub fn rank(&self) -> Rank {
        self.rank
    }

    /// The turn, if it is this place's now.
    pub fn try_take(&self) -> Option<Turn> {
        self.queue.lock().try_take(self.rank).then(|| Turn { queue: self.queue.clone(), hash: self.rank.1 })
    }

    /// Waits for the turn (cancel by dropping the future; the place stays until dropped).
    pub async fn take(&self) -> Turn {
        loop {
            if let Some(turn) = self.try_take() {
                return turn;
            }
            let _ = self.wake.recv().await;
        }
    }
}

impl DownloadQueue {
    pub fn new(limit: u32) -> DownloadQueue {
        DownloadQueue { state: Arc::new(Mutex::new(QueueState::new(limit as usize))) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_limit(&self, limit: u32) {
        self.lock().set_limit(limit as usize);
    }

    /// Takes a place in the line at `rank`.
    pub fn enter(&self, rank: Rank) -> Place {
        let (tx, rx) = async_channel::bounded(1);
        self.lock().wait(rank, tx);
        Place { queue: self.clone(), rank, wake: rx }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(b: u8) -> InfoHash {
        InfoHash([b; 32])
    }

    #[test]
    fn turns_go_in_rank_order_up_to_the_limit() {
        let mut q = QueueState::new(1);
        let (tx, _rx) = async_channel::bounded(1);
        assert!(q.try_take((5, h(1))));
        assert!(!q.try_take((3, h(2))), "the limit is reached");
        q.wait((3, h(2)), tx.clone());
        q.wait((1, h(3)), tx.clone());
        q.release(&h(1));
        assert!(!q.try_take((3, h(2))), "a lower rank waits");
        assert!(q.try_take((1, h(3))));
        assert_eq!(q.active(), 1);
        q.release(&h(3));
        assert!(q.try_take((3, h(2))));
    }

    #[test]
    fn one_still_checking_holds_back_only_the_turns_it_may_take() {
        let mut q = QueueState::new(3);
        let (tx, _rx) = async_channel::bounded(1);
        q.wait((0, h(0)), tx.clone());
        assert!(q.try_take((5, h(5))), "two of three turns are free for those behind it");
        assert!(q.try_take((6, h(6))));
        assert!(!q.try_take((7, h(7))), "the last free turn is kept for the one checking");
        assert!(q.try_take((0, h(0))));
    }

    #[test]
    fn no_limit_means_everyone_and_a_raised_limit_wakes_waiters() {
        let mut q = QueueState::new(0);
        for b in 0..50 {
            assert!(q.try_take((u64::from(b), h(b))));
        }
        let mut q = QueueState::new(1);
        assert!(q.try_take((0, h(0))));
        let (tx, rx) = async_channel::bounded(1);
        q.wait((1, h(1)), tx);
        q.set_limit(2);
        assert!(rx.try_recv().is_ok(), "woken");
        assert!(q.try_take((1, h(1))));
    }

    #[test]
    fn a_place_keeps_its_rank_while_checking_and_a_dropped_place_lets_the_next_go() {
        let q = DownloadQueue::new(1);
        let early = q.enter((0, h(0)));
        let late = q.enter((1, h(1)));
        assert!(late.try_take().is_none(), "an earlier place, still checking, goes first");
        drop(early);
        let turn = late.try_take().expect("the earlier one turned out complete");
        let third = q.enter((2, h(2)));
        smol::block_on(async {
            let waiting = third.take();
            drop(turn);
            assert_eq!(waiting.await.hash, h(2));
        });
    }
}
