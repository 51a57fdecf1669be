//! Link rates and content sizes as the command line spells them (`200mbit`, `256MiB`).
//!
//! Parsing is p2pd's own ([`p2pd::units`]), so the testbed accepts exactly what `p2pd.yaml`
//! accepts: sizes are binary (`1M` = 1 MiB), rates follow network convention (`100Mbit` =
//! 12.5 MB/s, `MiB` binary). A testbed link always has a limit: `0` and `unlimited` are
//! refused.

use std::fmt;
use std::time::Duration;

use p2pd::units::{ByteRate, ByteSize};

/// A link rate in bytes per second, as `tc` is told (whole frames, not TCP payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct LinkRate(pub u64);

impl LinkRate {
    pub fn bytes_per_sec(self) -> u64 {
        self.0
    }

    pub fn bits_per_sec(self) -> u64 {
        self.0.saturating_mul(8)
    }
}

impl fmt::Display for LinkRate {
    /// `200 Mbit/s`, `1 Gbit/s`, `33.6 kbit/s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bits = self.bits_per_sec() as f64;
        let (value, unit) = if bits >= 1e9 {
            (bits / 1e9, "Gbit/s")
        } else if bits >= 1e6 {
            (bits / 1e6, "Mbit/s")
        } else if bits >= 1e3 {
            (bits / 1e3, "kbit/s")
        } else {
            (bits, "bit/s")
        };
        if value.fract() == 0.0 { write!(f, "{value:.0} {unit}") } else { write!(f, "{value:.1} {unit}") }
    }
}

/// Parses a limited rate (`200mbit`, `25MB`, `20MiB`); for clap's `value_parser`.
pub fn parse_link_rate(input: &str) -> Result<LinkRate, String> {
    let rate: ByteRate = input.parse().map_err(|e: p2pd::units::UnitError| e.to_string())?;
    match rate.bytes_per_second() {
        Some(bytes) => Ok(LinkRate(bytes)),
        None => Err(format!("`{input}` is not a limit: a testbed link needs a rate such as 100mbit")),
    }
}

/// Parses a non-zero size (`256MiB`, `32M`, `64KiB`); for clap's `value_parser`.
pub fn parse_size(input: &str) -> Result<u64, String> {
    let size: ByteSize = input.parse().map_err(|e: p2pd::units::UnitError| e.to_string())?;
    if size.0 == 0 {
        return Err(format!("`{input}` is empty: a size must be more than 0 bytes"));
    }
    Ok(size.0)
}

/// The longest `--join-over` window.
pub const MAX_JOIN_WINDOW: Duration = Duration::from_secs(3600);

/// Parses a release window (`5s`, `500ms`, `2.5s`; a bare number is seconds; `0` releases
/// every leecher at once), at most [`MAX_JOIN_WINDOW`]; for clap's `value_parser`.
pub fn parse_join_window(input: &str) -> Result<Duration, String> {
    let text = input.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{input}` is not a duration: write seconds or milliseconds, e.g. 5s or 500ms"))?;
    let secs = value * scale;
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("`{input}` is not a duration: it must be 0 or more"));
    }
    if secs > MAX_JOIN_WINDOW.as_secs_f64() {
        return Err(format!("`{input}` is longer than the longest window, {} s", MAX_JOIN_WINDOW.as_secs()));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `268435456` → `"256 MiB"`.
pub fn human_bytes(bytes: u64) -> String {
    p2pd::units::human_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_network_units_and_must_be_limits() {
        assert_eq!(parse_link_rate("200mbit"), Ok(LinkRate(25_000_000)));
        assert_eq!(parse_link_rate("1Gbit"), Ok(LinkRate(125_000_000)));
        assert_eq!(parse_link_rate("20MiB"), Ok(LinkRate(20 << 20)));
        assert_eq!(parse_link_rate("100Mbit").map(|r| r.bits_per_sec()), Ok(100_000_000));
        assert!(parse_link_rate("unlimited").is_err());
        assert!(parse_link_rate("0").is_err());
        assert!(parse_link_rate("fast").is_err());
    }

    #[test]
    fn sizes_are_binary_and_non_zero() {
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("32M"), Ok(32 << 20));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert!(parse_size("0").is_err());
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn join_windows_are_seconds_or_milliseconds() {
        assert_eq!(parse_join_window("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_join_window("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_join_window("2.5s"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_join_window("750ms"), Ok(Duration::from_millis(750)));
        assert_eq!(parse_join_window("0"), Ok(Duration::ZERO));
        assert!(parse_join_window("-1s").is_err());
        assert!(parse_join_window("soon").is_err());
        assert!(parse_join_window("5m").is_err(), "minutes are not a unit here");
        assert!(parse_join_window("2h").is_err());
        assert!(parse_join_window("3601s").is_err());
        assert!(parse_join_window("NaN").is_err());
    }

    #[test]
    fn rates_display_in_bits() {
        assert_eq!(LinkRate(25_000_000).to_string(), "200 Mbit/s");
        assert_eq!(LinkRate(125_000_000).to_string(), "1 Gbit/s");
        assert_eq!(LinkRate(4_200).to_string(), "33.6 kbit/s");
    }
}
