//! A fleet: N+1 hosts as network namespaces on one bridge, a p2pd in each.
//!
//! ```text
//!          namespace PREFIX-sw  (the switch)
//!        ┌──────────────── br0 ────────────────┐
//!        h0            h1         …            hN      switch ends of veth pairs
//!        │ [tbf: download limit, optional]     │       (egress towards the host)
//!        │             │                       │
//!      eth0          eth0                    eth0      [tbf: upload limit]
//!   PREFIX-h0     PREFIX-h1      …        PREFIX-hN    one namespace per host
//!   10.77.0.1     10.77.0.2               10.77.0.N+1  /16, p2pd on port 6690
//! ```
//!
//! Everything lives in namespaces this module creates: the veth pairs are created inside the
//! switch namespace with their peer placed straight into the host namespace, so the root
//! namespace's interfaces and routes are never touched. Names carry a per-run prefix
//! `p2ptb<pid>-<n>` so that runs never collide and `cleanup` can tell whose leftovers it sees.
//! Each daemon's directories live under the run directory — on `/dev/shm` when it has room, so
//! that a run measures links and CPU rather than a disk; with [`Filesystem::Ext4`] each data
//! directory (and the floor's directory) is the mount point of an ext4 image of its own
//! ([`crate::volume`]).
//!
//! Scale: addresses run to 10.77.255.254 (the /16), so up to 65,000 hosts could be numbered;
//! switch-side veth names are `h<index>` (at most 6 characters of the kernel's 15); every host
//! costs nine `ip`/`tc` commands and one daemon, built one after another.
//!
//! Every namespace and daemon is recorded in the fleet's [`TeardownGuard`] the moment it
//! exists; dropping the [`Fleet`] (or a signal, see [`crate::teardown`]) undoes them all.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::binaries::Binaries;
use crate::daemon::{Daemon, DaemonConfig, DaemonError};
use crate::shaping::TokenBucket;
use crate::teardown::{TeardownGuard, terminate};
use crate::units::{LinkRate, human_bytes};
use crate::volume::{self, Filesystem, VolumeError};

/// Every name this module creates starts with this.
pub const NAME_PREFIX: &str = "p2ptb";
/// p2pd's UDP and TCP port on every host.
pub const P2PD_PORT: u16 = 6690;
/// The bridge inside the switch namespace.
const BRIDGE: &str = "br0";
/// The host's interface inside its namespace.
const HOST_DEVICE: &str = "eth0";
/// A file in a kept run directory: `cleanup` leaves such directories alone.
const KEPT_MARKER: &str = "KEPT";

/// One host to build.
#[derive(Debug, Clone)]
pub struct HostSpec {
    /// `seed`, `leecher-01`, …
    pub label: String,
    /// Upload limit (tbf on the host's eth0).
    pub upload: LinkRate,
    /// Download limit (tbf on the switch end of its veth), if any.
    pub download: Option<LinkRate>,
}

/// What to build.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    pub hosts: Vec<HostSpec>,
    /// Bytes the run directory must hold (content on every host plus room), to choose
    /// between `/dev/shm` and the temporary directory.
    pub scratch_bytes: u64,
    /// Leave the run directory (daemon logs, content) after the run.
    pub keep_run_dir: bool,
    /// The daemons' `log_level`.
    pub log_level: &'static str,
    /// What holds each host's data directory.
    pub filesystem: Filesystem,
    /// With [`Filesystem::Ext4`], the size of each host's image (see [`volume::image_bytes`]).
    pub volume_bytes: u64,
    /// The size of the floor's image (ext4 only): the floors write a copy per leecher.
    pub floor_volume_bytes: u64,
}

/// One host of a running fleet.
#[derive(Debug)]
pub struct Host {
    pub namespace: String,
    pub address: Ipv4Addr,
    pub upload: LinkRate,
    pub download: Option<LinkRate>,
    pub daemon: Daemon,
}

impl Host {
    /// The daemon's discovery and peer address.
    pub fn listen(&self) -> SocketAddr {
        self.daemon.listen
    }
}

/// A running fleet; dropping it stops the daemons and deletes the namespaces.
#[derive(Debug)]
pub struct Fleet {
    /// `p2ptb<pid>-<n>`: the start of every name of this run.
    pub prefix: String,
    /// Holds each host's directory.
    pub run_dir: PathBuf,
    pub hosts: Vec<Host>,
    /// Where the floor writes: on the same kind of filesystem as the hosts' data (its own
    /// image with ext4).
    pub floor_dir: PathBuf,
    /// The filesystem holding the leechers' data, as statfs names it (`tmpfs`, `ext4`).
    pub filesystem: String,
    /// Where the data lives, in a sentence (for the result).
    pub storage: String,
    /// Seconds from the start of [`Fleet::start`] until every daemon answered.
    pub build_secs: f64,
    teardown: TeardownGuard,
}

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(
        "the fleet needs root (network namespaces and tc); run it with sudo, or try `p2pd-testbed demo`, which needs no root"
    )]
    NotRoot,
    #[error("`{0}` is not installed; install iproute2 (it provides ip and tc)")]
    MissingTool(&'static str),
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("cannot create the run directory {}: {source}", path.display())]
    RunDir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error("cannot raise {path} to {value} for a fleet of {hosts} hosts: {source}")]
    NeighbourTable { path: &'static str, value: u64, hosts: usize, source: std::io::Error },
}

/// The kernel's IPv4 neighbour (ARP) table thresholds. The table is one for every network
/// namespace, and its default hard limit (1,024 entries) is less than a fleet of 64 hosts that
/// all talk to each other needs (64 × 63): beyond it the kernel logs "neighbor table overflow"
/// and silently drops packets to addresses it has not resolved — new connections then time
/// out, as if the peers were too busy to answer.
const NEIGH_THRESHOLDS: [&str; 3] = [
    "/proc/sys/net/ipv4/neigh/default/gc_thresh1",
    "/proc/sys/net/ipv4/neigh/default/gc_thresh2",
    "/proc/sys/net/ipv4/neigh/default/gc_thresh3",
];

/// The thresholds (no collection below the first; the hard limit last) a fleet of `hosts`
/// needs: every host may resolve every other, and the root namespace's bridge sees them all.
pub fn neighbour_thresholds(hosts: usize) -> [u64; 3] {
    let entries = (hosts as u64 + 1) * (hosts as u64 + 1);
    [entries, entries * 3 / 2, entries * 2]
}

/// Raises the neighbour table's thresholds for `hosts` hosts, never lowering one (another
/// fleet may be running); returns a line saying what changed, if anything did.
fn size_neighbour_table(hosts: usize) -> Result<Option<String>, FleetError> {
    let mut raised = Vec::new();
    for (path, want) in NEIGH_THRESHOLDS.iter().zip(neighbour_thresholds(hosts)) {
        let now: u64 = std::fs::read_to_string(path).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        if now < want {
            std::fs::write(path, want.to_string()).map_err(|source| FleetError::NeighbourTable {
                path,
                value: want,
                hosts,
                source,
            })?;
            raised.push(format!("{} {now} → {want}", path.rsplit('/').next().unwrap_or(path)));
        }
    }
    Ok((!raised.is_empty())
        .then(|| format!("raised the kernel's neighbour table for {hosts} hosts: {}", raised.join(", "))))
}

/// Whether this process can build a fleet: root, with `ip` and `tc` on the PATH.
pub fn check_prerequisites() -> Result<(), FleetError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(FleetError::NotRoot);
    }
    for tool in ["ip", "tc"] {
        let found = Command::new(tool).arg("-V").output().is_ok_and(|o| o.status.success());
        if !found {
            return Err(FleetError::MissingTool(tool));
        }
    }
    Ok(())
}

/// Host `index`'s address: 10.77.0.1 for host 0, 10.77.0.2 for host 1, …
pub fn host_address(index: usize) -> Ipv4Addr {
    let n = index + 1;
    Ipv4Addr::new(10, 77, (n >> 8) as u8, (n & 0xff) as u8)
}

fn run(program: &str, args: &[&str]) -> Result<(), FleetError> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| FleetError::Command { command: format!("{program} {}", args.join(" ")), stderr: e.to_string() })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(FleetError::Command {
            command: format!("{program} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

/// `/dev/shm` if it has `needed` bytes free, else the system's temporary directory.
fn scratch_base(needed: u64) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let room = nix::sys::statvfs::statvfs(shm).map(|s| s.blocks_available().saturating_mul(s.fragment_size()));
    match room {
        Ok(free) if free > needed => shm.to_path_buf(),
        _ => std::env::temp_dir(),
    }
}

impl Fleet {
    /// Builds the namespaces, links and shaping, and starts a p2pd in every host, waiting
    /// until each answers on its control socket.
    pub fn start(spec: &FleetSpec, binaries: &Binaries) -> Result<Fleet, FleetError> {
        let started = std::time::Instant::now();
        check_prerequisites()?;
        if let Some(line) = size_neighbour_table(spec.hosts.len())? {
            eprintln!("p2pd-testbed: {line}");
        }
        if spec.filesystem == Filesystem::Ext4 {
            volume::check_ext4_tools()?;
        }
        static RUNS: AtomicU32 = AtomicU32::new(0);
        let prefix = format!("{NAME_PREFIX}{}-{}", std::process::id(), RUNS.fetch_add(1, Ordering::SeqCst));
        let teardown = TeardownGuard::register();
        let run_dir = scratch_base(spec.scratch_bytes).join(&prefix);
        std::fs::create_dir_all(&run_dir).map_err(|source| FleetError::RunDir { path: run_dir.clone(), source })?;
        teardown.record(|plan| {
            plan.run_dir = Some(run_dir.clone());
            plan.keep_dir = spec.keep_run_dir;
        });
        if spec.keep_run_dir {
            let marker = run_dir.join(KEPT_MARKER);
            std::fs::write(&marker, "kept by --keep; remove by hand\n")
                .map_err(|source| FleetError::RunDir { path: marker, source })?;
        }
        let floor_dir = run_dir.join("floor");
        let mut fleet = Fleet {
            prefix: prefix.clone(),
            run_dir,
            hosts: Vec::new(),
            floor_dir,
            filesystem: String::new(),
            storage: String::new(),
            build_secs: 0.0,
            teardown,
        };
        std::fs::create_dir_all(&fleet.floor_dir)
            .map_err(|source| FleetError::RunDir { path: fleet.floor_dir.clone(), source })?;
        let image_dir = match spec.filesystem {
            Filesystem::Tmpfs => None,
            Filesystem::Ext4 => {
                let base = volume::image_base()?;
                // Every image could fill up: one per host and the floor's.
                let hosts = spec.volume_bytes.saturating_mul(spec.hosts.len() as u64);
                volume::check_room(&base, hosts.saturating_add(spec.floor_volume_bytes))?;
                let dir = base.join(format!("{prefix}-images"));
                std::fs::create_dir_all(&dir).map_err(|source| FleetError::RunDir { path: dir.clone(), source })?;
                fleet.teardown.record(|plan| plan.image_dir = Some(dir.clone()));
                if spec.keep_run_dir {
                    let marker = dir.join(KEPT_MARKER);
                    std::fs::write(&marker, "kept by --keep; remove by hand\n")
                        .map_err(|source| FleetError::RunDir { path: marker, source })?;
                }
                fleet.mount_ext4(&dir.join("floor.img"), spec.floor_volume_bytes, &fleet.floor_dir.clone())?;
                Some(dir)
            }
        };

        let switch = format!("{prefix}-sw");
        run("ip", &["netns", "add", &switch])?;
        // Deleted last: host namespaces go first, taking their veth pairs with them.
        fleet.teardown.record(|plan| plan.namespaces.push(switch.clone()));
        run("ip", &["-n", &switch, "link", "set", "lo", "up"])?;
        run("ip", &["-n", &switch, "link", "add", BRIDGE, "type", "bridge"])?;
        run("ip", &["-n", &switch, "link", "set", BRIDGE, "up"])?;

        for (index, host) in spec.hosts.iter().enumerate() {
            let ns = format!("{prefix}-h{index}");
            run("ip", &["netns", "add", &ns])?;
            fleet.teardown.record(|plan| plan.namespaces.insert(0, ns.clone()));
            let switch_end = format!("h{index}");
            let address = host_address(index);
            run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
            run(
                "ip",
                &["-n", &switch, "link", "add", &switch_end, "type", "veth", "peer", "name", HOST_DEVICE, "netns", &ns],
            )?;
            run("ip", &["-n", &switch, "link", "set", &switch_end, "master", BRIDGE])?;
            run("ip", &["-n", &switch, "link", "set", &switch_end, "up"])?;
            run("ip", &["-n", &ns, "addr", "add", &format!("{address}/16"), "dev", HOST_DEVICE])?;
            run("ip", &["-n", &ns, "link", "set", HOST_DEVICE, "up"])?;
            let upload = TokenBucket::for_rate(host.upload).tc_args(HOST_DEVICE);
            let mut args = vec!["-n", ns.as_str()];
            args.extend(upload.iter().map(String::as_str));
            run("tc", &args)?;
            if let Some(download) = host.download {
                let shaping = TokenBucket::for_rate(download).tc_args(&switch_end);
                let mut args = vec!["-n", switch.as_str()];
                args.extend(shaping.iter().map(String::as_str));
                run("tc", &args)?;
            }
            let config = DaemonConfig {
                listen: SocketAddr::new(address.into(), P2PD_PORT),
                upload_rate: None,
                log_level: spec.log_level,
            };
            let daemon = Daemon::prepare(&host.label, &fleet.run_dir.join(format!("h{index}")), &config)?;
            if let Some(dir) = &image_dir {
                fleet.mount_ext4(&dir.join(format!("h{index}.img")), spec.volume_bytes, &daemon.data_dir())?;
            }
            fleet.hosts.push(Host { namespace: ns, address, upload: host.upload, download: host.download, daemon });
        }

        for host in &mut fleet.hosts {
            let pid = host.daemon.spawn(&binaries.p2pd, Some(&host.namespace))?;
            fleet.teardown.record(|plan| plan.pids.push(pid));
        }
        for host in &mut fleet.hosts {
            host.daemon.wait_ready()?;
        }
        let leecher_data = fleet.hosts.last().map(|h| h.daemon.data_dir()).unwrap_or_else(|| fleet.floor_dir.clone());
        fleet.filesystem = volume::filesystem_name(&leecher_data);
        fleet.storage = match &image_dir {
            None => format!("each host's directory under {} ({})", fleet.run_dir.display(), fleet.filesystem),
            Some(dir) => format!(
                "an ext4 image per host and one for the floor, {} each (sparse files in {}, on {}), loop devices with direct I/O, mounted on the data directories",
                human_bytes(spec.volume_bytes),
                dir.display(),
                volume::filesystem_name(dir)
            ),
        };
        fleet.build_secs = started.elapsed().as_secs_f64();
        Ok(fleet)
    }

    /// Makes an ext4 image and mounts it on `mount_point`, recording the mount for teardown.
    fn mount_ext4(&mut self, image: &Path, bytes: u64, mount_point: &Path) -> Result<(), FleetError> {
        volume::mount_new_ext4(image, bytes, mount_point)?;
        self.teardown.record(|plan| plan.mounts.push(mount_point.to_path_buf()));
        Ok(())
    }

    /// Stops everything now (also done on drop).
    pub fn shut_down(self) {
        drop(self);
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.teardown.execute();
    }
}

/// What `cleanup` did.
#[derive(Debug, Default)]
pub struct CleanupReport {
    pub namespaces_deleted: Vec<String>,
    pub daemons_stopped: usize,
    pub directories_removed: Vec<PathBuf>,
    /// Leftovers of runs whose process is still alive, left alone.
    pub skipped_live: Vec<String>,
    /// Run directories kept by `--keep`, left alone.
    pub kept_directories: Vec<PathBuf>,
    /// Filesystems (`--fs ext4`) unmounted.
    pub unmounted: Vec<PathBuf>,
}

/// The pid in a name `p2ptb<pid>-…`.
fn owner_pid(name: &str) -> Option<i32> {
    name.strip_prefix(NAME_PREFIX)?.split('-').next()?.parse().ok()
}

fn is_alive(pid: i32) -> bool {
    pid != std::process::id() as i32 && Path::new(&format!("/proc/{pid}")).exists()
}

/// Deletes what killed runs left: `p2ptb*` namespaces (stopping the daemons in them), the
/// filesystems mounted in their run directories, and run and image directories under
/// `/dev/shm` and the temporary directory (kept ones are unmounted but stay). Leftovers of a
/// run whose process is still alive are skipped unless `include_live`.
pub fn cleanup_leftovers(include_live: bool) -> Result<CleanupReport, FleetError> {
    check_prerequisites()?;
    let mut report = CleanupReport::default();
    let listing = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map_err(|e| FleetError::Command { command: "ip netns list".into(), stderr: e.to_string() })?;
    let mut namespaces: Vec<String> = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with(NAME_PREFIX))
        .map(str::to_string)
        .collect();
    // Hosts before switches, so that each veth pair goes with its host.
    namespaces.sort_by_key(|n| n.ends_with("-sw"));
    for ns in namespaces {
        if !include_live && owner_pid(&ns).is_some_and(is_alive) {
            report.skipped_live.push(ns);
            continue;
        }
        let pids = crate::teardown::namespace_pids(&ns);
        report.daemons_stopped += pids.len();
        terminate(&pids, crate::teardown::STOP_GRACE);
        run("ip", &["netns", "del", &ns])?;
        report.namespaces_deleted.push(ns);
    }
    for base in [PathBuf::from("/dev/shm"), std::env::temp_dir()] {
        let Ok(entries) = std::fs::read_dir(&base) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(owner) = owner_pid(&name) else { continue };
            let path = entry.path();
            if !include_live && is_alive(owner) {
                report.skipped_live.push(path.display().to_string());
                continue;
            }
            for mount in volume::mounts_under(&path) {
                if volume::unmount(&mount).is_ok() {
                    report.unmounted.push(mount);
                }
            }
            if path.join(KEPT_MARKER).exists() {
                report.kept_directories.push(path);
            } else if std::fs::remove_dir_all(&path).is_ok() {
                report.directories_removed.push(path);
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_start_at_one_and_carry_over() {
        assert_eq!(host_address(0), Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(host_address(16), Ipv4Addr::new(10, 77, 0, 17));
        assert_eq!(host_address(255), Ipv4Addr::new(10, 77, 1, 0));
    }

    #[test]
    fn owners_are_read_from_names() {
        assert_eq!(owner_pid("p2ptb1234-0-h3"), Some(1234));
        assert_eq!(owner_pid("p2ptb77-2-sw"), Some(77));
        assert_eq!(owner_pid("p2pdt5"), None);
        assert_eq!(owner_pid("other"), None);
    }

    #[test]
    fn the_neighbour_table_holds_every_pair_of_a_fleet() {
        let [low, mid, hard] = neighbour_thresholds(64);
        assert!(low >= 64 * 63, "no collection while every host knows every other");
        assert!(low < mid && mid < hard);
        assert!(neighbour_thresholds(8)[2] < 1024, "small fleets fit the kernel's default");
    }
}
