//! The canonical content encoding that the info hash is computed over.
//!
//! Layout (all integers big-endian; documented in `docs/DESCRIPTOR.md`):
//!
//! ```text
//! "p2pd/content/v1"                 15 bytes, ASCII
//! kind                              u8: 0 = single file, 1 = directory
//! name_len, name                    u16, UTF-8 bytes
//! piece_length                      u64
//! file_count                        u32 (1 for a single file)
//! file_count × (path_len, path, length)
//!                                   u16, UTF-8 bytes ('/'-joined components; empty for a
//!                                   single file), u64
//! piece_count                       u32
//! piece_count × piece hash          32 bytes each
//! then the attributes that are present, each once, in this order:
//!   tag 1: executable files         u8 1, count u32, count × file index u32 (ascending)
//!   tag 2: empty directories        u8 2, count u32, count × (path_len u16, path)
//! ```
//!
//! The attributes were added in descriptor format version 2. Content that has neither (no
//! executable file, no empty directory) encodes exactly as in version 1, so every descriptor
//! written before them keeps its info hash. The encoding stays unambiguous: the version 1 part
//! is self-delimiting (its counts give its length), so bytes after it can only be attributes,
//! and each attribute is tagged and self-delimiting.
//!
//! Only validated [`Content`] is encoded, so every length fits its field.

use sha2::{Digest, Sha256};

use super::{Content, ContentKind, InfoHash};

/// Domain-separation prefix; a new encoding gets a new prefix.
pub const MAGIC: &[u8; 15] = b"p2pd/content/v1";
/// Tag of the executable-files attribute.
pub const TAG_EXECUTABLE: u8 = 1;
/// Tag of the empty-directories attribute.
pub const TAG_EMPTY_DIRS: u8 = 2;

/// The canonical bytes of `content`.
pub fn canonical_bytes(content: &Content) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + content.files.len() * 32 + content.pieces.len() * 32);
    out.extend_from_slice(MAGIC);
    out.push(match content.kind {
        ContentKind::File => 0,
        ContentKind::Directory => 1,
    });
    put_str(&mut out, &content.name);
    out.extend_from_slice(&content.piece_length.to_be_bytes());
    out.extend_from_slice(&(content.files.len() as u32).to_be_bytes());
    for file in &content.files {
        put_str(&mut out, &file.path.to_string());
        out.extend_from_slice(&file.length.to_be_bytes());
    }
    out.extend_from_slice(&(content.pieces.len() as u32).to_be_bytes());
    for piece in &content.pieces {
        out.extend_from_slice(&piece.0);
    }

    let executable: Vec<u32> =
        content.files.iter().enumerate().filter(|(_, f)| f.executable).map(|(i, _)| i as u32).collect();
    if !executable.is_empty() {
        out.push(TAG_EXECUTABLE);
        out.extend_from_slice(&(executable.len() as u32).to_be_bytes());
        for index in executable {
            out.extend_from_slice(&index.to_be_bytes());
        }
    }
    if !content.empty_dirs.is_empty() {
        out.push(TAG_EMPTY_DIRS);
        out.extend_from_slice(&(content.empty_dirs.len() as u32).to_be_bytes());
        for dir in &content.empty_dirs {
            put_str(&mut out, &dir.to_string());
        }
    }
    out
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    debug_assert!(s.len() <= u16::MAX as usize, "validated paths are at most 4096 bytes");
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// SHA-256 of [`canonical_bytes`].
pub fn info_hash(content: &Content) -> InfoHash {
    InfoHash(Sha256::digest(canonical_bytes(content)).into())
}
