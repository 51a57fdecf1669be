//! What every run measures besides time (issue 13): CPU per GiB against the floor, each
//! daemon's CPU, peak RSS, discovery datagrams and peer connections, the rolling release, and
//! data on a real filesystem (`--fs ext4`). Small fleets; the checks are on the result JSON as
//! written, and on values any working run must have — never on a timing.
//!
//! Needs root, `ip` and `tc` (and e2fsprogs and util-linux for ext4); without them it says why
//! and skips (fails under `P2PD_REQUIRE_ALL=1`).

use std::time::Duration;

use p2pd_testbed::binaries::Binaries;
use p2pd_testbed::content::ContentShape;
use p2pd_testbed::fleet;
use p2pd_testbed::memory::ColdMemory;
use p2pd_testbed::report::RunResult;
use p2pd_testbed::scenario::{self, ScenarioSpec};
use p2pd_testbed::units::LinkRate;
use p2pd_testbed::volume::Filesystem;
use serde_json::Value;

#[path = "../../daemon/tests/common/skip.rs"]
mod skip;
use skip::{Need, require};

const FLEET_NEEDS: [Need; 3] = [Need::Root, Need::tool("ip", "iproute2"), Need::tool("tc", "iproute2")];

fn spec(name: &str, leechers: usize, bytes: u64, join_over: Option<Duration>, filesystem: Filesystem) -> ScenarioSpec {
    ScenarioSpec {
        name: name.into(),
        title: name.into(),
        command: format!("cargo test -p p2pd-testbed --test costs ({name})"),
        content: ContentShape::File { bytes },
        leechers,
        seed_upload: LinkRate(6_250_000),
        leecher_upload: LinkRate(6_250_000),
        leecher_download: None,
        piece_bytes: Some(256 << 10),
        // A deadline for a hung swarm, not a performance assertion.
        timeout: Some(Duration::from_secs(60)),
        keep_run_dir: false,
        join_over,
        filesystem,
        // The memory step, bounded for the suite's time.
        cold_memory: Some(ColdMemory { settle_at_most: Duration::from_secs(2), ballast_at_most: 256 << 20 }),
    }
}

/// A run measures the whole machine's CPU (the link floor's background, a quiet second before
/// it, among it): the two tests here, run in parallel by the harness, once overlapped so that
/// one's background sample caught the other's floor. One run at a time.
static ONE_RUN_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `spec`, writes its result files, and returns the JSON as written.
fn run_and_read(spec: &ScenarioSpec) -> Value {
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    fleet::check_prerequisites().unwrap_or_else(|e| panic!("{e}"));
    let binaries = Binaries::beside_test_executable().unwrap_or_else(|e| panic!("{e}"));
    let result = scenario::run(spec, &binaries, &mut |line| eprintln!("{line}")).unwrap_or_else(|e| panic!("{e}"));
    assert!(result.outcome.success, "the run failed: {}", result.outcome.error.unwrap_or_default());
    let out = tempfile::tempdir().expect("tempdir");
    let (json, _svg) = result.write(out.path()).unwrap_or_else(|e| panic!("{e}"));
    let text = std::fs::read_to_string(&json).expect("read the result");
    let back: RunResult = serde_json::from_str(&text).unwrap_or_else(|e| panic!("the result does not read back: {e}"));
    assert_eq!(back.hosts.len(), spec.leechers + 1);
    serde_json::from_str(&text).expect("JSON")
}

fn number(v: &Value, path: &str) -> f64 {
    v.pointer(path).and_then(Value::as_f64).unwrap_or_else(|| panic!("{path} is missing or not a number: {v:#}"))
}

#[test]
fn a_rolling_fleet_reports_every_daemons_cpu_memory_and_counters_against_the_floor() {
    if !require(&FLEET_NEEDS, None) {
        return;
    }
    const LEECHERS: usize = 3;
    const BYTES: u64 = 8 << 20;
    let window = Duration::from_millis(1500);
    let json = run_and_read(&spec("costs-rolling", LEECHERS, BYTES, Some(window), Filesystem::Tmpfs));

    assert_eq!(number(&json, "/parameters/join_over_secs"), 1.5);
    assert!(number(&json, "/parameters/fleet_build_secs") > 0.0);
    let hosts = json["hosts"].as_array().expect("hosts");
    let mut last_release = -1.0;
    let mut last_sent = -1.0;
    for (i, host) in hosts.iter().enumerate() {
        let label = host["label"].as_str().unwrap_or("?");
        let at = |field: &str| number(host, &format!("/{field}"));
        assert!(at("cpu_secs") > 0.0, "{label}: no CPU time: {host:#}");
        assert!(at("cpu_secs_per_gib") > 0.0, "{label}: no CPU per GiB");
        assert!(at("peak_rss_bytes") > f64::from(1 << 20), "{label}: peak RSS {}", at("peak_rss_bytes"));
        assert!(at("discovery/sent") > 0.0 && at("discovery/received") > 0.0, "{label}: {}", host["discovery"]);
        let connections = &host["peer_connections"];
        for field in
            ["dialed", "dial_failed", "dial_timed_out", "accepted", "incoming_dropped", "established", "refused"]
        {
            assert!(connections[field].is_u64(), "{label}: peer_connections.{field} missing: {connections}");
        }
        assert!(number(connections, "/established") >= 1.0, "{label} never took on a connection: {connections}");
        if i == 0 {
            assert!(host["release_secs"].is_null(), "the seed is not released");
            continue;
        }
        // Leecher i (from 0) is due at i × 1.5 s / 3, and its add goes out no earlier.
        let due = (i - 1) as f64 * 0.5;
        let (release, sent) = (at("release_secs"), at("add_sent_secs"));
        assert!((release - due).abs() < 1e-9, "{label}: released at {release}, due at {due}");
        assert!(release > last_release && sent > last_sent, "{label}: releases out of order");
        assert!(sent >= release, "{label}: add sent at {sent} before its release at {release}");
        (last_release, last_sent) = (release, sent);
    }

    // A copy per leecher, all at once: the bytes the swarm writes.
    let floor = &json["floor"];
    assert_eq!(number(floor, "/bytes"), (BYTES * LEECHERS as u64) as f64);
    assert_eq!(number(floor, "/connections"), LEECHERS as f64);
    // The memory step ran within its bounds, and measured what touching memory costs.
    let memory = &json["memory"];
    assert!(number(memory, "/settle_secs") <= 2.0 + 1.0, "memory: {memory}");
    let ballast = number(memory, "/ballast_bytes");
    assert!(ballast > 0.0 && ballast <= f64::from(256u32 << 20), "memory: {memory}");
    assert!(number(memory, "/warm_secs_per_gib") > 0.0, "memory: {memory}");
    assert!(number(floor, "/receiver_cpu_secs_per_gib") > 0.0, "floor: {floor}");
    assert!(number(floor, "/sender_cpu_secs_per_gib") > 0.0, "floor: {floor}");
    assert_eq!(floor["filesystem"], json["parameters"]["filesystem"], "the floor wrote where the hosts keep data");

    // The link floor crossed the fleet, every host sending to the next: the same whole pieces
    // on each of the hosts' streams, timed, costed.
    let link = &json["link_floor"];
    let (link_bytes, piece) = (number(link, "/bytes"), number(&json, "/parameters/piece_bytes"));
    let streams = hosts.len() as f64;
    let per_stream = link_bytes / streams;
    assert!(per_stream >= piece && per_stream <= BYTES as f64, "link floor: {link}");
    assert_eq!(per_stream % piece, 0.0, "whole pieces on each of {streams} streams: {link}");
    assert!(number(link, "/secs") > 0.0 && number(link, "/machine_cpu_secs") > 0.0, "link floor: {link}");
    assert!(json["link_floor_error"].is_null(), "{}", json["link_floor_error"]);

    let summary = &json["summary"];
    assert_eq!(number(summary, "/delivered_bytes"), (LEECHERS as u64 * BYTES) as f64);
    for field in [
        "machine_cpu_secs_per_gib",
        "leecher_cpu_secs_per_gib_median",
        "leecher_cpu_secs_per_gib_max",
        "seed_cpu_secs_per_gib",
        "leecher_to_floor",
        "machine_to_floor",
        "machine_over_floor",
        "max_rss_bytes",
        "discovery_datagrams_median",
        "dials_max",
    ] {
        assert!(number(summary, &format!("/{field}")) > 0.0, "summary.{field}: {summary:#}");
    }
    // The machine did at least what the daemons did (their CPU is part of it).
    assert!(number(summary, "/machine_cpu_secs") >= number(summary, "/p2pd_cpu_secs") * 0.95, "{summary:#}");
    // A leecher's figure and the ratios are what their definitions say.
    let floor_receiver = number(floor, "/receiver_cpu_secs_per_gib");
    let ratio = number(summary, "/leecher_cpu_secs_per_gib_median") / floor_receiver;
    assert!((number(summary, "/leecher_to_floor") - ratio).abs() < 1e-9);
    let background = number(link, "/background_cpu_secs");
    // An idle fleet may tick nothing in a second: the background can be 0, never all of it.
    assert!(background >= 0.0 && background < number(link, "/machine_cpu_secs"), "link floor: {link}");
    let link_per_gib = (number(link, "/machine_cpu_secs") - background) / (link_bytes / f64::from(1 << 30));
    let ratio = number(summary, "/machine_cpu_secs_per_gib") / link_per_gib;
    assert!((number(summary, "/machine_to_link_floor") - ratio).abs() < 1e-9 * ratio.max(1.0), "{summary:#}");
}

#[test]
fn ext4_puts_every_hosts_data_and_the_floor_on_its_own_filesystem_and_unmounts_it() {
    let needs = [
        FLEET_NEEDS[0],
        FLEET_NEEDS[1],
        FLEET_NEEDS[2],
        Need::tool("mkfs.ext4", "e2fsprogs"),
        Need::tool("losetup", "mount"),
    ];
    if !require(&needs, None) {
        return;
    }
    let json = run_and_read(&spec("costs-ext4", 2, 4 << 20, None, Filesystem::Ext4));
    assert_eq!(json["parameters"]["filesystem"], "ext4", "{}", json["parameters"]);
    assert_eq!(json["floor"]["filesystem"], "ext4", "{}", json["floor"]);
    let storage = json["parameters"]["storage"].as_str().unwrap_or_default();
    assert!(storage.contains("ext4 image per host"), "{storage}");
    let ours = format!("p2ptb{}-", std::process::id());
    // Other tests of this process may have fleets (and their namespaces' nsfs mounts) up now:
    // only an ext4 mount of ours is left over.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let left: Vec<&str> = mounts.lines().filter(|l| l.contains(&ours) && l.contains(" - ext4 ")).collect();
    assert!(left.is_empty(), "a filesystem of the run is still mounted:\n{}", left.join("\n"));
    let loops = std::process::Command::new("losetup").arg("--list").output().expect("losetup");
    let loops = String::from_utf8_lossy(&loops.stdout);
    assert!(!loops.contains(&ours), "a loop device of the run is still attached:\n{loops}");
}
