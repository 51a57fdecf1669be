//! What the engine keeps per connected peer, and the rules it applies to each peer every tick
//! (pure functions of the peer's numbers): its rates, how many bytes to keep in flight with it,
//! when it has stalled, and when it must be cut off.
//!
//! - Budget: a quarter second of what the peer delivers ([`BUDGET_SECS`]), within
//!   [`MIN_IN_FLIGHT`]…`limits.max_in_flight_per_peer`, two pieces if the cap allows (the next
//!   is asked for while one arrives) and always one; one piece while snubbed.
//! - Stall: a peer owing us data that sends nothing for [`STALL_AFTER`] (counted from the later
//!   of its last block and our first request since it last owed us nothing) loses its pieces
//!   and is snubbed: asked for one piece at a time until it delivers again, at most
//!   4 × [`STALL_AFTER`].
//! - Cut off: silent for [`connection::IDLE_TIMEOUT`], not reading what we send for
//!   [`connection::SEND_STALL`], queues overflowed, or stuck inside a block for
//!   [`DROP_CONFIRM`] while holding pieces we cancelled.

use std::time::{Duration, Instant};

use crate::bitfield::Bitfield;
use crate::swarm::connection::{self, Connection};
use crate::swarm::exchange::Exchange;
use crate::swarm::fetches::Fetches;
use crate::swarm::listener::IpSlot;

/// A peer owing data that sends nothing for this long loses its pieces.
pub const STALL_AFTER: Duration = Duration::from_secs(8);
/// Bytes in flight per peer: a quarter second of what it delivers, within bounds. Requests
/// queue at the sender, each connection's behind its own, so the budget is also how long a
/// freshly announced piece waits there before it can be passed on: on a LAN a quarter second
/// of a peer's rate covers the round trip many times over. The floor matters where a peer's
/// share of a busy uplink is small (a seed serving 16 leechers gives each well under 1 MB/s).
/// (Measurements: STATE.md.)
pub const BUDGET_SECS: f64 = 0.25;
pub const MIN_IN_FLIGHT: u64 = 512 << 10;
/// A peer whose reader has not dropped the pieces we cancelled for this long is stuck inside a
/// frame (a block it never finishes) and is closed: its buffers are freed with it. A block
/// taking longer than this arrives at under 4.4 kB/s, which [`connection::SEND_STALL`] also
/// treats as a dead link.
pub const DROP_CONFIRM: Duration = connection::SEND_STALL;
/// Weight of the newest second in a smoothed rate (a few seconds' memory).
const RATE_WEIGHT: f64 = 0.4;

/// A connected peer.
pub struct Peer {
    pub conn: Connection,
    pub bits: Bitfield,
    pub peer_choking: bool,
    pub peer_interested: bool,
    pub am_interested: bool,
    /// Pieces it has that we lack.
    pub useful: usize,
    /// Pieces we asked it for, and those its reader has yet to drop.
    pub fetches: Fetches,
    /// When what it owes us last rose from zero.
    pub owed_since: Instant,
    /// When it last stalled, while it has not delivered since: asked for one piece at a time.
    pub snubbed_at: Option<Instant>,
    pub down_rate: f64,
    pub up_rate: f64,
    pub last_down: u64,
    pub last_up: u64,
    pub unchoked_at: Option<Instant>,
    /// Pieces it declined to send us lately (a seed's first-copy policy, or a choke): not
    /// asked of it again until `declined_until` (meanwhile the leecher that got the first copy
    /// announces it).
    pub declined: Bitfield,
    pub declined_until: Option<Instant>,
    /// Nothing to pick from it as of this picker generation: not scanned again until the
    /// generation, its bitfield or its declines change.
    pub exhausted: Option<u64>,
    /// What it has been told by peer exchange; `None` on a version-1 connection.
    pub exchange: Option<Exchange>,
    /// Its bitfield arrived. A connection we opened that closes before that was a node
    /// without room (it answered, named its peers and closed): a failed connect, backed off.
    pub heard: bool,
    pub outgoing: bool,
    pub _slot: IpSlot,
}

impl Peer {
    /// A peer just connected: choked both ways, nothing known of its pieces.
    pub fn new(conn: Connection, pieces: usize, exchange: bool, slot: IpSlot, now: Instant) -> Peer {
        let outgoing = conn.outgoing;
        Peer {
            conn,
            bits: Bitfield::new(pieces),
            peer_choking: true,
            peer_interested: false,
            am_interested: false,
            useful: 0,
            fetches: Fetches::default(),
            owed_since: now,
            snubbed_at: None,
            down_rate: 0.0,
            up_rate: 0.0,
            last_down: 0,
            last_up: 0,
            unchoked_at: None,
            declined: Bitfield::new(pieces),
            declined_until: None,
            exhausted: None,
            exchange: exchange.then(|| Exchange::new(now)),
            heard: false,
            outgoing,
            _slot: slot,
        }
    }

    /// Takes a tick's byte counters (totals since it connected) into the smoothed rates.
    pub fn update_rates(&mut self, downloaded: u64, uploaded: u64, dt: Duration) {
        self.down_rate = smoothed(self.down_rate, downloaded.saturating_sub(self.last_down), dt);
        self.up_rate = smoothed(self.up_rate, uploaded.saturating_sub(self.last_up), dt);
        self.last_down = downloaded;
        self.last_up = uploaded;
    }
}

/// A rate smoothed over a few seconds, after `bytes` more in `dt`.
pub fn smoothed(rate: f64, bytes: u64, dt: Duration) -> f64 {
    let dt = dt.as_secs_f64().max(1e-3);
    (1.0 - RATE_WEIGHT) * rate + RATE_WEIGHT * (bytes as f64 / dt)
}

/// Bytes to keep in flight with a peer delivering `down_rate` bytes/s (module doc).
pub fn budget(down_rate: f64, snubbed: bool, piece_length: u64, cap: u64) -> u64 {
    if snubbed {
        return piece_length;
    }
    ((down_rate * BUDGET_SECS) as u64)
        .clamp(MIN_IN_FLIGHT.min(cap), cap)
        .max((2 * piece_length).min(cap))
        .max(piece_length)
}

/// Whether a peer owing us `owed` bytes, not choking us, has stalled: nothing since the later
/// of its last block and when it last started owing.
pub fn stalled(owed: u64, choking: bool, last_block: Instant, owed_since: Instant, now: Instant) -> bool {
    owed > 0 && !choking && now.saturating_duration_since(last_block.max(owed_since)) > STALL_AFTER
}

/// Whether a snub that began `at` is over: the peer delivered since, or it has lasted
/// 4 × [`STALL_AFTER`].
pub fn snub_over(at: Instant, last_block: Instant, now: Instant) -> bool {
    last_block > at || now.saturating_duration_since(at) >= STALL_AFTER * 4
}

/// A peer's health, as the tick reads it from its connection.
#[derive(Debug, Clone, Copy)]
pub struct Health {
    pub last_frame: Instant,
    /// How long the writer has waited on the socket, if it is waiting.
    pub send_stalled_for: Option<Duration>,
    pub overflowed: bool,
    /// Since when pieces we cancelled wait to be dropped by its reader.
    pub dropping_since: Option<Instant>,
    /// Bytes of piece buffers it holds.
    pub held_bytes: u64,
}

/// Why a peer must be cut off now, if it must (module doc).
pub fn cut_reason(h: Health, now: Instant) -> Option<String> {
    if now.saturating_duration_since(h.last_frame) > connection::IDLE_TIMEOUT {
        return Some("nothing received for two minutes".into());
    }
    if let Some(stalled) = h.send_stalled_for.filter(|d| *d > connection::SEND_STALL) {
        return Some(format!("has not read what we sent for {} s", stalled.as_secs()));
    }
    if h.overflowed {
        return Some(format!("left {} KiB of our messages unread", connection::MAX_CONTROL_BYTES >> 10));
    }
    if h.dropping_since.is_some_and(|at| now.saturating_duration_since(at) > DROP_CONFIRM) {
        let mib = h.held_bytes as f64 / (1 << 20) as f64;
        return Some(format!("stopped inside a block, holding {mib:.1} MiB of pieces we cancelled"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIECE: u64 = 256 << 10;
    const CAP: u64 = 64 << 20;
    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn the_budget_is_a_quarter_second_of_the_peers_rate_within_bounds() {
        // Nothing measured yet: the floor (two pieces here).
        assert_eq!(budget(0.0, false, PIECE, CAP), MIN_IN_FLIGHT);
        // 100 MB/s: 25 MB.
        assert_eq!(budget(100e6, false, PIECE, CAP), 25_000_000);
        // Capped by the configuration, yet always one piece.
        assert_eq!(budget(1e12, false, PIECE, CAP), CAP);
        assert_eq!(budget(1e12, false, PIECE, PIECE / 2), PIECE);
        // Two pieces when they fit: big pieces.
        assert_eq!(budget(0.0, false, 4 << 20, CAP), 8 << 20);
        // Snubbed: one piece at a time.
        assert_eq!(budget(100e6, true, PIECE, CAP), PIECE);
    }

    #[test]
    fn a_peer_stalls_only_while_it_owes_us_and_does_not_choke_us() {
        let t = Instant::now();
        let late = t + STALL_AFTER + SEC;
        assert!(stalled(1, false, t, t, late));
        assert!(!stalled(0, false, t, t, late), "owes nothing");
        assert!(!stalled(1, true, t, t, late), "choking us: its requests are void");
        assert!(!stalled(1, false, t, t, t + STALL_AFTER), "not yet");
        // Asked again after a quiet spell: the clock starts at the new request.
        assert!(!stalled(1, false, t, t + 2 * SEC, late));
    }

    #[test]
    fn a_snub_ends_when_the_peer_delivers_or_after_four_stall_periods() {
        let t = Instant::now();
        assert!(!snub_over(t, t, t + SEC));
        assert!(snub_over(t, t + SEC, t + SEC));
        assert!(snub_over(t, t, t + STALL_AFTER * 4));
    }

    #[test]
    fn rates_are_smoothed_and_never_negative() {
        let r = smoothed(0.0, 1000, SEC);
        assert_eq!(r, 400.0);
        assert_eq!(smoothed(r, 1000, SEC), 640.0);
        assert_eq!(smoothed(0.0, 0, Duration::ZERO), 0.0);
    }

    #[test]
    fn peers_that_are_silent_do_not_read_overflow_or_hang_in_a_block_are_cut_off() {
        let t = Instant::now();
        let healthy =
            Health { last_frame: t, send_stalled_for: None, overflowed: false, dropping_since: None, held_bytes: 0 };
        assert_eq!(cut_reason(healthy, t + SEC), None);
        let later = t + connection::IDLE_TIMEOUT + SEC;
        assert_eq!(cut_reason(healthy, later).as_deref(), Some("nothing received for two minutes"));
        let not_reading = Health { send_stalled_for: Some(connection::SEND_STALL + SEC), ..healthy };
        assert_eq!(cut_reason(not_reading, t).as_deref(), Some("has not read what we sent for 31 s"));
        let slow = Health { send_stalled_for: Some(connection::SEND_STALL), ..healthy };
        assert_eq!(cut_reason(slow, t), None);
        assert!(cut_reason(Health { overflowed: true, ..healthy }, t).unwrap().contains("unread"));
        let stuck = Health { dropping_since: Some(t), held_bytes: 3 << 19, ..healthy };
        assert_eq!(cut_reason(stuck, t + DROP_CONFIRM), None);
        assert_eq!(
            cut_reason(stuck, t + DROP_CONFIRM + SEC).as_deref(),
            Some("stopped inside a block, holding 1.5 MiB of pieces we cancelled")
        );
    }
}
