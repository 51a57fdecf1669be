//! One request, one response on a daemon's control socket, through p2pd's own blocking client
//! ([`p2pd::control::client`]).
//!
//! The testbed talks to every daemon directly rather than spawning `p2pctl`: it polls every
//! daemon of a fleet several times a second, and a process per poll would steal the CPU the run
//! is measuring. The poll sends to every daemon before it reads any answer
//! ([`ControlClient::send`], then [`PendingAnswer`]), so that a sweep over a CPU-bound fleet of
//! 64 takes about as long as the slowest answer rather than the sum of them all (measured:
//! 6–9 s per sweep sent one by one, with 64 daemons on 2 cores).

use std::path::Path;

pub use p2pd::control::client::{ClientError as ControlError, ControlClient, EncodedRequest, PendingAnswer};
use p2pd::control::protocol::Request;

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
        cache: false,
    })
}
