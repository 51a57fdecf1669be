//! Waiting for a turn to download (`limits.max_active_downloads`, `torrent/queue.rs`): the
//! torrent shows as `queued` and still takes the supervisor's requests (stop, pause, a verify,
//! a new place in the queue) while it waits.

use futures_lite::future;
use log::info;

use super::{Commands, Interrupt, Torrent};
use crate::control::protocol::TorrentState;
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
}
