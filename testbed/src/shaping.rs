//! Token-bucket (`tc qdisc … tbf`) parameters for a link rate (pure), and the `tc` arguments.
//!
//! Why these numbers:
//! - **burst** = max(10 ms of the rate, 64 KiB). The bucket must hold at least one GSO
//!   super-packet (up to 64 KiB on a veth), or tbf splits every one of them into frames and
//!   costs CPU; and it must hold what accumulates between two dequeues, or tokens overflow and
//!   TCP never reaches the rate. Ten milliseconds covers timer slack on a busy 2-core machine.
//!   A larger burst would let a host exceed its rate for longer; 10 ms is small next to the
//!   seconds a scenario lasts.
//! - **latency** = 20 ms: how long a packet may wait in the queue (tbf's queue limit is
//!   rate × latency + burst bytes). Enough queue that several TCP flows keep the link busy
//!   (the base RTT between namespaces is tens of microseconds); short enough that the delay a
//!   busy uplink adds to discovery datagrams stays like a real uplink's, not a bufferbloated
//!   one's.
//!
//! `tc` reads a bare `rate` number with the unit `bit` as bits per second (`bps` would mean
//! bytes), and a bare `burst` as bytes.

use crate::units::LinkRate;

/// The smallest bucket: one 64 KiB GSO super-packet.
pub const MIN_BURST_BYTES: u64 = 64 << 10;
/// The rate's worth of tokens the bucket holds beyond the minimum.
pub const BURST_MILLIS: u64 = 10;
/// How long a frame may wait in the queue.
pub const QUEUE_LATENCY_MILLIS: u64 = 20;

/// One tbf qdisc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    pub rate: LinkRate,
    pub burst_bytes: u64,
    pub latency_millis: u64,
}

impl TokenBucket {
    /// The bucket the testbed uses for `rate` (see the module doc).
    pub fn for_rate(rate: LinkRate) -> TokenBucket {
        let burst = (rate.bytes_per_sec() * BURST_MILLIS / 1000).max(MIN_BURST_BYTES);
        TokenBucket { rate, burst_bytes: burst, latency_millis: QUEUE_LATENCY_MILLIS }
    }

    /// `tc` arguments that install it as the root qdisc of `device`, after `tc -n NETNS`.
    pub fn tc_args(&self, device: &str) -> Vec<String> {
        [
            "qdisc",
            "add",
            "dev",
            device,
            "root",
            "tbf",
            "rate",
            &format!("{}bit", self.rate.bits_per_sec()),
            "burst",
            &self.burst_bytes.to_string(),
            "latency",
            &format!("{}ms", self.latency_millis),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_links_get_the_minimum_burst() {
        let b = TokenBucket::for_rate(LinkRate(12_500_000)); // 100 Mbit/s: 10 ms = 125 kB
        assert_eq!(b.burst_bytes, 125_000);
        let b = TokenBucket::for_rate(LinkRate(1_000_000)); // 8 Mbit/s: 10 ms = 10 kB
        assert_eq!(b.burst_bytes, MIN_BURST_BYTES);
    }

    #[test]
    fn tc_arguments_use_bits_and_bytes() {
        let args = TokenBucket::for_rate(LinkRate(25_000_000)).tc_args("eth0");
        assert_eq!(args.join(" "), "qdisc add dev eth0 root tbf rate 200000000bit burst 250000 latency 20ms");
    }
}
