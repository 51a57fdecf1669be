//! `p2pctl status [ID] [--json]` and `p2pctl list [--json]`.

use p2pd::control::protocol::{Request, Response, StatusReport, TorrentStatus};

use crate::client::Client;
use crate::exit::{CtlError, CtlResult, Exit};
use crate::format::{self, Align};

pub fn fetch(client: &Client, id: Option<String>) -> CtlResult<StatusReport> {
    match client.call(Request::Status { id })? {
        Response::Status(report) => Ok(*report),
        _ => Err(CtlError::failed("unexpected answer from p2pd")),
    }
}

fn json<T: serde::Serialize>(value: &T) -> CtlResult {
    let text = serde_json::to_string_pretty(value).map_err(|e| CtlError::failed(e.to_string()))?;
    println!("{text}");
    Ok(Exit::Ok)
}

pub fn run(client: &Client, id: Option<String>, as_json: bool) -> CtlResult {
    let report = fetch(client, id.clone())?;
    if as_json {
        return json(&report);
    }
    let n = &report.node;
    if id.is_none() {
        println!(
            "p2pd {} (pid {}), node {}, listening on {}, up {}",
            n.daemon_version,
            n.pid,
            &n.node_id[..12],
            n.listen,
            format::duration(n.uptime_secs)
        );
        println!(
            "{} torrents, down {}, up {}, {} nodes in the routing table",
            n.torrents,
            format::rate(n.download_rate),
            format::rate(n.upload_rate),
            n.routing_table_size
        );
        for w in &n.state_warnings {
            println!("warning: {w}");
        }
        if let Some(d) = &n.drain {
            let short = d.torrents.iter().filter(|t| t.copies < d.min_copies).count();
            let left =
                d.seconds_left.map(|s| format!(", stops in {} at most", format::duration(s))).unwrap_or_default();
            println!(
                "draining: {short} of {} torrents still have fewer than {} other complete copies{left}",
                d.torrents.len(),
                d.min_copies
            );
            for t in d.torrents.iter().filter(|t| t.copies < d.min_copies) {
                println!("  {}: {} of {} copies", t.name, t.copies, d.min_copies);
            }
        }
        if report.torrents.is_empty() {
            println!("no torrents; add one with `p2pctl add FILE.desc`");
            return Ok(Exit::Ok);
        }
        println!();
    }
    print!("{}", torrent_table(&report.torrents));
    for t in report.torrents.iter().filter(|t| t.error.is_some()) {
        println!("{}: error: {}", t.name, t.error.as_deref().unwrap_or_default());
    }
    Ok(Exit::Ok)
}

fn torrent_table(torrents: &[TorrentStatus]) -> String {
    let headers = [
        ("NAME", Align::Left),
        ("HASH", Align::Left),
        ("SIZE", Align::Right),
        ("DONE", Align::Right),
        ("STATE", Align::Left),
        ("DOWN", Align::Right),
        ("UP", Align::Right),
        ("PEERS", Align::Right),
        ("ETA", Align::Right),
    ];
    let rows: Vec<Vec<String>> = torrents
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                t.info_hash[..12].to_string(),
                format::size(t.length),
                format::percent(t.bytes_done, t.length),
                // Cache torrents may be evicted (`retention:`): say so where the state is.
                if t.cache { format!("{} (cache)", t.state.as_str()) } else { t.state.as_str().to_string() },
                format::rate(t.download_rate),
                format::rate(t.upload_rate),
                t.peers.to_string(),
                t.eta_secs.map(format::duration).unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    format::table(&headers, &rows)
}

pub fn list(client: &Client, as_json: bool) -> CtlResult {
    let report = fetch(client, None)?;
    if as_json {
        return json(&report.torrents);
    }
    for t in &report.torrents {
        println!("{}  {:8}  {}", t.info_hash, t.state.as_str(), t.name);
    }
    Ok(Exit::Ok)
}
