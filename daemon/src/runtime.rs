//! Starting and stopping the daemon: [`run`] is what `main` calls.
//!
//! Start-up does everything that can fail for a reason the operator must fix *before*
//! detaching (config, locks, state directory, control socket), so errors reach the terminal
//! and the exit code; then it detaches (with `--daemon`), starts logging, the executor threads,
//! the supervisor, the control server and the signal handler, and tells systemd it is ready.
//!
//! Shutdown (SIGTERM/SIGINT): stop accepting control requests, stop every torrent (each
//! flushes its state), remove the socket, exit 0.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_signal::{Signal, Signals};
use futures_lite::StreamExt;
use log::{info, warn};
use smol::Async;
use smol::lock::Semaphore;

use crate::config::locations::Environment;
use crate::config::{Config, ConfigError, Locations};
use crate::control::access::AccessPolicy;
use crate::control::server::{self, BindError, ControlCall};
use crate::service::instance_lock::{InstanceLock, LockError};
use crate::service::{logging, notify};
use crate::shared::{DaemonShared, NodeInfo};
use crate::state::StateDir;
use crate::supervisor::content::{ContentPath, OwnDirs, TorrentLabel, check_own_dirs};
use crate::supervisor::{self, Supervisor};
use crate::torrent::{ContentGuard, TorrentContext};
use crate::{discovery, node_id, swarm};

/// How `p2pd` was invoked.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// `--config-dir`; default from [`Environment::default_config_dir`].
    pub config_dir: Option<PathBuf>,
    /// `-v` count.
    pub verbosity: u8,
    /// `--daemon`: detach and log to syslog.
    pub daemonize: bool,
    /// `--pid-file` (with `--daemon`).
    pub pid_file: Option<PathBuf>,
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Access(String),
    #[error("state directory {}: {source}", path.display())]
    StateDir { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Lock(#[from] LockError),
    #[error("control socket: {0}")]
    Socket(#[from] BindError),
    #[error("cannot listen on {addr} ({proto}): {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error, proto: &'static str },
    #[error("cannot detach: {0}")]
    Daemonize(String),
    #[error("cannot start logging: {0}")]
    Logging(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn config_dir_of(options: &RunOptions, env: &Environment) -> PathBuf {
    let dir = options.config_dir.clone().unwrap_or_else(|| env.default_config_dir());
    // --daemon changes the working directory; keep paths meaningful.
    std::path::absolute(&dir).unwrap_or(dir)
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(options: RunOptions) -> Result<(), StartupError> {
    let env = Environment::current();
    let config_dir = config_dir_of(&options, &env);
    let config = Config::load(&config_dir)?;
    let locations = Locations::resolve(&config_dir, &config, &env);
    let access = AccessPolicy::new(config.control_group.as_deref()).map_err(StartupError::Access)?;
    let state = StateDir::open(&locations.state_dir)
        .map_err(|source| StartupError::StateDir { path: locations.state_dir.clone(), source })?;
    let mut lock = InstanceLock::acquire(&config_dir, &locations.state_dir)?;
    let (node_id, id_warning) = node_id::load_or_create(&state)
        .map_err(|source| StartupError::StateDir { path: locations.state_dir.clone(), source })?;
    let (listener, socket_note) = server::bind(&locations.control_socket, access.group_gid())?;
    let (udp, tcp, listen) = bind_node_ports(config.listen)?;

    let sink = if options.daemonize || config.syslog {
        logging::Sink::Syslog(config.syslog_socket.clone())
    } else {
        logging::Sink::Stderr
    };
    if let logging::Sink::Syslog(socket) = &sink {
        logging::check_syslog(socket.as_deref()).map_err(StartupError::Logging)?;
    }
    if options.daemonize {
        let mut d = daemonize2::Daemonize::new().working_directory("/").umask(0o022);
        if let Some(pid_file) = &options.pid_file {
            d = d.pid_file(pid_file);
        }
        // fork(2) copies only the calling thread: daemonizing is sound only while this process
        // has no other thread (nothing above starts one: sockets are plain std sockets and the
        // async reactor starts on first use, below). Checked rather than assumed.
        let threads = process_thread_count();
        if threads != 1 {
            return Err(StartupError::Daemonize(format!("cannot fork: the process already runs {threads} threads")));
        }
        // SAFETY: the process is single-threaded here (checked just above).
        unsafe { d.start() }.map_err(|e| StartupError::Daemonize(e.to_string()))?;
        lock.record_pid()?;
    }
    logging::init(sink, config.log_level.raised(options.verbosity).to_filter()).map_err(StartupError::Logging)?;
    if let Some(note) = socket_note {
        info!("{note}");
    }
    let mut warnings = Vec::new();
    if let Some(w) = id_warning {
        warn!("{w}");
        warnings.push(w);
    }

    // The executor's threads park on a plain futex (`futures_lite::future::block_on`), leaving
    // the I/O reactor to async-io's own thread alone. With `smol::block_on` each of them could
    // drive the reactor too, and while any did, async-io's thread polled for its turn on a
    // 50 µs–10 ms back-off: 900 context switches a second in a busy daemon (scenario 2:
    // 5.85 → 5.24 machine core-s per GiB delivered).
    let executor = Arc::new(smol::Executor::<'static>::new());
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).max(2);
    let (stop_workers, workers_stop) = async_channel::bounded::<()>(1);
    let workers: Vec<_> = (1..threads)
        .map(|i| {
            let ex = executor.clone();
            let stop = workers_stop.clone();
            std::thread::Builder::new()
                .name(format!("p2pd-worker-{i}"))
                .spawn(move || futures_lite::future::block_on(ex.run(stop.recv())))
        })
        .collect::<Result<_, _>>()?;

    let node = NodeInfo { node_id, listen, locations: locations.clone() };
    let sockets = Sockets { control: listener, udp, tcp };
    let result = futures_lite::future::block_on(executor.run(serve(
        executor.clone(),
        node,
        config,
        options.verbosity,
        state,
        access,
        sockets,
        warnings,
    )));
    drop(stop_workers);
    for w in workers {
        let _ = w.join();
    }
    server::remove_socket(&locations.control_socket);
    drop(lock);
    info!("stopped");
    result
}

/// How many port numbers start-up tries when the configured port is 0 and the TCP port of the
/// number UDP was given turns out to be taken (by another program's connection, typically).
const PORT_ZERO_ATTEMPTS: usize = 32;

/// How many threads this process runs (`/proc/self/task`); 1 when it cannot be read, since
/// only Linux has the directory and nothing before daemonizing starts a thread.
fn process_thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(1)
}

/// Binds the discovery (UDP) and peer (TCP) sockets on one port number.
///
/// With a fixed port, either socket failing is a start-up error naming it. With port 0 the
/// kernel chooses the UDP port, and the TCP port of the same number may be in use; then both
/// is kept aside and another number is tried, up to [`PORT_ZERO_ATTEMPTS`] times.
fn bind_node_ports(
    listen: std::net::SocketAddr,
) -> Result<(std::net::UdpSocket, std::net::TcpListener, std::net::SocketAddr), StartupError> {
    // Sockets whose TCP twin was taken stay bound until the end, so the kernel hands out
    // another number each time.
    let mut passed_over = Vec::new();
    loop {
        let udp = discovery::service::bind(listen).map_err(|source| StartupError::Listen {
            addr: listen,
            source,
            proto: "UDP",
        })?;
        let bound = udp.local_addr()?;
        match swarm::listener::bind(bound) {
            Ok(tcp) => return Ok((udp, tcp, bound)),
            Err(e)
                if listen.port() == 0
                    && e.kind() == std::io::ErrorKind::AddrInUse
                    && passed_over.len() + 1 < PORT_ZERO_ATTEMPTS =>
            {
                passed_over.push(udp);
            }
            Err(source) => return Err(StartupError::Listen { addr: bound, source, proto: "TCP" }),
        }
    }
}

/// The sockets bound at start-up (before detaching).
struct Sockets {
    control: std::os::unix::net::UnixListener,
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    executor: Arc<smol::Executor<'static>>,
    node: NodeInfo,
    config: Config,
    verbosity: u8,
    state: StateDir,
    access: AccessPolicy,
    sockets: Sockets,
    warnings: Vec<String>,
) -> Result<(), StartupError> {
    let warnings = Arc::new(Mutex::new(warnings));
    let wire_counters = Arc::new(swarm::counters::WireCounters::default());
    let shared = Arc::new(DaemonShared::new(node.clone(), access, warnings.clone(), wire_counters.clone()));
    let discovery = discovery::service::start(
        sockets.udp,
        node.node_id,
        &config.discovery,
        state.clone(),
        shared.clone(),
        &executor,
    )?;
    discovery.bootstrap(&config.bootstrap).await;
    let registry = Arc::new(swarm::listener::Registry::new(config.limits.max_connections_per_ip as usize));
    let swarm_ctx = swarm::SwarmContext {
        executor: executor.clone(),
        node_id: node.node_id,
        listen_port: node.listen.port(),
        // A link-local IPv6 address needs its scope to be bound; such a node connects from
        // whatever the kernel picks.
        listen_ip: Some(node.listen.ip()).filter(|ip| {
            !ip.is_unspecified() && !matches!(ip, std::net::IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
        }),
        registry: registry.clone(),
        upload: Arc::new(swarm::limiter::RateLimit::new(config.limits.upload_rate)),
        download: Arc::new(swarm::limiter::RateLimit::new(config.limits.download_rate)),
        connections: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        max_connections: Arc::new(std::sync::atomic::AtomicUsize::new(config.limits.max_peers as usize)),
        upload_slots: Arc::new(std::sync::atomic::AtomicUsize::new(config.limits.upload_slots as usize)),
        in_flight: Arc::new(swarm::InFlightLimits::new(
            config.limits.max_in_flight_per_peer.0,
            config.limits.max_in_flight_per_torrent.0,
        )),
        counters: wire_counters.clone(),
    };
    let peer_port =
        executor.spawn(swarm::listener::serve(Async::new(sockets.tcp)?, registry, wire_counters, executor.clone()));
    let ctx = TorrentContext {
        executor: executor.clone(),
        state,
        check_slots: Arc::new(Semaphore::new(2)),
        warnings,
        discovery: discovery.clone(),
        swarm: swarm_ctx,
        content_guard: content_guard(&node.locations),
    };
    let mut supervisor = Supervisor::new(node.locations.clone(), config, verbosity, ctx, shared.clone());
    supervisor.load().await;

    // Both bounded: a client waits while the supervisor is busy (the server serves at most
    // MAX_CLIENTS at once); a signal arriving meanwhile waits its turn.
    let (calls_tx, calls_rx) = async_channel::bounded::<ControlCall>(64);
    let (signals_tx, signals_rx) = async_channel::bounded::<supervisor::Signal>(8);
    let supervisor_task = executor.spawn(supervisor.run(calls_rx, signals_rx));
    let server_task =
        executor.spawn(server::serve(Async::new(sockets.control)?, shared.clone(), calls_tx, executor.clone()));

    let (shutdown_tx, shutdown_rx) = async_channel::bounded::<()>(1);
    let signals = Signals::new([Signal::Hup, Signal::Term, Signal::Int])?;
    let signal_task = executor.spawn(handle_signals(signals, signals_tx.clone(), shutdown_tx));
    let status_task = executor.spawn(publish_status(shared.clone()));

    notify::ready(&shared.summary());
    info!(
        "p2pd {} ready: node {}, listening on {}, control socket {}",
        env!("CARGO_PKG_VERSION"),
        node.node_id,
        node.listen,
        node.locations.control_socket.display()
    );

    let _ = shutdown_rx.recv().await;
    // Stop taking work first, then let the supervisor stop every torrent.
    drop(server_task);
    drop(peer_port);
    drop(signal_task);
    drop(status_task);
    let _ = signals_tx.send(supervisor::Signal::Shutdown).await;
    supervisor_task.await;
    // After the torrents said goodbye to their swarms: persist tables, send what is queued.
    discovery.shutdown().await;
    Ok(())
}

async fn handle_signals(
    mut signals: Signals,
    supervisor: async_channel::Sender<supervisor::Signal>,
    shutdown: async_channel::Sender<()>,
) {
    while let Some(signal) = signals.next().await {
        match signal {
            Ok(Signal::Hup) => {
                info!("SIGHUP: reloading");
                if supervisor.send(supervisor::Signal::Reload).await.is_err() {
                    return;
                }
            }
            Ok(other) => {
                let name = if other == Signal::Int { "SIGINT" } else { "SIGTERM" };
                info!("{name}: shutting down");
                notify::stopping();
                let _ = shutdown.send(()).await;
                return;
            }
            Err(e) => warn!("signal handling: {e}"),
        }
    }
}

/// Keeps systemd's `STATUS=` line current.
/// The check every torrent start runs on where its data directory really is: its content may
/// not meet p2pd's state or configuration directory (supervisor/content.rs).
fn content_guard(locations: &Locations) -> ContentGuard {
    let own = OwnDirs {
        state_dir: locations.state_dir.clone(),
        config_dir: locations.config_dir.clone(),
        data_dir: locations.data_dir.clone(),
    };
    Arc::new(move |dir, name, hash| {
        let torrent = TorrentLabel { name: name.to_string(), info_hash: *hash };
        check_own_dirs(&ContentPath::resolve(dir, name), &torrent, &own).map_err(|e| e.to_string())
    })
}

async fn publish_status(shared: Arc<DaemonShared>) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    loop {
        smol::Timer::after(Duration::from_secs(5)).await;
        notify::status(&shared.summary());
    }
}

/// `p2pd --check-config`: validates `p2pd.yaml` and every torrent file without starting.
/// Returns one line per file and whether all were valid.
pub fn check_config(config_dir: Option<PathBuf>) -> (Vec<String>, bool) {
    let env = Environment::current();
    let options = RunOptions { config_dir, ..Default::default() };
    let dir = config_dir_of(&options, &env);
    let mut lines = Vec::new();
    let mut ok = true;
    match Config::load(&dir) {
        Ok(config) => {
            let l = Locations::resolve(&dir, &config, &env);
            lines.push(format!("{}: ok", dir.join(crate::config::CONFIG_FILE).display()));
            lines.push(format!("  state_dir: {}", l.state_dir.display()));
            lines.push(format!("  data_dir: {}", l.data_dir.display()));
            lines.push(format!("  control_socket: {}", l.control_socket.display()));
            if let Err(e) = AccessPolicy::new(config.control_group.as_deref()) {
                lines.push(format!("  {e}"));
                ok = false;
            }
        }
        Err(e) => {
            lines.push(e.to_string());
            ok = false;
        }
    }
    let torrents = dir.join(crate::config::TORRENTS_DIR);
    match crate::supervisor::scan_torrent_files(&torrents) {
        Ok(files) => {
            for (name, result) in files {
                match result {
                    Ok(hash) => lines.push(format!("{}: ok ({hash})", torrents.join(name).display())),
                    Err(e) => {
                        lines.push(format!("{}: {e}", torrents.join(name).display()));
                        ok = false;
                    }
                }
            }
        }
        Err(e) => {
            lines.push(e);
            ok = false;
        }
    }
    (lines, ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_gives_udp_and_tcp_one_number() {
        for _ in 0..20 {
            let (udp, tcp, listen) = bind_node_ports("127.0.0.1:0".parse().unwrap()).unwrap();
            assert_ne!(listen.port(), 0);
            assert_eq!(udp.local_addr().unwrap(), listen);
            assert_eq!(tcp.local_addr().unwrap(), listen);
        }
    }

    #[test]
    fn a_fixed_port_whose_tcp_side_is_taken_is_a_tcp_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        // The UDP side of that number is usually free; if not, the UDP error is the right one.
        match bind_node_ports(addr) {
            Err(StartupError::Listen { proto, addr: failed, .. }) => {
                assert!(proto == "TCP" || proto == "UDP");
                assert_eq!(failed.port(), addr.port());
            }
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("bound a port whose TCP side is taken"),
        }
    }
}
