//! The TCP peer port, shared by every torrent.
//!
//! Accepts connections, reads each handshake within [`HANDSHAKE_TIMEOUT`] (a client that
//! never finishes one costs a task for that long and no more), and hands the connection to
//! the torrent whose info hash it names; connections for other swarms, beyond the per-IP cap,
//! or beyond [`MAX_PENDING_HANDSHAKES`] waiting at once (from any number of addresses) are
//! closed. Which torrents are reachable is kept in a [`Registry`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use log::{debug, warn};
use smol::Async;

use super::connection::{HANDSHAKE_TIMEOUT, read_handshake};
use super::counters::{WireCounters, WireEvent};
use super::wire::Handshake;
use crate::descriptor::InfoHash;
use crate::tasks::TaskGroup;

/// A connection whose handshake named a torrent we serve.
pub struct Incoming {
    pub stream: Async<TcpStream>,
    pub handshake: Handshake,
    pub remote: SocketAddr,
    /// Held while the connection lives: counts against the per-IP cap.
    pub slot: IpSlot,
}

/// Torrents that accept connections, and connection counts per IP.
#[derive(Default)]
pub struct Registry {
    torrents: Mutex<HashMap<InfoHash, async_channel::Sender<Incoming>>>,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    /// Most connections (in and out) from or to one IP address.
    max_per_ip: Mutex<usize>,
}

/// One connection counted against its IP's cap; released on drop.
pub struct IpSlot {
    ip: IpAddr,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut m = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

impl Registry {
    pub fn new(max_per_ip: usize) -> Registry {
        Registry { max_per_ip: Mutex::new(max_per_ip), ..Default::default() }
    }

    pub fn set_max_per_ip(&self, n: usize) {
        *self.max_per_ip.lock().unwrap_or_else(|p| p.into_inner()) = n;
    }

    /// Accept connections for `info_hash`, delivered to `tx`.
    pub fn register(&self, info_hash: InfoHash, tx: async_channel::Sender<Incoming>) {
        self.torrents.lock().unwrap_or_else(|p| p.into_inner()).insert(info_hash, tx);
    }

    pub fn unregister(&self, info_hash: &InfoHash) {
        self.torrents.lock().unwrap_or_else(|p| p.into_inner()).remove(info_hash);
    }

    fn route(&self, info_hash: &InfoHash) -> Option<async_channel::Sender<Incoming>> {
        self.torrents.lock().unwrap_or_else(|p| p.into_inner()).get(info_hash).cloned()
    }

    /// Takes a slot for a connection to or from `ip`, if under the cap.
    pub fn take_slot(&self, ip: IpAddr) -> Option<IpSlot> {
        let max = *self.max_per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let mut m = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot { ip, per_ip: self.per_ip.clone() })
    }
}

/// Counts a connection as waiting for its handshake until dropped.
struct PendingGuard(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Binds the peer port (at start-up).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let l = TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Most connections waiting for their handshake at once.
pub const MAX_PENDING_HANDSHAKES: usize = 256;

/// Accepts connections until the task is dropped.
pub async fn serve(
    listener: Async<TcpListener>,
    registry: Arc<Registry>,
    counters: Arc<WireCounters>,
    executor: Arc<smol::Executor<'static>>,
) {
    let pending = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut handshakes = TaskGroup::new("peer handshake");
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!("peer port: accept failed: {e}");
                smol::Timer::after(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        counters.count(WireEvent::Accepted);
        // An accept with connections waiting never waits: without a turn, a flood of
        // connections would hold the one network thread (see `runtime::run`).
        futures_lite::future::yield_now().await;
        // On a dual-stack port an IPv4 peer arrives as ::ffff:a.b.c.d: name it as discovery,
        // bans and peer exchange do.
        let remote = crate::discovery::wire::canonical(remote);
        let Some(slot) = registry.take_slot(remote.ip()) else {
            counters.count(WireEvent::IncomingDropped);
            debug!("peer port: {remote}: too many connections from this address");
            continue;
        };
        if pending.fetch_add(1, Ordering::SeqCst) >= MAX_PENDING_HANDSHAKES {
            pending.fetch_sub(1, Ordering::SeqCst);
            counters.count(WireEvent::IncomingDropped);
            debug!("peer port: {remote}: too many handshakes pending");
            continue;
        }
        let registry = registry.clone();
        let pending = pending.clone();
        let counters = counters.clone();
        handshakes.spawn(&executor, async move {
            let _pending = PendingGuard(pending);
            let mut stream = stream;
            let _ = stream.get_ref().set_nodelay(true);
            let handshake = crate::deadline::within(HANDSHAKE_TIMEOUT, read_handshake(&mut stream)).await;
            let handshake = match handshake {
                Some(Ok(h)) => h,
                Some(Err(e)) => {
                    counters.count(WireEvent::IncomingDropped);
                    return debug!("peer port: {remote}: bad handshake: {e}");
                }
                None => {
                    counters.count(WireEvent::IncomingDropped);
                    return debug!("peer port: {remote}: no handshake within {HANDSHAKE_TIMEOUT:?}");
                }
            };
            let delivered = match registry.route(&handshake.info_hash) {
                Some(tx) => tx.send(Incoming { stream, handshake, remote, slot }).await.is_ok(),
                None => {
                    debug!("peer port: {remote}: asked for unknown swarm {}", handshake.info_hash);
                    false
                }
            };
            if !delivered {
                counters.count(WireEvent::IncomingDropped);
            }
        });
    }
}
