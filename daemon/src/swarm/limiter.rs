//! Byte-rate limits (global and per torrent, up and down), changeable at runtime.
//!
//! A [`RateLimit`] wraps a governor GCRA limiter whose quota is `rate` bytes per second with a
//! burst of a tenth of a second (at least the largest block), swapped out when a reload changes
//! the rate; transfers in progress simply continue under the new quota.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::wire::MAX_BLOCK;
use crate::units::ByteRate;

/// One rate limit; `None` inside means unlimited.
#[derive(Default)]
pub struct RateLimit {
    limiter: Mutex<Option<Arc<DefaultDirectRateLimiter>>>,
}

impl RateLimit {
    pub fn new(rate: ByteRate) -> RateLimit {
        let l = RateLimit::default();
        l.set(rate);
        l
    }

    /// Changes the rate (from a reload).
    pub fn set(&self, rate: ByteRate) {
        let limiter = rate.bytes_per_second().map(|bps| {
            let per_second = NonZeroU32::new(bps.clamp(1, u32::MAX as u64) as u32).unwrap_or(NonZeroU32::MIN);
            let burst = (bps / 10).max(2 * MAX_BLOCK as u64).min(u32::MAX as u64) as u32;
            let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
            Arc::new(RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst)))
        });
        *self.limiter.lock().unwrap_or_else(|p| p.into_inner()) = limiter;
    }

    /// Whether a rate is set.
    pub fn is_limited(&self) -> bool {
        self.limiter.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// Waits until `bytes` may pass.
    pub async fn acquire(&self, bytes: usize) {
        let limiter = self.limiter.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(limiter) = limiter else { return };
        let Some(n) = NonZeroU32::new(bytes.min(u32::MAX as usize) as u32) else { return };
        // A block never exceeds the burst (at least two maximal blocks), so this cannot fail.
        let _ = limiter.until_n_ready(n).await;
    }
}
