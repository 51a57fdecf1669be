//! One module per subcommand; each returns the exit code for success or a [`CtlError`].
//!
//! [`CtlError`]: crate::exit::CtlError

pub mod add;
pub mod create;
pub mod docs;
pub mod drain;
pub mod peers;
pub mod reload;
pub mod remove;
pub mod set;
pub mod status;
pub mod verify;
pub mod wait;
pub mod watch;
