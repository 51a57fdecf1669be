//! The discovery RPC wire format: pure functions from values to bytes and back.
//!
//! Every datagram (at most [`MAX_DATAGRAM`] bytes) starts with a 40-byte header:
//!
//! ```text
//! magic "P2" (2) | version (1) | type (1) | transaction id (u32) | sender node id (32)
//! ```
//!
//! then a body whose layout depends on the type (see `docs/PROTOCOL.md`). Integers are
//! big-endian; addresses are `family (4|6) | ip (4|16) | port (u16)`; counts are a `u8` and are
//! checked against a named maximum before anything is allocated. Requests end with padding
//! (`u16` length, then that many zero bytes) up to [`MIN_REQUEST_LEN`], so that no answer
//! sent to an address that has not proven it receives its traffic is ever larger than what
//! was received from it. Decoding never panics: any deviation — wrong magic or version,
//! unknown type, truncation, trailing bytes, non-zero padding, bad counts — is a
//! [`WireError`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::descriptor::InfoHash;
use crate::node_id::NodeId;

pub const MAGIC: [u8; 2] = *b"P2";
/// The protocol version this build speaks.
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 40;
/// Largest datagram sent or accepted: fits the IPv6 minimum MTU with headers.
pub const MAX_DATAGRAM: usize = 1232;
/// Every request is padded to at least this many bytes (see module docs).
pub const MIN_REQUEST_LEN: usize = 192;
pub const TOKEN_LEN: usize = 16;
/// Most node records in a `Nodes` answer.
pub const MAX_NODES: usize = 16;
/// Most peer records in a `Peers` answer.
pub const MAX_PEERS: usize = 20;

/// `holder` byte of `Peers` when the answering node is not a member itself.
const NOT_MEMBER: u8 = 0xff;

/// A return-routability token: proof that its holder received a datagram at its address.
pub type Token = [u8; TOKEN_LEN];

/// What a swarm member says it is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerStatus {
    /// Joined, not yet transferring.
    Idle,
    Leeching,
    Seeding,
    /// About to go away.
    Leaving,
    /// Has every piece and serves them, but is draining (`p2pctl drain`): it will leave once
    /// enough others hold copies, so it is not counted as one. Sent only in `announce`: a
    /// node lists a draining member (and itself as a `holder`) as seeding, because for whoever
    /// reads a list it serves like a seed, and builds from before this status reject the code.
    Draining,
}

impl PeerStatus {
    fn code(self) -> u8 {
        match self {
            PeerStatus::Idle => 0,
            PeerStatus::Leeching => 1,
            PeerStatus::Seeding => 2,
            PeerStatus::Leaving => 3,
            PeerStatus::Draining => 4,
        }
    }

    fn from_code(c: u8) -> Option<PeerStatus> {
        Some(match c {
            0 => PeerStatus::Idle,
            1 => PeerStatus::Leeching,
            2 => PeerStatus::Seeding,
            3 => PeerStatus::Leaving,
            4 => PeerStatus::Draining,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PeerStatus::Idle => "idle",
            PeerStatus::Leeching => "leeching",
            PeerStatus::Seeding => "seeding",
            PeerStatus::Leaving => "leaving",
            PeerStatus::Draining => "draining",
        }
    }

    /// How a member with this status appears in a `peers` list (see [`PeerStatus::Draining`]).
    pub fn listed(self) -> PeerStatus {
        match self {
            PeerStatus::Draining => PeerStatus::Seeding,
            s => s,
        }
    }
}

/// A node: its id and where it listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeRecord {
    pub id: NodeId,
    pub addr: SocketAddr,
}

/// A swarm member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerRecord {
    pub id: NodeId,
    pub addr: SocketAddr,
    pub status: PeerStatus,
}

/// Message bodies. Requests first, then answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Are you there? Answered by `Pong`.
    Ping,
    /// Which nodes do you know closest to `target`? Answered by `Nodes` (or `Retry`).
    FindNode {
        target: [u8; 32],
        token: Token,
    },
    /// Who is in this swarm? Sent by the origin to a node. Answered by `Peers` if the node
    /// knows the swarm, else `Forwarded` (it forwards the request) or `NotFound`.
    GetPeers {
        info_hash: InfoHash,
        request_id: u64,
        hop_limit: u8,
        token: Token,
    },
    /// A `GetPeers` on its way towards the info hash, carrying the origin as the first hop
    /// saw it. Answered by `Forwarded` (an acknowledgement). A node that knows the swarm
    /// sends `Found` to the origin; one that is the end of the path sends `NotFound`.
    Forward {
        info_hash: InfoHash,
        request_id: u64,
        hops: u8,
        hops_left: u8,
        origin: NodeRecord,
        token: Token,
    },
    /// I am in this swarm, with this status. Answered by `Announced`.
    Announce {
        info_hash: InfoHash,
        status: PeerStatus,
        token: Token,
    },
    Pong {
        token: Token,
        observed: SocketAddr,
    },
    Nodes {
        nodes: Vec<NodeRecord>,
    },
    /// The swarm's members; `holder` is the answering node's own status if it is a member.
    Peers {
        request_id: u64,
        info_hash: InfoHash,
        holder: Option<PeerStatus>,
        peers: Vec<PeerRecord>,
    },
    Forwarded {
        request_id: u64,
    },
    /// To the origin: I know this swarm; ask me directly with this token.
    Found {
        request_id: u64,
        info_hash: InfoHash,
        hops: u8,
        token: Token,
    },
    NotFound {
        request_id: u64,
        info_hash: InfoHash,
        hops: u8,
    },
    Announced {
        info_hash: InfoHash,
    },
    /// The answer to a `draining` announce (only builds that know that status get one): as
    /// `Announced`, with the answering node's own status in the swarm, unlisted (`draining`
    /// included; none: not a member). A draining node counts another copy only by this answer.
    AnnouncedDraining {
        info_hash: InfoHash,
        holder: Option<PeerStatus>,
    },
    /// Your token is missing or stale; here is a fresh one. Repeat the request with it.
    Retry {
        token: Token,
    },
}

impl Body {
    fn code(&self) -> u8 {
        match self {
            Body::Ping => 0x01,
            Body::FindNode { .. } => 0x02,
            Body::GetPeers { .. } => 0x03,
            Body::Forward { .. } => 0x04,
            Body::Announce { .. } => 0x05,
            Body::Pong { .. } => 0x81,
            Body::Nodes { .. } => 0x82,
            Body::Peers { .. } => 0x83,
            Body::Forwarded { .. } => 0x84,
            Body::Found { .. } => 0x85,
            Body::NotFound { .. } => 0x86,
            Body::Announced { .. } => 0x87,
            Body::AnnouncedDraining { .. } => 0x89,
            Body::Retry { .. } => 0x88,
        }
    }

    /// Whether this is a request (padded; expects an answer).
    pub fn is_request(&self) -> bool {
        self.code() < 0x80
    }

    /// Short name for logs and counters.
    pub fn name(&self) -> &'static str {
        match self {
            Body::Ping => "ping",
            Body::FindNode { .. } => "find_node",
            Body::GetPeers { .. } => "get_peers",
            Body::Forward { .. } => "forward",
            Body::Announce { .. } => "announce",
            Body::Pong { .. } => "pong",
            Body::Nodes { .. } => "nodes",
            Body::Peers { .. } => "peers",
            Body::Forwarded { .. } => "forwarded",
            Body::Found { .. } => "found",
            Body::NotFound { .. } => "not_found",
            Body::Announced { .. } => "announced",
            Body::AnnouncedDraining { .. } => "announced_draining",
            Body::Retry { .. } => "retry",
        }
    }
}

/// A whole datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Chosen by the requester; echoed by the answer.
    pub txid: u32,
    pub sender: NodeId,
    pub body: Body,
}

/// Why bytes are not a valid datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("datagram of {0} bytes exceeds {MAX_DATAGRAM}")]
    TooLong(usize),
    #[error("shorter than its header")]
    TooShort,
    #[error("bad magic")]
    BadMagic,
    #[error("protocol version {0} (this node speaks {VERSION})")]
    Version(u8),
    #[error("unknown message type 0x{0:02x}")]
    UnknownType(u8),
    #[error("truncated body")]
    Truncated,
    #[error("{0} bytes after the body")]
    Trailing(usize),
    #[error("invalid padding")]
    BadPadding,
    #[error("invalid address")]
    BadAddress,
    #[error("count {0} above the maximum")]
    TooMany(usize),
    #[error("invalid peer status {0}")]
    BadStatus(u8),
}

/// Encodes a packet, padding requests to [`MIN_REQUEST_LEN`].
pub fn encode(packet: &Packet) -> Vec<u8> {
    let mut w = Vec::with_capacity(MIN_REQUEST_LEN);
    w.extend_from_slice(&MAGIC);
    w.push(VERSION);
    w.push(packet.body.code());
    w.extend_from_slice(&packet.txid.to_be_bytes());
    w.extend_from_slice(&packet.sender.0);
    match &packet.body {
        Body::Ping => {}
        Body::FindNode { target, token } => {
            w.extend_from_slice(target);
            w.extend_from_slice(token);
        }
        Body::GetPeers { info_hash, request_id, hop_limit, token } => {
            w.extend_from_slice(&info_hash.0);
            w.extend_from_slice(&request_id.to_be_bytes());
            w.push(*hop_limit);
            w.extend_from_slice(token);
        }
        Body::Forward { info_hash, request_id, hops, hops_left, origin, token } => {
            w.extend_from_slice(&info_hash.0);
            w.extend_from_slice(&request_id.to_be_bytes());
            w.push(*hops);
            w.push(*hops_left);
            put_node(&mut w, origin);
            w.extend_from_slice(token);
        }
        Body::Announce { info_hash, status, token } => {
            w.extend_from_slice(&info_hash.0);
            w.push(status.code());
            w.extend_from_slice(token);
        }
        Body::Pong { token, observed } => {
            w.extend_from_slice(token);
            put_addr(&mut w, observed);
        }
        Body::Nodes { nodes } => {
            let n = nodes.len().min(MAX_NODES);
            w.push(n as u8);
            for node in &nodes[..n] {
                put_node(&mut w, node);
            }
        }
        Body::Peers { request_id, info_hash, holder, peers } => {
            w.extend_from_slice(&request_id.to_be_bytes());
            w.extend_from_slice(&info_hash.0);
            w.push(holder.map(PeerStatus::code).unwrap_or(NOT_MEMBER));
            let n = peers.len().min(MAX_PEERS);
            w.push(n as u8);
            for p in &peers[..n] {
                w.extend_from_slice(&p.id.0);
                put_addr(&mut w, &p.addr);
                w.push(p.status.code());
            }
        }
        Body::Forwarded { request_id } => w.extend_from_slice(&request_id.to_be_bytes()),
        Body::Found { request_id, info_hash, hops, token } => {
            w.extend_from_slice(&request_id.to_be_bytes());
            w.extend_from_slice(&info_hash.0);
            w.push(*hops);
            w.extend_from_slice(token);
        }
        Body::NotFound { request_id, info_hash, hops } => {
            w.extend_from_slice(&request_id.to_be_bytes());
            w.extend_from_slice(&info_hash.0);
            w.push(*hops);
        }
        Body::Announced { info_hash } => w.extend_from_slice(&info_hash.0),
        Body::AnnouncedDraining { info_hash, holder } => {
            w.extend_from_slice(&info_hash.0);
            w.push(holder.map(PeerStatus::code).unwrap_or(NOT_MEMBER));
        }
        Body::Retry { token } => w.extend_from_slice(token),
    }
    if packet.body.is_request() {
        let pad = MIN_REQUEST_LEN.saturating_sub(w.len() + 2);
        w.extend_from_slice(&(pad as u16).to_be_bytes());
        w.resize(w.len() + pad, 0);
    }
    debug_assert!(w.len() <= MAX_DATAGRAM);
    w
}

fn put_addr(w: &mut Vec<u8>, addr: &SocketAddr) {
    match canonical(*addr) {
        SocketAddr::V4(a) => {
            w.push(4);
            w.extend_from_slice(&a.ip().octets());
            w.extend_from_slice(&a.port().to_be_bytes());
        }
        SocketAddr::V6(a) => {
            w.push(6);
            w.extend_from_slice(&a.ip().octets());
            w.extend_from_slice(&a.port().to_be_bytes());
        }
    }
}

fn put_node(w: &mut Vec<u8>, node: &NodeRecord) {
    w.extend_from_slice(&node.id.0);
    put_addr(w, &node.addr);
}

/// IPv4-mapped IPv6 addresses (what a dual-stack socket reports) as plain IPv4.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => addr,
        },
        v4 => v4,
    }
}

/// A cursor over a datagram; every read is bounds-checked.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A `holder` byte: a status, or [`NOT_MEMBER`].
    fn holder(&mut self) -> Result<Option<PeerStatus>, WireError> {
        Ok(match self.u8()? {
            NOT_MEMBER => None,
            code => Some(PeerStatus::from_code(code).ok_or(WireError::BadStatus(code))?),
        })
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.bytes.len() < n {
            return Err(WireError::Truncated);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn addr(&mut self) -> Result<SocketAddr, WireError> {
        let ip = match self.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
            _ => return Err(WireError::BadAddress),
        };
        let port = self.u16()?;
        let mapped = matches!(ip, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some());
        if port == 0 || ip.is_unspecified() || ip.is_multicast() || mapped {
            // Mapped addresses are always sent as IPv4: one address, one encoding.
            return Err(WireError::BadAddress);
        }
        Ok(SocketAddr::new(ip, port))
    }

    fn node(&mut self) -> Result<NodeRecord, WireError> {
        Ok(NodeRecord { id: NodeId(self.array()?), addr: self.addr()? })
    }

    fn count(&mut self, max: usize) -> Result<usize, WireError> {
        let n = self.u8()? as usize;
        if n > max {
            return Err(WireError::TooMany(n));
        }
        Ok(n)
    }
}

/// Decodes one datagram.
pub fn decode(bytes: &[u8]) -> Result<Packet, WireError> {
    if bytes.len() > MAX_DATAGRAM {
        return Err(WireError::TooLong(bytes.len()));
    }
    if bytes.len() < HEADER_LEN {
        return Err(WireError::TooShort);
    }
    let mut r = Reader { bytes };
    if r.array::<2>()? != MAGIC {
        return Err(WireError::BadMagic);
    }
    let version = r.u8()?;
    if version != VERSION {
        return Err(WireError::Version(version));
    }
    let code = r.u8()?;
    let txid = r.u32()?;
    let sender = NodeId(r.array()?);
    let body = match code {
        0x01 => Body::Ping,
        0x02 => Body::FindNode { target: r.array()?, token: r.array()? },
        0x03 => Body::GetPeers {
            info_hash: InfoHash(r.array()?),
            request_id: r.u64()?,
            hop_limit: r.u8()?,
            token: r.array()?,
        },
        0x04 => Body::Forward {
            info_hash: InfoHash(r.array()?),
            request_id: r.u64()?,
            hops: r.u8()?,
            hops_left: r.u8()?,
            origin: r.node()?,
            token: r.array()?,
        },
        0x05 => {
            let info_hash = InfoHash(r.array()?);
            let code = r.u8()?;
            let status = PeerStatus::from_code(code).ok_or(WireError::BadStatus(code))?;
            Body::Announce { info_hash, status, token: r.array()? }
        }
        0x81 => Body::Pong { token: r.array()?, observed: r.addr()? },
        0x82 => {
            let n = r.count(MAX_NODES)?;
            let nodes = (0..n).map(|_| r.node()).collect::<Result<_, _>>()?;
            Body::Nodes { nodes }
        }
        0x83 => {
            let request_id = r.u64()?;
            let info_hash = InfoHash(r.array()?);
            let holder = r.holder()?;
            let n = r.count(MAX_PEERS)?;
            let mut peers = Vec::with_capacity(n);
            for _ in 0..n {
                let id = NodeId(r.array()?);
                let addr = r.addr()?;
                let code = r.u8()?;
                let status = PeerStatus::from_code(code).ok_or(WireError::BadStatus(code))?;
                peers.push(PeerRecord { id, addr, status });
            }
            Body::Peers { request_id, info_hash, holder, peers }
        }
        0x84 => Body::Forwarded { request_id: r.u64()? },
        0x85 => Body::Found { request_id: r.u64()?, info_hash: InfoHash(r.array()?), hops: r.u8()?, token: r.array()? },
        0x86 => Body::NotFound { request_id: r.u64()?, info_hash: InfoHash(r.array()?), hops: r.u8()? },
        0x87 => Body::Announced { info_hash: InfoHash(r.array()?) },
        0x89 => Body::AnnouncedDraining { info_hash: InfoHash(r.array()?), holder: r.holder()? },
        0x88 => Body::Retry { token: r.array()? },
        other => return Err(WireError::UnknownType(other)),
    };
    if code < 0x80 {
        // Exactly the padding `encode` writes: a shorter request could draw a larger answer.
        let unpadded = bytes.len() - r.bytes.len() + 2;
        let pad = r.u16()? as usize;
        if pad != MIN_REQUEST_LEN.saturating_sub(unpadded) {
            return Err(WireError::BadPadding);
        }
        let padding = r.take(pad)?;
        if padding.iter().any(|&b| b != 0) {
            return Err(WireError::BadPadding);
        }
    }
    if !r.bytes.is_empty() {
        return Err(WireError::Trailing(r.bytes.len()));
    }
    Ok(Packet { txid, sender, body })
}

#[cfg(test)]
mod tests;
