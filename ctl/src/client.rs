//! Talking to the daemon: find its socket, send one request, read one response.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use p2pd::config::locations::{Environment, SYSTEM_SOCKET};
use p2pd::config::{Config, Locations};
use p2pd::control::protocol::{
    self, HEADER_BYTES, MAX_RESPONSE_BYTES, PROTOCOL_VERSION, Request, RequestEnvelope, Response,
};

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
        match self.exchange(request)? {
            Response::Error(e) => Err(CtlError::from_daemon(e.kind, e.message)),
            other => Ok(other),
        }
    }

    fn exchange(&self, request: Request) -> CtlResult<Response> {
        let socket = &self.socket;
        let mut stream = UnixStream::connect(socket).map_err(|e| self.connect_error(e))?;
        let io_err = |e: io::Error| {
            if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut {
                CtlError::failed(format!(
                    "p2pd did not answer within {}s on {}",
                    RESPONSE_TIMEOUT.as_secs(),
                    socket.display()
                ))
            } else {
                CtlError::new(Exit::Unreachable, format!("lost the connection to p2pd on {}: {e}", socket.display()))
            }
        };
        stream.set_read_timeout(Some(RESPONSE_TIMEOUT)).map_err(io_err)?;
        let frame = protocol::encode_frame(&RequestEnvelope { version: PROTOCOL_VERSION, request });
        // A refused client may be answered and closed before the request is sent; read the
        // answer even if the write fails.
        let wrote = stream.write_all(&frame);
        let mut header = [0u8; HEADER_BYTES];
        match stream.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) => return Err(io_err(wrote.err().unwrap_or(e))),
        }
        let len = protocol::decode_header(header, MAX_RESPONSE_BYTES)
            .map_err(|e| CtlError::failed(format!("bad answer from p2pd: {e}")))?;
        let mut body = Vec::new();
        (&mut stream).take(len as u64).read_to_end(&mut body).map_err(io_err)?;
        if body.len() != len {
            return Err(CtlError::new(Exit::Unreachable, "p2pd closed the connection mid-answer"));
        }
        protocol::decode_response(&body).map_err(|e| CtlError::failed(format!("bad answer from p2pd: {e}")))
    }

    fn connect_error(&self, e: io::Error) -> CtlError {
        let socket = self.socket.display();
        match e.kind() {
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
            _ => CtlError::new(Exit::Unreachable, format!("cannot connect to p2pd on {socket}: {e}")),
        }
    }
}
