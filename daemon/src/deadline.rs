//! Giving up on a future after a while: the one timeout helper every part of the daemon uses.

use std::future::Future;
use std::time::Duration;

use futures_lite::future;

/// Runs `fut` for at most `limit`: its output, or `None` if the time ran out first (`fut` is
/// dropped then).
pub async fn within<T>(limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
    future::or(async { Some(fut.await) }, async {
        smol::Timer::after(limit).await;
        None
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gives_the_output_in_time_and_none_after() {
        smol::block_on(async {
            assert_eq!(within(Duration::from_secs(5), async { 7 }).await, Some(7));
            let late = within(Duration::from_millis(10), smol::Timer::after(Duration::from_secs(5))).await;
            assert!(late.is_none());
        });
    }
}
