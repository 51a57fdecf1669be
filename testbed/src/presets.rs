//! The benchmark scenarios, by number: 1–5 of issue 5, 6 of issue 13.
//!
//! | # | content | leechers | upload | what it shows |
//! |---|---|---|---|---|
//! | 1 | 256 MiB file | 8 | 200 Mbit/s everywhere | the seed term binds: can the seed stay busy? |
//! | 2 | 256 MiB file | 16 | 100 Mbit/s everywhere | a bigger, slower swarm |
//! | 3 | 256 MiB file | 8 | seed 1 Gbit/s, leechers 200 Mbit/s | the swarm term binds: leechers must feed each other |
//! | 4 | 256 MiB in 100 files | 8 | 200 Mbit/s everywhere | as 1, pieces across file boundaries |
//! | 5 | 16 MiB file, 64 KiB pieces | 15 (16 hosts) | 200 Mbit/s everywhere | discovery to first verified piece |
//! | 6 | 32 MiB file | 63 (64 hosts) | 20 Mbit/s everywhere | a fleet: all at once (`scenario-6-at-once`), and joining one after another over [`SCENARIO_6_JOIN_WINDOW`] (`scenario-6-rolling`) |
//!
//! Every scenario runs with each host's data on tmpfs unless the caller sets another
//! filesystem ([`with_filesystem`]), which also names the results after it.

use std::time::Duration;

use crate::content::ContentShape;
use crate::memory::ColdMemory;
use crate::scenario::ScenarioSpec;
use crate::units::{LinkRate, human_bytes};
use crate::volume::Filesystem;

/// The preset numbers, in the order `scenario all` runs them.
pub const ALL: [u8; 6] = [1, 2, 3, 4, 5, 6];

/// Scenario 6's rolling release: leecher i of 63 joins at i × 5 s / 63 (one every 79 ms), so
/// that the last joins a third of T_min (14 s) after the first, while the swarm is busy.
pub const SCENARIO_6_JOIN_WINDOW: Duration = Duration::from_secs(5);

const MBIT: u64 = 125_000;
const MIB: u64 = 1 << 20;

/// The runs of scenario `number` (one, or scenario 6's two variants); `None` for another
/// number.
pub fn scenarios(number: u8) -> Option<Vec<ScenarioSpec>> {
    let (content, leechers, seed_mbit, leecher_mbit, piece, what) = match number {
        1 => (ContentShape::File { bytes: 256 * MIB }, 8, 200, 200, None, "seed-bound"),
        2 => (ContentShape::File { bytes: 256 * MIB }, 16, 100, 100, None, "seed-bound, 16 leechers"),
        3 => (ContentShape::File { bytes: 256 * MIB }, 8, 1000, 200, None, "swarm-bound: leechers feed each other"),
        4 => (ContentShape::Directory { bytes: 256 * MIB, files: 100 }, 8, 200, 200, None, "a directory of 100 files"),
        5 => (ContentShape::File { bytes: 16 * MIB }, 15, 200, 200, Some(64 << 10), "discovery to first byte"),
        6 => (ContentShape::File { bytes: 32 * MIB }, 63, 20, 20, None, "a fleet of 64"),
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
    let base = ScenarioSpec {
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
        join_over: None,
        filesystem: Filesystem::Tmpfs,
        cold_memory: Some(ColdMemory::BENCHMARK),
    };
    if number != 6 {
        return Some(vec![base]);
    }
    let window = SCENARIO_6_JOIN_WINDOW.as_secs_f64();
    let at_once = ScenarioSpec {
        name: "scenario-6-at-once".into(),
        title: format!("{}, all joining at once", base.title),
        ..base.clone()
    };
    let rolling = ScenarioSpec {
        name: "scenario-6-rolling".into(),
        title: format!("{}, joining one after another over {window:.0} s", base.title),
        join_over: Some(SCENARIO_6_JOIN_WINDOW),
        ..base
    };
    Some(vec![at_once, rolling])
}

/// Puts every host's data on `filesystem`; a filesystem other than tmpfs is added to the
/// result's name (`scenario-1-ext4`), so that it sits beside the tmpfs result.
pub fn with_filesystem(mut spec: ScenarioSpec, filesystem: Filesystem) -> ScenarioSpec {
    if filesystem != Filesystem::Tmpfs {
        spec.name = format!("{}-{filesystem}", spec.name);
        spec.title = format!("{}, data on {filesystem}", spec.title);
        spec.command = format!("{} --fs {filesystem}", spec.command);
    }
    spec.filesystem = filesystem;
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_exists_and_names_itself() {
        for n in ALL {
            let specs = scenarios(n).expect("preset");
            for spec in &specs {
                assert!(spec.name.starts_with(&format!("scenario-{n}")), "{}", spec.name);
                assert!(spec.command.ends_with(&n.to_string()));
            }
        }
        assert!(scenarios(7).is_none());
        assert!(scenarios(0).is_none());
        assert_eq!(scenarios(5).map(|s| s[0].leechers + 1), Some(16));
    }

    #[test]
    fn scenario_6_is_a_fleet_of_64_in_two_variants() {
        let specs = scenarios(6).expect("scenario 6");
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["scenario-6-at-once", "scenario-6-rolling"]);
        for spec in &specs {
            assert_eq!(spec.leechers + 1, 64);
            assert_eq!(spec.content, ContentShape::File { bytes: 32 << 20 });
            assert_eq!((spec.seed_upload, spec.leecher_upload), (LinkRate(2_500_000), LinkRate(2_500_000)));
            assert_eq!(spec.piece_bytes, None, "p2pctl's default piece size");
        }
        assert_eq!(specs[0].join_over, None);
        assert_eq!(specs[1].join_over, Some(Duration::from_secs(5)));
    }

    #[test]
    fn another_filesystem_is_in_the_name_and_the_command() {
        let spec = scenarios(1).expect("1").remove(0);
        let same = with_filesystem(spec.clone(), Filesystem::Tmpfs);
        assert_eq!((same.name.as_str(), same.command.as_str()), ("scenario-1", "p2pd-testbed scenario 1"));
        let ext4 = with_filesystem(spec, Filesystem::Ext4);
        assert_eq!(ext4.name, "scenario-1-ext4");
        assert_eq!(ext4.command, "p2pd-testbed scenario 1 --fs ext4");
        assert_eq!(ext4.filesystem, Filesystem::Ext4);
    }
}
