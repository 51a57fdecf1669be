//! What one connection knows of its peer, and the rules applied to everything the peer sends
//! (pure: no socket, no task, no clock of its own; the reader carries out what it decides).
//!
//! Invariants:
//! - A block is taken into a piece buffer only if we asked this peer for that piece, at a block
//!   boundary, with exactly the length the piece's geometry gives that block, and only once;
//!   anything else is read and dropped by the caller ([`PeerState::block_slot`] says `None`).
//! - A piece is handed on only when every block has arrived. It is not hashed here: the
//!   verifier hashes it off the network thread (see `engine::verify`).
//! - Piece buffers exist only for pieces asked of this peer: [`PeerState::fetch`] creates one,
//!   and every way a piece ends (complete, dropped, rejected, a choke) gives the buffer back.
//! - Whatever the peer claims is checked against the torrent's geometry before it is used: a
//!   request or `have` out of range, a bitfield of the wrong length or a second bitfield, and
//!   `peers` too often or on a version-1 connection are [`Violation`]s (the connection closes).
//! - Only changes of the peer's interest are reported, so repeating `interested` costs nothing.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use super::super::first_copies::Claim;
use super::super::wire::{BLOCK, BlockRef, MAX_BLOCK};
use super::{EXCHANGE_BURST, MAX_QUEUED_UPLOADS, MIN_EXCHANGE_SPACING};
use crate::bitfield::{Bitfield, BitfieldError};
use crate::storage::Layout;

/// How a peer broke the protocol. Each closes the connection, and is logged as the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("{0}")]
    Frame(#[from] super::super::wire::WireError),
    #[error("sent a second bitfield")]
    SecondBitfield,
    #[error("bitfield: {0}")]
    Bitfield(#[from] BitfieldError),
    #[error("have for piece {piece} of {pieces}")]
    HaveOutOfRange { piece: u32, pieces: u32 },
    #[error("request for piece {piece} of {pieces}")]
    RequestOutOfRange { piece: u32, pieces: u32 },
    #[error("request for {length} bytes at {offset} of piece {piece} ({piece_len} bytes long)")]
    RequestOutsidePiece { length: u32, offset: u32, piece: u32, piece_len: u64 },
    #[error("queued more than {MAX_QUEUED_UPLOADS} requests without reading our blocks")]
    TooManyRequests,
    #[error("left {} KiB of our messages unread", super::MAX_CONTROL_BYTES >> 10)]
    NotReading,
    #[error("sent peers on a version-1 connection")]
    PeersOnVersion1,
    #[error("sent peers more often than every {} s", MIN_EXCHANGE_SPACING.as_secs())]
    PeersTooOften,
}

/// A piece being fetched from this peer.
struct Download {
    data: Vec<u8>,
    /// Which blocks have arrived.
    received: Vec<bool>,
    missing: usize,
}

/// A piece whose every block has arrived, not yet verified.
#[derive(Debug)]
pub struct CompletePiece {
    pub piece: u32,
    pub data: Vec<u8>,
}

/// One connection's view of its peer. See the module doc for the rules.
pub struct PeerState {
    layout: Layout,
    downloads: HashMap<u32, Download>,
    /// Pieces whose first copy went to another connection and that this peer was told to
    /// fetch elsewhere ([`super::super::first_copies::FirstCopies`]); asked again, served.
    declined: HashSet<u32>,
    /// Of those, the ones whose remaining block requests are being rejected.
    declining: HashSet<u32>,
    bitfield_seen: bool,
    peer_interested: bool,
    /// Whether the connection's version has `peers`.
    exchange: bool,
    /// `peers` messages the peer may still send now ([`EXCHANGE_BURST`]), as of `peers_at`.
    peers_allowance: f64,
    peers_at: Instant,
}

/// The requests for the blocks of a piece of `length` bytes, in order.
pub fn block_requests(piece: u32, length: u32) -> impl Iterator<Item = BlockRef> {
    (0..length.div_ceil(BLOCK)).map(move |b| {
        let offset = b * BLOCK;
        BlockRef { piece, offset, length: BLOCK.min(length - offset) }
    })
}

impl PeerState {
    pub fn new(layout: Layout, exchange: bool, now: Instant) -> PeerState {
        PeerState {
            layout,
            downloads: HashMap::new(),
            declined: HashSet::new(),
            declining: HashSet::new(),
            bitfield_seen: false,
            peer_interested: false,
            exchange,
            peers_allowance: EXCHANGE_BURST,
            peers_at: now,
        }
    }

    fn piece_count(&self) -> u32 {
        self.layout.piece_count() as u32
    }

    /// Starts fetching `piece` into `buffer` (at least as long as the piece; its old bytes are
    /// all overwritten before the piece is handed on). Returns the requests to send. A piece
    /// already being fetched keeps its progress and `buffer` is handed back.
    pub fn fetch(&mut self, piece: u32, buffer: Vec<u8>) -> Result<Vec<BlockRef>, Vec<u8>> {
        if piece >= self.piece_count() || self.downloads.contains_key(&piece) {
            return Err(buffer);
        }
        let length = self.layout.piece_len(piece as usize) as u32;
        let mut data = buffer;
        data.truncate(length as usize);
        data.resize(length as usize, 0);
        let blocks = length.div_ceil(BLOCK) as usize;
        self.downloads.insert(piece, Download { data, received: vec![false; blocks], missing: blocks });
        Ok(block_requests(piece, length).collect())
    }

    /// Stops fetching `piece`: its buffer, and the cancels for the blocks still outstanding.
    pub fn drop_piece(&mut self, piece: u32) -> Option<(Vec<u8>, Vec<BlockRef>)> {
        let d = self.downloads.remove(&piece)?;
        let cancels = block_requests(piece, d.data.len() as u32)
            .enumerate()
            .filter(|(b, _)| !d.received[*b])
            .map(|(_, r)| r)
            .collect();
        Some((d.data, cancels))
    }

    /// The peer will not send `piece` (it rejected a request): its buffer, if we were
    /// fetching it.
    pub fn rejected(&mut self, piece: u32) -> Option<Vec<u8>> {
        self.downloads.remove(&piece).map(|d| d.data)
    }

    /// The peer choked us, which discards our outstanding requests: every piece being fetched,
    /// with its buffer.
    pub fn choked(&mut self) -> Vec<(u32, Vec<u8>)> {
        self.downloads.drain().map(|(piece, d)| (piece, d.data)).collect()
    }

    /// Where the data of a block announced by its header goes: `Some` slice of its piece's
    /// buffer for a block we asked for and still lack, `None` for anything else (a block
    /// crossing our cancel is legitimate; the caller reads and drops it).
    pub fn block_slot(&mut self, piece: u32, offset: u32, len: usize) -> Option<&mut [u8]> {
        let d = self.downloads.get_mut(&piece)?;
        let block = (offset / BLOCK) as usize;
        let want = (d.data.len() as u32).saturating_sub(offset).min(BLOCK) as usize;
        if !offset.is_multiple_of(BLOCK) || block >= d.received.len() || d.received[block] || want != len {
            return None;
        }
        let start = offset as usize;
        Some(&mut d.data[start..start + len])
    }

    /// The block at `offset` of `piece` has been read into its [`PeerState::block_slot`]:
    /// returns the piece once it is complete.
    pub fn block_read(&mut self, piece: u32, offset: u32) -> Option<CompletePiece> {
        let d = self.downloads.get_mut(&piece)?;
        let block = (offset / BLOCK) as usize;
        if block >= d.received.len() || std::mem::replace(&mut d.received[block], true) {
            return None;
        }
        d.missing -= 1;
        if d.missing > 0 {
            return None;
        }
        let d = self.downloads.remove(&piece)?;
        Some(CompletePiece { piece, data: d.data })
    }

    /// A bitfield from the peer: the first one, of the torrent's length.
    pub fn bitfield(&mut self, bytes: &[u8]) -> Result<Bitfield, Violation> {
        if std::mem::replace(&mut self.bitfield_seen, true) {
            return Err(Violation::SecondBitfield);
        }
        Ok(Bitfield::from_bytes(bytes, self.layout.piece_count())?)
    }

    /// A `have` from the peer names a piece of the torrent.
    pub fn have(&self, piece: u32) -> Result<(), Violation> {
        let pieces = self.piece_count();
        if piece >= pieces {
            return Err(Violation::HaveOutOfRange { piece, pieces });
        }
        Ok(())
    }

    /// A request from the peer lies inside one piece of the torrent and is a valid block.
    pub fn check_request(&self, r: BlockRef) -> Result<(), Violation> {
        let pieces = self.piece_count();
        if r.piece >= pieces {
            return Err(Violation::RequestOutOfRange { piece: r.piece, pieces });
        }
        let piece_len = self.layout.piece_len(r.piece as usize);
        if r.length == 0 || r.length > MAX_BLOCK || r.offset as u64 + r.length as u64 > piece_len {
            return Err(Violation::RequestOutsidePiece {
                length: r.length,
                offset: r.offset,
                piece: r.piece,
                piece_len,
            });
        }
        Ok(())
    }

    /// Whether to decline this request because another connection has the piece's first copy:
    /// always while that copy is on its way, once per piece and connection after it went out.
    /// The first copies are asked (`claim`) at a piece's first block only; its other blocks
    /// follow that decision.
    pub fn decline(&mut self, r: BlockRef, claim: impl FnOnce() -> Claim) -> bool {
        if r.offset != 0 {
            return self.declining.contains(&r.piece);
        }
        let decline = match claim() {
            Claim::Mine => false,
            Claim::Pending => true,
            Claim::Sent => self.declined.insert(r.piece),
        };
        if decline {
            self.declining.insert(r.piece);
        } else {
            self.declining.remove(&r.piece);
        }
        decline
    }

    /// The peer says it is (or is not) interested: whether that changes what it said before.
    pub fn interested(&mut self, interested: bool) -> bool {
        std::mem::replace(&mut self.peer_interested, interested) != interested
    }

    /// A `peers` message arrived at `now`: allowed on a version-2 connection,
    /// [`EXCHANGE_BURST`] back to back and then one per [`MIN_EXCHANGE_SPACING`].
    pub fn peers_message(&mut self, now: Instant) -> Result<(), Violation> {
        if !self.exchange {
            return Err(Violation::PeersOnVersion1);
        }
        let refill = now.saturating_duration_since(self.peers_at).as_secs_f64() / MIN_EXCHANGE_SPACING.as_secs_f64();
        self.peers_allowance = (self.peers_allowance + refill).min(EXCHANGE_BURST);
        self.peers_at = now;
        if self.peers_allowance < 1.0 {
            return Err(Violation::PeersTooOften);
        }
        self.peers_allowance -= 1.0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const B: u32 = BLOCK;

    /// Three pieces of 2.5 blocks, the last shorter: 2.5 + 2.5 + 1 blocks.
    fn state() -> PeerState {
        PeerState::new(Layout::single_file(u64::from(5 * B / 2), u64::from(6 * B)), true, Instant::now())
    }

    fn fill(s: &mut PeerState, piece: u32, offset: u32, byte: u8) -> Option<CompletePiece> {
        let len = s.block_slot(piece, offset, B.min(s.layout.piece_len(piece as usize) as u32 - offset) as usize);
        len.expect("a block we asked for").fill(byte);
        s.block_read(piece, offset)
    }

    #[test]
    fn a_fetch_requests_every_block_and_the_last_one_short() {
        let mut s = state();
        let requests = s.fetch(0, Vec::new()).unwrap();
        assert_eq!(
            requests,
            vec![
                BlockRef { piece: 0, offset: 0, length: B },
                BlockRef { piece: 0, offset: B, length: B },
                BlockRef { piece: 0, offset: 2 * B, length: B / 2 },
            ]
        );
        // Asked again while it is being fetched: the buffer comes back, nothing is requested.
        assert_eq!(s.fetch(0, vec![7; 3]), Err(vec![7; 3]));
        // A piece the torrent does not have.
        assert!(s.fetch(3, Vec::new()).is_err());
    }

    #[test]
    fn blocks_in_order_complete_a_piece() {
        let mut s = state();
        s.fetch(1, vec![0xee; 10 * B as usize]).unwrap();
        assert!(fill(&mut s, 1, 0, 1).is_none());
        assert!(fill(&mut s, 1, B, 2).is_none());
        let done = fill(&mut s, 1, 2 * B, 3).expect("the last block completes it");
        assert_eq!(done.piece, 1);
        assert_eq!(done.data.len(), (5 * B / 2) as usize, "a reused buffer is cut to the piece");
        assert_eq!(&done.data[..B as usize], &vec![1u8; B as usize][..]);
        // Once handed on, the piece takes no more blocks.
        assert!(s.block_slot(1, 0, B as usize).is_none());
    }

    #[test]
    fn blocks_out_of_order_complete_a_piece_in_its_order() {
        let mut s = state();
        s.fetch(0, Vec::new()).unwrap();
        assert!(fill(&mut s, 0, 2 * B, 3).is_none());
        assert!(fill(&mut s, 0, 0, 1).is_none());
        let done = fill(&mut s, 0, B, 2).unwrap();
        let mut expected = vec![1u8; B as usize];
        expected.extend(vec![2u8; B as usize]);
        expected.extend(vec![3u8; (B / 2) as usize]);
        assert_eq!(done.data, expected);
    }

    #[test]
    fn only_blocks_asked_for_fit_their_exact_place_once() {
        let mut s = state();
        s.fetch(0, Vec::new()).unwrap();
        assert!(s.block_slot(1, 0, B as usize).is_none(), "a piece not asked for");
        assert!(s.block_slot(0, 1, B as usize).is_none(), "not at a block boundary");
        assert!(s.block_slot(0, 0, B as usize - 1).is_none(), "shorter than the block");
        assert!(s.block_slot(0, 2 * B, B as usize).is_none(), "longer than the last block");
        assert!(s.block_slot(0, 3 * B, B as usize).is_none(), "past the piece");
        assert!(s.block_slot(0, u32::MAX, B as usize).is_none(), "offset overflowing");
        fill(&mut s, 0, 0, 1);
        assert!(s.block_slot(0, 0, B as usize).is_none(), "a block already received");
        assert!(s.block_read(0, 0).is_none(), "a block counted twice");
    }

    #[test]
    fn dropping_a_piece_cancels_what_is_outstanding_and_frees_its_buffer() {
        let mut s = state();
        s.fetch(0, Vec::new()).unwrap();
        fill(&mut s, 0, B, 1);
        let (buffer, cancels) = s.drop_piece(0).unwrap();
        assert_eq!(buffer.len(), (5 * B / 2) as usize);
        assert_eq!(
            cancels,
            vec![BlockRef { piece: 0, offset: 0, length: B }, BlockRef { piece: 0, offset: 2 * B, length: B / 2 }]
        );
        assert!(s.drop_piece(0).is_none());
        assert!(s.block_slot(0, 0, B as usize).is_none(), "a block crossing the cancel is dropped");
    }

    #[test]
    fn a_reject_or_a_choke_ends_the_fetches_they_name() {
        let mut s = state();
        s.fetch(0, Vec::new()).unwrap();
        s.fetch(2, Vec::new()).unwrap();
        assert!(s.rejected(0).is_some());
        assert!(s.rejected(0).is_none(), "rejected twice is nothing");
        s.fetch(1, Vec::new()).unwrap();
        let mut released: Vec<u32> = s.choked().into_iter().map(|(p, _)| p).collect();
        released.sort();
        assert_eq!(released, vec![1, 2]);
        assert!(s.choked().is_empty());
    }

    #[test]
    fn requests_outside_the_torrent_are_violations() {
        let s = state();
        assert_eq!(s.check_request(BlockRef { piece: 2, offset: 0, length: B }), Ok(()));
        assert_eq!(
            s.check_request(BlockRef { piece: 3, offset: 0, length: 1 }),
            Err(Violation::RequestOutOfRange { piece: 3, pieces: 3 })
        );
        for (offset, length) in [(0, 0), (0, MAX_BLOCK + 1), (B, B + 1), (u32::MAX, 2)] {
            let r = BlockRef { piece: 2, offset, length };
            assert!(matches!(s.check_request(r), Err(Violation::RequestOutsidePiece { .. })), "{r:?}");
        }
        assert_eq!(
            Violation::RequestOutsidePiece { length: 5, offset: 1, piece: 2, piece_len: 3 }.to_string(),
            "request for 5 bytes at 1 of piece 2 (3 bytes long)"
        );
    }

    #[test]
    fn one_bitfield_of_the_right_length_and_haves_in_range() {
        let mut s = state();
        assert_eq!(s.bitfield(&[0xe0, 0]), Err(Violation::Bitfield(BitfieldError::Length { expected: 1, found: 2 })));
        assert_eq!(s.bitfield(&[0xe0]), Err(Violation::SecondBitfield), "a bad one counts as the first");
        let mut s = state();
        assert_eq!(s.bitfield(&[0xe0]).unwrap().count(), 3);
        assert_eq!(s.have(2), Ok(()));
        assert_eq!(s.have(3), Err(Violation::HaveOutOfRange { piece: 3, pieces: 3 }));
    }

    #[test]
    fn only_changes_of_interest_are_reported() {
        let mut s = state();
        assert!(!s.interested(false));
        assert!(s.interested(true));
        assert!(!s.interested(true));
        assert!(s.interested(false));
    }

    #[test]
    fn a_first_copy_elsewhere_declines_every_block_of_the_piece_and_once_after_it_went_out() {
        let mut s = state();
        let first = |piece| BlockRef { piece, offset: 0, length: B };
        let second = |piece| BlockRef { piece, offset: B, length: B };
        assert!(!s.decline(first(0), || Claim::Mine));
        assert!(!s.decline(second(0), || unreachable!("decided at the first block")));
        assert!(s.decline(first(1), || Claim::Pending));
        assert!(s.decline(second(1), || unreachable!()));
        assert!(s.decline(first(1), || Claim::Pending), "declined while the first copy is on its way");
        assert!(s.decline(first(2), || Claim::Sent));
        assert!(s.decline(second(2), || unreachable!()));
        assert!(!s.decline(first(2), || Claim::Sent), "asked again after it went out: served");
        assert!(!s.decline(second(2), || unreachable!()));
    }

    #[test]
    fn peers_messages_are_rate_limited_and_need_version_2() {
        let start = Instant::now();
        let mut v1 = PeerState::new(Layout::single_file(16, 16), false, start);
        assert_eq!(v1.peers_message(start), Err(Violation::PeersOnVersion1));
        let mut s = state();
        let t = s.peers_at;
        for _ in 0..EXCHANGE_BURST as usize {
            assert_eq!(s.peers_message(t), Ok(()));
        }
        assert_eq!(s.peers_message(t), Err(Violation::PeersTooOften));
        let later = t + MIN_EXCHANGE_SPACING * 2 + Duration::from_millis(1);
        assert_eq!(s.peers_message(later), Ok(()));
    }
}
