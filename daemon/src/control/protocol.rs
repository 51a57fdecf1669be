//! The control protocol between p2pctl and p2pd: one definition, used by both.
//!
//! Transport: a Unix stream socket. Each message is a frame: a 4-byte big-endian length, then
//! that many bytes of JSON. The client sends one [`RequestEnvelope`] and reads one
//! [`Response`]; then either side may close. The envelope carries [`PROTOCOL_VERSION`]; a
//! daemon answers a request of another version with [`ErrorKind::Version`].
//!
//! Limits: a request is at most [`MAX_REQUEST_BYTES`] (an `add` carries a whole descriptor);
//! a response at most [`MAX_RESPONSE_BYTES`]. Lengths are checked before anything is read.
//! The functions here are pure: bytes in, values out; the socket code lives elsewhere.
//!
//! The JSON of [`StatusReport`] is also what `p2pctl status --json` prints; its schema is
//! documented in `docs/CONTROL.md` and versioned by [`STATUS_SCHEMA_VERSION`].

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::bounds;
use crate::descriptor::MAX_DESCRIPTOR_BYTES;
use crate::units::ByteRate;

/// Version of the request/response types.
pub const PROTOCOL_VERSION: u32 = 1;
/// Version of the `status --json` document.
pub const STATUS_SCHEMA_VERSION: u32 = 1;
/// Largest request frame: a descriptor plus room for the other fields.
pub const MAX_REQUEST_BYTES: usize = MAX_DESCRIPTOR_BYTES + (64 << 10);
/// Largest response frame.
pub const MAX_RESPONSE_BYTES: usize = 256 << 20;
/// Bytes of the length prefix.
pub const HEADER_BYTES: usize = 4;

/// What the client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Add a torrent from descriptor text.
    Add {
        /// The descriptor YAML, exactly as read from the file.
        descriptor: String,
        /// Where the descriptor came from, for messages.
        source: String,
        /// Absolute data directory; default: the daemon's `data_dir`.
        data_dir: Option<PathBuf>,
        /// Take over whatever is at the content path even if it does not verify (`--adopt`).
        /// Absent (old clients) means false; sent only when true, so older daemons still
        /// accept an `add` without it.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        adopt: bool,
        /// A cache torrent: it may be evicted under `retention:` (`--cache`). Sent only when
        /// true, as `adopt`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        cache: bool,
    },
    /// Stop managing a torrent; optionally delete its data.
    Remove { id: String, delete_data: bool },
    /// Node status and every torrent, or one torrent.
    Status { id: Option<String> },
    /// The swarm of one torrent as this node knows it.
    Peers { id: String },
    /// Re-read `p2pd.yaml` and `torrents/`.
    Reload,
    /// Recheck every piece of a torrent against its hash.
    Verify { id: String },
    /// Change a torrent's settings (`pause`, `resume`, `set`): applied live and recorded in its
    /// file in `torrents/`.
    Set { id: String, settings: SettingsChange },
    /// Take this node out of the fleet: start no downloads, seed until every torrent has
    /// `min_copies` other complete copies known in its swarm (or `timeout_secs`), then exit.
    /// Answered at once with where the drain starts or, with `wait`, when it ends (just
    /// before p2pd stops).
    Drain {
        min_copies: u32,
        timeout_secs: Option<u64>,
        #[serde(default)]
        wait: bool,
    },
}

/// The settings `set` changes; an absent field is left as it is. The same bounds as in a
/// torrent file apply (checked while the request is decoded).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsChange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    /// `0` or unlimited removes the torrent's own limit.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "bounds::optional_byte_rate::<bounds::TorrentDownloadRate, _>"
    )]
    pub download_rate: Option<ByteRate>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "bounds::optional_byte_rate::<bounds::TorrentUploadRate, _>"
    )]
    pub upload_rate: Option<ByteRate>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "bounds::optional_number::<bounds::TorrentMaxPeers, _, _>"
    )]
    pub max_peers: Option<u32>,
    /// Put the torrent first in the download queue.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub priority: bool,
}

impl SettingsChange {
    pub fn is_empty(&self) -> bool {
        *self == SettingsChange::default()
    }
}

/// A request with the protocol version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestEnvelope {
    pub version: u32,
    pub request: Request,
}

/// What the daemon answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    Added(AddedReport),
    Removed(RemovedReport),
    Status(Box<StatusReport>),
    Peers(PeersReport),
    Reloaded(ReloadReport),
    Verifying(TorrentRef),
    Updated(UpdatedReport),
    Draining(DrainReport),
    Error(ErrorReply),
}

/// Where a drain stands (`drain`, and `node.drain` in `status` while one runs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainReport {
    /// Other complete copies each torrent waits for.
    pub min_copies: u32,
    /// Seconds until p2pd stops whatever the copies (none: no timeout).
    pub seconds_left: Option<u64>,
    /// The seeding torrents waited for, with the other complete copies known now.
    pub torrents: Vec<DrainTorrent>,
    /// Incomplete torrents stopped (their state saved) when the drain began.
    pub stopped: Vec<TorrentRef>,
    /// The drain is over and p2pd is stopping (the answer to a `wait`ing drain).
    #[serde(default)]
    pub done: bool,
}

/// One seeding torrent of a drain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainTorrent {
    pub info_hash: String,
    pub name: String,
    /// Other nodes known to hold every piece: connected peers that have them all, and swarm
    /// members that announced themselves seeding.
    pub copies: u32,
}

impl DrainReport {
    /// Whether every torrent has its copies.
    pub fn satisfied(&self) -> bool {
        self.torrents.iter().all(|t| t.copies >= self.min_copies)
    }
}

/// What `set` (or `pause`, `resume`) changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdatedReport {
    pub info_hash: String,
    pub name: String,
    /// One line per change now in effect (empty: the torrent already had these settings).
    pub changes: Vec<String>,
    /// The torrent's file, where the settings are recorded.
    pub file: PathBuf,
}

/// Why a request failed; p2pctl maps each kind to an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request could not be decoded.
    BadRequest,
    /// The request names a protocol version this daemon does not speak.
    Version,
    /// The client is not allowed to use the socket.
    Refused,
    /// No torrent matches the ID.
    NotFound,
    /// Several torrents match the ID.
    Ambiguous,
    /// The input (descriptor, settings) is invalid.
    Invalid,
    /// The daemon could not carry out a valid request.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub kind: ErrorKind,
    /// One line for a human.
    pub message: String,
}

/// Names one torrent in a reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TorrentRef {
    pub info_hash: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddedReport {
    pub info_hash: String,
    pub name: String,
    /// The torrent was already managed; nothing changed.
    pub already_present: bool,
    /// The torrent file that records it.
    pub file: PathBuf,
    pub data_dir: PathBuf,
    /// `--adopt` made the torrent the owner of what is at its content path (which is now
    /// checked again). Absent from older daemons.
    #[serde(default)]
    pub adopted: bool,
    /// The torrent is cache (`add --cache`, `cache: true`): retention may evict it. For one
    /// already present, what it was (an `add` does not change it). Absent from older daemons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedReport {
    pub info_hash: String,
    pub name: String,
    pub data_deleted: bool,
    /// With `delete_data`: why nothing was deleted (the content was never this torrent's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_kept: Option<String>,
}

/// The outcome of a reload, one line per item.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReloadReport {
    /// Changes now in effect.
    pub applied: Vec<String>,
    /// Changes read but only effective after a restart.
    pub needs_restart: Vec<String>,
    /// Files or keys that were invalid; their previous state is kept.
    pub rejected: Vec<String>,
}

/// Lifecycle state of a torrent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TorrentState {
    /// Hashing data on disk.
    Checking,
    /// Missing pieces; fetching them.
    Leeching,
    /// Complete and verified; serving.
    Seeding,
    /// Stopped by its settings.
    Paused,
    /// Checked and incomplete, waiting for its turn to download (`limits.max_active_downloads`).
    Queued,
    /// Stopped by a problem (see `error`).
    Error,
}

impl TorrentState {
    /// Every state, in the order `status` documents them.
    pub const ALL: [TorrentState; 6] = [
        TorrentState::Checking,
        TorrentState::Queued,
        TorrentState::Leeching,
        TorrentState::Seeding,
        TorrentState::Paused,
        TorrentState::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TorrentState::Checking => "checking",
            TorrentState::Leeching => "leeching",
            TorrentState::Seeding => "seeding",
            TorrentState::Paused => "paused",
            TorrentState::Queued => "queued",
            TorrentState::Error => "error",
        }
    }
}

/// `status --json`: the node and its torrents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// [`STATUS_SCHEMA_VERSION`].
    pub version: u32,
    pub node: NodeStatus,
    pub torrents: Vec<TorrentStatus>,
}

/// The node part of a status report.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NodeStatus {
    /// p2pd's version.
    pub daemon_version: String,
    pub pid: u32,
    pub uptime_secs: u64,
    /// This node's id, 64 hex digits.
    pub node_id: String,
    /// Address of the UDP RPC and TCP peer port.
    pub listen: String,
    pub config_dir: PathBuf,
    pub state_dir: PathBuf,
    pub data_dir: PathBuf,
    pub control_socket: PathBuf,
    /// Torrents managed.
    pub torrents: usize,
    /// Total rates over all torrents, bytes per second.
    pub download_rate: u64,
    pub upload_rate: u64,
    /// Nodes in the discovery routing table.
    pub routing_table_size: u64,
    /// Discovery RPC counters.
    pub rpc: RpcCounters,
    /// get_peers lookups this node made.
    pub lookups: LookupStats,
    /// Peer-wire connections, over every torrent.
    #[serde(default)]
    pub peer_connections: ConnectionCounters,
    /// State files that could not be read at start-up (moved aside), one line each.
    pub state_warnings: Vec<String>,
    /// The drain in progress (`p2pctl drain`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainReport>,
}

/// Discovery RPC counters since start-up. Every datagram received is counted exactly once as
/// `handled`, `dropped_malformed`, `rate_limited` or `dropped_unsolicited`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RpcCounters {
    /// Datagrams sent (retries included).
    pub sent: u64,
    /// Datagrams received.
    pub received: u64,
    /// Requests that went unanswered after every retry.
    pub timeouts: u64,
    /// Requests sent again after a timeout.
    pub retries: u64,
    /// Received datagrams that were not valid protocol messages.
    pub dropped_malformed: u64,
    /// Received datagrams over their source's rate limit.
    pub rate_limited: u64,
    /// Received datagrams processed.
    pub handled: u64,
    /// Answers nobody asked for (or datagrams from this node itself).
    pub dropped_unsolicited: u64,
    /// Requests refused for a missing or stale token (answered with `retry`).
    pub bad_tokens: u64,
    /// Requests seen before (loops, duplicates): acknowledged, not handled twice.
    pub duplicates: u64,
    /// get_peers requests forwarded towards their info hash.
    pub forwarded: u64,
    /// Answers not sent because they would have exceeded the anti-amplification budget.
    pub amplification_suppressed: u64,
    /// Announces answered but not stored: for a swarm this node is neither a member of nor
    /// among the `k` closest to.
    #[serde(default)]
    pub announces_not_stored: u64,
    /// Announces not stored because their source host created stored swarms too fast.
    #[serde(default)]
    pub new_swarms_limited: u64,
    /// Requests for others dropped because forwards held every slot they may take (the rest
    /// is kept for this node's own lookups).
    #[serde(default)]
    pub forwards_refused: u64,
}

/// Peer-wire (TCP) connections since start-up, over every torrent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ConnectionCounters {
    /// Connections this node opened (TCP connect, then handshakes).
    pub dialed: u64,
    /// Of those, the ones that failed before the handshakes were exchanged (refused, reset,
    /// closed by the other end, timed out).
    pub dial_failed: u64,
    /// Of the failed ones, those the handshake timeout (10 s) ended.
    pub dial_timed_out: u64,
    /// Connections accepted on the peer port.
    pub accepted: u64,
    /// Of those, the ones closed before they reached a torrent: per-address or pending-
    /// handshake caps, no valid handshake in time, a swarm this node does not serve.
    pub incoming_dropped: u64,
    /// Connections (either direction) a torrent took on.
    pub established: u64,
    /// Connections (either direction) a torrent turned away: no room, a duplicate, a banned
    /// address, this node itself.
    pub refused: u64,
}

/// get_peers lookups since start-up; latencies over the most recent ones that found a swarm.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct LookupStats {
    pub completed: u64,
    /// Lookups that reached a node knowing the swarm.
    pub found: u64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
}

/// One torrent in a status report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TorrentStatus {
    pub info_hash: String,
    pub name: String,
    pub state: TorrentState,
    /// Total content bytes.
    pub length: u64,
    /// Bytes in verified pieces.
    pub bytes_done: u64,
    pub pieces_done: u64,
    pub pieces_total: u64,
    /// Connected peers.
    pub peers: u32,
    /// Bytes per second, averaged over the last few seconds.
    pub download_rate: u64,
    pub upload_rate: u64,
    /// Payload bytes since the torrent was added.
    pub downloaded: u64,
    pub uploaded: u64,
    /// Seconds until complete at the current rate, when leeching.
    pub eta_secs: Option<u64>,
    /// Why the torrent is in `error`.
    pub error: Option<String>,
    /// Seconds since the torrent was (re)started by this daemon.
    pub running_secs: u64,
    /// Seconds from that start to the first piece fetched from a peer and verified (none yet,
    /// or nothing to fetch).
    #[serde(default)]
    pub first_piece_secs: Option<f64>,
    /// Seconds from that start to complete and verified (`seeding`), if reached in this run.
    #[serde(default)]
    pub completed_secs: Option<f64>,
    /// A cache torrent may be evicted to keep its filesystem below `retention.high_water`.
    #[serde(default)]
    pub cache: bool,
    /// When the content was first complete and verified on this node, in seconds since 1970
    /// (kept across restarts; evictions go least recently completed first).
    #[serde(default)]
    pub completed_at: Option<u64>,
    /// Where the content is.
    pub data_dir: PathBuf,
    /// The torrent file, relative to `torrents/`.
    pub file: String,
}

/// `peers ID`: one swarm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeersReport {
    pub info_hash: String,
    pub name: String,
    pub peers: Vec<PeerInfo>,
}

/// One peer of a swarm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub address: String,
    pub node_id: String,
    /// `idle`, `leeching`, `seeding`, `leaving` or `draining`, as the peer announced.
    pub status: String,
    /// Seconds since the peer was last heard from.
    pub last_seen_secs: u64,
    /// Whether a peer-wire connection is open.
    pub connected: bool,
    /// Pieces the peer sent that failed verification.
    pub strikes: u32,
    /// The peer sent bad data too often and is refused.
    pub banned: bool,
    pub downloaded: u64,
    pub uploaded: u64,
    /// The peer-wire state of the open connection; absent when none is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wire: Option<WireState>,
}

/// Who is choking and who is interested on a peer-wire connection, and what is owed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireState {
    /// We want pieces it has.
    pub interested: bool,
    /// It refuses our requests.
    pub choked_by_peer: bool,
    /// It wants pieces we have.
    pub peer_interested: bool,
    /// We refuse its requests (our upload slots are taken by others).
    pub choking: bool,
    /// Bytes of pieces we asked it for and have not received.
    pub requested_bytes: u64,
    /// Seconds since it last sent us a block we asked for, if it ever did.
    pub last_block_secs: Option<u64>,
    /// It stalled with our requests outstanding and has not delivered since: asked for one
    /// piece at a time. Absent from daemons older than this field.
    #[serde(default)]
    pub snubbed: bool,
}

impl WireState {
    /// Transmission-style flags: `D` downloading from it, `d` we would but it chokes us,
    /// `U` uploading to it, `u` it would download but we choke it, `K` it unchoked us but we
    /// want nothing, `?` we unchoked it but it wants nothing; `S` it is snubbed (µTorrent's).
    pub fn flags(&self) -> String {
        let mut f = String::new();
        match (self.interested, self.choked_by_peer) {
            (true, false) => f.push('D'),
            (true, true) => f.push('d'),
            (false, false) => f.push('K'),
            (false, true) => {}
        }
        match (self.peer_interested, self.choking) {
            (true, false) => f.push('U'),
            (true, true) => f.push('u'),
            (false, false) => f.push('?'),
            (false, true) => {}
        }
        if self.snubbed {
            f.push('S');
        }
        f
    }
}

/// A frame that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("message is not valid JSON for this protocol: {0}")]
    Json(String),
    #[error("client speaks control protocol version {0}; this p2pd speaks version {PROTOCOL_VERSION}")]
    Version(u32),
}

/// Encodes a value as one frame.
pub fn encode_frame<T: Serialize>(value: &T) -> Vec<u8> {
    let body = serde_json::to_vec(value).unwrap_or_else(|e| unreachable!("protocol types serialize: {e}"));
    let mut frame = Vec::with_capacity(HEADER_BYTES + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

/// Reads the body length from a frame header, rejecting lengths above `max`.
pub fn decode_header(header: [u8; HEADER_BYTES], max: usize) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len)
}

/// Decodes a request body, checking the version before the request itself.
pub fn decode_request(body: &[u8]) -> Result<Request, FrameError> {
    #[derive(Deserialize)]
    struct VersionOnly {
        version: u32,
    }
    let v: VersionOnly = serde_json::from_slice(body).map_err(|e| FrameError::Json(e.to_string()))?;
    if v.version != PROTOCOL_VERSION {
        return Err(FrameError::Version(v.version));
    }
    let envelope: RequestEnvelope = serde_json::from_slice(body).map_err(|e| FrameError::Json(e.to_string()))?;
    Ok(envelope.request)
}

/// Decodes a response body.
pub fn decode_response(body: &[u8]) -> Result<Response, FrameError> {
    serde_json::from_slice(body).map_err(|e| FrameError::Json(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_flags_read_like_transmissions() {
        let w = |interested, choked_by_peer, peer_interested, choking| WireState {
            interested,
            choked_by_peer,
            peer_interested,
            choking,
            requested_bytes: 0,
            last_block_secs: None,
            snubbed: false,
        };
        assert_eq!(w(true, false, true, false).flags(), "DU");
        assert_eq!(WireState { snubbed: true, ..w(true, false, false, true) }.flags(), "DS");
        assert_eq!(w(true, true, true, true).flags(), "du");
        assert_eq!(w(false, false, false, false).flags(), "K?");
        assert_eq!(w(false, true, false, true).flags(), "");
    }

    #[test]
    fn peer_info_without_wire_state_still_parses() {
        let json = r#"{"address":"10.0.0.1:6690","node_id":"00","status":"idle","last_seen_secs":3,
            "connected":false,"strikes":0,"banned":false,"downloaded":0,"uploaded":0}"#;
        let p: PeerInfo = serde_json::from_str(json).unwrap();
        assert_eq!(p.wire, None);
        assert!(!serde_json::to_string(&p).unwrap().contains("wire"));
    }

    fn body(frame: &[u8]) -> &[u8] {
        let len = decode_header(frame[..4].try_into().unwrap(), MAX_REQUEST_BYTES).unwrap();
        assert_eq!(len, frame.len() - 4);
        &frame[4..]
    }

    #[test]
    fn request_round_trip() {
        let requests = [
            Request::Add {
                descriptor: "x".into(),
                source: "a.desc".into(),
                data_dir: Some("/d".into()),
                adopt: false,
                cache: false,
            },
            Request::Add { descriptor: "x".into(), source: "a.desc".into(), data_dir: None, adopt: true, cache: true },
            Request::Remove { id: "ab".into(), delete_data: true },
            Request::Status { id: None },
            Request::Peers { id: "x".into() },
            Request::Reload,
            Request::Verify { id: "x".into() },
            Request::Set {
                id: "x".into(),
                settings: SettingsChange {
                    paused: Some(true),
                    download_rate: Some(ByteRate(Some(5_000_000))),
                    upload_rate: Some(ByteRate::UNLIMITED),
                    max_peers: Some(9),
                    priority: true,
                },
            },
        ];
        for r in requests {
            let frame = encode_frame(&RequestEnvelope { version: PROTOCOL_VERSION, request: r.clone() });
            assert_eq!(decode_request(body(&frame)).unwrap(), r);
        }
    }

    #[test]
    fn oversized_header_is_rejected_before_reading() {
        let header = (u32::MAX).to_be_bytes();
        assert!(matches!(decode_header(header, MAX_REQUEST_BYTES), Err(FrameError::TooLarge { .. })));
    }

    /// `adopt` is new: requests from older clients (without it) still decode, and a request
    /// without adoption looks exactly as before (older daemons reject unknown fields).
    #[test]
    fn add_without_adopt_is_the_old_request() {
        let old = br#"{"version":1,"request":{"type":"add","descriptor":"x","source":"a.desc","data_dir":null}}"#;
        let Request::Add { adopt, .. } = decode_request(old).unwrap() else { panic!("not an add") };
        assert!(!adopt);
        let new = Request::Add {
            descriptor: "x".into(),
            source: "a.desc".into(),
            data_dir: None,
            adopt: false,
            cache: false,
        };
        let frame = encode_frame(&RequestEnvelope { version: PROTOCOL_VERSION, request: new });
        assert_eq!(body(&frame), &old[..]);
        let old_reply = br#"{"type":"removed","info_hash":"ab","name":"x","data_deleted":true}"#;
        assert!(matches!(
            decode_response(old_reply).unwrap(),
            Response::Removed(RemovedReport { data_kept: None, .. })
        ));
    }

    #[test]
    fn other_versions_are_named() {
        let e = decode_request(br#"{"version": 7, "request": {"type": "frobnicate"}}"#).unwrap_err();
        assert_eq!(e, FrameError::Version(7));
    }

    #[test]
    fn garbage_is_an_error() {
        for input in [&b""[..], b"{", b"[]", b"{\"version\":1}", b"{\"version\":1,\"request\":{\"type\":\"add\"}}"] {
            assert!(decode_request(input).is_err(), "{input:?}");
        }
    }
}
