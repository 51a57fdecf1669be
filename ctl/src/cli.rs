//! The command line, as clap definitions (also the source of the man page and completions).

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use clap_complete::Shell;
use p2pd::units::ByteRate;

/// Control a p2pd daemon: add and remove torrents, watch them, make descriptors.
///
/// p2pctl finds the daemon's control socket the way the daemon does: --socket, else
/// $P2PD_SOCKET, else control_socket from CONFIG_DIR/p2pd.yaml, else the default location
/// (/run/p2pd/control.sock for root and for users without a daemon of their own,
/// $XDG_RUNTIME_DIR/p2pd/control.sock otherwise).
///
/// Exit status: 0 success; 1 failure (invalid input, or the daemon could not do it; for
/// reload: something was rejected); 2 usage error; 3 daemon not reachable; 4 permission
/// refused; 5 no such torrent (or the ID is ambiguous); 6 wait timed out; 7 the torrent
/// failed (wait, watch).
#[derive(Debug, Parser)]
#[command(name = "p2pctl", version, about, long_about, propagate_version = true)]
pub struct Cli {
    /// Control socket of the daemon
    #[arg(long, global = true, value_name = "PATH", env = "P2PD_SOCKET")]
    pub socket: Option<PathBuf>,

    /// Configuration directory of the daemon (to find its socket)
    #[arg(long, global = true, value_name = "DIR")]
    pub config_dir: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make a descriptor (.desc) for a file or a directory
    Create {
        /// File or directory to describe
        path: PathBuf,
        /// Where to write the descriptor ("-" for stdout) [default: NAME.desc]
        #[arg(short, long, value_name = "OUT.desc")]
        output: Option<PathBuf>,
        /// Piece size, a power of two from 16K to 64M [default: about 1024 pieces, 256K to 16M]
        #[arg(long, value_name = "SIZE")]
        piece_size: Option<String>,
        /// A node to start discovery from (host:port); repeat for several
        #[arg(long = "bootstrap", value_name = "ADDR")]
        bootstrap: Vec<String>,
    },
    /// Add a torrent from a descriptor; prints its info hash
    ///
    /// Content already at DIR/NAME is seeded if every piece of it verifies; anything else
    /// there is left untouched and the torrent shows an error, unless --adopt is given.
    Add {
        /// The descriptor file
        descriptor: PathBuf,
        /// Directory to keep the content in [default: the daemon's data_dir]; a user other
        /// than root may only name one inside the daemon's data_roots
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        /// Take over what is already at DIR/NAME even if it does not verify: missing and
        /// differing pieces are downloaded over it (also for a torrent already added)
        #[arg(long)]
        adopt: bool,
        /// Keep it as cache: p2pd may delete it, data and all, once it completed at least
        /// retention.min_seed_time ago, when its filesystem is fuller than retention.high_water
        #[arg(long)]
        cache: bool,
    },
    /// Stop managing a torrent
    Remove {
        /// Info hash, a unique prefix of it, or the torrent's name
        id: String,
        /// Also delete the torrent's files: only the files of its layout, and only if the
        /// torrent created, verified or adopted them
        #[arg(long)]
        delete_data: bool,
    },
    /// Show the node and its torrents (or one torrent)
    Status {
        /// Info hash, a unique prefix of it, or the torrent's name
        id: Option<String>,
        /// Print the status document as JSON (schema: docs/CONTROL.md)
        #[arg(long)]
        json: bool,
    },
    /// List torrents: info hash, state and name
    List {
        /// Print as JSON
        #[arg(long)]
        json: bool,
    },
    /// Show the peers of a torrent's swarm
    Peers {
        /// Info hash, a unique prefix of it, or the torrent's name
        id: String,
        /// Print as JSON
        #[arg(long)]
        json: bool,
    },
    /// Re-read p2pd.yaml and torrents/; print what was applied, needs a restart, or was rejected
    Reload,
    /// Recheck every piece of a torrent against its hash
    Verify {
        /// Info hash, a unique prefix of it, or the torrent's name
        id: String,
    },
    /// Pause a torrent: it keeps its data and state but neither downloads nor uploads
    /// (recorded in its torrent file, so it stays paused across reloads and restarts)
    Pause {
        /// Info hash, a unique prefix of it, or the torrent's name
        id: String,
        /// Print the answer as JSON
        #[arg(long)]
        json: bool,
    },
    /// Resume a paused torrent
    Resume {
        /// Info hash, a unique prefix of it, or the torrent's name
        id: String,
        /// Print the answer as JSON
        #[arg(long)]
        json: bool,
    },
    /// Change a torrent's limits, live (recorded in its torrent file)
    Set {
        /// Info hash, a unique prefix of it, or the torrent's name
        id: String,
        /// This torrent's download limit, e.g. 50MiB or 200Mbit; 0 or unlimited: none of its own
        #[arg(long, value_name = "RATE", value_parser = crate::commands::set::download_rate)]
        download_rate: Option<ByteRate>,
        /// This torrent's upload limit; 0 or unlimited: none of its own
        #[arg(long, value_name = "RATE", value_parser = crate::commands::set::upload_rate)]
        upload_rate: Option<ByteRate>,
        /// Most peer connections for this torrent
        #[arg(long, value_name = "N", value_parser = crate::commands::set::max_peers)]
        max_peers: Option<u32>,
        /// Put it first in the download queue (limits.max_active_downloads)
        #[arg(long)]
        priority: bool,
        /// Print the answer as JSON
        #[arg(long)]
        json: bool,
    },
    /// Wait until a torrent is complete and verified
    Wait {
        /// Info hash, a unique prefix of it, or the torrent's name
        id: String,
        /// Give up after this many seconds (exit status 6)
        #[arg(long, value_name = "SECS")]
        timeout: Option<f64>,
    },
    /// Show progress bars for the active torrents until they finish
    Watch,
    /// Take this node out of the fleet: start no more downloads (incomplete torrents stop,
    /// their progress kept), seed until every torrent has enough other complete copies in its
    /// swarm, then stop p2pd (exit status 0: systemd leaves the unit stopped)
    ///
    /// Waits, printing progress, until the drain ends (p2pd then stops). Exit: 0 drained, 6
    /// --timeout came first (p2pd stops all the same), 1 p2pd stopped before the drain ended.
    Drain {
        /// Other complete copies each seeding torrent must have before p2pd stops (0 to 10000)
        #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=10_000))]
        min_copies: u32,
        /// Stop after this many seconds whatever the copies (1 to 31622400) [default: no limit]
        #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=31_622_400))]
        timeout: Option<u64>,
        /// Start the drain and return at once
        #[arg(long)]
        no_wait: bool,
    },
    /// Print a shell completion script
    Completions {
        /// bash, zsh, fish, elvish or powershell
        shell: Shell,
    },
    /// Print the man page (roff)
    Man,
}
