//! Setting a connection up: dialling (from the configured listen address), exchanging
//! handshakes within [`HANDSHAKE_TIMEOUT`], and the socket options every peer socket gets.

use std::net::{SocketAddr, TcpStream};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use smol::Async;

use super::HANDSHAKE_TIMEOUT;
use crate::swarm::wire::{self, HANDSHAKE_LEN, Handshake};

/// Why a peer's handshake was not read.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Invalid(#[from] wire::WireError),
}

/// Why a connection this node dialled ended before the handshakes were exchanged.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("handshake timed out")]
    TimedOut,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Handshake(#[from] HandshakeError),
}

/// Connects to `addr` from `local` (the address this node listens on, when it names one: the
/// peer then sees the connection come from the address discovery knows this node by), and
/// exchanges handshakes; returns the stream and the peer's handshake.
pub async fn connect(
    addr: SocketAddr,
    local: Option<std::net::IpAddr>,
    ours: Handshake,
) -> Result<(Async<TcpStream>, Handshake), ConnectError> {
    let attempt = async {
        let mut stream = match local.filter(|ip| ip.is_ipv4() == addr.is_ipv4()) {
            Some(ip) => dial_from(ip, addr).await?,
            None => Async::<TcpStream>::connect(addr).await?,
        };
        let _ = stream.get_ref().set_nodelay(true);
        stream.write_all(&wire::encode_handshake(&ours)).await?;
        let theirs = read_handshake(&mut stream).await?;
        Ok::<_, ConnectError>((stream, theirs))
    };
    match crate::deadline::within(HANDSHAKE_TIMEOUT, attempt).await {
        None => Err(ConnectError::TimedOut),
        Some(result) => result,
    }
}

/// A non-blocking connect from a bound local address.
async fn dial_from(local: std::net::IpAddr, to: SocketAddr) -> std::io::Result<Async<TcpStream>> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrStorage, bind, connect, socket};
    use std::os::fd::AsRawFd;
    let family = if to.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC, None)?;
    bind(fd.as_raw_fd(), &SockaddrStorage::from(SocketAddr::new(local, 0)))?;
    match connect(fd.as_raw_fd(), &SockaddrStorage::from(to)) {
        Ok(()) | Err(nix::errno::Errno::EINPROGRESS) => {}
        Err(e) => return Err(e.into()),
    }
    let stream = Async::new(TcpStream::from(fd))?;
    stream.writable().await?;
    match stream.get_ref().take_error()? {
        Some(e) => Err(e),
        None => {
            // Connected, or refused without SO_ERROR set yet: asking for the peer says which.
            stream.get_ref().peer_addr()?;
            Ok(stream)
        }
    }
}

/// Reads a peer's handshake.
pub async fn read_handshake(stream: &mut Async<TcpStream>) -> Result<Handshake, HandshakeError> {
    let mut buf = [0u8; HANDSHAKE_LEN];
    stream.read_exact(&mut buf).await?;
    Ok(wire::decode_handshake(&buf)?)
}

/// Most bytes a peer connection keeps written but not yet sent. Without a cap the kernel
/// buffers megabytes per connection on a slow link: data this node committed to one peer long
/// before it leaves (a seed's first copy waits behind it while others are turned away), and a
/// choke or cancel that cannot take it back.
const MAX_UNSENT: libc::c_int = 256 << 10;

/// Caps the connection's unsent bytes at [`MAX_UNSENT`] (`TCP_NOTSENT_LOWAT`); best effort.
pub(super) fn limit_unsent(stream: &Async<TcpStream>) {
    use std::os::fd::AsRawFd;
    let value = MAX_UNSENT;
    // SAFETY: setsockopt on a socket this connection owns, with a pointer to a c_int and its
    // size, as TCP_NOTSENT_LOWAT expects.
    let r = unsafe {
        libc::setsockopt(
            stream.get_ref().as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        log::debug!("TCP_NOTSENT_LOWAT: {}", std::io::Error::last_os_error());
    }
}
