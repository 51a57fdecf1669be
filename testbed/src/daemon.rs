//! One `p2pd` process with its own directories: `DIR/cfg/p2pd.yaml`, `DIR/state`,
//! `DIR/data`, `DIR/run/control.sock` and its log `DIR/p2pd.log`.
//!
//! This module starts a daemon (optionally inside a network namespace, through
//! `ip netns exec`, which execs so the child's pid is p2pd's) and waits until its control
//! socket answers. Stopping belongs to [`crate::teardown`]: whoever creates a [`Daemon`]
//! records its pid in a teardown plan right after [`Daemon::spawn`].

use std::fs::{self, OpenOptions};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::control::ControlClient;
use crate::units::LinkRate;

/// How long a daemon may take to answer on its socket after being started.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What goes into a daemon's `p2pd.yaml` besides its paths.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// UDP discovery and TCP peer address.
    pub listen: SocketAddr,
    /// p2pd's own upload limit (`limits.upload_rate`); `None` leaves shaping to tc.
    pub upload_rate: Option<LinkRate>,
    /// `log_level`.
    pub log_level: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot prepare {}: {source}", path.display())]
    Prepare { path: PathBuf, source: std::io::Error },
    #[error("cannot start {}: {source}", program.display())]
    Spawn { program: PathBuf, source: std::io::Error },
    #[error("p2pd {label} exited during start-up ({status}); its log ends:\n{log}")]
    ExitedEarly { label: String, status: ExitStatus, log: String },
    #[error("p2pd {label} did not answer on {} within {}s; its log ends:\n{log}", socket.display(), START_TIMEOUT.as_secs())]
    NotReady { label: String, socket: PathBuf, log: String },
}

/// One daemon and its directories.
#[derive(Debug)]
pub struct Daemon {
    /// A short name for messages and charts (`seed`, `leecher-03`, `node-2`).
    pub label: String,
    /// The directory holding everything of this daemon.
    pub dir: PathBuf,
    pub listen: SocketAddr,
    /// The running process, once spawned.
    child: Option<Child>,
}

impl Daemon {
    /// Creates the directories and writes `p2pd.yaml`.
    pub fn prepare(label: &str, dir: &Path, config: &DaemonConfig) -> Result<Daemon, DaemonError> {
        let daemon = Daemon { label: label.to_string(), dir: dir.to_path_buf(), listen: config.listen, child: None };
        for d in [daemon.config_dir(), daemon.state_dir(), daemon.data_dir(), daemon.socket_dir()] {
            fs::create_dir_all(&d).map_err(|source| DaemonError::Prepare { path: d.clone(), source })?;
        }
        let mut yaml = format!(
            "listen: {}\nstate_dir: {}\ndata_dir: {}\ncontrol_socket: {}\nlog_level: {}\n",
            config.listen,
            daemon.state_dir().display(),
            daemon.data_dir().display(),
            daemon.socket().display(),
            config.log_level,
        );
        if let Some(rate) = config.upload_rate {
            yaml.push_str(&format!("limits:\n  upload_rate: {}\n", rate.bytes_per_sec()));
        }
        let path = daemon.config_dir().join("p2pd.yaml");
        fs::write(&path, yaml).map_err(|source| DaemonError::Prepare { path, source })?;
        Ok(daemon)
    }

    pub fn config_dir(&self) -> PathBuf {
        self.dir.join("cfg")
    }
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }
    fn socket_dir(&self) -> PathBuf {
        self.dir.join("run")
    }
    pub fn socket(&self) -> PathBuf {
        self.socket_dir().join("control.sock")
    }
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("p2pd.log")
    }

    pub fn control(&self) -> ControlClient {
        ControlClient::new(&self.socket())
    }

    /// Starts p2pd (inside `netns` if given) without waiting; returns its pid.
    pub fn spawn(&mut self, p2pd: &Path, netns: Option<&str>) -> Result<i32, DaemonError> {
        let log_path = self.log_path();
        let prepare = |source| DaemonError::Prepare { path: log_path.clone(), source };
        let log = OpenOptions::new().create(true).append(true).open(&log_path).map_err(prepare)?;
        let log2 = log.try_clone().map_err(prepare)?;
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(p2pd);
                c
            }
            None => Command::new(p2pd),
        };
        // If the testbed dies without cleaning up (SIGKILL), the kernel sends the daemon
        // SIGTERM. The setting survives `ip netns exec`'s exec; it is tied to the spawning
        // thread, which must outlive the daemon: the binary's main thread, or a test's thread
        // (which drops its fleet before it ends).
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .arg("--config-dir")
            .arg(self.config_dir())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|source| DaemonError::Spawn { program: p2pd.to_path_buf(), source })?;
        let pid = child.id() as i32;
        self.child = Some(child);
        Ok(pid)
    }

    /// Sends `signal` (SIGTERM to stop, SIGKILL to crash) and reaps the daemon; the
    /// directories stay, so that [`Daemon::spawn`] starts it again on the same state.
    pub fn stop(&mut self, signal: nix::sys::signal::Signal) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal);
        child.wait().ok()
    }

    /// The pid of the running daemon.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// `Some(status)` once the daemon has exited (reaping it).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits until the daemon answers a status request.
    pub fn wait_ready(&mut self) -> Result<(), DaemonError> {
        let started = Instant::now();
        let client = self.control();
        loop {
            if let Some(status) = self.exited() {
                return Err(DaemonError::ExitedEarly { label: self.label.clone(), status, log: self.log_tail(20) });
            }
            if client.status().is_ok() {
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(DaemonError::NotReady {
                    label: self.label.clone(),
                    socket: self.socket(),
                    log: self.log_tail(20),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last `lines` lines of the daemon's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}
