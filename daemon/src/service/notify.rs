//! systemd `Type=notify` messages. Without `NOTIFY_SOCKET` (not under systemd) these do
//! nothing. Failures to notify are logged, never fatal.

use log::debug;
use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        debug!("sd_notify: {e}");
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
