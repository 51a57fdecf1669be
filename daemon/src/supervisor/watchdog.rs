//! Feeding systemd's watchdog (`WatchdogSec=`) while the supervisor works on one request.
//!
//! The supervisor's loop feeds it between requests; during one, [`fed_while`] feeds it for up
//! to [`WATCHDOG_GRACE`] timeouts (a slow disk deleting a large tree legitimately takes a
//! while), then stops, so that a supervisor wedged longer (a hung disk, a bug) is restarted.

use std::future::Future;

use futures_lite::future;

use crate::service::notify;

/// How many watchdog timeouts one request may take while the watchdog is still fed.
const WATCHDOG_GRACE: u32 = 10;

/// Runs `work`, feeding the watchdog (fed every `every`) for up to [`WATCHDOG_GRACE`] times its
/// timeout, then no longer: work that takes longer than that is taken to be wedged.
pub(super) async fn fed_while<T>(every: Option<std::time::Duration>, work: impl Future<Output = T>) -> T {
    let Some(every) = every else { return work.await };
    let feeding = async {
        // `every` is half the timeout.
        for _ in 0..2 * WATCHDOG_GRACE {
            smol::Timer::after(every).await;
            notify::watchdog();
        }
        future::pending::<T>().await
    };
    future::or(work, feeding).await
}
