//! How long a fleet takes to build and to tear down, with no transfer: the namespaces, links,
//! shaping, filesystems and daemons of `HOSTS` hosts, each daemon answering on its socket.
//!
//! `sudo target/release/examples/fleet_build HOSTS [tmpfs|ext4]` (build it with
//! `cargo build --release -p p2pd-testbed --examples`; it runs the p2pd beside it, in
//! `target/release`, or in `$P2PD_BIN_DIR`). Prints one line: hosts, filesystem, seconds to
//! build, seconds to tear down, and the daemons' largest idle RSS. With ext4 each image is
//! sized for scenario 6's 32 MiB.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use p2pd_testbed::binaries::{BIN_DIR_ENV, Binaries};
use p2pd_testbed::cpu::peak_rss_bytes;
use p2pd_testbed::fleet::{Fleet, FleetSpec, HostSpec};
use p2pd_testbed::units::LinkRate;
use p2pd_testbed::volume::{self, Filesystem};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleet_build: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    use anyhow::Context;
    let mut args = std::env::args().skip(1);
    let usage = "usage: fleet_build HOSTS [tmpfs|ext4]";
    let hosts: usize = args.next().context(usage)?.parse().context(usage)?;
    anyhow::ensure!((1..=1000).contains(&hosts), "HOSTS must be 1 to 1000");
    let filesystem: Filesystem = match args.next() {
        Some(fs) => fs.parse().map_err(anyhow::Error::msg)?,
        None => Filesystem::Tmpfs,
    };
    let binaries = match std::env::var_os(BIN_DIR_ENV) {
        Some(dir) => Binaries::in_dir(Path::new(&dir))?,
        None => {
            let exe = std::env::current_exe()?;
            let examples = exe.parent().unwrap_or(Path::new("."));
            Binaries::in_dir(examples.parent().unwrap_or(examples))?
        }
    };
    p2pd_testbed::teardown::install_signal_handler()?;
    let rate = LinkRate(2_500_000);
    let spec = FleetSpec {
        hosts: (0..hosts).map(|i| HostSpec { label: format!("host-{i:03}"), upload: rate, download: None }).collect(),
        scratch_bytes: 256 << 20,
        keep_run_dir: false,
        log_level: "info",
        filesystem,
        volume_bytes: volume::image_bytes(32 << 20),
        floor_volume_bytes: volume::image_bytes(32 << 20),
    };
    let fleet = Fleet::start(&spec, &binaries)?;
    let rss = fleet.hosts.iter().filter_map(|h| h.daemon.pid().and_then(peak_rss_bytes)).max().unwrap_or(0);
    let build = fleet.build_secs;
    let started = Instant::now();
    fleet.shut_down();
    println!(
        "{hosts} hosts on {filesystem}: built in {build:.1} s, torn down in {:.1} s; largest idle daemon RSS {:.1} MiB",
        started.elapsed().as_secs_f64(),
        rss as f64 / f64::from(1 << 20)
    );
    Ok(())
}
