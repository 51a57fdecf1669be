//! Process-level glue: one instance per config directory, logging, systemd notification.
//! Nothing here knows about torrents.

pub mod instance_lock;
pub mod logging;
pub mod notify;
