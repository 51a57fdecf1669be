//! systemd `Type=notify` messages. Without `NOTIFY_SOCKET` (not under systemd) these do
//! nothing. Failures to notify are logged, never fatal.
//!
//! Messages go out, in order, from a thread of their own (`p2pd-notify`): a send on systemd's
//! datagram socket blocks while its queue is full, and the supervisor, which feeds the
//! watchdog, must never wait on that. At most [`QUEUE`] wait; more are dropped (logged at
//! debug level; a watchdog ping lost is sent again at the next interval).

use std::sync::OnceLock;
use std::sync::mpsc::{SyncSender, sync_channel};

use log::debug;
use sd_notify::NotifyState;

/// Messages waiting for the notify thread.
const QUEUE: usize = 64;

/// The notify thread's queue; `None` if the thread could not start (messages are then sent
/// from the caller).
fn queue() -> Option<&'static SyncSender<String>> {
    static QUEUE_TX: OnceLock<Option<SyncSender<String>>> = OnceLock::new();
    QUEUE_TX
        .get_or_init(|| {
            let (tx, rx) = sync_channel::<String>(QUEUE);
            let spawned = std::thread::Builder::new().name("p2pd-notify".into()).spawn(move || {
                for message in rx {
                    deliver(&message);
                }
            });
            spawned.map_err(|e| debug!("sd_notify: cannot start its thread: {e}")).ok().map(|_| tx)
        })
        .as_ref()
}

fn deliver(message: &str) {
    if let Err(e) = sd_notify::notify(&[NotifyState::Custom(message)]) {
        debug!("sd_notify: {e}");
    }
}

fn send(states: &[NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let message = states.iter().map(|s| s.to_string()).collect::<Vec<_>>().join("\n");
    match queue() {
        Some(tx) => {
            if tx.try_send(message).is_err() {
                debug!("sd_notify: {QUEUE} messages waiting for systemd; one dropped");
            }
        }
        None => deliver(&message),
    }
}

/// The control socket listens: the daemon is ready.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload starts (`READY=1` follows when it is done).
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// A one-line summary for `systemctl status`.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// Shutdown has begun.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// How often to tell systemd the daemon is alive (`WATCHDOG=1`), when the unit sets
/// `WatchdogSec=`: half the timeout, as sd_watchdog_enabled(3) advises. `None`: no watchdog.
pub fn watchdog_interval() -> Option<std::time::Duration> {
    sd_notify::watchdog_enabled().map(|timeout| timeout / 2).filter(|d| !d.is_zero())
}

/// The daemon is alive: its supervisor is taking requests.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}
