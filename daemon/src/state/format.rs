//! The envelope of every state file: a one-line header, then the body.
//!
//! ```text
//! P2PD-STATE 1 <kind> <body length> <SHA-256 of body, hex>\n
//! <body>
//! ```
//!
//! The checksum catches truncation, zeroed blocks and stray edits; the kind catches a file
//! copied to the wrong name. Pure functions; no I/O.

use sha2::{Digest, Sha256};

const MAGIC: &str = "P2PD-STATE";
const VERSION: u32 = 1;
/// A header is short; anything longer is not one.
const MAX_HEADER: usize = 200;

/// Why a state file's bytes are not a valid state file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("empty file")]
    Empty,
    #[error("no state header (not a p2pd state file, or zeroed)")]
    NoHeader,
    #[error("state format version {0} is not supported (this p2pd reads version {VERSION})")]
    Version(String),
    #[error("holds `{found}` state where `{expected}` state was expected")]
    Kind { expected: String, found: String },
    #[error("body is {found} bytes but the header says {expected} (truncated or extended)")]
    Length { expected: usize, found: usize },
    #[error("body checksum does not match (damaged)")]
    Checksum,
}

/// Wraps `body` in a header for `kind`.
pub fn encode(kind: &str, body: &[u8]) -> Vec<u8> {
    let header = format!("{MAGIC} {VERSION} {kind} {} {}\n", body.len(), hex::encode(Sha256::digest(body)));
    let mut out = Vec::with_capacity(header.len() + body.len());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(body);
    out
}

/// Checks the header and returns the body.
pub fn decode<'a>(kind: &str, bytes: &'a [u8]) -> Result<&'a [u8], FormatError> {
    if bytes.is_empty() {
        return Err(FormatError::Empty);
    }
    let newline = bytes[..bytes.len().min(MAX_HEADER)].iter().position(|&b| b == b'\n').ok_or(FormatError::NoHeader)?;
    let header = std::str::from_utf8(&bytes[..newline]).map_err(|_| FormatError::NoHeader)?;
    let body = &bytes[newline + 1..];
    let fields: Vec<&str> = header.split(' ').collect();
    let [magic, version, found_kind, length, checksum] = fields[..] else {
        return Err(FormatError::NoHeader);
    };
    if magic != MAGIC {
        return Err(FormatError::NoHeader);
    }
    if version != VERSION.to_string() {
        return Err(FormatError::Version(version.chars().take(10).collect()));
    }
    if found_kind != kind {
        return Err(FormatError::Kind { expected: kind.into(), found: found_kind.chars().take(20).collect() });
    }
    let expected: usize = length.parse().map_err(|_| FormatError::NoHeader)?;
    if body.len() != expected {
        return Err(FormatError::Length { expected, found: body.len() });
    }
    if hex::encode(Sha256::digest(body)) != checksum {
        return Err(FormatError::Checksum);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let bytes = encode("resume", b"{\"a\":1}");
        assert_eq!(decode("resume", &bytes).unwrap(), b"{\"a\":1}");
    }

    #[test]
    fn every_damage_is_detected() {
        let bytes = encode("resume", b"{\"a\":1}");
        assert_eq!(decode("resume", &[]), Err(FormatError::Empty));
        assert_eq!(decode("node", &bytes), Err(FormatError::Kind { expected: "node".into(), found: "resume".into() }));
        assert!(matches!(decode("resume", &bytes[..bytes.len() - 1]), Err(FormatError::Length { .. })));
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(decode("resume", &flipped), Err(FormatError::Checksum));
        assert_eq!(decode("resume", &vec![0u8; 300]), Err(FormatError::NoHeader));
    }

    /// Every truncation of a valid file is rejected (a torn write can never load as valid).
    #[test]
    fn every_prefix_is_rejected() {
        let bytes = encode("peers", b"[1,2,3,4,5,6,7,8,9]");
        for cut in 0..bytes.len() {
            assert!(decode("peers", &bytes[..cut]).is_err(), "prefix of {cut} bytes accepted");
        }
    }
}
