//! The allowed range of every number in `p2pd.yaml` and `torrents/*.yaml`.
//!
//! Each bounded key is declared once, in [`CONFIG`] or [`TORRENT`], with its unit, minimum and
//! maximum. The fields of the config types keep their plain types (`u32`, `u64`, [`ByteRate`],
//! [`ByteSize`]) and name their bound with `#[serde(deserialize_with = ...)]`, so a value out
//! of range is refused *while* the YAML is read: the error carries the line and column like an
//! unknown key does, and its text names the key and the allowed range:
//!
//! ```text
//! /etc/p2pd/p2pd.yaml: line 61, column 24: discovery.peer_ttl_secs: 99999999999 is above the
//! maximum; allowed: 10 to 604800 seconds
//! ```
//!
//! Why bounds at all: durations are added to clocks (a huge one overflowed and panicked),
//! counts size tables and sizes size buffers. Every maximum is far above any sensible setting
//! and below what the code can represent; every minimum is the smallest setting that still
//! works. `config/p2pd.yaml` repeats each range beside its key (a test checks it).

use std::fmt;

use serde::de::{self, Deserializer, Visitor};

use crate::units::{ByteRate, ByteSize, human_bytes};

/// What a bounded number counts; decides how values are read and ranges are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A plain count (peers, nodes, slots, hops, attempts).
    Count,
    /// Milliseconds.
    Millis,
    /// Seconds.
    Secs,
    /// Events per second (datagrams).
    PerSec,
    /// A byte size: a number of bytes or `64MiB` (see [`ByteSize`]).
    Bytes,
    /// A byte rate (see [`ByteRate`]); `0` or `unlimited` is always allowed and means no limit.
    Rate,
}

/// The allowed range of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    /// The key as an operator writes it, with its section (`discovery.k`).
    pub key: &'static str,
    pub unit: Unit,
    pub min: u64,
    pub max: u64,
}

/// A key with a bound; the marker types below implement it, one per key.
pub trait Key {
    const BOUND: Bound;
}

macro_rules! bounded_keys {
    ($table:ident: $( $marker:ident = $key:literal, $unit:ident, $min:expr, $max:expr; )*) => {
        $(
            #[doc = concat!("The bound of `", $key, "`.")]
            pub struct $marker;
            impl Key for $marker {
                const BOUND: Bound = Bound { key: $key, unit: Unit::$unit, min: $min, max: $max };
            }
        )*
        /// Every bounded key of the file, in the order the file documents them.
        pub const $table: &[Bound] = &[$($marker::BOUND),*];
    };
}

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// Rates go up to 4 GB/s (32 Gbit/s): the rate limiter counts bytes per second in 32 bits.
const MAX_RATE: u64 = 4_000_000_000;
/// A limit below 1 kB/s would make every block wait for minutes.
const MIN_RATE: u64 = 1_000;
/// Peer connections: each is a socket and two tasks.
const MAX_PEERS: u64 = 10_000;

bounded_keys! { CONFIG:
    DownloadRate = "limits.download_rate", Rate, MIN_RATE, MAX_RATE;
    UploadRate = "limits.upload_rate", Rate, MIN_RATE, MAX_RATE;
    MaxPeers = "limits.max_peers", Count, 1, MAX_PEERS;
    MaxPeersPerTorrent = "limits.max_peers_per_torrent", Count, 1, MAX_PEERS;
    MaxActiveDownloads = "limits.max_active_downloads", Count, 0, 10_000;
    UploadSlots = "limits.upload_slots", Count, 1, 1_000;
    MaxConnectionsPerIp = "limits.max_connections_per_ip", Count, 1, 1_000;
    // At most what a peer lets one connection queue (`swarm::connection::MAX_QUEUED_UPLOADS`
    // 128 KiB blocks): more would get our connections closed.
    MaxInFlightPerPeer = "limits.max_in_flight_per_peer", Bytes, 256 * KIB, 256 * MIB;
    MaxInFlightPerTorrent = "limits.max_in_flight_per_torrent", Bytes, 64 * MIB, 16 * GIB;
    K = "discovery.k", Count, 1, 64;
    HopLimit = "discovery.hop_limit", Count, 1, 64;
    RpcTimeoutMs = "discovery.rpc_timeout_ms", Millis, 10, 60_000;
    RpcAttempts = "discovery.rpc_attempts", Count, 1, 10;
    LookupTimeoutSecs = "discovery.lookup_timeout_secs", Secs, 1, 3_600;
    PeerTtlSecs = "discovery.peer_ttl_secs", Secs, 10, 604_800;
    AnnounceIntervalSecs = "discovery.announce_interval_secs", Secs, 1, 86_400;
    MaxPeersPerSwarm = "discovery.max_peers_per_swarm", Count, 1, 16_384;
    MaxStoredSwarms = "discovery.max_stored_swarms", Count, 0, 65_536;
    MaxNodesPerIp = "discovery.max_nodes_per_ip", Count, 1, 1_024;
    RateLimit = "discovery.rate_limit", PerSec, 1, 100_000;
    HookTimeoutSecs = "hooks.timeout_secs", Secs, 1, 86_400;
    HookMaxConcurrent = "hooks.max_concurrent", Count, 1, 64;
}

bounded_keys! { TORRENT:
    TorrentDownloadRate = "download_rate", Rate, MIN_RATE, MAX_RATE;
    TorrentUploadRate = "upload_rate", Rate, MIN_RATE, MAX_RATE;
    TorrentMaxPeers = "max_peers", Count, 1, MAX_PEERS;
}

impl Bound {
    /// The allowed values in words: `1 to 64`, `256 KiB to 1 GiB`, `10 to 604800 seconds`.
    pub fn range(&self) -> String {
        let (min, max) = (self.min, self.max);
        match self.unit {
            Unit::Count => format!("{min} to {max}"),
            Unit::Millis => format!("{min} to {max} milliseconds"),
            Unit::Secs => format!("{min} to {max} seconds"),
            Unit::PerSec => format!("{min} to {max} per second"),
            Unit::Bytes => format!("{} to {}", human_bytes(min), human_bytes(max)),
            Unit::Rate => format!("{} to {}, or unlimited", decimal_rate(min), decimal_rate(max)),
        }
    }

    fn show(&self, value: u64) -> String {
        match self.unit {
            Unit::Bytes => format!("{value} ({})", human_bytes(value)),
            Unit::Rate => decimal_rate(value),
            _ => value.to_string(),
        }
    }

    /// Checks a whole value against the range.
    pub fn check(&self, value: u128) -> Result<u64, BoundError> {
        let shown = || match u64::try_from(value) {
            Ok(v) => self.show(v),
            Err(_) => value.to_string(),
        };
        if value > self.max as u128 {
            return Err(self.error(format!("{} is above the maximum", shown())));
        }
        if value < self.min as u128 {
            return Err(self.error(format!("{} is below the minimum", shown())));
        }
        Ok(value as u64)
    }

    fn error(&self, problem: String) -> BoundError {
        BoundError { key: self.key, problem, range: self.range() }
    }
}

/// `1000` → `1 kB/s`; rates are shown in decimal units, as operators write them.
fn decimal_rate(bytes: u64) -> String {
    for (unit, name) in [(1_000_000_000, "GB/s"), (1_000_000, "MB/s"), (1_000, "kB/s")] {
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{} {name}", bytes / unit);
        }
    }
    format!("{bytes} B/s")
}

/// A value outside its key's range (or not a number at all).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}; allowed: {range}")]
pub struct BoundError {
    pub key: &'static str,
    pub problem: String,
    pub range: String,
}

/// A scalar as the YAML (or JSON) parser hands it over, before it is given a unit.
enum Raw {
    Int(i128),
    Float(f64),
    Text(String),
    Null,
    Other(&'static str),
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Raw, E> {
        Ok(Raw::Other("a boolean"))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Int(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw, E> {
        Ok(Raw::Int(v.into()))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Raw, E> {
        Ok(Raw::Int(v))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Raw, E> {
        Ok(Raw::Int(i128::try_from(v).unwrap_or(i128::MAX)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Text(v.to_string()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
        d.deserialize_any(RawVisitor)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Raw, A::Error> {
        Ok(Raw::Other("a list"))
    }
    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<Raw, A::Error> {
        Ok(Raw::Other("a mapping"))
    }
}

/// A whole number from `raw`, for counts and durations (no units: `30`, not `30s`).
fn whole(bound: &Bound, raw: Raw) -> Result<u64, BoundError> {
    integer(bound, raw).and_then(|n| bound.check(n))
}

/// The non-negative integer `raw` holds, not yet checked against the range.
fn integer(bound: &Bound, raw: Raw) -> Result<u128, BoundError> {
    let not_a_number = |what: String| bound.error(format!("{what} is not a whole number"));
    match raw {
        Raw::Int(n) if n < 0 => Err(bound.error(format!("{n} is below the minimum"))),
        Raw::Int(n) => Ok(n as u128),
        // YAML parsers read integers beyond 64 bits as floats; beyond 2^128 the cast
        // saturates, which is still above every maximum.
        Raw::Float(f) if f.is_finite() && f.fract() == 0.0 && f >= 0.0 => Ok(f as u128),
        Raw::Float(f) if f < 0.0 => Err(bound.error(format!("{f} is below the minimum"))),
        Raw::Float(f) => Err(not_a_number(f.to_string())),
        Raw::Text(t) => t.trim().replace('_', "").parse::<u128>().map_err(|_| not_a_number(format!("`{t}`"))),
        Raw::Null => Err(not_a_number("null".into())),
        Raw::Other(what) => Err(not_a_number(what.into())),
    }
}

fn size(bound: &Bound, raw: Raw) -> Result<ByteSize, BoundError> {
    let text = match raw {
        Raw::Text(t) => t,
        Raw::Float(f) if f.fract() != 0.0 => f.to_string(),
        other => return whole(bound, other).map(ByteSize),
    };
    let parsed: ByteSize = text.parse().map_err(|e: crate::units::UnitError| bound.error(e.to_string()))?;
    bound.check(parsed.0.into()).map(ByteSize)
}

fn rate(bound: &Bound, raw: Raw) -> Result<ByteRate, BoundError> {
    let parsed: ByteRate = match raw {
        Raw::Text(t) => t.parse().map_err(|e: crate::units::UnitError| bound.error(e.to_string()))?,
        Raw::Float(f) if f.fract() != 0.0 => {
            f.to_string().parse().map_err(|e: crate::units::UnitError| bound.error(e.to_string()))?
        }
        other => match integer(bound, other)? {
            0 => ByteRate::UNLIMITED,
            n => return bound.check(n).map(|b| ByteRate(Some(b))),
        },
    };
    match parsed.bytes_per_second() {
        None => Ok(ByteRate::UNLIMITED),
        Some(bps) => bound.check(bps.into()).map(|b| ByteRate(Some(b))),
    }
}

fn raw<'de, D: Deserializer<'de>>(d: D) -> Result<Raw, D::Error> {
    d.deserialize_any(RawVisitor)
}

fn checked<T, E: de::Error>(bound: &Bound, value: Result<u64, BoundError>) -> Result<T, E>
where
    T: TryFrom<u64>,
{
    let value = value.map_err(de::Error::custom)?;
    T::try_from(value).map_err(|_| de::Error::custom(bound.error(format!("{value} does not fit"))))
}

/// `deserialize_with` for a bounded count or duration.
pub fn number<'de, K: Key, T: TryFrom<u64>, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    let raw = raw(d)?;
    checked(&K::BOUND, whole(&K::BOUND, raw))
}

/// `deserialize_with` for an optional bounded count (`null` or absent: none).
pub fn optional_number<'de, K: Key, T: TryFrom<u64>, D: Deserializer<'de>>(d: D) -> Result<Option<T>, D::Error> {
    match raw(d)? {
        Raw::Null => Ok(None),
        raw => checked(&K::BOUND, whole(&K::BOUND, raw)).map(Some),
    }
}

/// `deserialize_with` for a bounded byte size.
pub fn byte_size<'de, K: Key, D: Deserializer<'de>>(d: D) -> Result<ByteSize, D::Error> {
    let raw = raw(d)?;
    size(&K::BOUND, raw).map_err(de::Error::custom)
}

/// `deserialize_with` for a bounded byte rate (`0`/`unlimited` always allowed).
pub fn byte_rate<'de, K: Key, D: Deserializer<'de>>(d: D) -> Result<ByteRate, D::Error> {
    let raw = raw(d)?;
    rate(&K::BOUND, raw).map_err(de::Error::custom)
}

/// `deserialize_with` for an optional bounded byte rate (`null` or absent: none).
pub fn optional_byte_rate<'de, K: Key, D: Deserializer<'de>>(d: D) -> Result<Option<ByteRate>, D::Error> {
    match raw(d)? {
        Raw::Null => Ok(None),
        raw => rate(&K::BOUND, raw).map(Some).map_err(de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_read_well() {
        assert_eq!(K::BOUND.range(), "1 to 64");
        assert_eq!(MaxInFlightPerPeer::BOUND.range(), "256 KiB to 256 MiB");
        assert_eq!(PeerTtlSecs::BOUND.range(), "10 to 604800 seconds");
        assert_eq!(UploadRate::BOUND.range(), "1 kB/s to 4 GB/s, or unlimited");
    }

    #[test]
    fn whole_numbers_are_checked() {
        let b = K::BOUND;
        assert_eq!(whole(&b, Raw::Int(8)), Ok(8));
        assert_eq!(whole(&b, Raw::Text("12".into())), Ok(12));
        let e = whole(&b, Raw::Int(65)).unwrap_err().to_string();
        assert_eq!(e, "discovery.k: 65 is above the maximum; allowed: 1 to 64");
        let e = whole(&b, Raw::Int(-1)).unwrap_err().to_string();
        assert_eq!(e, "discovery.k: -1 is below the minimum; allowed: 1 to 64");
        let e = whole(&b, Raw::Float(1e300)).unwrap_err().to_string();
        assert!(e.contains("above the maximum"), "{e}");
        let e = whole(&b, Raw::Text("eight".into())).unwrap_err().to_string();
        assert_eq!(e, "discovery.k: `eight` is not a whole number; allowed: 1 to 64");
        assert!(whole(&b, Raw::Float(2.5)).is_err());
        assert!(whole(&b, Raw::Null).is_err());
    }

    #[test]
    fn sizes_and_rates_take_units() {
        let b = MaxInFlightPerPeer::BOUND;
        assert_eq!(size(&b, Raw::Text("64MiB".into())), Ok(ByteSize(64 << 20)));
        assert_eq!(size(&b, Raw::Int(1 << 28)), Ok(ByteSize(1 << 28)));
        let e = size(&b, Raw::Text("2GiB".into())).unwrap_err().to_string();
        assert_eq!(
            e,
            "limits.max_in_flight_per_peer: 2147483648 (2 GiB) is above the maximum; allowed: 256 KiB to 256 MiB"
        );
        let e = size(&b, Raw::Text("100 parsecs".into())).unwrap_err().to_string();
        assert!(e.starts_with("limits.max_in_flight_per_peer: `100 parsecs` is not a valid size"), "{e}");
        let r = UploadRate::BOUND;
        assert_eq!(rate(&r, Raw::Int(0)), Ok(ByteRate::UNLIMITED));
        assert_eq!(rate(&r, Raw::Text("unlimited".into())), Ok(ByteRate::UNLIMITED));
        assert_eq!(rate(&r, Raw::Text("100Mbit".into())), Ok(ByteRate(Some(12_500_000))));
        let e = rate(&r, Raw::Text("40Gbit".into())).unwrap_err().to_string();
        assert_eq!(e, "limits.upload_rate: 5 GB/s is above the maximum; allowed: 1 kB/s to 4 GB/s, or unlimited");
        assert!(rate(&r, Raw::Int(999)).is_err());
        assert!(rate(&r, Raw::Text("99999999999999999999G".into())).is_err());
    }
}
