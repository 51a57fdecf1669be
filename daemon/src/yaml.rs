//! The one door through which YAML enters: descriptors, `p2pd.yaml` and torrent files.
//!
//! Descriptors come from other machines, so parsing is bounded before it starts: the input
//! size is capped by the caller ([`read_bounded`]) and serde-saphyr's budget caps nesting,
//! node counts, aliases (no alias bombs) and scalar bytes. Unknown keys are rejected by the
//! target types (`deny_unknown_fields`), duplicate keys by the parser. Errors are one line with
//! the position: `line 3, column 5: unknown field `bogus`, expected one of ...`.

use std::fmt;
use std::io::Read;
use std::path::Path;

use serde::de::DeserializeOwned;

/// Caps for one YAML document.
#[derive(Debug, Clone, Copy)]
pub struct YamlLimits {
    /// Largest accepted input, in bytes.
    pub max_bytes: usize,
    /// Largest number of YAML nodes (scalars, sequences, mappings).
    pub max_nodes: usize,
}

impl YamlLimits {
    /// Configuration files written by operators: small.
    pub const CONFIG: YamlLimits = YamlLimits { max_bytes: 1 << 20, max_nodes: 20_000 };
}

/// A YAML document that could not be turned into the expected type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct YamlError {
    /// 1-based line of the problem, when the parser knows it.
    pub line: Option<u64>,
    /// 1-based column of the problem, when the parser knows it.
    pub column: Option<u64>,
    /// What is wrong, without position.
    pub message: String,
}

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "line {l}, column {c}: {}", self.message),
            (Some(l), None) => write!(f, "line {l}: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

/// Parses `text` as one YAML document into `T` within `limits`.
pub fn from_str<T: DeserializeOwned>(text: &str, limits: YamlLimits) -> Result<T, YamlError> {
    if text.len() > limits.max_bytes {
        return Err(YamlError {
            line: None,
            column: None,
            message: format!("document is {} bytes, more than the limit of {}", text.len(), limits.max_bytes),
        });
    }
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = 24;
    budget.max_documents = 1;
    budget.max_nodes = limits.max_nodes;
    budget.max_events = limits.max_nodes.saturating_mul(3).max(64);
    budget.max_total_scalar_bytes = limits.max_bytes;
    budget.max_aliases = 64;
    budget.max_anchors = 64;
    budget.max_recorded_anchor_events = 4096;
    budget.max_recorded_anchor_bytes = 1 << 16;
    budget.max_merge_keys = 64;
    budget.max_inclusion_depth = 0;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.with_snippet = false;
    serde_saphyr::from_str_with_options(text, options).map_err(|e| {
        let location = e.location();
        let rendered = e.to_string();
        YamlError {
            line: location.as_ref().map(|l| l.line()),
            column: location.as_ref().map(|l| l.column()),
            message: strip_position(rendered.lines().next().unwrap_or("invalid YAML")),
        }
    })
}

/// serde-saphyr prefixes messages with `error: line L column C: `; we print the position
/// ourselves, so drop it from the text.
fn strip_position(line: &str) -> String {
    let line = line.strip_prefix("error: ").unwrap_or(line);
    if let Some(rest) = line.strip_prefix("line ")
        && let Some((_, message)) = rest.split_once(": ")
        && rest.split(": ").next().is_some_and(|p| p.contains("column"))
    {
        return message.to_string();
    }
    // "... at line 1, column 1" style
    if let Some(idx) = line.rfind(" at line ") {
        return line[..idx].to_string();
    }
    line.to_string()
}

/// Why a bounded file read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("file is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("file is not valid UTF-8 text")]
    NotUtf8,
}

/// Reads a text file of at most `limit` bytes without ever buffering more than `limit + 1`.
pub fn read_bounded(path: &Path, limit: usize) -> Result<String, ReadError> {
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1).read_to_end(&mut bytes)?;
    if bytes.len() > limit {
        return Err(ReadError::TooLarge { limit });
    }
    String::from_utf8(bytes).map_err(|_| ReadError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Small {
        name: String,
        #[serde(default)]
        list: Vec<Vec<String>>,
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let e = from_str::<Small>("name: x\nbogus: 1\n", YamlLimits::CONFIG).unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(e.to_string().starts_with("line 2, column 1: unknown field `bogus`"), "{e}");
    }

    #[test]
    fn alias_bomb_is_rejected() {
        let mut doc = String::from("name: x\nlist:\n  - &a [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\n");
        for _ in 0..200 {
            doc.push_str("  - *a\n");
        }
        assert!(from_str::<Small>(&doc, YamlLimits::CONFIG).is_err());
    }

    #[test]
    fn deep_nesting_is_rejected() {
        let doc = format!("name: x\nlist: {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
        let e = from_str::<Small>(&doc, YamlLimits::CONFIG).unwrap_err();
        assert!(!e.message.is_empty());
    }

    #[test]
    fn oversized_input_is_rejected_before_parsing() {
        let doc = "#".repeat(YamlLimits::CONFIG.max_bytes + 1);
        let e = from_str::<Small>(&doc, YamlLimits::CONFIG).unwrap_err();
        assert!(e.message.contains("limit"), "{e}");
    }

    #[test]
    fn empty_document_is_an_error_not_a_panic() {
        assert!(from_str::<Small>("", YamlLimits::CONFIG).is_err());
    }
}
