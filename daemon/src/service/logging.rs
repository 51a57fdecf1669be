//! Logging through the `log` facade to stderr (foreground) or syslog (`--daemon`, or
//! `syslog: true`). The level is `log::max_level`, set from `log_level` and `-v`, and changed
//! by reload.
//!
//! On stderr, when systemd's journal is the reader (`JOURNAL_STREAM` set), each line starts
//! with the `<N>` priority prefix journald understands and carries no timestamp (journald adds
//! one); otherwise (a terminal, a file) every line starts with a UTC time to the millisecond.

use std::io::Write;

use log::{Level, LevelFilter};

/// Where log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    Stderr,
    /// Syslog, at the given socket or the system's default.
    Syslog(Option<std::path::PathBuf>),
}

/// Why logging could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error(
        "cannot connect to syslog at {}: {source} (start a syslog daemon, set syslog_socket, or run in the foreground)",
        at.display()
    )]
    Syslog { at: std::path::PathBuf, source: syslog::Error },
    #[error("a logger is already installed: {0}")]
    Installed(#[from] log::SetLoggerError),
}

fn syslog_logger() -> syslog::Formatter3164 {
    syslog::Formatter3164 {
        facility: syslog::Facility::LOG_DAEMON,
        hostname: None,
        process: "p2pd".into(),
        pid: std::process::id(),
    }
}

fn connect_syslog(
    socket: Option<&std::path::Path>,
) -> Result<syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>, LoggingError> {
    let result = match socket {
        Some(path) => syslog::unix_custom(syslog_logger(), path),
        None => syslog::unix(syslog_logger()),
    };
    result.map_err(|source| LoggingError::Syslog { at: socket.unwrap_or("/dev/log".as_ref()).to_path_buf(), source })
}

/// Checks that syslog can be reached, so `--daemon` fails on the terminal rather than after
/// detaching.
pub fn check_syslog(socket: Option<&std::path::Path>) -> Result<(), LoggingError> {
    connect_syslog(socket).map(drop)
}

fn syslog_priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// Installs the logger; call once.
pub fn init(sink: Sink, level: LevelFilter) -> Result<(), LoggingError> {
    match sink {
        Sink::Stderr => {
            let journal = std::env::var_os("JOURNAL_STREAM").is_some();
            env_logger::Builder::new()
                .filter_level(LevelFilter::Trace)
                .format(move |buf, record| {
                    let level = record.level();
                    if journal {
                        writeln!(buf, "<{}>{}", syslog_priority(level), record.args())
                    } else {
                        writeln!(buf, "{} {:5} {}", buf.timestamp_millis(), level, record.args())
                    }
                })
                .target(env_logger::Target::Stderr)
                .try_init()?;
        }
        Sink::Syslog(socket) => {
            // Connected after any fork, so that lines carry the daemon's own pid.
            let logger = connect_syslog(socket.as_deref())?;
            log::set_boxed_logger(Box::new(syslog::BasicLogger::new(logger)))?;
        }
    }
    log::set_max_level(level);
    Ok(())
}
