//! One request, one response on a daemon's control socket (`docs/CONTROL.md`).
//!
//! The testbed talks to every daemon directly rather than spawning `p2pctl`: it polls every
//! daemon of a fleet several times a second, and a process per poll would steal the CPU the run
//! is measuring. Framing and types are p2pd's own ([`p2pd::control::protocol`]).
//!
//! A request can be sent and its answer read later ([`ControlClient::send`], then
//! [`PendingAnswer`]): the poll sends to every daemon before it reads any answer, so that a
//! sweep over a CPU-bound fleet of 64 takes about as long as the slowest answer rather than the
//! sum of them all (measured: 6–9 s per sweep sent one by one, with 64 daemons on 2 cores).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use p2pd::control::protocol::{
    self, AddedReport, ErrorReply, HEADER_BYTES, MAX_RESPONSE_BYTES, PROTOCOL_VERSION, PeersReport, Request,
    RequestEnvelope, Response, StatusReport, TorrentStatus,
};

/// How long one exchange may take (an `add` waits for an fsync; a status is a snapshot).
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot reach p2pd on {}: {source}", socket.display())]
    Io { socket: PathBuf, source: std::io::Error },
    #[error("bad answer from p2pd on {}: {message}", socket.display())]
    BadAnswer { socket: PathBuf, message: String },
    #[error("p2pd on {} refused the request ({:?}): {}", socket.display(), reply.kind, reply.message)]
    Daemon { socket: PathBuf, reply: ErrorReply },
    #[error("p2pd on {} answered a {what} request with something else", socket.display())]
    Unexpected { socket: PathBuf, what: &'static str },
}

/// A daemon's control socket.
#[derive(Debug, Clone)]
pub struct ControlClient {
    pub socket: PathBuf,
}

/// An encoded request, ready to send the moment a barrier opens.
#[derive(Debug, Clone)]
pub struct EncodedRequest(Vec<u8>);

impl EncodedRequest {
    pub fn new(request: Request) -> EncodedRequest {
        EncodedRequest(protocol::encode_frame(&RequestEnvelope { version: PROTOCOL_VERSION, request }))
    }
}

impl ControlClient {
    pub fn new(socket: &Path) -> ControlClient {
        ControlClient { socket: socket.to_path_buf() }
    }

    /// Sends `request`; a daemon-reported error becomes [`ControlError::Daemon`].
    pub fn call(&self, request: &EncodedRequest) -> Result<Response, ControlError> {
        self.send(request)?.receive()
    }

    /// Sends `request` without waiting for the answer.
    pub fn send(&self, request: &EncodedRequest) -> Result<PendingAnswer, ControlError> {
        let io = |source| ControlError::Io { socket: self.socket.clone(), source };
        let mut stream = UnixStream::connect(&self.socket).map_err(io)?;
        stream.set_read_timeout(Some(EXCHANGE_TIMEOUT)).map_err(io)?;
        stream.set_write_timeout(Some(EXCHANGE_TIMEOUT)).map_err(io)?;
        stream.write_all(&request.0).map_err(io)?;
        Ok(PendingAnswer { socket: self.socket.clone(), stream })
    }

    /// The node and every torrent.
    pub fn status(&self) -> Result<StatusReport, ControlError> {
        self.send(&status_request())?.status()
    }

    /// One torrent by info hash; `None` while the daemon does not manage it (yet).
    pub fn torrent(&self, info_hash: &str) -> Result<Option<TorrentStatus>, ControlError> {
        Ok(self.status()?.torrents.into_iter().find(|t| t.info_hash == info_hash))
    }

    /// The swarm of one torrent as the daemon knows it, with per-connection byte counts.
    pub fn peers(&self, id: &str) -> Result<PeersReport, ControlError> {
        self.send(&peers_request(id))?.peers()
    }

    /// Sends a prepared `add` request.
    pub fn add(&self, request: &EncodedRequest) -> Result<AddedReport, ControlError> {
        match self.call(request)? {
            Response::Added(report) => Ok(report),
            _ => Err(ControlError::Unexpected { socket: self.socket.clone(), what: "add" }),
        }
    }
}

/// A request sent on its own connection, its answer not read yet.
#[derive(Debug)]
pub struct PendingAnswer {
    socket: PathBuf,
    stream: UnixStream,
}

impl PendingAnswer {
    /// Reads the answer; a daemon-reported error becomes [`ControlError::Daemon`].
    pub fn receive(mut self) -> Result<Response, ControlError> {
        let socket = self.socket.clone();
        let io = |source| ControlError::Io { socket: socket.clone(), source };
        let mut header = [0u8; HEADER_BYTES];
        self.stream.read_exact(&mut header).map_err(io)?;
        let bad = |message: String| ControlError::BadAnswer { socket: socket.clone(), message };
        let len = protocol::decode_header(header, MAX_RESPONSE_BYTES).map_err(|e| bad(e.to_string()))?;
        let mut body = Vec::with_capacity(len.min(1 << 20));
        (&mut self.stream).take(len as u64).read_to_end(&mut body).map_err(io)?;
        if body.len() != len {
            return Err(bad(format!("connection closed after {} of {len} bytes", body.len())));
        }
        match protocol::decode_response(&body).map_err(|e| bad(e.to_string()))? {
            Response::Error(reply) => Err(ControlError::Daemon { socket: socket.clone(), reply }),
            other => Ok(other),
        }
    }

    /// The answer to a [`status_request`].
    pub fn status(self) -> Result<StatusReport, ControlError> {
        let socket = self.socket.clone();
        match self.receive()? {
            Response::Status(report) => Ok(*report),
            _ => Err(ControlError::Unexpected { socket, what: "status" }),
        }
    }

    /// The answer to a [`peers_request`].
    pub fn peers(self) -> Result<PeersReport, ControlError> {
        let socket = self.socket.clone();
        match self.receive()? {
            Response::Peers(report) => Ok(report),
            _ => Err(ControlError::Unexpected { socket, what: "peers" }),
        }
    }
}

/// `status` of the node and every torrent.
pub fn status_request() -> EncodedRequest {
    EncodedRequest::new(Request::Status { id: None })
}

/// `peers` of one torrent.
pub fn peers_request(id: &str) -> EncodedRequest {
    EncodedRequest::new(Request::Peers { id: id.to_string() })
}

/// The `add` request for descriptor text read from `source`.
pub fn add_request(descriptor: &str, source: &Path) -> EncodedRequest {
    EncodedRequest::new(Request::Add {
        descriptor: descriptor.to_string(),
        source: source.display().to_string(),
        data_dir: None,
        adopt: false,
    })
}
