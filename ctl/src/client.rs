//! Talking to the daemon: find its socket the way the daemon does, then one request and one
//! response through the library's [`ControlClient`]; its errors become exit codes here.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use p2pd::config::locations::{Environment, SYSTEM_SOCKET};
use p2pd::config::{Config, Locations};
use p2pd::control::client::{ClientError, ControlClient};
use p2pd::control::protocol::{Request, Response};

use crate::exit::{CtlError, CtlResult, Exit};

/// How long to wait for an answer (removing with --delete-data of a large tree takes time).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(300);

/// A connection target.
#[derive(Debug, Clone)]
pub struct Client {
    pub socket: PathBuf,
}

impl Client {
    /// Finds the socket the way the daemon does (see `p2pctl --help`).
    pub fn locate(socket: Option<PathBuf>, config_dir: Option<PathBuf>) -> CtlResult<Client> {
        if let Some(socket) = socket {
            return Ok(Client { socket });
        }
        let env = Environment::current();
        let explicit = config_dir.is_some();
        let dir = config_dir.unwrap_or_else(|| env.default_config_dir());
        let config = Config::load_locating_keys(&dir);
        let locations = Locations::resolve(&dir, &config, &env);
        let mut socket = locations.control_socket;
        if !env.is_root && !explicit && !socket.exists() && Path::new(SYSTEM_SOCKET).exists() {
            socket = PathBuf::from(SYSTEM_SOCKET);
        }
        Ok(Client { socket })
    }

    /// Sends `request`; a daemon-reported error becomes a [`CtlError`] with its exit code.
    pub fn call(&self, request: Request) -> CtlResult<Response> {
        ControlClient::new(&self.socket).with_timeout(RESPONSE_TIMEOUT).call(request).map_err(|e| self.error(e))
    }

    /// [`Client::call`] waiting up to `timeout` for the answer (a drain answers when it ends).
    pub fn call_waiting(&self, request: Request, timeout: Duration) -> CtlResult<Response> {
        ControlClient::new(&self.socket).with_timeout(timeout).call(request).map_err(|e| self.error(e))
    }

    /// The message and exit code for a failed exchange.
    fn error(&self, e: ClientError) -> CtlError {
        let socket = self.socket.display();
        match e {
            ClientError::Daemon { reply, .. } => CtlError::from_daemon(reply.kind, reply.message),
            ClientError::Connect { source, .. } => match source.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => CtlError::new(
                    Exit::Unreachable,
                    format!(
                        "p2pd is not running: nothing answers on {socket}. Start it with `systemctl start p2pd` (or run `p2pd`), or point p2pctl at another daemon with --socket or --config-dir"
                    ),
                ),
                io::ErrorKind::PermissionDenied => CtlError::new(
                    Exit::Refused,
                    format!(
                        "permission denied on {socket}: only root, the p2pd user and members of its control_group may use it"
                    ),
                ),
                _ => CtlError::new(Exit::Unreachable, format!("cannot connect to p2pd on {socket}: {source}")),
            },
            e @ (ClientError::Io { .. } | ClientError::Truncated { .. }) => {
                CtlError::new(Exit::Unreachable, e.to_string())
            }
            e @ (ClientError::TimedOut { .. } | ClientError::BadAnswer { .. } | ClientError::Unexpected { .. }) => {
                CtlError::failed(e.to_string())
            }
        }
    }
}
