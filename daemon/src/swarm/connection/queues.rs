//! What the engine and the reader leave for the connection's tasks: the writer's outbox and
//! the reader's instructions, each behind one short lock with a bell that wakes its task.
//!
//! Invariants: the outbox holds at most [`MAX_CONTROL_BYTES`] of encoded frames and
//! [`super::MAX_QUEUED_UPLOADS`] requests; `choking` changes only together with `uploads` (a
//! choke discards the queue), so a request is never queued behind the choke that refused it;
//! the reader's instructions are at most [`MAX_READER_COMMANDS`]. No lock is held across an
//! await or I/O.

use std::collections::VecDeque;

use super::{MAX_CONTROL_BYTES, MAX_QUEUED_UPLOADS};
use crate::swarm::wire::{self, BlockRef, Message};

/// Instructions to the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReaderCmd {
    /// Fetch a piece: allocate its buffer and request all its blocks.
    Fetch { piece: u32 },
    /// Stop fetching a piece (cancel what is outstanding).
    Drop { piece: u32 },
}

/// Most instructions waiting for the reader. The engine keeps far fewer pieces in flight with
/// one peer (one instruction to fetch each, one to drop it); more means the reader is stuck,
/// and the connection is closed.
pub(super) const MAX_READER_COMMANDS: usize = 8192;

/// Everything queued for the writer.
#[derive(Debug)]
pub(super) struct Outbox {
    /// Encoded control frames, sent before the next block. At most [`MAX_CONTROL_BYTES`].
    control: Vec<u8>,
    /// The peer's requests we will serve, in order. At most [`MAX_QUEUED_UPLOADS`].
    uploads: VecDeque<BlockRef>,
    /// Whether we refuse to serve the peer.
    choking: bool,
}

/// Why a frame could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Full {
    /// [`MAX_CONTROL_BYTES`] of frames wait unsent.
    Control,
    /// [`MAX_QUEUED_UPLOADS`] requests wait to be served.
    Uploads,
}

impl Outbox {
    /// A new connection's outbox: choking the peer, with `first` (our bitfield) to send.
    pub(super) fn new(first: &Message) -> Outbox {
        Outbox { control: wire::encode(first), uploads: VecDeque::new(), choking: true }
    }

    pub(super) fn push(&mut self, msg: &Message) -> Result<(), Full> {
        let frame = wire::encode(msg);
        if self.control.len() + frame.len() > MAX_CONTROL_BYTES {
            return Err(Full::Control);
        }
        self.control.extend_from_slice(&frame);
        Ok(())
    }

    pub(super) fn choking(&self) -> bool {
        self.choking
    }

    /// Chokes or unchokes the peer: `None` if that changes nothing; otherwise whether the
    /// message fit, and the requests a choke discards.
    pub(super) fn set_choking(&mut self, choke: bool) -> Option<(Result<(), Full>, VecDeque<BlockRef>)> {
        if self.choking == choke {
            return None;
        }
        self.choking = choke;
        let sent = self.push(if choke { &Message::Choke } else { &Message::Unchoke });
        let discarded = if choke { std::mem::take(&mut self.uploads) } else { VecDeque::new() };
        Some((sent, discarded))
    }

    /// Answers a request: queues it to be served if `serve` and the peer is not choked (a
    /// choke that overtook the request has discarded it on the peer's side), otherwise queues
    /// a `reject`. `Ok(true)` when it will be served.
    pub(super) fn answer(&mut self, r: BlockRef, serve: bool) -> Result<bool, Full> {
        if serve && !self.choking {
            if self.uploads.len() >= MAX_QUEUED_UPLOADS {
                return Err(Full::Uploads);
            }
            self.uploads.push_back(r);
            return Ok(true);
        }
        self.push(&Message::Reject(r)).map(|()| false)
    }

    /// The peer cancelled a request: whether it was still queued (and is no more).
    pub(super) fn cancel(&mut self, r: BlockRef) -> bool {
        self.uploads.iter().position(|q| *q == r).and_then(|i| self.uploads.remove(i)).is_some()
    }

    /// What the writer sends next: the control frames (swapped into `control`, which must be
    /// empty) and the next request to serve.
    pub(super) fn take(&mut self, control: &mut Vec<u8>) -> Option<BlockRef> {
        debug_assert!(control.is_empty());
        std::mem::swap(control, &mut self.control);
        self.uploads.pop_front()
    }
}

/// The writer's queue, and the bell that wakes it.
pub(super) struct WriterQueue {
    outbox: std::sync::Mutex<Outbox>,
    /// Holds one `()` when the writer should look at the outbox (a ring while one is pending
    /// is a no-op). Never closed (both ends live here): the tasks end when the engine drops
    /// the [`super::Connection`], which cancels them.
    bell: (async_channel::Sender<()>, async_channel::Receiver<()>),
}

impl WriterQueue {
    pub(super) fn new(outbox: Outbox) -> WriterQueue {
        WriterQueue { outbox: std::sync::Mutex::new(outbox), bell: async_channel::bounded(1) }
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn ring(&self) {
        let _ = self.bell.0.try_send(());
    }

    /// Waits for a ring.
    pub(super) async fn wait(&self) {
        // Never closed: both ends live here.
        let _ = self.bell.1.recv().await;
    }
}

/// The reader's instructions from the engine, and the bell that wakes it.
pub(super) struct ReaderQueue {
    commands: std::sync::Mutex<VecDeque<ReaderCmd>>,
    bell: (async_channel::Sender<()>, async_channel::Receiver<()>),
}

impl ReaderQueue {
    pub(super) fn new() -> ReaderQueue {
        ReaderQueue { commands: std::sync::Mutex::new(VecDeque::new()), bell: async_channel::bounded(1) }
    }

    /// Queues an instruction and wakes the reader; `false` if [`MAX_READER_COMMANDS`] wait.
    pub(super) fn push(&self, cmd: ReaderCmd) -> bool {
        let mut commands = self.commands.lock().unwrap_or_else(|p| p.into_inner());
        if commands.len() >= MAX_READER_COMMANDS {
            return false;
        }
        commands.push_back(cmd);
        drop(commands);
        let _ = self.bell.0.try_send(());
        true
    }

    pub(super) fn take(&self) -> VecDeque<ReaderCmd> {
        std::mem::take(&mut *self.commands.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Waits for a ring.
    pub(super) async fn wait(&self) {
        let _ = self.bell.1.recv().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(piece: u32) -> BlockRef {
        BlockRef { piece, offset: 0, length: 16 }
    }

    /// The control frames waiting (none of these tests queue uploads).
    fn sent(o: &mut Outbox) -> Vec<u8> {
        let mut control = Vec::new();
        assert_eq!(o.take(&mut control), None);
        control
    }

    #[test]
    fn a_new_outbox_chokes_and_sends_the_bitfield_first() {
        let first = Message::Bitfield(vec![0x80]);
        let mut o = Outbox::new(&first);
        assert!(o.choking());
        assert_eq!(sent(&mut o), wire::encode(&first));
    }

    #[test]
    fn control_frames_are_capped() {
        let mut o = Outbox::new(&Message::KeepAlive);
        let have = wire::encode(&Message::Have(1)).len();
        let fit = (MAX_CONTROL_BYTES - wire::encode(&Message::KeepAlive).len()) / have;
        for _ in 0..fit {
            assert_eq!(o.push(&Message::Have(1)), Ok(()));
        }
        assert_eq!(o.push(&Message::Have(1)), Err(Full::Control));
        assert!(sent(&mut o).len() <= MAX_CONTROL_BYTES);
        assert_eq!(o.push(&Message::Have(1)), Ok(()), "room again once the writer took them");
    }

    #[test]
    fn requests_are_served_only_while_unchoked_and_a_choke_discards_them() {
        let mut o = Outbox::new(&Message::KeepAlive);
        assert_eq!(o.answer(block(1), true), Ok(false), "choked: rejected");
        assert!(o.set_choking(true).is_none(), "already choking");
        let (fit, discarded) = o.set_choking(false).unwrap();
        assert_eq!((fit, discarded.len()), (Ok(()), 0));
        assert_eq!(o.answer(block(2), true), Ok(true));
        assert_eq!(o.answer(block(3), false), Ok(false), "declined: rejected");
        assert_eq!(o.answer(block(4), true), Ok(true));
        let (_, discarded) = o.set_choking(true).unwrap();
        assert_eq!(discarded, VecDeque::from([block(2), block(4)]));
        let mut expected = wire::encode(&Message::KeepAlive);
        for m in [Message::Reject(block(1)), Message::Unchoke, Message::Reject(block(3)), Message::Choke] {
            expected.extend(wire::encode(&m));
        }
        let mut control = Vec::new();
        assert_eq!(o.take(&mut control), None, "nothing left to serve after the choke");
        assert_eq!(control, expected);
    }

    #[test]
    fn queued_requests_are_capped_and_a_cancel_takes_one_back() {
        let mut o = Outbox::new(&Message::KeepAlive);
        o.set_choking(false);
        for i in 0..MAX_QUEUED_UPLOADS as u32 {
            assert_eq!(o.answer(block(i), true), Ok(true));
        }
        assert_eq!(o.answer(block(u32::MAX), true), Err(Full::Uploads));
        assert!(o.cancel(block(7)));
        assert!(!o.cancel(block(7)), "cancelled twice");
        assert_eq!(o.answer(block(u32::MAX), true), Ok(true));
        let mut control = Vec::new();
        assert_eq!(o.take(&mut control), Some(block(0)));
    }

    #[test]
    fn the_reader_takes_at_most_its_bound_of_instructions() {
        let q = ReaderQueue::new();
        for i in 0..MAX_READER_COMMANDS as u32 {
            assert!(q.push(ReaderCmd::Fetch { piece: i }));
        }
        assert!(!q.push(ReaderCmd::Drop { piece: 0 }));
        assert_eq!(q.take().len(), MAX_READER_COMMANDS);
        assert!(q.push(ReaderCmd::Drop { piece: 0 }));
    }
}
