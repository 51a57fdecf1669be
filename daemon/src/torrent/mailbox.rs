//! What the supervisor asks of one torrent's task, bounded however busy the task is.
//!
//! A plain queue would grow with every reload and `verify` sent while the task hashes a large
//! file and does not read it; a bounded one would make the supervisor (and every control call
//! behind it) wait on one busy torrent, or drop requests. The mailbox coalesces instead: the
//! latest settings replace earlier ones, a verify asked twice is one, and a stop is sent once.
//!
//! Invariants: the mailbox holds at most one of each kind of request; nothing the supervisor
//! asked is lost (a request is replaced only by a newer one of its kind); the task takes a stop
//! first, then settings, then a verify; once the [`Outbox`] is dropped the task sees
//! [`Closed`] after taking what was left.
//!
//! The task owns its settings and publishes the ones it runs with; what the supervisor asked
//! and the task has not yet applied is here. Settings taken stay visible ("in hand") until the
//! task says it has applied and published them ([`Inbox::settled`]), so [`Outbox::asked_settings`]
//! followed by a look at the published ones never sees an older value than the latest asked.

use std::sync::{Arc, Mutex};

use super::{Command, StopMode};
use crate::torrent::{EffectiveSettings, StateError};

#[derive(Default)]
struct Pending {
    stop: Option<(StopMode, async_channel::Sender<Result<(), StateError>>)>,
    settings: Option<EffectiveSettings>,
    /// Settings the task took and has not yet said are applied.
    in_hand: Option<EffectiveSettings>,
    verify: bool,
}

impl Pending {
    fn take(&mut self) -> Option<Command> {
        if let Some((how, done)) = self.stop.take() {
            return Some(Command::Stop { how, done });
        }
        if let Some(s) = self.settings.take() {
            self.in_hand = Some(s.clone());
            return Some(Command::Settings(s));
        }
        std::mem::take(&mut self.verify).then_some(Command::Verify)
    }
}

/// The supervisor's side.
pub struct Outbox {
    pending: Arc<Mutex<Pending>>,
    /// Holds one `()` while something is pending.
    bell: async_channel::Sender<()>,
}

/// The task's side.
pub struct Inbox {
    pending: Arc<Mutex<Pending>>,
    bell: async_channel::Receiver<()>,
}

/// The supervisor dropped its side: nothing more will come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// Nothing is pending now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Empty;

pub fn mailbox() -> (Outbox, Inbox) {
    let pending = Arc::new(Mutex::new(Pending::default()));
    let (tx, rx) = async_channel::bounded(1);
    (Outbox { pending: pending.clone(), bell: tx }, Inbox { pending, bell: rx })
}

fn lock(p: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

impl Outbox {
    /// Leaves a request (replacing an earlier one of its kind) and wakes the task.
    pub fn send(&self, cmd: Command) {
        let mut p = lock(&self.pending);
        match cmd {
            Command::Stop { how, done } => p.stop = Some((how, done)),
            Command::Settings(s) => p.settings = Some(s),
            Command::Verify => p.verify = true,
        }
        drop(p);
        let _ = self.bell.try_send(());
    }

    /// The latest settings asked for that the task has not yet applied and published.
    pub fn asked_settings(&self) -> Option<EffectiveSettings> {
        let p = lock(&self.pending);
        p.settings.clone().or_else(|| p.in_hand.clone())
    }
}

impl Inbox {
    /// The settings last taken are applied and published.
    pub fn settled(&self) {
        lock(&self.pending).in_hand = None;
    }

    /// The next request, if one is pending.
    pub fn try_recv(&self) -> Result<Command, Empty> {
        lock(&self.pending).take().ok_or(Empty)
    }

    /// Waits for the next request; [`Closed`] once the supervisor's side is gone and nothing is
    /// left.
    pub async fn recv(&self) -> Result<Command, Closed> {
        loop {
            if let Ok(cmd) = self.try_recv() {
                return Ok(cmd);
            }
            if self.bell.recv().await.is_err() {
                return self.try_recv().map_err(|Empty| Closed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::ByteRate;

    fn settings(paused: bool) -> EffectiveSettings {
        EffectiveSettings {
            data_dir: "/data".into(),
            upload_rate: ByteRate::UNLIMITED,
            download_rate: ByteRate::UNLIMITED,
            paused,
            max_peers: 50,
            hooks: Default::default(),
            queue_rank: 0,
            cache: false,
        }
    }

    #[test]
    fn requests_coalesce_and_a_stop_comes_first() {
        let (out, inbox) = mailbox();
        for i in 0..1000 {
            out.send(Command::Settings(settings(i % 2 == 1)));
            out.send(Command::Verify);
        }
        assert!(matches!(inbox.try_recv(), Ok(Command::Settings(s)) if s.paused), "the latest settings");
        assert!(matches!(inbox.try_recv(), Ok(Command::Verify)));
        assert_eq!(inbox.try_recv().err(), Some(Empty), "a thousand requests held two");
        let (done, _) = async_channel::bounded(1);
        out.send(Command::Verify);
        out.send(Command::Stop { how: StopMode::Suspend, done });
        assert!(matches!(inbox.try_recv(), Ok(Command::Stop { .. })));
        assert!(matches!(inbox.try_recv(), Ok(Command::Verify)));
    }

    #[test]
    fn asked_settings_stay_visible_until_the_task_has_applied_them() {
        let (out, inbox) = mailbox();
        assert_eq!(out.asked_settings(), None);
        out.send(Command::Settings(settings(true)));
        assert!(matches!(inbox.try_recv(), Ok(Command::Settings(_))));
        assert_eq!(out.asked_settings(), Some(settings(true)), "taken, not yet applied");
        out.send(Command::Settings(settings(false)));
        assert_eq!(out.asked_settings(), Some(settings(false)), "the latest asked wins");
        inbox.settled();
        assert_eq!(out.asked_settings(), Some(settings(false)), "a newer request is still pending");
        assert!(matches!(inbox.try_recv(), Ok(Command::Settings(s)) if !s.paused));
        inbox.settled();
        assert_eq!(out.asked_settings(), None);
    }

    #[test]
    fn the_task_wakes_for_a_request_and_sees_the_supervisor_go() {
        let (out, inbox) = mailbox();
        smol::block_on(async {
            out.send(Command::Verify);
            assert!(matches!(inbox.recv().await, Ok(Command::Verify)));
            out.send(Command::Verify);
            drop(out);
            assert!(matches!(inbox.recv().await, Ok(Command::Verify)), "what was left comes first");
            assert_eq!(inbox.recv().await.err(), Some(Closed));
        });
    }

    #[test]
    fn a_stop_for_a_task_that_is_gone_gets_no_answer_rather_than_a_wait() {
        let (out, inbox) = mailbox();
        drop(inbox);
        let (done, answer) = async_channel::bounded(1);
        out.send(Command::Stop { how: StopMode::Suspend, done });
        drop(out);
        assert!(smol::block_on(answer.recv()).is_err(), "the reply's sender went with the mailbox");
    }
}
