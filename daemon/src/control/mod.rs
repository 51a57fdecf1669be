//! The control socket: the protocol and the blocking client shared with p2pctl and the
//! testbed, and (in the daemon) the server and its admission rule.

#[cfg(feature = "daemon")]
pub mod access;
pub mod client;
pub mod protocol;
#[cfg(feature = "daemon")]
pub mod server;
