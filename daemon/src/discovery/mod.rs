//! Peer discovery: a custom RPC over UDP that finds a swarm's members with no tracker.
//!
//! - [`wire`]: the datagram format (pure).
//! - [`node`]: the protocol state machine, sans I/O (routing, forwarding, lookups, announces).
//! - [`routing`], [`swarms`], [`tokens`], [`ratelimit`], [`key`]: its parts.
//! - [`driver`]: the daemon's driver: the UDP socket, timers, torrents' requests;
//!   [`feed`]: members delivered to the torrents; [`persist`]: the tables on disk.
//!
//! The protocol is specified in `docs/PROTOCOL.md`.

pub mod driver;
pub mod feed;
pub mod key;
pub mod node;
pub mod persist;
pub mod ratelimit;
pub mod routing;
pub mod swarms;
pub mod tokens;
pub mod wire;

pub use node::{DiscoveryConfig, Event, Forwarding, LookupReport, Node, Transmit};
