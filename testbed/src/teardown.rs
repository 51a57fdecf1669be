//! Cleanup on every exit path.
//!
//! Whatever a run creates — daemons, network namespaces, its run directory — is recorded in a
//! [`TeardownPlan`] the moment it exists, and the plan is registered in one process-wide list.
//! A plan runs exactly once, whichever comes first:
//! - its [`TeardownGuard`] is dropped (normal return, `?`, panic unwinding);
//! - SIGINT or SIGTERM arrives: the handler thread from [`install_signal_handler`] runs every
//!   registered plan and exits with status 130;
//! - a later `p2pd-testbed cleanup` finds what a killed run left ([`crate::fleet::cleanup_leftovers`]).
//!
//! Invariant: a plan is taken out of the list under its lock before it runs, so the main
//! thread and the signal thread never both tear the same thing down.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

/// How long daemons get to stop on SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// What to undo, in order: processes, then mounts, then namespaces, then the directories.
#[derive(Debug, Default)]
pub struct TeardownPlan {
    /// Daemons to stop (children of this process, or found in our namespaces).
    pub pids: Vec<i32>,
    /// Filesystems mounted for the run (`--fs ext4`), unmounted once the daemons are gone;
    /// their loop devices go with them.
    pub mounts: Vec<PathBuf>,
    /// Network namespaces to delete (host namespaces first, the switch last).
    pub namespaces: Vec<String>,
    /// The run directory, removed unless `keep_dir`.
    pub run_dir: Option<PathBuf>,
    /// The directory of the run's ext4 images (on a disk), removed unless `keep_dir`.
    pub image_dir: Option<PathBuf>,
    /// Leave the run directory (and the images) for inspection (`--keep`).
    pub keep_dir: bool,
}

impl TeardownPlan {
    /// Stops the processes, deletes the namespaces, removes the directory. Never fails: what
    /// cannot be undone is reported on stderr with the command that would undo it.
    pub fn execute(&mut self) {
        let pids: Vec<i32> = std::mem::take(&mut self.pids);
        terminate(&pids, STOP_GRACE);
        for mount in std::mem::take(&mut self.mounts) {
            if let Err(e) = crate::volume::unmount(&mount) {
                eprintln!("p2pd-testbed: could not unmount {} ({e}); run `p2pd-testbed cleanup`", mount.display());
            }
        }
        for ns in std::mem::take(&mut self.namespaces) {
            // Processes we did not start (none expected) would keep the namespace alive.
            terminate(&namespace_pids(&ns), STOP_GRACE);
            let deleted = Command::new("ip").args(["netns", "del", &ns]).output();
            if !deleted.as_ref().is_ok_and(|o| o.status.success()) {
                eprintln!("p2pd-testbed: could not delete network namespace {ns}; run `p2pd-testbed cleanup`");
            }
        }
        for (what, dir) in [("run directory", self.run_dir.take()), ("image directory", self.image_dir.take())] {
            let Some(dir) = dir else { continue };
            if self.keep_dir {
                eprintln!("p2pd-testbed: kept the {what} {}", dir.display());
            } else if let Err(e) = std::fs::remove_dir_all(&dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                eprintln!("p2pd-testbed: could not remove {}: {e}", dir.display());
            }
        }
    }
}

/// A registered plan; dropping it executes the plan (once).
#[derive(Debug)]
pub struct TeardownGuard {
    id: u64,
    plan: Arc<Mutex<TeardownPlan>>,
}

type Registry = Mutex<Vec<(u64, Arc<Mutex<TeardownPlan>>)>>;

static REGISTRY: Registry = Mutex::new(Vec::new());
static NEXT_ID: Mutex<u64> = Mutex::new(0);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not stop the cleanup: the data is still the best record we have.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl TeardownGuard {
    /// Registers an empty plan; fill it with [`TeardownGuard::record`] as things are created.
    pub fn register() -> TeardownGuard {
        let id = {
            let mut next = lock(&NEXT_ID);
            *next += 1;
            *next
        };
        let plan = Arc::new(Mutex::new(TeardownPlan::default()));
        lock(&REGISTRY).push((id, plan.clone()));
        TeardownGuard { id, plan }
    }

    /// Adds to the plan (call right after creating the thing).
    pub fn record(&self, change: impl FnOnce(&mut TeardownPlan)) {
        change(&mut lock(&self.plan));
    }

    /// Executes the plan now, unless the signal handler already took it.
    pub fn execute(&self) {
        let taken = {
            let mut registry = lock(&REGISTRY);
            let before = registry.len();
            registry.retain(|(id, _)| *id != self.id);
            registry.len() != before
        };
        if taken {
            lock(&self.plan).execute();
        }
    }
}

impl Drop for TeardownGuard {
    fn drop(&mut self) {
        self.execute();
    }
}

/// Set by the signal handler before it starts tearing down.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Whether SIGINT or SIGTERM arrived (the handler is cleaning up and will exit with 130).
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// After a signal, the main thread must neither write results of a broken run nor return from
/// `main` (which would end the process while the handler is still deleting namespaces): it
/// waits here for the handler's `exit(130)`.
pub fn park_if_interrupted() {
    while interrupted() {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Executes every registered plan (the signal handler's job).
pub fn execute_all() {
    let plans: Vec<_> = std::mem::take(&mut *lock(&REGISTRY));
    for (_, plan) in plans {
        lock(&plan).execute();
    }
}

/// On SIGINT or SIGTERM: clean up everything registered, then exit with status 130.
/// Idempotent; call it once at start-up in the binary.
pub fn install_signal_handler() -> std::io::Result<()> {
    static INSTALLED: Once = Once::new();
    let mut result = Ok(());
    INSTALLED.call_once(|| {
        match signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM]) {
            Ok(mut signals) => {
                let spawned = std::thread::Builder::new().name("teardown-on-signal".into()).spawn(move || {
                    if let Some(signal) = signals.forever().next() {
                        let name = if signal == signal_hook::consts::SIGINT { "SIGINT" } else { "SIGTERM" };
                        INTERRUPTED.store(true, Ordering::SeqCst);
                        eprintln!("\np2pd-testbed: {name}: stopping daemons and removing what this run made");
                        execute_all();
                        std::process::exit(130);
                    }
                });
                if let Err(e) = spawned {
                    result = Err(e);
                }
            }
            Err(e) => result = Err(e),
        }
    });
    result
}

/// SIGTERM to every pid, then SIGKILL to those still there after `grace`. Reaps our own
/// children; for other processes, waits until they are gone.
pub fn terminate(pids: &[i32], grace: Duration) {
    let pids: Vec<Pid> = pids.iter().copied().filter(|&p| p > 0).map(Pid::from_raw).collect();
    for &pid in &pids {
        let _ = kill(pid, Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    let mut alive: Vec<Pid> = pids;
    while !alive.is_empty() && Instant::now() < deadline {
        alive.retain(|&pid| !is_gone(pid));
        if !alive.is_empty() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    for &pid in &alive {
        let _ = kill(pid, Signal::SIGKILL);
    }
    let hard_deadline = Instant::now() + grace;
    while !alive.is_empty() && Instant::now() < hard_deadline {
        alive.retain(|&pid| !is_gone(pid));
        if !alive.is_empty() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Whether `pid` has exited (reaping it if it is our child).
fn is_gone(pid: Pid) -> bool {
    match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
        Ok(nix::sys::wait::WaitStatus::StillAlive) => false,
        Ok(_) => true,
        // Not our child (or already reaped): ask the kernel whether it still exists.
        Err(Errno::ECHILD) => kill(pid, None) == Err(Errno::ESRCH),
        Err(_) => true,
    }
}

/// The processes running in a network namespace (`ip netns pids`).
pub fn namespace_pids(ns: &str) -> Vec<i32> {
    Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default()
}
