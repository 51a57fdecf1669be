//! Exit codes and the one error type the commands return.

use std::fmt;
use std::process::ExitCode;

use p2pd::control::protocol::ErrorKind;

/// Documented exit codes (see `p2pctl --help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    Failed = 1,
    Usage = 2,
    Unreachable = 3,
    Refused = 4,
    NotFound = 5,
    TimedOut = 6,
    TorrentFailed = 7,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// A failure: the message for stderr and the exit code.
#[derive(Debug)]
pub struct CtlError {
    pub exit: Exit,
    pub message: String,
}

impl CtlError {
    pub fn new(exit: Exit, message: impl Into<String>) -> CtlError {
        CtlError { exit, message: message.into() }
    }

    pub fn failed(message: impl Into<String>) -> CtlError {
        CtlError::new(Exit::Failed, message)
    }

    /// The exit code for an error the daemon reported.
    pub fn from_daemon(kind: ErrorKind, message: String) -> CtlError {
        let exit = match kind {
            ErrorKind::Refused => Exit::Refused,
            ErrorKind::NotFound | ErrorKind::Ambiguous => Exit::NotFound,
            ErrorKind::BadRequest | ErrorKind::Version | ErrorKind::Invalid | ErrorKind::Failed => Exit::Failed,
        };
        CtlError { exit, message }
    }
}

impl fmt::Display for CtlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

pub type CtlResult<T = Exit> = Result<T, CtlError>;
