//! `p2pd`: the daemon binary. Parses flags, claims what the daemon needs
//! ([`p2pd::runtime::prepare`]), does what belongs to the process — detaching, logging,
//! signals — and runs the daemon ([`p2pd::runtime::run`]). Every error ends here as one line
//! on stderr and exit code 1 (2 for usage errors, from clap).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use async_signal::{Signal, Signals};
use clap::{ArgAction, Parser};
use futures_lite::StreamExt;
use p2pd::runtime::{self, Command, StartupError};
use p2pd::service::logging::{self, LoggingError, Sink};
use p2pd::service::notify;

/// Tracker-less peer-to-peer file distribution daemon.
///
/// Manages the torrents described in CONFIG_DIR/torrents/ and answers p2pctl on its control
/// socket. Runs in the foreground (for systemd or a terminal) unless --daemon is given.
/// SIGHUP reloads the configuration; SIGTERM or SIGINT stops it cleanly.
#[derive(Debug, Parser)]
#[command(name = "p2pd", version, about, long_about)]
struct Args {
    /// Configuration directory holding p2pd.yaml and torrents/
    /// [default: $CONFIGURATION_DIRECTORY, /etc/p2pd as root, else $XDG_CONFIG_HOME/p2pd]
    #[arg(long, value_name = "DIR")]
    config_dir: Option<PathBuf>,

    /// Detach from the terminal and log to syslog
    #[arg(long)]
    daemon: bool,

    /// With --daemon, write the daemon's pid to PATH
    #[arg(long, value_name = "PATH", requires = "daemon")]
    pid_file: Option<PathBuf>,

    /// Log more: -v for debug, -vv for trace (on top of log_level)
    #[arg(short, long, action = ArgAction::Count)]
    verbose: u8,

    /// Validate p2pd.yaml and every torrent file, print the result and exit (1 if invalid)
    #[arg(long, conflicts_with_all = ["daemon", "pid_file"])]
    check_config: bool,
}

/// Why `p2pd` stopped with an error (one line on stderr).
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error("cannot detach: the process already runs {0} threads (fork would copy only this one)")]
    Threaded(usize),
    #[error("cannot detach: {0}")]
    Daemonize(#[from] daemonize2::Error),
    #[error("{0}")]
    Logging(#[from] LoggingError),
    #[error("cannot handle signals: {0}")]
    Signals(std::io::Error),
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.check_config {
        let (lines, ok) = p2pd::runtime::check_config(args.config_dir);
        for line in lines {
            println!("{line}");
        }
        return if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("p2pd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Claims what the daemon needs (errors reach the terminal), detaches with `--daemon`, starts
/// logging and the signal handler, and runs the daemon until SIGTERM or SIGINT.
fn run(args: Args) -> Result<(), Failure> {
    let mut prepared = runtime::prepare(args.config_dir)?;
    let config = prepared.config();
    let sink = if args.daemon || config.syslog { Sink::Syslog(config.syslog_socket.clone()) } else { Sink::Stderr };
    let level = config.log_level.raised(args.verbose).to_filter();
    if let Sink::Syslog(socket) = &sink {
        logging::check_syslog(socket.as_deref())?;
    }
    if args.daemon {
        detach(args.pid_file.as_deref())?;
        prepared.record_pid()?;
    }
    logging::init(sink, level)?;
    let signals = Signals::new([Signal::Hup, Signal::Term, Signal::Int]).map_err(Failure::Signals)?;
    let (commands, received) = async_channel::bounded(8);
    std::thread::Builder::new()
        .name("p2pd-signals".into())
        .spawn(move || futures_lite::future::block_on(forward_signals(signals, commands)))
        .map_err(Failure::Signals)?;
    Ok(runtime::run(prepared, args.verbose, received)?)
}

/// Forks into the background (`--daemon`): working directory `/`, umask 022, the pid file.
fn detach(pid_file: Option<&Path>) -> Result<(), Failure> {
    let mut d = daemonize2::Daemonize::new().working_directory("/").umask(0o022);
    if let Some(pid_file) = pid_file {
        d = d.pid_file(pid_file);
    }
    // fork(2) copies only the calling thread: detaching is sound only while this process has
    // no other thread (`runtime::prepare` starts none; sockets are plain std sockets and the
    // async reactor starts on first use, later). Checked rather than assumed.
    let threads = std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(1);
    if threads != 1 {
        return Err(Failure::Threaded(threads));
    }
    // SAFETY: the process is single-threaded here (checked just above).
    unsafe { d.start() }?;
    Ok(())
}

/// SIGHUP reloads; SIGTERM or SIGINT stops the daemon (and this forwarding).
async fn forward_signals(mut signals: Signals, commands: async_channel::Sender<Command>) {
    while let Some(signal) = signals.next().await {
        match signal {
            Ok(Signal::Hup) => {
                log::info!("SIGHUP: reloading");
                if commands.send(Command::Reload).await.is_err() {
                    return;
                }
            }
            Ok(other) => {
                let name = if other == Signal::Int { "SIGINT" } else { "SIGTERM" };
                log::info!("{name}: shutting down");
                notify::stopping();
                let _ = commands.send(Command::Shutdown).await;
                return;
            }
            Err(e) => log::warn!("signal handling: {e}"),
        }
    }
}
