//! The control socket: the protocol shared with p2pctl, and (in the daemon) the server and
//! its admission rule.

#[cfg(feature = "daemon")]
pub mod access;
pub mod protocol;
#[cfg(feature = "daemon")]
pub mod server;
