//! Descriptors (`.desc` files): what a swarm distributes and where to start looking for it.
//!
//! A descriptor is YAML (see `docs/DESCRIPTOR.md`). It names the content — one file, or a
//! directory tree of files and empty directories — with every file's path, length and
//! executable bit, the piece length and the SHA-256 of every piece, and lists bootstrap nodes.
//! The **info hash** is SHA-256 over a canonical binary encoding of the content only
//! ([`encoding`]); bootstrap nodes are not part of it, so descriptors differing only in
//! bootstrap nodes join the same swarm.
//!
//! Format versions: version 1 describes bytes only; version 2 adds executable bits and empty
//! directories. A descriptor is written with the lowest version that can express its content,
//! so content without either stays a version 1 descriptor, byte for byte as before, and keeps
//! its info hash (the canonical encoding appends the new attributes only when there are any).
//!
//! Invariants of a [`Descriptor`] (checked by [`Descriptor::from_document`], which every
//! descriptor passes through, whatever its source):
//! - every path is relative, made of non-empty components that are neither `.` nor `..`, hold
//!   no `/` and no control character, and no path is listed twice or lies inside another
//!   listed file; a listed empty directory holds no other listed path;
//! - the piece length is a power of two in [`MIN_PIECE_LENGTH`]..=[`MAX_PIECE_LENGTH`], the
//!   total length is non-zero and at most [`MAX_TOTAL_LENGTH`], and there is exactly one hash
//!   per piece (at most [`MAX_PIECES`]);
//! - the info hash written in the file equals the one computed from the content.

pub mod create;
pub mod encoding;
mod path;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use path::RelPath;

use crate::units::human_bytes;
use crate::yaml::{self, YamlError, YamlLimits};

/// The newest descriptor format version this build reads and writes. Version 2 added
/// executable bits and empty directories; versions 1 and 2 are read.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest version this build reads.
pub const MIN_FORMAT_VERSION: u32 = 1;
/// Largest descriptor file accepted, in bytes.
pub const MAX_DESCRIPTOR_BYTES: usize = 16 << 20;
/// Smallest piece length.
pub const MIN_PIECE_LENGTH: u64 = 16 << 10;
/// Largest piece length.
pub const MAX_PIECE_LENGTH: u64 = 64 << 20;
/// Most pieces in one descriptor.
pub const MAX_PIECES: usize = 1 << 17;
/// Most files in one directory descriptor.
pub const MAX_FILES: usize = 1 << 16;
/// Most empty directories in one directory descriptor.
pub const MAX_EMPTY_DIRECTORIES: usize = 1 << 16;
/// Largest content: as many pieces of the largest size as allowed.
pub const MAX_TOTAL_LENGTH: u64 = MAX_PIECES as u64 * MAX_PIECE_LENGTH;
/// Most bootstrap addresses in one descriptor.
pub const MAX_BOOTSTRAP: usize = 64;

/// YAML limits for descriptors and for torrent files that embed one: room for the largest
/// valid descriptor (a file entry is a mapping of up to three keys and values, an empty
/// directory one scalar).
pub const DESCRIPTOR_YAML_LIMITS: YamlLimits = YamlLimits {
    max_bytes: MAX_DESCRIPTOR_BYTES,
    max_nodes: MAX_PIECES + 7 * MAX_FILES + MAX_EMPTY_DIRECTORIES + MAX_BOOTSTRAP + 64,
};

/// A 32-byte SHA-256 value printed as 64 lowercase hex digits.
macro_rules! hash_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// Lowercase hex, 64 digits.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }

        impl FromStr for $name {
            type Err = HexHashError;
            fn from_str(s: &str) -> Result<Self, HexHashError> {
                parse_hex32(s).map($name)
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

hash_newtype!(
    /// Identifies content (and its swarm): SHA-256 of the canonical content encoding.
    InfoHash
);
hash_newtype!(
    /// SHA-256 of one piece of content.
    PieceHash
);

/// A 64-hex-digit string that is not a SHA-256 value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HexHashError {
    #[error("expected 64 hex digits, found {0} characters")]
    Length(usize),
    #[error("`{0}` is not hexadecimal")]
    NotHex(String),
}

fn parse_hex32(s: &str) -> Result<[u8; 32], HexHashError> {
    if s.len() != 64 {
        return Err(HexHashError::Length(s.chars().count()));
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|_| {
        let shown: String = s.chars().take(16).collect();
        HexHashError::NotHex(if s.len() > 16 { format!("{shown}…") } else { shown })
    })?;
    Ok(out)
}

/// The YAML shape of a descriptor file, before validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DescriptorDocument {
    /// Format version; must be [`FORMAT_VERSION`].
    pub p2pd_descriptor: u32,
    /// The info hash, 64 hex digits, as computed by whoever made the descriptor.
    pub info_hash: String,
    /// `host:port` addresses of nodes to start discovery from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bootstrap: Vec<String>,
    /// What is distributed.
    pub content: ContentDocument,
}

/// The YAML shape of the `content:` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentDocument {
    /// Name of the file, or of the directory holding the files.
    pub name: String,
    /// Bytes per piece (the last piece may be shorter).
    pub piece_length: u64,
    /// Length of the single file; absent for a directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
    /// Whether the single file is executable (version 2); absent means not.
    #[serde(default, skip_serializing_if = "is_false")]
    pub executable: bool,
    /// Files of a directory, in content order; absent for a single file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<FileDocument>>,
    /// Empty directories of a directory, `/`-separated (version 2); absent means none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub directories: Vec<String>,
    /// SHA-256 of every piece, 64 hex digits each.
    pub pieces: Vec<String>,
}

/// The YAML shape of one entry of `content.files`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDocument {
    /// Path below the content directory, `/`-separated.
    pub path: String,
    /// Length in bytes (may be zero).
    pub length: u64,
    /// Whether the file is executable (version 2); absent means not.
    #[serde(default, skip_serializing_if = "is_false")]
    pub executable: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A malformed descriptor: one line naming the field and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorError {
    /// Not YAML, or not the shape of a descriptor (missing or unknown fields, wrong types).
    #[error("{0}")]
    Yaml(#[from] YamlError),
    /// Well-formed YAML with an invalid value.
    #[error("{field}: {problem}")]
    Invalid { field: String, problem: String },
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> DescriptorError {
    DescriptorError::Invalid { field: field.into(), problem: problem.into() }
}

/// Whether the content is one file or a directory of files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContentKind {
    File,
    Directory,
}

/// One file of the content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Path below the content root; empty for a single-file descriptor (the root is the file).
    pub path: RelPath,
    /// Length in bytes.
    pub length: u64,
    /// Published executable: the downloader sets the execute bits where the read bits are set.
    pub executable: bool,
}

impl FileEntry {
    /// A non-executable file.
    pub fn new(path: RelPath, length: u64) -> FileEntry {
        FileEntry { path, length, executable: false }
    }
}

/// The validated content description — everything the info hash covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    pub kind: ContentKind,
    /// Name of the file or directory created in the data directory (one path component).
    pub name: String,
    pub piece_length: u64,
    /// Files in content order; pieces run across file boundaries in this order.
    pub files: Vec<FileEntry>,
    /// Directories that hold no listed file or directory, in descriptor order (directories
    /// that hold something exist because of it and are not listed). Always empty for a
    /// single file.
    pub empty_dirs: Vec<RelPath>,
    pub pieces: Vec<PieceHash>,
    /// Sum of all file lengths.
    pub total_length: u64,
}

impl Content {
    /// Number of pieces.
    pub fn piece_count(&self) -> usize {
        self.pieces.len()
    }

    /// Length of piece `index` (the last one may be short).
    pub fn piece_len(&self, index: usize) -> u64 {
        let start = index as u64 * self.piece_length;
        self.piece_length.min(self.total_length.saturating_sub(start))
    }

    /// Computes the info hash over the canonical encoding.
    pub fn info_hash(&self) -> InfoHash {
        encoding::info_hash(self)
    }

    /// The oldest format version that can describe this content.
    pub fn format_version(&self) -> u32 {
        if self.files.iter().any(|f| f.executable) || !self.empty_dirs.is_empty() { 2 } else { 1 }
    }
}

/// A host and port to contact for discovery: an IP address or a DNS name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeAddr {
    pub host: String,
    pub port: u16,
}

impl NodeAddr {
    /// The address as a socket address, when the host is an IP literal.
    pub fn as_socket_addr(&self) -> Option<std::net::SocketAddr> {
        let ip: std::net::IpAddr = self.host.parse().ok()?;
        Some(std::net::SocketAddr::new(ip, self.port))
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Why a `host:port` address does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeAddrError {
    #[error("`{0}` has port 0")]
    PortZero(String),
    #[error("`{0}` is missing a port (expected host:port)")]
    MissingPort(String),
    #[error("`{0}` is not a valid address (write IPv6 as [addr]:port)")]
    BadIpv6(String),
    #[error("`{0}` has an invalid port (expected 1-65535)")]
    BadPort(String),
    #[error("`{0}` is neither an IP address nor a valid host name")]
    BadHost(String),
}

impl FromStr for NodeAddr {
    type Err = NodeAddrError;

    fn from_str(s: &str) -> Result<Self, NodeAddrError> {
        if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
            if sa.port() == 0 {
                return Err(NodeAddrError::PortZero(s.to_string()));
            }
            return Ok(NodeAddr { host: sa.ip().to_string(), port: sa.port() });
        }
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err(NodeAddrError::MissingPort(s.to_string()));
        };
        if host.contains(':') || host.starts_with('[') {
            return Err(NodeAddrError::BadIpv6(s.to_string()));
        }
        let port: u16 = port.parse().ok().filter(|&p| p != 0).ok_or_else(|| NodeAddrError::BadPort(s.to_string()))?;
        let valid_name = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
            });
        if !valid_name {
            return Err(NodeAddrError::BadHost(host.to_string()));
        }
        Ok(NodeAddr { host: host.to_ascii_lowercase(), port })
    }
}

impl Serialize for NodeAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NodeAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// A validated descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub info_hash: InfoHash,
    pub content: Content,
    pub bootstrap: Vec<NodeAddr>,
}

impl Descriptor {
    /// Parses and validates descriptor YAML.
    pub fn parse(text: &str) -> Result<Descriptor, DescriptorError> {
        let document: DescriptorDocument = yaml::from_str(text, DESCRIPTOR_YAML_LIMITS)?;
        Descriptor::from_document(&document)
    }

    /// Validates a parsed document; see the module invariants.
    pub fn from_document(doc: &DescriptorDocument) -> Result<Descriptor, DescriptorError> {
        if !(MIN_FORMAT_VERSION..=FORMAT_VERSION).contains(&doc.p2pd_descriptor) {
            return Err(invalid(
                "p2pd_descriptor",
                format!(
                    "unsupported format version {} (this p2pd reads versions {MIN_FORMAT_VERSION} to {FORMAT_VERSION})",
                    doc.p2pd_descriptor
                ),
            ));
        }
        let content = validate_content(&doc.content)?;
        if content.format_version() > doc.p2pd_descriptor {
            return Err(invalid(
                "p2pd_descriptor",
                format!(
                    "is {}, but `executable` and `directories` need version {}",
                    doc.p2pd_descriptor,
                    content.format_version()
                ),
            ));
        }
        if doc.bootstrap.len() > MAX_BOOTSTRAP {
            return Err(invalid(
                "bootstrap",
                format!("{} addresses listed, at most {MAX_BOOTSTRAP} are allowed", doc.bootstrap.len()),
            ));
        }
        let bootstrap = doc
            .bootstrap
            .iter()
            .enumerate()
            .map(|(i, a)| a.parse::<NodeAddr>().map_err(|e| invalid(format!("bootstrap[{i}]"), e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let claimed: InfoHash = doc.info_hash.parse().map_err(|e: HexHashError| invalid("info_hash", e.to_string()))?;
        let computed = content.info_hash();
        if claimed != computed {
            return Err(invalid(
                "info_hash",
                format!("does not match the content (computed {computed}); the descriptor was altered or damaged"),
            ));
        }
        Ok(Descriptor { info_hash: computed, content, bootstrap })
    }

    /// The YAML shape of this descriptor.
    pub fn to_document(&self) -> DescriptorDocument {
        let c = &self.content;
        let (length, executable, files) = match c.kind {
            ContentKind::File => (Some(c.total_length), c.files.first().is_some_and(|f| f.executable), None),
            ContentKind::Directory => (
                None,
                false,
                Some(
                    c.files
                        .iter()
                        .map(|f| FileDocument { path: f.path.to_string(), length: f.length, executable: f.executable })
                        .collect(),
                ),
            ),
        };
        DescriptorDocument {
            p2pd_descriptor: c.format_version(),
            info_hash: self.info_hash.to_hex(),
            bootstrap: self.bootstrap.iter().map(|a| a.to_string()).collect(),
            content: ContentDocument {
                name: c.name.clone(),
                piece_length: c.piece_length,
                length,
                executable,
                files,
                directories: c.empty_dirs.iter().map(|d| d.to_string()).collect(),
                pieces: c.pieces.iter().map(|p| p.to_hex()).collect(),
            },
        }
    }

    /// The descriptor as YAML text, with a header comment.
    pub fn to_yaml(&self) -> String {
        let body = serde_saphyr::to_string(&self.to_document())
            .unwrap_or_else(|e| unreachable!("descriptor documents always serialize: {e}"));
        format!(
            "# p2pd descriptor: {} ({}, {} pieces of {})\n# Add it on any node with `p2pctl add FILE.desc`.\n{body}",
            self.content.name,
            human_bytes(self.content.total_length),
            self.content.pieces.len(),
            human_bytes(self.content.piece_length),
        )
    }
}

fn validate_content(doc: &ContentDocument) -> Result<Content, DescriptorError> {
    path::validate_component(&doc.name)
        .map_err(|p| invalid("content.name", format!("`{}` {p}", path::shown(&doc.name))))?;

    let pl = doc.piece_length;
    if pl == 0 {
        return Err(invalid("content.piece_length", "must not be zero"));
    }
    if !(MIN_PIECE_LENGTH..=MAX_PIECE_LENGTH).contains(&pl) {
        return Err(invalid(
            "content.piece_length",
            format!("{pl} is out of range ({} to {})", human_bytes(MIN_PIECE_LENGTH), human_bytes(MAX_PIECE_LENGTH)),
        ));
    }
    if !pl.is_power_of_two() {
        return Err(invalid("content.piece_length", format!("{pl} is not a power of two")));
    }

    if doc.files.is_none() && !doc.directories.is_empty() {
        return Err(invalid(
            "content.directories",
            "only a directory (`files`) can hold directories; a single file (`length`) cannot",
        ));
    }
    if doc.files.is_some() && doc.executable {
        return Err(invalid(
            "content.executable",
            "is for a single file (`length`); mark each entry of `files` with `executable: true` instead",
        ));
    }
    let (kind, files) = match (&doc.length, &doc.files) {
        (Some(_), Some(_)) => {
            return Err(invalid("content", "has both `length` (a single file) and `files` (a directory); keep one"));
        }
        (None, None) => {
            return Err(invalid("content", "missing field `length` (for a single file) or `files` (for a directory)"));
        }
        (Some(length), None) => {
            if *length == 0 {
                return Err(invalid("content.length", "must not be zero"));
            }
            if *length > MAX_TOTAL_LENGTH {
                return Err(invalid(
                    "content.length",
                    format!("{length} is larger than the maximum of {}", human_bytes(MAX_TOTAL_LENGTH)),
                ));
            }
            (ContentKind::File, vec![FileEntry { path: RelPath::root(), length: *length, executable: doc.executable }])
        }
        (None, Some(list)) => (ContentKind::Directory, validate_files(list)?),
    };
    let empty_dirs = validate_empty_dirs(&doc.directories, &files)?;

    let total_length = files.iter().map(|f| f.length).sum::<u64>();
    if total_length == 0 {
        return Err(invalid("content.files", "total length is zero; there is nothing to distribute"));
    }
    if total_length > MAX_TOTAL_LENGTH {
        return Err(invalid(
            "content.files",
            format!("total length is larger than the maximum of {}", human_bytes(MAX_TOTAL_LENGTH)),
        ));
    }

    let needed = total_length.div_ceil(pl);
    if needed > MAX_PIECES as u64 {
        return Err(invalid(
            "content.piece_length",
            format!(
                "{} of content needs {needed} pieces of {}, more than the maximum of {MAX_PIECES}; use a larger piece length",
                human_bytes(total_length),
                human_bytes(pl)
            ),
        ));
    }
    if doc.pieces.len() as u64 != needed {
        return Err(invalid(
            "content.pieces",
            format!(
                "{} hashes listed, but {} of content in pieces of {} needs {needed}",
                doc.pieces.len(),
                human_bytes(total_length),
                human_bytes(pl)
            ),
        ));
    }
    let pieces = doc
        .pieces
        .iter()
        .enumerate()
        .map(|(i, h)| h.parse::<PieceHash>().map_err(|e| invalid(format!("content.pieces[{i}]"), e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;

    Ok(Content { kind, name: doc.name.clone(), piece_length: pl, files, empty_dirs, pieces, total_length })
}

fn validate_files(list: &[FileDocument]) -> Result<Vec<FileEntry>, DescriptorError> {
    if list.is_empty() {
        return Err(invalid("content.files", "must list at least one file"));
    }
    if list.len() > MAX_FILES {
        return Err(invalid("content.files", format!("{} files listed, at most {MAX_FILES} are allowed", list.len())));
    }
    let mut files = Vec::with_capacity(list.len());
    let mut total: u64 = 0;
    for (i, f) in list.iter().enumerate() {
        let path: RelPath =
            f.path.parse().map_err(|p: path::PathError| invalid(format!("content.files[{i}].path"), p.to_string()))?;
        total = total.saturating_add(f.length);
        if f.length > MAX_TOTAL_LENGTH || total > MAX_TOTAL_LENGTH {
            return Err(invalid(
                format!("content.files[{i}].length"),
                format!("total length exceeds the maximum of {}", human_bytes(MAX_TOTAL_LENGTH)),
            ));
        }
        files.push(FileEntry { path, length: f.length, executable: f.executable });
    }
    // Duplicates and files nested under other files, found by sorting paths: a path that equals
    // or lies below its predecessor in component order conflicts with it.
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by(|&a, &b| files[a].path.components().cmp(files[b].path.components()));
    for pair in order.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let (pa, pb) = (&files[a].path, &files[b].path);
        let (first, second) = (a.min(b), a.max(b));
        if pa == pb {
            return Err(invalid(
                format!("content.files[{second}].path"),
                format!("`{pb}` is listed twice (also content.files[{first}])"),
            ));
        }
        if pb.starts_with(pa) {
            return Err(invalid(
                format!("content.files[{b}].path"),
                format!("`{pb}` is inside `{pa}`, which is a file (content.files[{a}])"),
            ));
        }
    }
    Ok(files)
}

/// Validates `content.directories` against the files: each is a valid path, listed once, and
/// empty — no listed file or directory lies inside it, and it lies inside no listed file.
fn validate_empty_dirs(list: &[String], files: &[FileEntry]) -> Result<Vec<RelPath>, DescriptorError> {
    if list.is_empty() {
        return Ok(Vec::new());
    }
    if list.len() > MAX_EMPTY_DIRECTORIES {
        return Err(invalid(
            "content.directories",
            format!("{} directories listed, at most {MAX_EMPTY_DIRECTORIES} are allowed", list.len()),
        ));
    }
    let dirs = list
        .iter()
        .enumerate()
        .map(|(i, d)| d.parse::<RelPath>().map_err(|p| invalid(format!("content.directories[{i}]"), p.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    // As for files: sorted by components, a path that equals or lies below its predecessor
    // conflicts with it (everything below a path sorts right after it).
    #[derive(Clone, Copy)]
    enum Entry {
        File(usize),
        Dir(usize),
    }
    let field = |e: Entry| match e {
        Entry::File(i) => format!("content.files[{i}].path"),
        Entry::Dir(i) => format!("content.directories[{i}]"),
    };
    let path = |e: Entry| match e {
        Entry::File(i) => &files[i].path,
        Entry::Dir(i) => &dirs[i],
    };
    let mut all: Vec<Entry> = (0..files.len()).map(Entry::File).chain((0..dirs.len()).map(Entry::Dir)).collect();
    all.sort_by(|&a, &b| path(a).components().cmp(path(b).components()));
    for pair in all.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let (pa, pb) = (path(a), path(b));
        match (a, b) {
            (Entry::File(_), Entry::File(_)) => {} // checked with the files
            _ if pa == pb => {
                // Report on the directory entry (the later one if both are directories).
                let (this, other) = match (a, b) {
                    (Entry::Dir(x), Entry::Dir(y)) => (Entry::Dir(x.max(y)), Entry::Dir(x.min(y))),
                    (Entry::Dir(_), other) => (a, other),
                    (other, _) => (b, other),
                };
                return Err(invalid(field(this), format!("`{pb}` is listed twice (also {})", field(other))));
            }
            _ if pb.starts_with(pa) => {
                let problem = match a {
                    Entry::File(_) => format!("`{pb}` is inside `{pa}`, which is a file ({})", field(a)),
                    Entry::Dir(_) => {
                        return Err(invalid(
                            field(a),
                            format!(
                                "`{pa}` is listed as an empty directory but holds `{pb}` ({}); list only empty directories",
                                field(b)
                            ),
                        ));
                    }
                };
                return Err(invalid(field(b), problem));
            }
            _ => {}
        }
    }
    Ok(dirs)
}

/// The piece length `p2pctl create` picks when none is given: the power of two that makes
/// about 1,024 pieces, between 256 KiB and 16 MiB. Small pieces spread sooner through a swarm
/// (a peer forwards only verified pieces); the cap keeps descriptors of huge content small.
pub fn default_piece_length(total_length: u64) -> u64 {
    let target = total_length.div_ceil(1024).max(1).next_power_of_two();
    target.clamp(256 << 10, 16 << 20)
}

#[cfg(test)]
mod tests;
