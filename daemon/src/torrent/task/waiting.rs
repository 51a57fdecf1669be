//! The states in which the task waits, still taking the supervisor's requests: `queued`, for
//! a turn to download (`limits.max_active_downloads`, `torrent/queue.rs`), and `error`, for a
//! retry, a verify, new settings or a stop.

use futures_lite::future;
use log::{info, warn};

use super::{Commands, Interrupt, Next, RETRY_AFTER, Torrent};
use crate::control::protocol::TorrentState;
use crate::hooks::HookEvent;
use crate::torrent::{Command, StopMode};

impl Torrent {
    /// Takes a place in the download line, unless it has one (or its turn) already.
    pub(super) fn take_place(&mut self) {
        let rank = (self.spec.settings.queue_rank, self.spec.descriptor.info_hash);
        if self.turn.is_none() && self.place.as_ref().is_none_or(|p| p.rank() != rank) {
            self.place = Some(self.ctx.queue.enter(rank));
        }
    }

    /// Waits, `queued`, for a turn to download, taking requests meanwhile.
    pub(super) async fn wait_turn(&mut self, commands: &Commands) -> Result<(), Interrupt> {
        loop {
            self.take_place();
            let Some(place) = self.place.take() else { return Ok(()) };
            if let Some(turn) = place.try_take() {
                self.turn = Some(turn);
                return Ok(());
            }
            if self.published.get() != TorrentState::Queued {
                info!("{}: queued (limits.max_active_downloads reached)", self.name());
                self.publish(TorrentState::Queued, None);
            }
            let woke = future::or(async { Ok(place.take().await) }, async { Err(commands.recv().await) }).await;
            self.place = Some(place);
            match woke {
                Ok(turn) => {
                    self.turn = Some(turn);
                    self.place = None;
                    return Ok(());
                }
                Err(Err(_)) => return Err(Interrupt::Stop { how: StopMode::Suspend, done: None }),
                Err(Ok(Command::Stop { how, done })) => return Err(Interrupt::Stop { how, done: Some(done) }),
                // Run once it has its turn (the check it asks for is the next start's).
                Err(Ok(Command::Verify)) => self.verify_asked = true,
                // A new rank takes a new place (next round).
                Err(Ok(Command::Settings(settings))) => {
                    self.apply(settings, commands);
                    if self.spec.settings.paused {
                        self.place = None;
                        return Err(Interrupt::Paused);
                    }
                }
            }
        }
    }

    /// In `error`: wait for a retry (if the problem may pass), a verify, new settings or stop.
    pub(super) async fn failed(&mut self, commands: &Commands, message: String, retry: bool) -> Next {
        let message = if retry { format!("{message} (retrying every {} s)", RETRY_AFTER.as_secs()) } else { message };
        warn!("{}: {message}", self.name());
        // Once per trouble, not at every retry: again only after the torrent made progress.
        if !std::mem::replace(&mut self.error_hooked, true) {
            self.ctx.fire_hook(&self.spec, HookEvent::Error, Some(message.clone()));
        }
        self.publish(TorrentState::Error, Some(message));
        let timeout = async {
            if retry {
                smol::Timer::after(RETRY_AFTER).await;
            } else {
                future::pending::<()>().await;
            }
            None
        };
        match future::or(async { Some(commands.recv().await) }, timeout).await {
            None => Next::Restart { full_check: false },
            Some(Err(_)) => Next::Stop { how: StopMode::Suspend, done: None },
            Some(Ok(Command::Stop { how, done })) => Next::Stop { how, done: Some(done) },
            Some(Ok(Command::Verify)) => Next::Restart { full_check: true },
            Some(Ok(Command::Settings(s))) => {
                self.apply(s, commands);
                Next::Restart { full_check: false }
            }
        }
    }
}
