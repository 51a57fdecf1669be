//! `p2pctl wait ID [--timeout SECS]`: blocks until the torrent is complete and verified.
//!
//! Exit: 0 complete, 5 no such torrent (or it was removed), 6 timed out, 7 the torrent is in
//! `error`, 3 the daemon is not reachable when waiting starts. If the daemon goes away while
//! waiting (a restart), waiting goes on until the timeout.

use std::time::{Duration, Instant};

use p2pd::control::protocol::TorrentState;

use crate::client::Client;
use crate::exit::{CtlError, CtlResult, Exit};

const POLL: Duration = Duration::from_millis(100);

pub fn run(client: &Client, id: String, timeout: Option<f64>) -> CtlResult {
    let deadline = match timeout {
        Some(t) if t.is_finite() && t >= 0.0 => Some(Instant::now() + Duration::from_secs_f64(t)),
        Some(_) => return Err(CtlError::new(Exit::Usage, "--timeout must be a non-negative number of seconds")),
        None => None,
    };
    // Resolve once, so a prefix or name keeps meaning the same torrent.
    let first = super::status::fetch(client, Some(id))?;
    let Some(hash) = first.torrents.first().map(|t| t.info_hash.clone()) else {
        return Err(CtlError::new(Exit::NotFound, "no such torrent"));
    };
    let mut warned = false;
    loop {
        match super::status::fetch(client, Some(hash.clone())) {
            Ok(report) => {
                if let Some(t) = report.torrents.first() {
                    match t.state {
                        TorrentState::Seeding => {
                            eprintln!("{} is complete and verified", t.name);
                            return Ok(Exit::Ok);
                        }
                        TorrentState::Error => {
                            return Err(CtlError::new(
                                Exit::TorrentFailed,
                                format!("{} failed: {}", t.name, t.error.as_deref().unwrap_or("unknown error")),
                            ));
                        }
                        _ => {}
                    }
                }
            }
            Err(e) if e.exit == Exit::NotFound => {
                return Err(CtlError::new(
                    Exit::NotFound,
                    format!("torrent {} was removed while waiting", &hash[..12]),
                ));
            }
            Err(e) if e.exit == Exit::Unreachable => {
                if !warned {
                    eprintln!("p2pctl: {e}; still waiting");
                    warned = true;
                }
            }
            Err(e) => return Err(e),
        }
        if let Some(d) = deadline
            && Instant::now() >= d
        {
            return Err(CtlError::new(Exit::TimedOut, format!("timed out waiting for {}", &hash[..12])));
        }
        std::thread::sleep(POLL);
    }
}
