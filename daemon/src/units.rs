//! Byte sizes and byte rates as operators write them (`256KiB`, `1M`, `100Mbit`).
//!
//! Sizes (piece sizes, free-space reserves) use binary multiples for both spellings, the way
//! piece sizes are always meant: `1M` = `1MiB` = 1,048,576 bytes. Rates follow network
//! convention: `k`/`M`/`G` and `KB`/`MB`/`GB` are decimal bytes per second, `KiB`/`MiB`/`GiB`
//! binary, and a `bit` suffix (`100Mbit`) divides by eight. A bare number is bytes (per second).
//! In YAML either an integer or a string is accepted; `0` or `unlimited` disables a rate limit.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Wall-clock seconds since 1970 (0 if the clock is before it): for times kept in state files.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Why a size or rate could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a valid {what}: {reason}")]
pub struct UnitError {
    input: String,
    what: &'static str,
    reason: &'static str,
}

/// A number of bytes, written with binary multiples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

/// A transfer rate in bytes per second; `None` inside means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ByteRate(pub Option<u64>);

impl ByteRate {
    pub const UNLIMITED: ByteRate = ByteRate(None);

    /// Bytes per second, or `None` when unlimited.
    pub fn bytes_per_second(self) -> Option<u64> {
        self.0
    }
}

/// Splits `"  12.5 MiB"` into `(12.5, "MiB")`.
fn split_number(input: &str) -> Option<(f64, &str)> {
    let s = input.trim();
    let end = s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_')).unwrap_or(s.len());
    let (number, suffix) = s.split_at(end);
    let number: String = number.chars().filter(|&c| c != '_').collect();
    let value: f64 = number.parse().ok()?;
    if !value.is_finite() || value < 0.0 {
        return None;
    }
    Some((value, suffix.trim()))
}

fn to_u64(value: f64) -> Option<u64> {
    // 2^63 keeps well inside u64 and far beyond any real size.
    if (0.0..9.2e18).contains(&value) { Some(value.round() as u64) } else { None }
}

impl std::str::FromStr for ByteSize {
    type Err = UnitError;

    fn from_str(input: &str) -> Result<Self, UnitError> {
        let err = |reason| UnitError { input: input.to_string(), what: "size", reason };
        let (value, suffix) = split_number(input).ok_or_else(|| err("expected a number"))?;
        let multiplier: u64 = match suffix.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            "t" | "tb" | "tib" => 1 << 40,
            _ => return Err(err("unknown unit (use K, M, G or T)")),
        };
        to_u64(value * multiplier as f64).map(ByteSize).ok_or_else(|| err("too large"))
    }
}

impl std::str::FromStr for ByteRate {
    type Err = UnitError;

    fn from_str(input: &str) -> Result<Self, UnitError> {
        let err = |reason| UnitError { input: input.to_string(), what: "rate", reason };
        let trimmed = input.trim();
        if trimmed.eq_ignore_ascii_case("unlimited") || trimmed.eq_ignore_ascii_case("none") {
            return Ok(ByteRate::UNLIMITED);
        }
        let (value, suffix) = split_number(trimmed).ok_or_else(|| err("expected a number"))?;
        let suffix = suffix.strip_suffix("/s").unwrap_or(suffix).trim();
        let lower = suffix.to_ascii_lowercase();
        let bytes_per_unit: f64 = match lower.as_str() {
            "" | "b" => 1.0,
            "k" | "kb" => 1e3,
            "m" | "mb" => 1e6,
            "g" | "gb" => 1e9,
            "kib" => 1024.0,
            "mib" => 1024.0 * 1024.0,
            "gib" => 1024.0 * 1024.0 * 1024.0,
            "bit" | "bps" => 1.0 / 8.0,
            "kbit" | "kbps" => 1e3 / 8.0,
            "mbit" | "mbps" => 1e6 / 8.0,
            "gbit" | "gbps" => 1e9 / 8.0,
            _ => return Err(err("unknown unit (use k, M, G, KiB, MiB, GiB or kbit, Mbit, Gbit)")),
        };
        let bytes = to_u64(value * bytes_per_unit).ok_or_else(|| err("too large"))?;
        Ok(ByteRate(if bytes == 0 { None } else { Some(bytes) }))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&human_bytes(self.0))
    }
}

impl fmt::Display for ByteRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("unlimited"),
            Some(b) => write!(f, "{}/s", human_bytes(b)),
        }
    }
}

/// `1536` → `"1.5 KiB"`; exact multiples print without decimals (`"256 KiB"`).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut unit = 0;
    let mut value = bytes as f64;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else if value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Accepts an integer or a string in YAML/JSON.
#[derive(Deserialize)]
#[serde(untagged)]
enum IntOrString {
    Int(u64),
    Str(String),
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match IntOrString::deserialize(d)? {
            IntOrString::Int(n) => Ok(ByteSize(n)),
            IntOrString::Str(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for ByteRate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match IntOrString::deserialize(d)? {
            IntOrString::Int(0) => Ok(ByteRate::UNLIMITED),
            IntOrString::Int(n) => Ok(ByteRate(Some(n))),
            IntOrString::Str(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for ByteRate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0.unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_binary() {
        assert_eq!("1M".parse::<ByteSize>().unwrap(), ByteSize(1 << 20));
        assert_eq!("256KiB".parse::<ByteSize>().unwrap(), ByteSize(256 << 10));
        assert_eq!("256 kb".parse::<ByteSize>().unwrap(), ByteSize(256 << 10));
        assert_eq!("4096".parse::<ByteSize>().unwrap(), ByteSize(4096));
        assert_eq!("1.5G".parse::<ByteSize>().unwrap(), ByteSize(3 << 29));
        assert!("12 parsecs".parse::<ByteSize>().is_err());
        assert!("-1".parse::<ByteSize>().is_err());
        assert!("".parse::<ByteSize>().is_err());
    }

    #[test]
    fn rates_follow_network_units() {
        assert_eq!("100Mbit".parse::<ByteRate>().unwrap(), ByteRate(Some(12_500_000)));
        assert_eq!("10MB/s".parse::<ByteRate>().unwrap(), ByteRate(Some(10_000_000)));
        assert_eq!("1MiB".parse::<ByteRate>().unwrap(), ByteRate(Some(1 << 20)));
        assert_eq!("0".parse::<ByteRate>().unwrap(), ByteRate::UNLIMITED);
        assert_eq!("unlimited".parse::<ByteRate>().unwrap(), ByteRate::UNLIMITED);
        assert!("fast".parse::<ByteRate>().is_err());
    }

    #[test]
    fn human_output() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(256 << 10), "256 KiB");
        assert_eq!(ByteRate(None).to_string(), "unlimited");
    }
}
