//! Fuzzes state file decoding (envelope, checksum, JSON body): never a panic, whatever the
//! bytes on disk; anything accepted re-encodes to a file that decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pd::state::{StateKind, decode_file, format};
use p2pd::torrent::resume::ResumeState;

fuzz_target!(|data: &[u8]| {
    for kind in [StateKind::Node, StateKind::Resume, StateKind::Peers, StateKind::Routing] {
        let _ = format::decode(kind.tag(), data);
        let _ = decode_file::<serde_json::Value>(data, kind);
    }
    if let Ok(resume) = decode_file::<ResumeState>(data, StateKind::Resume) {
        let body = serde_json::to_vec(&resume).expect("serializes");
        let again: ResumeState = decode_file(&format::encode("resume", &body), StateKind::Resume).expect("decodes");
        assert_eq!(again, resume);
    }
});
