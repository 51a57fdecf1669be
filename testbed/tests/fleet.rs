//! The CI-size fleet (issue 5): a seed and 4 leechers in network namespaces, 32 MiB at
//! 100 Mbit/s upload each. Asserts correctness only — every leecher completes with
//! byte-identical content and the seed uploads less than N × F — never a timing.
//!
//! Needs root, `ip` and `tc`; without them it says why and skips. It runs the p2pd and p2pctl
//! of the same build profile (`cargo test --workspace` builds them).

use std::time::Duration;

use p2pd_testbed::binaries::Binaries;
use p2pd_testbed::content::ContentShape;
use p2pd_testbed::fleet;
use p2pd_testbed::scenario::{self, ScenarioSpec};
use p2pd_testbed::units::LinkRate;
use p2pd_testbed::volume::Filesystem;

#[path = "../../daemon/tests/common/skip.rs"]
mod skip;
use skip::{Need, require};

const LEECHERS: usize = 4;
const CONTENT_BYTES: u64 = 32 << 20;

#[test]
fn a_small_fleet_distributes_identical_bytes_and_leechers_share_the_upload() {
    if !require(&[Need::Root, Need::tool("ip", "iproute2"), Need::tool("tc", "iproute2")], None) {
        return;
    }
    fleet::check_prerequisites().unwrap_or_else(|e| panic!("{e}"));
    let binaries = Binaries::beside_test_executable().unwrap_or_else(|e| panic!("{e}"));
    let spec = ScenarioSpec {
        name: "ci-fleet".into(),
        title: "CI: 32 MiB, 1 seed + 4 leechers, 100 Mbit/s".into(),
        command: "cargo test -p p2pd-testbed --test fleet".into(),
        content: ContentShape::File { bytes: CONTENT_BYTES },
        leechers: LEECHERS,
        seed_upload: LinkRate(12_500_000),
        leecher_upload: LinkRate(12_500_000),
        leecher_download: None,
        piece_bytes: None,
        // A deadline for a hung swarm, not a performance assertion.
        timeout: Some(Duration::from_secs(40)),
        keep_run_dir: false,
        join_over: None,
        filesystem: Filesystem::Tmpfs,
        // Not measuring CPU against the floor.
        cold_memory: None,
    };
    let result = scenario::run(&spec, &binaries, &mut |line| eprintln!("{line}")).unwrap_or_else(|e| panic!("{e}"));
    assert!(result.outcome.success, "the run failed: {}", result.outcome.error.unwrap_or_default());
    for host in &result.hosts[1..] {
        assert!(host.completed_secs.is_some(), "{} has no completion time", host.label);
    }
    let seed = &result.hosts[0];
    assert!(
        seed.uploaded < LEECHERS as u64 * CONTENT_BYTES,
        "the seed uploaded {} bytes, {} copies: the leechers did not share",
        seed.uploaded,
        seed.uploaded as f64 / CONTENT_BYTES as f64
    );
    let prefix_gone = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| !String::from_utf8_lossy(&o.stdout).contains(&format!("p2ptb{}-", std::process::id())))
        .unwrap_or(true);
    assert!(prefix_gone, "the fleet's namespaces outlived it");
}
