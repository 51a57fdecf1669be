//! Swarm transfer: exchanging verified pieces with peers over TCP.
//!
//! - [`wire`]: the peer wire codec (pure; `docs/PROTOCOL.md`, part 2).
//! - [`picker`]: which piece to fetch from whom (pure).
//! - [`first_copies`]: a seed sends each piece once while leechers can pass it on.
//! - [`bans`]: strikes and bans, keyed by address (pure).
//! - [`candidates`]: the bounded list of members to connect to (pure).
//! - [`connection`]: one peer connection (reader and writer tasks; its per-peer rules pure in
//!   `connection::peer_state`).
//! - [`socket_reader`]: a peer socket's reading side: read-ahead and low-water marks.
//! - [`counters`]: peer-wire connection counters, for `status`.
//! - [`exchange`]: peer exchange, which members to tell a peer about and when (pure).
//! - [`fetches`]: the pieces asked of one peer, and the buffers they hold (pure).
//! - [`have_batch`]: when to announce verified pieces, batched (pure).
//! - [`engine`]: one torrent's transfers: connections, picking, verification, choking, bans
//!   (admission, choking, per-peer rules and the verify queue pure in its submodules).
//! - [`listener`]: the TCP peer port shared by all torrents.
//! - [`limiter`]: byte-rate limits.

pub mod bans;
pub mod candidates;
pub mod connection;
pub mod counters;
pub mod engine;
pub mod exchange;
pub mod fetches;
pub mod first_copies;
pub mod have_batch;
pub mod limiter;
pub mod listener;
pub mod picker;
pub mod socket_reader;
pub mod wire;

pub use engine::{Engine, EngineEvent, InFlightLimits, LinkView, PeerView, SwarmContext};
