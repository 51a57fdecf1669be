//! The blocking control client: one request, one response on a daemon's control socket
//! (`docs/CONTROL.md`). p2pctl and the testbed both talk to daemons through it.
//!
//! Each exchange opens its own connection. A request can be sent and its answer read later
//! ([`ControlClient::send`], then [`PendingAnswer::receive`]), so that a caller polling many
//! daemons sends to all of them before it reads any answer.
//!
//! Bounds: an answer is at most [`MAX_RESPONSE_BYTES`]; reading and writing each give up after
//! the client's timeout. A daemon that refuses a client may answer and close before the
//! request is written: the answer is read all the same, and the write's error reported only if
//! there is none.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::protocol::{
    self, AddedReport, ErrorReply, HEADER_BYTES, MAX_RESPONSE_BYTES, PROTOCOL_VERSION, PeersReport, Request,
    RequestEnvelope, Response, StatusReport, TorrentStatus,
};

/// How long an exchange may take by default (an `add` waits for an fsync; a `remove` with
/// `--delete-data` of a large tree takes longer: p2pctl allows more).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why an exchange failed. Every variant names the socket.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing could be connected to (not running, not permitted, ...): `source.kind()` says.
    #[error("cannot connect to p2pd on {}: {source}", socket.display())]
    Connect { socket: PathBuf, source: io::Error },
    #[error("p2pd did not answer within {}s on {}", after.as_secs(), socket.display())]
    TimedOut { socket: PathBuf, after: Duration },
    #[error("lost the connection to p2pd on {}: {source}", socket.display())]
    Io { socket: PathBuf, source: io::Error },
    #[error("p2pd closed the connection on {} after {got} of {len} bytes of its answer", socket.display())]
    Truncated { socket: PathBuf, got: usize, len: usize },
    #[error("bad answer from p2pd on {}: {message}", socket.display())]
    BadAnswer { socket: PathBuf, message: String },
    /// The daemon answered with an error (`reply.message` alone is what a user reads).
    #[error("p2pd on {} refused the request ({:?}): {}", socket.display(), reply.kind, reply.message)]
    Daemon { socket: PathBuf, reply: ErrorReply },
    #[error("p2pd on {} answered a {what} request with something else", socket.display())]
    Unexpected { socket: PathBuf, what: &'static str },
}

/// A daemon's control socket.
#[derive(Debug, Clone)]
pub struct ControlClient {
    pub socket: PathBuf,
    pub timeout: Duration,
}

/// An encoded request, ready to send (to many daemons, or the moment a barrier opens).
#[derive(Debug, Clone)]
pub struct EncodedRequest(Vec<u8>);

impl EncodedRequest {
    pub fn new(request: Request) -> EncodedRequest {
        EncodedRequest(protocol::encode_frame(&RequestEnvelope { version: PROTOCOL_VERSION, request }))
    }
}

impl ControlClient {
    pub fn new(socket: &Path) -> ControlClient {
        ControlClient { socket: socket.to_path_buf(), timeout: DEFAULT_TIMEOUT }
    }

    pub fn with_timeout(self, timeout: Duration) -> ControlClient {
        ControlClient { timeout, ..self }
    }

    /// Sends `request` and reads the answer; a daemon-reported error is
    /// [`ClientError::Daemon`].
    pub fn call(&self, request: Request) -> Result<Response, ClientError> {
        self.send(&EncodedRequest::new(request))?.receive()
    }

    /// Sends `request` on a connection of its own, without waiting for the answer.
    pub fn send(&self, request: &EncodedRequest) -> Result<PendingAnswer, ClientError> {
        let connect = |source| ClientError::Connect { socket: self.socket.clone(), source };
        let mut stream = UnixStream::connect(&self.socket).map_err(connect)?;
        stream.set_read_timeout(Some(self.timeout)).map_err(connect)?;
        stream.set_write_timeout(Some(self.timeout)).map_err(connect)?;
        let write_error = stream.write_all(&request.0).err();
        Ok(PendingAnswer { socket: self.socket.clone(), timeout: self.timeout, stream, write_error })
    }

    /// The node and every torrent.
    pub fn status(&self) -> Result<StatusReport, ClientError> {
        self.send(&EncodedRequest::new(Request::Status { id: None }))?.status()
    }

    /// One torrent by info hash (hex); `None` while the daemon does not manage it.
    pub fn torrent(&self, info_hash: &str) -> Result<Option<TorrentStatus>, ClientError> {
        Ok(self.status()?.torrents.into_iter().find(|t| t.info_hash == info_hash))
    }

    /// The swarm of one torrent as the daemon knows it.
    pub fn peers(&self, id: &str) -> Result<PeersReport, ClientError> {
        self.send(&EncodedRequest::new(Request::Peers { id: id.to_string() }))?.peers()
    }

    /// Sends a prepared `add` request.
    pub fn add(&self, request: &EncodedRequest) -> Result<AddedReport, ClientError> {
        match self.send(request)?.receive()? {
            Response::Added(report) => Ok(report),
            _ => Err(ClientError::Unexpected { socket: self.socket.clone(), what: "add" }),
        }
    }
}

/// A request sent, its answer not read yet.
#[derive(Debug)]
pub struct PendingAnswer {
    socket: PathBuf,
    timeout: Duration,
    stream: UnixStream,
    /// Writing the request failed: reported if no answer can be read either.
    write_error: Option<io::Error>,
}

impl PendingAnswer {
    /// Reads the answer; a daemon-reported error is [`ClientError::Daemon`].
    pub fn receive(mut self) -> Result<Response, ClientError> {
        let mut header = [0u8; HEADER_BYTES];
        if let Err(e) = self.stream.read_exact(&mut header) {
            let e = self.write_error.take().unwrap_or(e);
            return Err(self.io_error(e));
        }
        let bad = |message: String| ClientError::BadAnswer { socket: self.socket.clone(), message };
        let len = protocol::decode_header(header, MAX_RESPONSE_BYTES).map_err(|e| bad(e.to_string()))?;
        let mut body = Vec::with_capacity(len.min(1 << 20));
        if let Err(e) = (&mut self.stream).take(len as u64).read_to_end(&mut body) {
            return Err(self.io_error(e));
        }
        if body.len() != len {
            return Err(ClientError::Truncated { socket: self.socket, got: body.len(), len });
        }
        match protocol::decode_response(&body).map_err(|e| bad(e.to_string()))? {
            Response::Error(reply) => Err(ClientError::Daemon { socket: self.socket, reply }),
            other => Ok(other),
        }
    }

    /// The answer to a `status` request.
    pub fn status(self) -> Result<StatusReport, ClientError> {
        let socket = self.socket.clone();
        match self.receive()? {
            Response::Status(report) => Ok(*report),
            _ => Err(ClientError::Unexpected { socket, what: "status" }),
        }
    }

    /// The answer to a `peers` request.
    pub fn peers(self) -> Result<PeersReport, ClientError> {
        let socket = self.socket.clone();
        match self.receive()? {
            Response::Peers(report) => Ok(report),
            _ => Err(ClientError::Unexpected { socket, what: "peers" }),
        }
    }

    fn io_error(&self, source: io::Error) -> ClientError {
        let socket = self.socket.clone();
        match source.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                ClientError::TimedOut { socket, after: self.timeout }
            }
            _ => ClientError::Io { socket, source },
        }
    }
}
