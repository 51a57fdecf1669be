//! Metrics and health over HTTP (`metrics_listen` in `p2pd.yaml`; docs/METRICS.md).
//!
//! - [`exposition`]: a [`Snapshot`] of the daemon's figures → the
//!   Prometheus text format (pure, by the `prometheus` crate).
//! - [`http`]: the bounded HTTP endpoint serving it, with `/health` and `/ready`.
//!
//! A scrape reads what `status` reads (the torrents' status cells, discovery's published
//! counters, the daemon-wide payload counters) and asks nobody: scraping never waits on the
//! supervisor, a torrent or the disk, besides one `statvfs` of the data directory.

pub mod exposition;
pub mod http;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use exposition::{Snapshot, TorrentFigures};

use crate::shared::DaemonShared;

/// The endpoint's side the supervisor keeps: hands the server a new socket on reload.
#[derive(Clone)]
pub struct Endpoint {
    sockets: async_channel::Sender<SocketSwap>,
}

/// A socket for the server to serve from now on (none: stop serving); `done` is dropped once
/// the one it served before is closed.
pub struct SocketSwap {
    pub listener: Option<std::net::TcpListener>,
    pub done: Option<async_channel::Sender<()>>,
}

impl Endpoint {
    /// The handle and the receiving end [`http::serve`] takes.
    pub fn new() -> (Endpoint, async_channel::Receiver<SocketSwap>) {
        let (tx, rx) = async_channel::bounded(1);
        (Endpoint { sockets: tx }, rx)
    }

    /// Serves on `listener` from now on (none: stops serving). Never waits: a socket the
    /// server has not taken yet is replaced (and closed), the latest wins.
    pub fn replace(&self, listener: Option<std::net::TcpListener>) {
        let _ = self.sockets.force_send(SocketSwap { listener, done: None });
    }

    /// Stops serving and waits until the socket is closed (so that its address may be bound
    /// again at once).
    pub async fn close(&self) {
        let (done, closed) = async_channel::bounded::<()>(1);
        let _ = self.sockets.force_send(SocketSwap { listener: None, done: Some(done) });
        // Ends with an error once `done` is dropped: the server closed its socket (or is gone).
        let _ = closed.recv().await;
    }
}

/// The figures of one scrape, read now.
pub fn snapshot(shared: &DaemonShared) -> Snapshot {
    let torrents = shared
        .torrents()
        .iter()
        .map(|t| {
            let live = t.live();
            TorrentFigures {
                info_hash: t.info_hash.to_hex(),
                name: t.name.clone(),
                state: live.state,
                downloaded: live.downloaded,
                uploaded: live.uploaded,
                pieces_done: live.pieces_done,
                pieces_total: t.pieces_total,
                peers: live.peers.iter().filter(|p| p.link.is_some()).count() as u64,
            }
        })
        .collect();
    let (rpc, routing_table_nodes) = shared.discovery_counters();
    Snapshot {
        version: env!("CARGO_PKG_VERSION"),
        torrents,
        payload: shared.payload(),
        rpc,
        routing_table_nodes,
        data_dir_free: free_bytes_once(&shared.node.locations.data_dir),
        evictions: shared.evictions.count.load(Ordering::Relaxed),
        evicted_bytes: shared.evictions.bytes.load(Ordering::Relaxed),
    }
}

/// One scrape, encoded, with the standard `process_*` metrics.
pub fn scrape(shared: &DaemonShared) -> Result<String, exposition::EncodeError> {
    let process = prometheus::process_collector::ProcessCollector::for_self();
    exposition::encode(&snapshot(shared), Some(Box::new(process)))
}

/// A `statvfs` still running (a hung network filesystem) and the last answer.
static FREE_SPACE_ASKING: AtomicBool = AtomicBool::new(false);
static FREE_SPACE_LAST: AtomicU64 = AtomicU64::new(u64::MAX);

/// [`free_bytes`], with at most one call in flight: while one hangs, scrapes report the last
/// answer instead of each leaving a blocked thread behind.
fn free_bytes_once(dir: &Path) -> Option<u64> {
    let last = || Some(FREE_SPACE_LAST.load(Ordering::Relaxed)).filter(|&v| v != u64::MAX);
    if FREE_SPACE_ASKING.swap(true, Ordering::SeqCst) {
        return last();
    }
    let now = free_bytes(dir);
    FREE_SPACE_LAST.store(now.unwrap_or(u64::MAX), Ordering::Relaxed);
    FREE_SPACE_ASKING.store(false, Ordering::SeqCst);
    now
}

/// Bytes available to p2pd in the filesystem of `dir` (or of its nearest existing ancestor,
/// before the directory is made).
// The block counts are 32 bits wide on some targets.
#[allow(clippy::useless_conversion)]
fn free_bytes(dir: &Path) -> Option<u64> {
    let existing = dir.ancestors().find(|d| d.exists())?;
    let s = nix::sys::statvfs::statvfs(existing).ok()?;
    Some(u64::from(s.blocks_available()).saturating_mul(u64::from(s.fragment_size())))
}
