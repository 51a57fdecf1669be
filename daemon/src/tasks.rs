//! Spawning tasks: every task the daemon starts has a name and an owner that keeps its handle.
//!
//! - Long-lived tasks the daemon cannot live without go through `runtime::spawn_critical`
//!   (the daemon stops, naming the task, if one ends).
//! - A torrent's task, a connection's reader and writer, a resume save: their owner keeps the
//!   `smol::Task` in a field and dropping the owner cancels them. A torrent's task catches its
//!   own panic and fails that torrent alone (`torrent::TorrentHandle::start`), so stopping it
//!   never carries the panic into the supervisor.
//! - Short-lived tasks an owner starts by the dozen (a control client, a handshake on the peer
//!   port, a dial, a piece being verified) go into the owner's [`TaskGroup`]: named, their
//!   panics caught and logged with that name (a detached task's panic would vanish unseen),
//!   and cancelled with the group when the owner goes. Where the owner counts such tasks until
//!   their result arrives (dials, verifies), the task catches its own panic and still sends a
//!   result, so the count cannot stay up.
//!
//! Invariant: a [`TaskGroup`] holds only running tasks, besides those that ended since its last
//! spawn (each spawn reaps them), so it holds at most the owner's own bound of concurrent tasks
//! plus that many finished ones.

use std::panic::AssertUnwindSafe;

use futures_lite::FutureExt;

/// The message of a caught panic.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_string())
}

/// Runs `future`; a panic is caught and logged as the `name` task's.
pub async fn logging_panics(name: &'static str, future: impl Future<Output = ()>) {
    if let Err(payload) = AssertUnwindSafe(future).catch_unwind().await {
        log::error!("a {name} task panicked: {}", panic_message(&*payload));
    }
}

/// The short-lived tasks of one owner, all of one kind (see the module doc).
pub struct TaskGroup {
    name: &'static str,
    tasks: Vec<smol::Task<()>>,
}

impl TaskGroup {
    pub fn new(name: &'static str) -> TaskGroup {
        TaskGroup { name, tasks: Vec::new() }
    }

    /// Starts a task of this group on `executor`.
    pub fn spawn(&mut self, executor: &smol::Executor<'static>, future: impl Future<Output = ()> + Send + 'static) {
        self.tasks.retain(|t| !t.is_finished());
        self.tasks.push(executor.spawn(logging_panics(self.name, future)));
    }

    /// Tasks started and not yet reaped (running, or ended since the last spawn).
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_group_reaps_ended_tasks_survives_a_panic_and_cancels_the_rest_when_dropped() {
        let ex = smol::Executor::new();
        let done = Arc::new(AtomicUsize::new(0));
        smol::block_on(ex.run(async {
            let mut group = TaskGroup::new("test");
            group.spawn(&ex, async { panic!("a bug in one task") });
            let d = done.clone();
            group.spawn(&ex, async move {
                d.fetch_add(1, Ordering::SeqCst);
            });
            smol::Timer::after(Duration::from_millis(50)).await;
            assert_eq!(done.load(Ordering::SeqCst), 1, "the executor runs on after a panic");
            let d = done.clone();
            group.spawn(&ex, async move {
                smol::Timer::after(Duration::from_secs(3600)).await;
                d.fetch_add(100, Ordering::SeqCst);
            });
            assert_eq!(group.len(), 1, "the two ended tasks were reaped");
            drop(group);
            smol::Timer::after(Duration::from_millis(50)).await;
        }));
        assert_eq!(done.load(Ordering::SeqCst), 1, "dropping the group cancelled its task");
        assert_eq!(panic_message(&"x"), "x");
        assert_eq!(panic_message(&String::from("y")), "y");
        assert_eq!(panic_message(&5u8), "a panic");
    }
}
