//! `p2pd`: the daemon binary. Parses flags and hands over to [`p2pd::runtime::run`]; every
//! error ends here as one line on stderr and exit code 1 (2 for usage errors, from clap).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgAction, Parser};

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

fn main() -> ExitCode {
    let args = Args::parse();
    if args.check_config {
        let (lines, ok) = p2pd::runtime::check_config(args.config_dir);
        for line in lines {
            println!("{line}");
        }
        return if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }
    let options = p2pd::runtime::RunOptions {
        config_dir: args.config_dir,
        verbosity: args.verbose,
        daemonize: args.daemon,
        pid_file: args.pid_file,
    };
    match p2pd::runtime::run(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("p2pd: {e}");
            ExitCode::FAILURE
        }
    }
}
