//! `retention:` in `p2pd.yaml`: when the daemon deletes cache torrents (`p2pctl add --cache`,
//! `cache: true` in a torrent file) to keep their filesystems below a fill level. Torrents not
//! marked as cache are never deleted by the daemon. Enforced by `supervisor::retention`.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `retention:` in `p2pd.yaml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// When a filesystem holding cache torrents is fuller than this, the least recently
    /// completed of them are evicted ...
    pub high_water: Percent,
    /// ... until it is no fuller than this.
    pub low_water: Percent,
    /// A cache torrent is kept at least this long after it completed.
    pub min_seed_time: Span,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { high_water: Percent(90), low_water: Percent(80), min_seed_time: Span(Duration::from_secs(3600)) }
    }
}

impl Retention {
    /// Checks what no single key can: the low-water mark is below the high-water mark.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.low_water >= self.high_water {
            return Err((
                "retention.low_water",
                format!("{} must be below retention.high_water ({})", self.low_water, self.high_water),
            ));
        }
        Ok(())
    }
}

/// Why a `retention:` value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("`{0}` is not a percentage from 1% to 100%")]
    Percent(String),
    #[error("`{0}` is not a length of time (like 1h, 30m, 90s or 0s)")]
    Span(String),
    #[error("`{0}` is longer than a year")]
    SpanTooLong(String),
}

/// A whole percentage from 1 to 100, written `90%` (or `90`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Percent(pub u8);

impl Percent {
    /// This share of `total`.
    pub fn of(self, total: u64) -> u64 {
        (u128::from(total) * u128::from(self.0) / 100) as u64
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0)
    }
}

impl std::str::FromStr for Percent {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Percent, ValueError> {
        let digits = text.trim().strip_suffix('%').unwrap_or(text.trim()).trim_end();
        match digits.parse::<u8>() {
            Ok(n @ 1..=100) => Ok(Percent(n)),
            _ => Err(ValueError::Percent(text.to_string())),
        }
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Percent, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Number(u64),
            Text(String),
        }
        let text = match Written::deserialize(d)? {
            Written::Number(n) => n.to_string(),
            Written::Text(t) => t,
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Percent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Most `min_seed_time`: a year.
const MAX_SPAN: Duration = Duration::from_secs(366 * 24 * 3600);

/// A length of time written as people write it: `1h`, `30m`, `90s`, `1h 30m`, `0s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span(pub Duration);

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        match secs {
            0 => write!(f, "0s"),
            s if s % 3600 == 0 => write!(f, "{}h", s / 3600),
            s if s % 60 == 0 => write!(f, "{}m", s / 60),
            s => write!(f, "{s}s"),
        }
    }
}

impl std::str::FromStr for Span {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Span, ValueError> {
        let bad = || ValueError::Span(text.to_string());
        let parsed: jiff::SignedDuration = text.trim().parse().map_err(|_| bad())?;
        let duration = Duration::try_from(parsed).map_err(|_| bad())?;
        if duration > MAX_SPAN {
            return Err(ValueError::SpanTooLong(text.to_string()));
        }
        Ok(Span(duration))
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Span, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_parse_with_or_without_the_sign() {
        assert_eq!("90%".parse(), Ok(Percent(90)));
        assert_eq!("5".parse(), Ok(Percent(5)));
        assert_eq!("100 %".parse(), Ok(Percent(100)));
        for bad in ["0%", "101%", "-5%", "ninety", "", "90%%"] {
            assert!(bad.parse::<Percent>().is_err(), "{bad}");
        }
        assert_eq!(Percent(90).of(1000), 900);
        assert_eq!(Percent(100).of(u64::MAX), u64::MAX);
    }

    #[test]
    fn spans_parse_as_people_write_them() {
        assert_eq!("1h".parse(), Ok(Span(Duration::from_secs(3600))));
        assert_eq!("1h 30m".parse(), Ok(Span(Duration::from_secs(5400))));
        assert_eq!("90s".parse(), Ok(Span(Duration::from_secs(90))));
        assert_eq!("0s".parse(), Ok(Span(Duration::ZERO)));
        for bad in ["-1h", "soon", "", "400 days"] {
            assert!(bad.parse::<Span>().is_err(), "{bad}");
        }
        for s in ["1h", "30m", "90s", "0s"] {
            assert_eq!(s.parse::<Span>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn low_water_must_be_below_high_water() {
        let r = Retention { high_water: Percent(80), low_water: Percent(80), ..Retention::default() };
        assert_eq!(r.check().unwrap_err().0, "retention.low_water");
        assert!(Retention::default().check().is_ok());
    }
}
