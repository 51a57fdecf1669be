//! A torrent's resume state: which pieces are verified and durably on disk.
//!
//! Invariant: a piece is in `have` only if its bytes were verified against the descriptor and
//! made durable (`fdatasync`) *before* this state was written. A crash can therefore make the
//! saved set lag behind the disk, never lead it. `clean` says whether the daemon stopped
//! cleanly since the last write to the data: after an unclean stop, pieces outside `have`
//! may hold verified data that was never recorded, and are rechecked rather than fetched.

use serde::{Deserialize, Serialize};

use crate::bitfield::Bitfield;
use crate::descriptor::InfoHash;
use crate::storage::{FileStamp, Placement};

/// Version of the resume body; bump on incompatible change (and keep a fixture of the old one).
pub const RESUME_VERSION: u32 = 1;

/// The persisted form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeState {
    pub version: u32,
    pub info_hash: InfoHash,
    /// No data was written after this state was saved.
    pub clean: bool,
    /// Where the content was when saved.
    pub placement: Placement,
    /// Verified pieces, as hex of the bitfield bytes.
    pub have: String,
    /// Size and modification time of each file when saved.
    pub stamps: Vec<Option<FileStamp>>,
    /// Payload bytes transferred over the torrent's lifetime.
    pub downloaded: u64,
    pub uploaded: u64,
    /// When the content was first complete and verified, in seconds since 1970 (absent in
    /// files written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<u64>,
    /// A download completed and its `on_complete` hook has not been started yet: it is, at
    /// the next start, if p2pd stopped (or was killed) in between. Absent when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub complete_hook_due: bool,
}

impl ResumeState {
    /// The verified set, if it matches this torrent's piece count.
    pub fn have(&self, pieces: usize) -> Option<Bitfield> {
        Bitfield::from_hex(&self.have, pieces).ok()
    }

    /// Whether a torrent that starts from this state and turns out complete has a completion
    /// whose `on_complete` is due: its hook was due, or it was still downloading — not every
    /// piece recorded in place (a stop between the last piece and the record of the
    /// completion, or a save that failed then).
    pub fn completion_pending(&self, pieces: usize) -> bool {
        let recorded_complete =
            self.have(pieces).is_some_and(|h| h.is_complete()) && self.placement == Placement::Final;
        self.complete_hook_due || !recorded_complete
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Loaded, StateKind, load_file};

    /// A resume file of format version 1 loads with every piece verified, clean.
    #[test]
    fn a_resume_file_of_format_version_1_loads() {
        let (_dir, path) = crate::state::fixture("resume.state");
        let Loaded::Ok(r) = load_file::<ResumeState>(&path, StateKind::Resume) else { panic!("not loaded") };
        assert_eq!(r.version, RESUME_VERSION);
        assert_eq!(r.info_hash.to_hex(), crate::state::FIXTURE_HASH);
        assert!(r.clean);
        assert_eq!(r.placement, Placement::Final);
        assert_eq!(r.have(7).map(|h| h.count()), Some(7));
        assert_eq!((r.downloaded, r.uploaded), (100_000, 0));
        assert_eq!(r.stamps.len(), 1);
        assert_eq!(r.completed_at, None);
        assert!(!r.complete_hook_due);
    }

    /// A complete torrent restarted is no new completion (a state from before the hook was
    /// recorded included); one stopped between its last piece and the record of it, or whose
    /// hook was due, is.
    #[test]
    fn a_completion_is_due_only_for_a_download_not_recorded_complete() {
        let (_dir, path) = crate::state::fixture("resume.state");
        let Loaded::Ok(complete) = load_file::<ResumeState>(&path, StateKind::Resume) else { panic!("not loaded") };
        assert!(!complete.completion_pending(7), "recorded complete, in place");
        assert!(ResumeState { complete_hook_due: true, ..complete.clone() }.completion_pending(7));
        assert!(ResumeState { placement: Placement::Partial, ..complete.clone() }.completion_pending(7));
        let mut six = Bitfield::new(7);
        (0..6).for_each(|i| {
            six.set(i);
        });
        assert!(ResumeState { have: six.to_hex(), ..complete }.completion_pending(7), "a piece not recorded");
    }
}
