//! `p2pctl pause ID`, `p2pctl resume ID`, `p2pctl set ID [--download-rate R] [--upload-rate R]
//! [--max-peers N]`: one `set` request each.

use p2pd::config::bounds::{Key, TorrentDownloadRate, TorrentMaxPeers, TorrentUploadRate};
use p2pd::control::protocol::{Request, Response, SettingsChange};
use p2pd::units::ByteRate;

use crate::client::Client;
use crate::exit::{CtlError, CtlResult, Exit};

pub fn run(client: &Client, id: String, settings: SettingsChange, json: bool) -> CtlResult {
    if settings.is_empty() {
        return Err(CtlError::new(
            Exit::Usage,
            "nothing to set: give --download-rate, --upload-rate, --max-peers or --priority",
        ));
    }
    let response = client.call(Request::Set { id, settings })?;
    let Response::Updated(r) = &response else {
        return Err(CtlError::failed("unexpected answer from p2pd"));
    };
    if json {
        let text = serde_json::to_string_pretty(&response).map_err(|e| CtlError::failed(e.to_string()))?;
        println!("{text}");
        return Ok(Exit::Ok);
    }
    let short = r.info_hash.get(..12).unwrap_or(&r.info_hash);
    if r.changes.is_empty() {
        println!("{} ({short}): no change", r.name);
    }
    for line in &r.changes {
        println!("{line}");
    }
    Ok(Exit::Ok)
}

/// A rate within `K`'s range, as a torrent file takes it (0 or `unlimited`: no limit).
fn rate<K: Key>(text: &str) -> Result<ByteRate, String> {
    let rate: ByteRate = text.parse().map_err(|e| format!("{e}"))?;
    match rate.bytes_per_second() {
        None => Ok(rate),
        Some(v) => K::BOUND.check(u128::from(v)).map(|_| rate).map_err(|e| e.to_string()),
    }
}

pub fn download_rate(text: &str) -> Result<ByteRate, String> {
    rate::<TorrentDownloadRate>(text)
}

pub fn upload_rate(text: &str) -> Result<ByteRate, String> {
    rate::<TorrentUploadRate>(text)
}

pub fn max_peers(text: &str) -> Result<u32, String> {
    let n: u64 = text.trim().parse().map_err(|_| format!("`{text}` is not a whole number"))?;
    let n = TorrentMaxPeers::BOUND.check(u128::from(n)).map_err(|e| e.to_string())?;
    u32::try_from(n).map_err(|_| format!("{n} does not fit"))
}
