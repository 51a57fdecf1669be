//! `p2pctl peers ID [--json]`

use p2pd::control::protocol::{Request, Response};

use crate::client::Client;
use crate::exit::{CtlError, CtlResult, Exit};
use crate::format::{self, Align};

pub fn run(client: &Client, id: String, as_json: bool) -> CtlResult {
    let Response::Peers(report) = client.call(Request::Peers { id })? else {
        return Err(CtlError::failed("unexpected answer from p2pd"));
    };
    if as_json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| CtlError::failed(e.to_string()))?;
        println!("{text}");
        return Ok(Exit::Ok);
    }
    println!("{} ({}): {} peers known", report.name, &report.info_hash[..12], report.peers.len());
    if report.peers.is_empty() {
        return Ok(Exit::Ok);
    }
    let headers = [
        ("ADDRESS", Align::Left),
        ("NODE", Align::Left),
        ("STATUS", Align::Left),
        ("SEEN", Align::Right),
        ("CONN", Align::Left),
        ("FLAGS", Align::Left),
        ("DOWN", Align::Right),
        ("UP", Align::Right),
        ("STRIKES", Align::Right),
    ];
    let rows: Vec<Vec<String>> = report
        .peers
        .iter()
        .map(|p| {
            vec![
                p.address.clone(),
                p.node_id.chars().take(12).collect(),
                if p.banned { "banned".into() } else { p.status.clone() },
                format!("{} ago", format::duration(p.last_seen_secs)),
                if p.connected { "yes".into() } else { "no".into() },
                p.wire.as_ref().map(|w| w.flags()).unwrap_or_default(),
                format::size(p.downloaded),
                format::size(p.uploaded),
                p.strikes.to_string(),
            ]
        })
        .collect();
    print!("{}", format::table(&headers, &rows));
    Ok(Exit::Ok)
}
