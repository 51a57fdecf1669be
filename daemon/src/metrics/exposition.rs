//! What `/metrics` says: a [`Snapshot`] of the daemon's figures, encoded in the Prometheus text
//! format by the `prometheus` crate (never formatted by hand: names, labels and escaping are
//! the crate's).
//!
//! Every metric is documented in `docs/METRICS.md`; the names are a public interface (alert
//! rules and dashboards query them), so a metric may be added but never renamed.
//!
//! Invariants: every daemon-wide family is present in every scrape, with zero where there is
//! nothing to count (`p2pd_torrents` has a sample for every state), so that a query never turns
//! absent (`p2pd_data_dir_free_bytes` alone is left out when the filesystem cannot be asked);
//! a torrent's series exist while it runs; counters only grow within one process's life.

use prometheus::core::Collector;
use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::control::protocol::{RpcCounters, TorrentState};
use crate::swarm::counters::PayloadTotals;

/// One torrent's figures.
#[derive(Debug, Clone)]
pub struct TorrentFigures {
    pub info_hash: String,
    pub name: String,
    pub state: TorrentState,
    /// Payload bytes over the torrent's life (kept across restarts, like `status`).
    pub downloaded: u64,
    pub uploaded: u64,
    pub pieces_done: u64,
    pub pieces_total: u64,
    pub peers: u64,
}

/// Everything one scrape reports, read from the daemon at once.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub version: &'static str,
    pub torrents: Vec<TorrentFigures>,
    pub payload: PayloadTotals,
    pub rpc: RpcCounters,
    pub routing_table_nodes: u64,
    /// Free bytes for p2pd in the default data directory's filesystem (`None`: could not tell).
    pub data_dir_free: Option<u64>,
    /// Cache torrents evicted under `retention:` since p2pd started, and their content bytes.
    pub evictions: u64,
    pub evicted_bytes: u64,
}

/// Why a snapshot could not be encoded (a bug: every name here is valid).
pub type EncodeError = prometheus::Error;

/// The content type of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn gauge(registry: &Registry, name: &str, help: &str, value: u64) -> Result<(), EncodeError> {
    let g = IntGauge::new(name, help)?;
    g.set(clamp(value));
    registry.register(Box::new(g))
}

fn counter(registry: &Registry, name: &str, help: &str, value: u64) -> Result<(), EncodeError> {
    let c = IntCounter::new(name, help)?;
    c.inc_by(value);
    registry.register(Box::new(c))
}

/// Gauges hold an `i64`.
fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The families of one scrape, p2pd's and (with `process`) the standard `process_*` ones.
pub fn encode(s: &Snapshot, process: Option<Box<dyn Collector>>) -> Result<String, EncodeError> {
    let r = Registry::new();
    let build = IntGaugeVec::new(Opts::new("p2pd_build_info", "Always 1; the p2pd version in a label."), &["version"])?;
    build.with_label_values(&[s.version]).set(1);
    r.register(Box::new(build))?;

    let by_state = IntGaugeVec::new(Opts::new("p2pd_torrents", "Torrents in each state."), &["state"])?;
    for state in TorrentState::ALL {
        let n = s.torrents.iter().filter(|t| t.state == state).count() as u64;
        by_state.with_label_values(&[state.as_str()]).set(clamp(n));
    }
    r.register(Box::new(by_state))?;

    let labels = &["info_hash", "name"];
    let t_down = IntCounterVec::new(
        Opts::new("p2pd_torrent_downloaded_bytes_total", "Payload bytes a torrent received from peers, over its life."),
        labels,
    )?;
    let t_up = IntCounterVec::new(
        Opts::new("p2pd_torrent_uploaded_bytes_total", "Payload bytes a torrent sent to peers, over its life."),
        labels,
    )?;
    let t_done = IntGaugeVec::new(Opts::new("p2pd_torrent_pieces_done", "Verified pieces of a torrent."), labels)?;
    let t_total = IntGaugeVec::new(Opts::new("p2pd_torrent_pieces_total", "Pieces of a torrent."), labels)?;
    let t_peers =
        IntGaugeVec::new(Opts::new("p2pd_torrent_peers_connected", "Peers a torrent is connected to."), labels)?;
    let t_state = IntGaugeVec::new(
        Opts::new("p2pd_torrent_state", "1 for the state a torrent is in (one series per state, the others 0)."),
        &["info_hash", "name", "state"],
    )?;
    for t in &s.torrents {
        let l = [t.info_hash.as_str(), t.name.as_str()];
        t_down.with_label_values(&l).inc_by(t.downloaded);
        t_up.with_label_values(&l).inc_by(t.uploaded);
        t_done.with_label_values(&l).set(clamp(t.pieces_done));
        t_total.with_label_values(&l).set(clamp(t.pieces_total));
        t_peers.with_label_values(&l).set(clamp(t.peers));
        for state in TorrentState::ALL {
            let now = i64::from(state == t.state);
            t_state.with_label_values(&[l[0], l[1], state.as_str()]).set(now);
        }
    }
    let families: [Box<dyn Collector>; 6] =
        [Box::new(t_down), Box::new(t_up), Box::new(t_done), Box::new(t_total), Box::new(t_peers), Box::new(t_state)];
    for family in families {
        r.register(family)?;
    }

    counter(
        &r,
        "p2pd_downloaded_bytes_total",
        "Payload bytes received from peers since p2pd started.",
        s.payload.received,
    )?;
    counter(&r, "p2pd_uploaded_bytes_total", "Payload bytes sent to peers since p2pd started.", s.payload.sent)?;
    counter(
        &r,
        "p2pd_piece_hash_failures_total",
        "Pieces received from peers that failed their SHA-256 check since p2pd started.",
        s.payload.hash_failures,
    )?;
    gauge(
        &r,
        "p2pd_peers_connected",
        "Peer connections, over every torrent.",
        s.torrents.iter().map(|t| t.peers).sum(),
    )?;
    counter(&r, "p2pd_discovery_rpc_sent_total", "Discovery datagrams sent (retries included).", s.rpc.sent)?;
    counter(&r, "p2pd_discovery_rpc_received_total", "Discovery datagrams received.", s.rpc.received)?;
    counter(
        &r,
        "p2pd_discovery_rpc_timeouts_total",
        "Discovery requests that went unanswered after every retry.",
        s.rpc.timeouts,
    )?;
    gauge(&r, "p2pd_routing_table_nodes", "Nodes in the discovery routing table.", s.routing_table_nodes)?;
    counter(
        &r,
        "p2pd_evictions_total",
        "Cache torrents evicted (data and file deleted) to keep their filesystem below retention.high_water.",
        s.evictions,
    )?;
    counter(&r, "p2pd_evicted_bytes_total", "Content bytes of the cache torrents evicted.", s.evicted_bytes)?;
    if let Some(free) = s.data_dir_free {
        gauge(&r, "p2pd_data_dir_free_bytes", "Bytes free for p2pd in the data directory's filesystem.", free)?;
    }
    if let Some(p) = process {
        r.register(p)?;
    }

    let mut out = Vec::with_capacity(256 + s.torrents.len() * 600);
    TextEncoder::new().encode(&r.gather(), &mut out)?;
    // The encoder writes UTF-8 (labels are Rust strings).
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        Snapshot {
            version: "1.2.3",
            torrents: vec![
                TorrentFigures {
                    info_hash: "aa".repeat(32),
                    name: "a \"quoted\"\nname".into(),
                    state: TorrentState::Leeching,
                    downloaded: 1000,
                    uploaded: 10,
                    pieces_done: 3,
                    pieces_total: 8,
                    peers: 4,
                },
                TorrentFigures {
                    info_hash: "bb".repeat(32),
                    name: "b.bin".into(),
                    state: TorrentState::Seeding,
                    downloaded: 0,
                    uploaded: 5000,
                    pieces_done: 8,
                    pieces_total: 8,
                    peers: 2,
                },
            ],
            payload: PayloadTotals { received: 7, sent: 9, hash_failures: 1 },
            rpc: RpcCounters { sent: 11, received: 12, timeouts: 13, ..RpcCounters::default() },
            routing_table_nodes: 42,
            data_dir_free: Some(1 << 40),
            evictions: 2,
            evicted_bytes: 3 << 30,
        }
    }

    fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
    }

    #[test]
    fn every_family_and_value_is_there_with_labels_escaped() {
        let text = encode(&snapshot(), None).unwrap();
        let a = format!("info_hash=\"{}\",name=\"a \\\"quoted\\\"\\nname\"", "aa".repeat(32));
        for (series, value) in [
            ("p2pd_build_info{version=\"1.2.3\"}", "1"),
            ("p2pd_torrents{state=\"leeching\"}", "1"),
            ("p2pd_torrents{state=\"seeding\"}", "1"),
            ("p2pd_torrents{state=\"error\"}", "0"),
            ("p2pd_torrents{state=\"checking\"}", "0"),
            ("p2pd_torrents{state=\"paused\"}", "0"),
            (&format!("p2pd_torrent_downloaded_bytes_total{{{a}}}"), "1000"),
            (&format!("p2pd_torrent_uploaded_bytes_total{{{a}}}"), "10"),
            (&format!("p2pd_torrent_pieces_done{{{a}}}"), "3"),
            (&format!("p2pd_torrent_pieces_total{{{a}}}"), "8"),
            (&format!("p2pd_torrent_peers_connected{{{a}}}"), "4"),
            (&format!("p2pd_torrent_state{{{a},state=\"leeching\"}}"), "1"),
            (&format!("p2pd_torrent_state{{{a},state=\"seeding\"}}"), "0"),
            ("p2pd_downloaded_bytes_total", "7"),
            ("p2pd_uploaded_bytes_total", "9"),
            ("p2pd_piece_hash_failures_total", "1"),
            ("p2pd_peers_connected", "6"),
            ("p2pd_discovery_rpc_sent_total", "11"),
            ("p2pd_discovery_rpc_received_total", "12"),
            ("p2pd_discovery_rpc_timeouts_total", "13"),
            ("p2pd_routing_table_nodes", "42"),
            ("p2pd_data_dir_free_bytes", "1099511627776"),
            ("p2pd_evictions_total", "2"),
            ("p2pd_evicted_bytes_total", "3221225472"),
        ] {
            assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
        }
        assert!(text.contains("# TYPE p2pd_downloaded_bytes_total counter"), "{text}");
        assert!(text.contains("# TYPE p2pd_torrent_pieces_done gauge"), "{text}");
    }

    #[test]
    fn with_no_torrents_the_families_that_need_none_are_still_there() {
        let mut s = snapshot();
        s.torrents.clear();
        s.data_dir_free = None;
        let text = encode(&s, None).unwrap();
        assert_eq!(sample(&text, "p2pd_torrents{state=\"seeding\"}"), Some("0"));
        assert_eq!(sample(&text, "p2pd_peers_connected"), Some("0"));
        assert!(!text.contains("p2pd_data_dir_free_bytes"), "absent, not a made-up zero");
    }
}
