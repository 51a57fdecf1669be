//! Starting and stopping the daemon, as a library: [`prepare`] claims everything start-up
//! needs, [`run`] runs the daemon until told to stop. `main.rs` (or a program embedding p2pd)
//! does what belongs to a process between the two — detaching, logging, signals — and turns
//! signals into [`Command`]s.
//!
//! [`prepare`] does everything that can fail for a reason the operator must fix *before*
//! detaching (config, locks, state directory, control socket, ports), so errors reach the
//! terminal and the exit code. It starts no thread: a process may fork after it.
//!
//! [`run`] runs every task on one network thread (the calling one), starts the discovery
//! service, the supervisor, the control server and the peer port, tells systemd it is ready,
//! and serves until
//! [`Command::Shutdown`] (or the command channel closes): the supervisor stops every torrent
//! (each flushes its state), the control server and the peer port close, discovery persists its
//! tables, the socket is removed.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::panic::AssertUnwindSafe;

use futures_lite::{FutureExt, future};
use smol::Async;
use smol::lock::Semaphore;

use crate::config::locations::Environment;
use crate::config::{Config, ConfigError, Locations};
use crate::control::access::AccessPolicy;
use crate::control::server::{self, BindError, ControlCall};
use crate::node_id::NodeId;
use crate::service::instance_lock::{InstanceLock, LockError};
use crate::service::notify;
use crate::shared::{DaemonShared, NodeInfo};
use crate::state::StateDir;
use crate::supervisor::Supervisor;
use crate::supervisor::content::{ContentPath, OwnDirs, TorrentLabel, check_own_dirs};
use crate::torrent::{ContentGuard, TorrentContext};
use crate::{discovery, swarm};

pub use crate::supervisor::Command;

/// Why the daemon could not start, or stopped other than when told to.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Access(#[from] crate::control::access::GroupError),
    #[error("state directory {}: {source}", path.display())]
    StateDir { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Lock(#[from] LockError),
    #[error("control socket: {0}")]
    Socket(#[from] BindError),
    #[error("cannot listen on {addr} ({proto}): {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error, proto: &'static str },
    /// Any other call that failed, named.
    #[error("{what}: {source}")]
    Io { what: &'static str, source: std::io::Error },
    /// While running: a task the daemon cannot live without stopped.
    #[error("the {task} task stopped ({why}); p2pd cannot run without it")]
    TaskEnded { task: &'static str, why: String },
}

impl StartupError {
    fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> StartupError {
        move |source| StartupError::Io { what, source }
    }
}

fn config_dir_of(config_dir: Option<PathBuf>, env: &Environment) -> PathBuf {
    let dir = config_dir.unwrap_or_else(|| env.default_config_dir());
    // Detaching changes the working directory; keep paths meaningful.
    std::path::absolute(&dir).unwrap_or(dir)
}

/// What start-up claimed before the daemon runs: the configuration, the instance lock, the
/// node's identity, the control socket and the node's ports.
pub struct Prepared {
    config: Config,
    locations: Locations,
    access: AccessPolicy,
    state: StateDir,
    lock: InstanceLock,
    node_id: NodeId,
    /// Said once logging is up: what start-up noticed (a new node id, a stale socket).
    notes: Vec<String>,
    warnings: Vec<String>,
    sockets: Sockets,
    listen: std::net::SocketAddr,
}

/// Loads the configuration in `config_dir` (default: [`Environment::default_config_dir`]) and
/// claims what the daemon needs. Starts no thread.
pub fn prepare(config_dir: Option<PathBuf>) -> Result<Prepared, StartupError> {
    let env = Environment::current();
    let config_dir = config_dir_of(config_dir, &env);
    let config = Config::load(&config_dir)?;
    let locations = Locations::resolve(&config_dir, &config, &env);
    let access = AccessPolicy::new(config.control_group.as_deref())?;
    let state = StateDir::open(&locations.state_dir)
        .map_err(|source| StartupError::StateDir { path: locations.state_dir.clone(), source })?;
    let lock = InstanceLock::acquire(&config_dir, &locations.state_dir)?;
    let (node_id, id_warning) = crate::node_id::load_or_create(&state)
        .map_err(|source| StartupError::StateDir { path: locations.state_dir.clone(), source })?;
    let (control, socket_note) = server::bind(&locations.control_socket, access.group_gid())?;
    let (udp, tcp, listen) = bind_node_ports(config.listen)?;
    let metrics = config
        .metrics_listen
        .map(|addr| {
            crate::metrics::http::bind(addr).map_err(|source| StartupError::Listen {
                addr,
                source,
                proto: "HTTP, metrics_listen",
            })
        })
        .transpose()?;
    Ok(Prepared {
        config,
        locations,
        access,
        state,
        lock,
        node_id,
        notes: socket_note.into_iter().collect(),
        warnings: id_warning.into_iter().collect(),
        sockets: Sockets { control, udp, tcp, metrics },
        listen,
    })
}

impl Prepared {
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// After detaching: the instance lock records the new process id.
    pub fn record_pid(&mut self) -> Result<(), StartupError> {
        Ok(self.lock.record_pid()?)
    }
}

/// Runs the daemon until [`Command::Shutdown`] arrives on `commands` or it closes.
/// `verbosity` is the `-v` count, kept on reload (see `log_level`).
pub fn run(prepared: Prepared, verbosity: u8, commands: async_channel::Receiver<Command>) -> Result<(), StartupError> {
    let Prepared { config, locations, access, state, lock, node_id, notes, warnings, sockets, listen } = prepared;
    for note in &notes {
        log::info!("{note}");
    }
    for warning in &warnings {
        log::warn!("{warning}");
    }
    // One network thread: every task runs on this thread's executor, which parks on a plain
    // futex (`futures_lite::future::block_on`) and leaves the I/O reactor to async-io's own
    // thread; the CPU-heavy work of a download (SHA-256 and writing each piece) runs on
    // blocking threads (`swarm::engine::verify`), as libtorrent keeps one network thread and
    // hashes on its disk threads. With a second executor thread the two woke each other for
    // nearly every task scheduled (a third of a leecher's system calls were futexes): see
    // daemon/src/swarm/STATE.md, "One network thread", for what it cost. Driving the reactor
    // from this thread too (`smol::block_on`) made async-io's own thread poll for its turn on a
    // 50 µs–10 ms back-off: 900 context switches a second in a busy daemon. So no task may
    // hold this thread: loops that read while data is waiting (a peer's frames, discovery's
    // datagrams, accepts) give up their turn now and then, and work that could take long
    // (hashing pieces, checking data, parsing an added descriptor, scraping metrics) goes to
    // blocking threads (`smol::unblock`). Uploads still read from storage here (`sendfile`,
    // `read_at`): from the page cache that is a copy, from a cold disk a wait.
    let executor = Arc::new(smol::Executor::<'static>::new());

    let node = NodeInfo { node_id, listen, locations: locations.clone() };
    let result = futures_lite::future::block_on(executor.run(serve(
        executor.clone(),
        node,
        config,
        verbosity,
        state,
        access,
        sockets,
        warnings,
        commands,
    )));
    server::remove_socket(&locations.control_socket);
    drop(lock);
    log::info!("stopped");
    result
}

/// How many port numbers start-up tries when the configured port is 0 and the TCP port of the
/// number UDP was given turns out to be taken (by another program's connection, typically).
const PORT_ZERO_ATTEMPTS: usize = 32;

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
        let udp = discovery::driver::bind(listen).map_err(|source| StartupError::Listen {
            addr: listen,
            source,
            proto: "UDP",
        })?;
        let bound = udp.local_addr().map_err(StartupError::io("the discovery socket's address"))?;
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
    /// `metrics_listen`, if set.
    metrics: Option<std::net::TcpListener>,
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
    commands: async_channel::Receiver<Command>,
) -> Result<(), StartupError> {
    let warnings = Arc::new(Mutex::new(warnings));
    let wire_counters = Arc::new(swarm::counters::WireCounters::default());
    let shared = Arc::new(DaemonShared::new(node.clone(), access, warnings.clone(), wire_counters.clone()));
    // First, so that `/health` answers and `/ready` says "starting" while the rest starts.
    if let Some(addr) = sockets.metrics.as_ref().and_then(|l| l.local_addr().ok()) {
        log::info!("serving metrics on http://{addr}/metrics");
    }
    let (metrics, metrics_sockets) = crate::metrics::Endpoint::new();
    let metrics_task = executor.spawn(crate::tasks::logging_panics(
        "metrics endpoint",
        crate::metrics::http::serve(sockets.metrics, metrics_sockets, shared.clone(), executor.clone()),
    ));
    let (discovery, discovery_task) =
        discovery::driver::start(sockets.udp, node.node_id, &config.discovery, state.clone(), shared.clone())
            .map_err(StartupError::io("cannot start discovery"))?;
    let mut discovery_task = spawn_critical(&executor, "discovery", discovery_task);
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
    let tcp = Async::new(sockets.tcp).map_err(StartupError::io("the peer port"))?;
    let mut peer_port =
        spawn_critical(&executor, "peer port", swarm::listener::serve(tcp, registry, wire_counters, executor.clone()));
    let ctx = TorrentContext {
        executor: executor.clone(),
        state,
        check_slots: Arc::new(Semaphore::new(2)),
        warnings,
        discovery: discovery.clone(),
        swarm: swarm_ctx,
        content_guard: content_guard(&node.locations),
        hooks: crate::hooks::Hooks::new(executor.clone(), &config.hooks),
        queue: crate::torrent::queue::DownloadQueue::new(config.limits.max_active_downloads),
    };
    // With the `fault-injection` feature, `P2PD_FAULT_START_DELAY_MS` holds start-up here (the
    // metrics endpoint serving, state not loaded), for tests of `/ready`.
    #[cfg(feature = "fault-injection")]
    if let Some(ms) = std::env::var("P2PD_FAULT_START_DELAY_MS").ok().and_then(|v| v.parse().ok()) {
        smol::Timer::after(Duration::from_millis(ms)).await;
    }
    let mut supervisor = Supervisor::new(node.locations.clone(), config, verbosity, ctx, shared.clone(), metrics);
    supervisor.load().await;

    // Bounded: a client waits while the supervisor is busy (the server serves at most
    // MAX_CLIENTS at once). The supervisor reads the embedder's commands itself.
    let (calls_tx, calls_rx) = async_channel::bounded::<ControlCall>(64);
    let mut supervisor_task = spawn_critical(&executor, "supervisor", supervisor.run(calls_rx, commands));
    let control = Async::new(sockets.control).map_err(StartupError::io("the control socket"))?;
    let mut server_task =
        spawn_critical(&executor, "control server", server::serve(control, shared.clone(), calls_tx, executor.clone()));
    let status_task = executor.spawn(publish_status(shared.clone()));

    shared.set_phase(crate::shared::Phase::Ready);
    notify::ready(&shared.summary());
    log::info!(
        "p2pd {} ready: node {}, listening on {}, control socket {}",
        env!("CARGO_PKG_VERSION"),
        node.node_id,
        node.listen,
        node.locations.control_socket.display()
    );

    // Until shutdown: then every torrent stops (answering `status` meanwhile; changes are
    // refused once the supervisor is gone), and only then the control server and peer port.
    // The others run until then: one that ends first (it panicked) ends the daemon.
    let others = future::or(&mut discovery_task, future::or(&mut server_task, &mut peer_port));
    let first = future::or(&mut supervisor_task, others).await;
    if first.task != "supervisor" || first.panic.is_some() {
        let why = first.panic.unwrap_or_else(|| "it returned".to_string());
        return Err(StartupError::TaskEnded { task: first.task, why });
    }
    drop(peer_port);
    drop(status_task);
    // After the torrents said goodbye to their swarms: persist tables, send what is queued.
    // The control server runs until then: a client waiting on the supervisor is told that p2pd
    // is shutting down rather than cut off.
    discovery.shutdown().await;
    drop(server_task);
    drop(discovery_task);
    drop(metrics_task);
    Ok(())
}

/// How a task the daemon cannot live without ended: its name, and its panic's message.
struct Ended {
    task: &'static str,
    panic: Option<String>,
}

/// Spawns a task the daemon cannot live without (discovery, the supervisor, the control server,
/// the peer port): it runs until shutdown. A panic is caught and logged with the task's name;
/// the task's handle says how it ended, so that [`serve`] stops the daemon with that name
/// rather than run on without it.
fn spawn_critical(
    executor: &smol::Executor<'static>,
    task: &'static str,
    future: impl Future<Output = ()> + Send + 'static,
) -> smol::Task<Ended> {
    // With the `fault-injection` feature, `P2PD_FAULT_PANIC_TASK=NAME` makes that task panic
    // half a second after it starts (tests of this very rule).
    #[cfg(feature = "fault-injection")]
    let future: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> =
        match std::env::var("P2PD_FAULT_PANIC_TASK").is_ok_and(|t| t == task) {
            true => Box::pin(async {
                smol::Timer::after(Duration::from_millis(500)).await;
                panic!("fault injection (P2PD_FAULT_PANIC_TASK)");
            }),
            false => Box::pin(future),
        };
    executor.spawn(async move {
        match AssertUnwindSafe(future).catch_unwind().await {
            Ok(()) => Ended { task, panic: None },
            Err(payload) => {
                let why = crate::tasks::panic_message(&*payload);
                log::error!("the {task} task panicked: {why}");
                Ended { task, panic: Some(format!("panicked: {why}")) }
            }
        }
    })
}

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
        check_own_dirs(&ContentPath::resolve(dir, name), &torrent, &own)
    })
}

/// Keeps systemd's `STATUS=` line current.
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
    let dir = config_dir_of(config_dir, &env);
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
            lines.push(e.to_string());
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
