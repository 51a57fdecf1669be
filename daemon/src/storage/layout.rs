//! Where each byte of content lives: pieces mapped onto files. Pure arithmetic, no I/O.
//!
//! Content is the concatenation of its files in descriptor order; piece `i` covers content
//! bytes `[i·L, min((i+1)·L, total))`. A piece may span several files (and skip empty ones).

use std::ops::Range;

use crate::descriptor::Content;

/// A contiguous run of bytes inside one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Index into the content's files.
    pub file: usize,
    /// Offset inside that file.
    pub offset: u64,
    pub len: u64,
}

/// The byte geometry of a torrent's content.
#[derive(Debug, Clone)]
pub struct Layout {
    piece_length: u64,
    total_length: u64,
    /// Content offset at which each file starts.
    file_starts: Vec<u64>,
    file_lengths: Vec<u64>,
}

impl Layout {
    pub fn new(content: &Content) -> Layout {
        let mut file_starts = Vec::with_capacity(content.files.len());
        let mut offset = 0;
        for f in &content.files {
            file_starts.push(offset);
            offset += f.length;
        }
        Layout {
            piece_length: content.piece_length,
            total_length: content.total_length,
            file_starts,
            file_lengths: content.files.iter().map(|f| f.length).collect(),
        }
    }

    /// The geometry of one file of `total_length` bytes (what a piece's arithmetic needs when
    /// the files do not matter).
    pub fn single_file(piece_length: u64, total_length: u64) -> Layout {
        Layout { piece_length, total_length, file_starts: vec![0], file_lengths: vec![total_length] }
    }

    pub fn piece_length(&self) -> u64 {
        self.piece_length
    }

    pub fn total_length(&self) -> u64 {
        self.total_length
    }

    pub fn piece_count(&self) -> usize {
        self.total_length.div_ceil(self.piece_length) as usize
    }

    /// Content byte range of piece `index`.
    pub fn piece_range(&self, index: usize) -> Range<u64> {
        let start = (index as u64 * self.piece_length).min(self.total_length);
        start..(start + self.piece_length).min(self.total_length)
    }

    /// Length of piece `index`.
    pub fn piece_len(&self, index: usize) -> u64 {
        let r = self.piece_range(index);
        r.end - r.start
    }

    /// The file spans covering content bytes `[start, start + len)`, in order; empty files
    /// are skipped. The range must lie inside the content.
    pub fn spans(&self, start: u64, len: u64) -> Vec<Span> {
        debug_assert!(start + len <= self.total_length);
        let mut out = Vec::new();
        if len == 0 {
            return out;
        }
        // The last file starting at or before `start`.
        let mut file = self.file_starts.partition_point(|&s| s <= start).saturating_sub(1);
        let mut pos = start;
        let end = start + len;
        while pos < end && file < self.file_starts.len() {
            let file_end = self.file_starts[file] + self.file_lengths[file];
            if pos < file_end {
                let take = file_end.min(end) - pos;
                out.push(Span { file, offset: pos - self.file_starts[file], len: take });
                pos += take;
            }
            file += 1;
        }
        out
    }

    /// The pieces that hold any byte of file `file` (empty for an empty file).
    pub fn pieces_of_file(&self, file: usize) -> Range<usize> {
        let start = self.file_starts[file];
        let len = self.file_lengths[file];
        if len == 0 {
            return 0..0;
        }
        let first = (start / self.piece_length) as usize;
        let last = ((start + len - 1) / self.piece_length) as usize;
        first..last + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::descriptor::{ContentKind, FileEntry, PieceHash};

    fn layout(lengths: &[u64], piece: u64) -> Layout {
        let total: u64 = lengths.iter().sum();
        let content = Content {
            kind: ContentKind::Directory,
            name: "x".into(),
            piece_length: piece,
            files: lengths
                .iter()
                .enumerate()
                .map(|(i, &l)| FileEntry::new(format!("f{i}").parse().unwrap(), l))
                .collect(),
            empty_dirs: Vec::new(),
            pieces: vec![PieceHash([0; 32]); total.div_ceil(piece) as usize],
            total_length: total,
        };
        Layout::new(&content)
    }

    #[test]
    fn pieces_cross_files_and_skip_empty_ones() {
        let l = layout(&[10, 0, 5, 20], 8);
        assert_eq!(l.piece_count(), 5);
        assert_eq!(
            l.spans(8, 8),
            vec![
                Span { file: 0, offset: 8, len: 2 },
                Span { file: 2, offset: 0, len: 5 },
                Span { file: 3, offset: 0, len: 1 }
            ]
        );
        assert_eq!(l.piece_len(4), 3);
        assert_eq!(l.pieces_of_file(1), 0..0);
        assert_eq!(l.pieces_of_file(2), 1..2);
        assert_eq!(l.pieces_of_file(3), 1..5);
    }

    proptest::proptest! {
        /// The spans of every piece tile the content exactly once.
        #[test]
        fn spans_tile_the_content(lengths in proptest::collection::vec(0u64..50, 1..12), piece in 1u64..40) {
            let total: u64 = lengths.iter().sum();
            proptest::prop_assume!(total > 0);
            let l = layout(&lengths, piece);
            let mut covered = vec![0u32; total as usize];
            let starts: Vec<u64> = lengths.iter().scan(0, |acc, &x| { let s = *acc; *acc += x; Some(s) }).collect();
            for p in 0..l.piece_count() {
                let r = l.piece_range(p);
                let spans = l.spans(r.start, r.end - r.start);
                proptest::prop_assert_eq!(spans.iter().map(|s| s.len).sum::<u64>(), r.end - r.start);
                for s in spans {
                    proptest::prop_assert!(s.offset + s.len <= lengths[s.file]);
                    for b in 0..s.len {
                        covered[(starts[s.file] + s.offset + b) as usize] += 1;
                    }
                }
            }
            proptest::prop_assert!(covered.iter().all(|&c| c == 1));
        }
    }
}
