//! Deciding which pieces to trust and which to hash when a torrent starts.
//!
//! The rule ([`plan`]): trust exactly the pieces the resume state recorded as verified,
//! unless the files changed behind the daemon's back; hash whatever else may hold data.
//! - No resume state: hash every piece that may hold data (content found on disk is
//!   adopted only after verification).
//! - Resume state from a clean stop: a file whose size or mtime changed since was modified
//!   by someone else; all its pieces are distrusted and rechecked. Unchanged files: trust.
//! - Resume state from an unclean stop (crash): the recorded pieces are durable by the
//!   resume invariant and stay trusted; unrecorded pieces that may hold data were perhaps
//!   written and verified after the last save — recheck them instead of downloading again.

use crate::bitfield::Bitfield;
use crate::storage::{FileStamp, Layout, Placement};

use super::resume::ResumeState;

/// What to do at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckPlan {
    /// Pieces trusted without hashing.
    pub trusted: Bitfield,
    /// Pieces to hash, ascending.
    pub to_check: Vec<usize>,
    /// Why, for the log.
    pub reason: &'static str,
}

/// Computes the start-up plan. `stamps` are the files' current stamps; `may_have_data(i)` says
/// whether piece `i` could hold written bytes.
pub fn plan(
    resume: Option<&ResumeState>,
    layout: &Layout,
    placement: Placement,
    stamps: &[Option<FileStamp>],
    may_have_data: &dyn Fn(usize) -> bool,
) -> CheckPlan {
    let pieces = layout.piece_count();
    let all_with_data =
        |trusted: &Bitfield| -> Vec<usize> { (0..pieces).filter(|&i| !trusted.get(i) && may_have_data(i)).collect() };
    let Some(resume) = resume else {
        let trusted = Bitfield::new(pieces);
        let to_check = all_with_data(&trusted);
        return CheckPlan { trusted, to_check, reason: "no resume state" };
    };
    let Some(mut trusted) = resume.have(pieces) else {
        let trusted = Bitfield::new(pieces);
        let to_check = all_with_data(&trusted);
        return CheckPlan { trusted, to_check, reason: "resume state does not fit this torrent" };
    };
    if resume.placement != placement || resume.stamps.len() != stamps.len() {
        let trusted = Bitfield::new(pieces);
        let to_check = all_with_data(&trusted);
        return CheckPlan { trusted, to_check, reason: "content was moved since the last run" };
    }
    let mut distrusted_files = false;
    if resume.clean {
        for (file, (saved, now)) in resume.stamps.iter().zip(stamps).enumerate() {
            if saved != now {
                distrusted_files = true;
                for piece in layout.pieces_of_file(file) {
                    trusted.clear(piece);
                }
            }
        }
        if !distrusted_files {
            // Clean stop, nothing touched: unrecorded pieces hold nothing verified.
            return CheckPlan { trusted, to_check: Vec::new(), reason: "clean stop" };
        }
    }
    let to_check = all_with_data(&trusted);
    let reason = if distrusted_files { "files changed since the last run" } else { "unclean stop" };
    CheckPlan { trusted, to_check, reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::descriptor::{Content, ContentKind, FileEntry, PieceHash};
    use crate::torrent::resume::RESUME_VERSION;

    fn layout() -> Layout {
        // two files of 3 pieces each (piece 16 KiB)
        let files =
            vec![FileEntry::new("a".parse().unwrap(), 48 << 10), FileEntry::new("b".parse().unwrap(), 48 << 10)];
        Layout::new(&Content {
            kind: ContentKind::Directory,
            name: "x".into(),
            piece_length: 16 << 10,
            files,
            empty_dirs: Vec::new(),
            pieces: vec![PieceHash([0; 32]); 6],
            total_length: 96 << 10,
        })
    }

    fn stamp(n: i128) -> Option<FileStamp> {
        Some(FileStamp { length: 48 << 10, mtime_ns: n })
    }

    fn resume(clean: bool, have: &[usize]) -> ResumeState {
        let mut b = Bitfield::new(6);
        have.iter().for_each(|&i| {
            b.set(i);
        });
        ResumeState {
            version: RESUME_VERSION,
            info_hash: crate::descriptor::InfoHash([0; 32]),
            clean,
            placement: Placement::Partial,
            have: b.to_hex(),
            stamps: vec![stamp(1), stamp(2)],
            downloaded: 0,
            uploaded: 0,
            completed_at: None,
            complete_hook_due: false,
        }
    }

    #[test]
    fn clean_stop_trusts_everything_recorded() {
        let p = plan(Some(&resume(true, &[0, 4])), &layout(), Placement::Partial, &[stamp(1), stamp(2)], &|_| true);
        assert_eq!(p.trusted.ones().collect::<Vec<_>>(), vec![0, 4]);
        assert!(p.to_check.is_empty());
    }

    #[test]
    fn unclean_stop_rechecks_unrecorded_pieces_with_data() {
        let p = plan(Some(&resume(false, &[0, 4])), &layout(), Placement::Partial, &[stamp(9), stamp(9)], &|i| i != 5);
        assert_eq!(p.trusted.ones().collect::<Vec<_>>(), vec![0, 4]);
        assert_eq!(p.to_check, vec![1, 2, 3]);
    }

    #[test]
    fn externally_modified_file_is_rechecked_whole() {
        let p = plan(Some(&resume(true, &[0, 1, 4])), &layout(), Placement::Partial, &[stamp(1), stamp(7)], &|_| true);
        assert_eq!(p.trusted.ones().collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(p.to_check, vec![2, 3, 4, 5]);
    }

    #[test]
    fn no_resume_checks_everything_with_data() {
        let p = plan(None, &layout(), Placement::Final, &[stamp(1), stamp(2)], &|i| i < 3);
        assert_eq!(p.trusted.count(), 0);
        assert_eq!(p.to_check, vec![0, 1, 2]);
    }
}
