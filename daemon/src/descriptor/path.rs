//! Relative paths inside content: the only paths a descriptor can name.
//!
//! A [`RelPath`] can only be built through validation, so holding one proves it has no
//! absolute prefix, no `.`/`..`, no empty component and no control character (NUL included).
//! Storage still opens each component without following symlinks; this type is the first of
//! two fences. Control characters are refused so that a name from a descriptor can be printed
//! to a terminal or a log as it is: it cannot move the cursor, recolour or forge a line.

use std::fmt;
use std::str::FromStr;

/// Longest path, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest path component, in bytes (the Linux `NAME_MAX`).
pub const MAX_COMPONENT_BYTES: usize = 255;

/// What is wrong with a relative path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("is empty")]
    Empty,
    #[error("is {0} bytes long, more than {MAX_PATH_BYTES}")]
    TooLong(usize),
    #[error("`{}` is absolute; paths must be relative", shown(.0))]
    Absolute(String),
    #[error("contains a NUL byte")]
    Nul,
    /// One of its components is wrong.
    #[error("`{}` {problem}", shown(.path))]
    Component { path: String, problem: ComponentError },
}

/// What is wrong with one component of a path (or a content name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComponentError {
    #[error("has an empty component")]
    Empty,
    #[error("contains a `..` component")]
    DotDot,
    #[error("contains a `.` component")]
    Dot,
    #[error("contains a NUL byte")]
    Nul,
    #[error("`{}` contains `/`", shown(.0))]
    Slash(String),
    #[error("contains the control character U+{0:04X}")]
    Control(u32),
    #[error("has a component of {0} bytes, more than {MAX_COMPONENT_BYTES}")]
    TooLong(usize),
}

/// A validated relative path, as its components.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelPath(Vec<String>);

impl RelPath {
    /// The empty path: the content root itself (single-file descriptors).
    pub fn root() -> RelPath {
        RelPath(Vec::new())
    }

    /// Builds a path from already-validated components.
    pub fn from_components(components: Vec<String>) -> Result<RelPath, ComponentError> {
        for c in &components {
            validate_component(c)?;
        }
        Ok(RelPath(components))
    }

    pub fn components(&self) -> &[String] {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `prefix`'s components begin this path.
    pub fn starts_with(&self, prefix: &RelPath) -> bool {
        self.0.starts_with(&prefix.0)
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("/"))
    }
}

impl FromStr for RelPath {
    type Err = PathError;

    fn from_str(s: &str) -> Result<RelPath, PathError> {
        if s.is_empty() {
            return Err(PathError::Empty);
        }
        if s.len() > MAX_PATH_BYTES {
            return Err(PathError::TooLong(s.len()));
        }
        if s.starts_with('/') {
            return Err(PathError::Absolute(s.to_string()));
        }
        if s.contains('\0') {
            return Err(PathError::Nul);
        }
        let components: Vec<String> = s.split('/').map(str::to_string).collect();
        for c in &components {
            validate_component(c).map_err(|problem| PathError::Component { path: s.to_string(), problem })?;
        }
        Ok(RelPath(components))
    }
}

/// Checks one path component (also used for the content name). Control characters are the
/// Unicode `Cc` category: C0 (U+0000–U+001F), DEL (U+007F) and C1 (U+0080–U+009F), which some
/// terminals also obey.
pub fn validate_component(c: &str) -> Result<(), ComponentError> {
    if c.is_empty() {
        return Err(ComponentError::Empty);
    }
    if c == ".." {
        return Err(ComponentError::DotDot);
    }
    if c == "." {
        return Err(ComponentError::Dot);
    }
    if c.contains('\0') {
        return Err(ComponentError::Nul);
    }
    if c.contains('/') {
        return Err(ComponentError::Slash(c.to_string()));
    }
    if let Some(ch) = c.chars().find(|ch| ch.is_control()) {
        return Err(ComponentError::Control(ch as u32));
    }
    if c.len() > MAX_COMPONENT_BYTES {
        return Err(ComponentError::TooLong(c.len()));
    }
    Ok(())
}

/// Paths in messages: control characters escaped, long ones shortened.
pub(crate) fn shown(s: &str) -> String {
    let escaped: String = s.escape_debug().collect();
    if escaped.chars().count() > 80 { format!("{}…", escaped.chars().take(80).collect::<String>()) } else { escaped }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_relative_paths() {
        let p: RelPath = "a/b c/d.bin".parse().unwrap();
        assert_eq!(p.components(), ["a", "b c", "d.bin"]);
        assert_eq!(p.to_string(), "a/b c/d.bin");
    }

    #[test]
    fn rejects_escapes() {
        for (path, needle) in [
            ("/etc/passwd", "absolute"),
            ("../x", "`..`"),
            ("a/../../x", "`..`"),
            ("a//b", "empty component"),
            ("a/", "empty component"),
            ("./a", "`.`"),
            ("a\0b", "NUL"),
            ("", "empty"),
            ("a/b\x1b[31mred", "`a/b\\u{1b}[31mred` contains the control character U+001B"),
            ("line\nbreak", "`line\\nbreak` contains the control character U+000A"),
            ("tab\there", "U+0009"),
            ("del\x7f", "U+007F"),
            ("csi\u{9b}", "U+009B"),
        ] {
            let e = path.parse::<RelPath>().unwrap_err().to_string();
            assert!(e.contains(needle), "{path:?}: {e}");
            assert!(!e.chars().any(char::is_control), "the message itself is printable: {e:?}");
        }
    }

    #[test]
    fn accepts_printable_unicode() {
        let p: RelPath = "données/naïve ☃/日本.bin".parse().unwrap();
        assert_eq!(p.components().len(), 3);
    }
}
