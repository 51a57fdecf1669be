//! Content for a run: random bytes written straight into the seed's data directory, and a
//! byte-for-byte comparison of what each leecher ended up with.
//!
//! Random content (not zeros) so that nothing on the path can compress or deduplicate it; a
//! fixed seed so that a run can be repeated with the same bytes.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};

/// Bytes generated and compared at a time.
const CHUNK_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
}

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentShape {
    /// One file of this many bytes.
    File { bytes: u64 },
    /// A directory of `files` files totalling `bytes` (sizes differ by at most one byte).
    Directory { bytes: u64, files: u32 },
}

impl ContentShape {
    pub fn total_bytes(self) -> u64 {
        match self {
            ContentShape::File { bytes } | ContentShape::Directory { bytes, .. } => bytes,
        }
    }
}

/// Writes the content as `parent/name` (a file, or a directory of files); returns its path.
pub fn generate(parent: &Path, name: &str, shape: ContentShape, seed: u64) -> Result<PathBuf, ContentError> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let root = parent.join(name);
    match shape {
        ContentShape::File { bytes } => write_random(&root, bytes, &mut rng)?,
        ContentShape::Directory { bytes, files } => {
            std::fs::create_dir_all(&root).map_err(|source| ContentError::Write { path: root.clone(), source })?;
            let files = u64::from(files.max(1));
            for i in 0..files {
                let size = bytes / files + u64::from(i < bytes % files);
                write_random(&root.join(format!("part-{i:04}.bin")), size, &mut rng)?;
            }
        }
    }
    Ok(root)
}

fn write_random(path: &Path, bytes: u64, rng: &mut impl Rng) -> Result<(), ContentError> {
    let err = |source| ContentError::Write { path: path.to_path_buf(), source };
    let mut out = BufWriter::new(File::create(path).map_err(err)?);
    let mut chunk = vec![0u8; CHUNK_BYTES];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK_BYTES as u64) as usize;
        rng.fill_bytes(&mut chunk[..n]);
        out.write_all(&chunk[..n]).map_err(err)?;
        left -= n as u64;
    }
    out.flush().map_err(err)
}

/// The first difference between two trees (a file, or a directory compared recursively), as a
/// sentence; `None` when they are byte-identical.
pub fn first_difference(expected: &Path, actual: &Path) -> Result<Option<String>, ContentError> {
    let read_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ContentError::Read { path, source }
    };
    let expected_meta = std::fs::metadata(expected).map_err(read_err(expected))?;
    let Ok(actual_meta) = std::fs::metadata(actual) else {
        return Ok(Some(format!("{} is missing", actual.display())));
    };
    if expected_meta.is_dir() != actual_meta.is_dir() {
        return Ok(Some(format!("{} is not of the same kind as {}", actual.display(), expected.display())));
    }
    if expected_meta.is_dir() {
        let names = |dir: &Path| -> Result<Vec<std::ffi::OsString>, ContentError> {
            let mut v: Vec<_> = std::fs::read_dir(dir)
                .map_err(read_err(dir))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()
                .map_err(read_err(dir))?;
            v.sort();
            Ok(v)
        };
        let (want, got) = (names(expected)?, names(actual)?);
        if want != got {
            return Ok(Some(format!(
                "{} holds {} entries, {} holds {}",
                actual.display(),
                got.len(),
                expected.display(),
                want.len()
            )));
        }
        for name in want {
            if let Some(diff) = first_difference(&expected.join(&name), &actual.join(&name))? {
                return Ok(Some(diff));
            }
        }
        return Ok(None);
    }
    if expected_meta.len() != actual_meta.len() {
        return Ok(Some(format!(
            "{} has {} bytes, expected {}",
            actual.display(),
            actual_meta.len(),
            expected_meta.len()
        )));
    }
    let mut a = File::open(expected).map_err(read_err(expected))?;
    let mut b = File::open(actual).map_err(read_err(actual))?;
    let (mut buf_a, mut buf_b) = (vec![0u8; CHUNK_BYTES], vec![0u8; CHUNK_BYTES]);
    let mut offset = 0u64;
    loop {
        let n = read_full(&mut a, &mut buf_a).map_err(read_err(expected))?;
        let m = read_full(&mut b, &mut buf_b).map_err(read_err(actual))?;
        if n != m || buf_a[..n] != buf_b[..m] {
            let at = buf_a[..n].iter().zip(&buf_b[..m]).position(|(x, y)| x != y).unwrap_or(n.min(m));
            return Ok(Some(format!("{} differs at byte {}", actual.display(), offset + at as u64)));
        }
        if n == 0 {
            return Ok(None);
        }
        offset += n as u64;
    }
}

fn read_full(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_split_the_total_and_compare_equal_to_a_copy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let shape = ContentShape::Directory { bytes: 10_001, files: 3 };
        let a = generate(dir.path(), "a", shape, 7).expect("generate a");
        std::fs::create_dir(dir.path().join("copy")).expect("mkdir");
        let b = generate(&dir.path().join("copy"), "a", shape, 7).expect("generate b");
        let sizes: Vec<u64> =
            (0..3).map(|i| std::fs::metadata(a.join(format!("part-{i:04}.bin"))).expect("part").len()).collect();
        assert_eq!(sizes, vec![3334, 3334, 3333]);
        assert_eq!(first_difference(&a, &b).expect("compare"), None);
    }

    #[test]
    fn a_flipped_byte_is_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = generate(dir.path(), "a.bin", ContentShape::File { bytes: 3 << 20 }, 1).expect("generate");
        let b = dir.path().join("b.bin");
        let mut bytes = std::fs::read(&a).expect("read");
        bytes[(2 << 20) + 5] ^= 1;
        std::fs::write(&b, &bytes).expect("write");
        let diff = first_difference(&a, &b).expect("compare").expect("a difference");
        assert!(diff.ends_with(&format!("differs at byte {}", (2 << 20) + 5)), "{diff}");
        let missing = first_difference(&a, &dir.path().join("nope")).expect("compare");
        assert!(missing.is_some_and(|m| m.contains("missing")));
    }
}
