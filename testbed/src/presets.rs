//! The benchmark scenarios of issue 5, by number.
//!
//! | # | content | leechers | upload | what it shows |
//! |---|---|---|---|---|
//! | 1 | 256 MiB file | 8 | 200 Mbit/s everywhere | the seed term binds: can the seed stay busy? |
//! | 2 | 256 MiB file | 16 | 100 Mbit/s everywhere | a bigger, slower swarm |
//! | 3 | 256 MiB file | 8 | seed 1 Gbit/s, leechers 200 Mbit/s | the swarm term binds: leechers must feed each other |
//! | 4 | 256 MiB in 100 files | 8 | 200 Mbit/s everywhere | as 1, pieces across file boundaries |
//! | 5 | 16 MiB file, 64 KiB pieces | 15 (16 hosts) | 200 Mbit/s everywhere | discovery to first verified piece |

use crate::content::ContentShape;
use crate::scenario::ScenarioSpec;
use crate::units::{LinkRate, human_bytes};

/// The preset numbers.
pub const ALL: [u8; 5] = [1, 2, 3, 4, 5];

const MBIT: u64 = 125_000;
const MIB: u64 = 1 << 20;

/// Scenario `number` (1–5); `None` for another number.
pub fn scenario(number: u8) -> Option<ScenarioSpec> {
    let (content, leechers, seed_mbit, leecher_mbit, piece, what) = match number {
        1 => (ContentShape::File { bytes: 256 * MIB }, 8, 200, 200, None, "seed-bound"),
        2 => (ContentShape::File { bytes: 256 * MIB }, 16, 100, 100, None, "seed-bound, 16 leechers"),
        3 => (ContentShape::File { bytes: 256 * MIB }, 8, 1000, 200, None, "swarm-bound: leechers feed each other"),
        4 => (ContentShape::Directory { bytes: 256 * MIB, files: 100 }, 8, 200, 200, None, "a directory of 100 files"),
        5 => (ContentShape::File { bytes: 16 * MIB }, 15, 200, 200, Some(64 << 10), "discovery to first byte"),
        _ => return None,
    };
    let (seed_upload, leecher_upload) = (LinkRate(seed_mbit * MBIT), LinkRate(leecher_mbit * MBIT));
    let content_text = match content {
        ContentShape::File { bytes } => human_bytes(bytes),
        ContentShape::Directory { bytes, files } => format!("{} in {files} files", human_bytes(bytes)),
    };
    let rates = if seed_upload == leecher_upload {
        format!("{seed_upload} upload everywhere")
    } else {
        format!("seed {seed_upload}, leechers {leecher_upload} upload")
    };
    let pieces = piece.map(|p| format!(", {} pieces", human_bytes(p))).unwrap_or_default();
    Some(ScenarioSpec {
        name: format!("scenario-{number}"),
        title: format!("{what}: {content_text}{pieces}, 1 seed + {leechers} leechers, {rates}"),
        command: format!("p2pd-testbed scenario {number}"),
        content,
        leechers,
        seed_upload,
        leecher_upload,
        leecher_download: None,
        piece_bytes: piece,
        timeout: None,
        keep_run_dir: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_exists_and_names_itself() {
        for n in ALL {
            let spec = scenario(n).expect("preset");
            assert_eq!(spec.name, format!("scenario-{n}"));
            assert!(spec.command.ends_with(&n.to_string()));
        }
        assert!(scenario(6).is_none());
        assert_eq!(scenario(5).map(|s| s.leechers + 1), Some(16));
    }
}
