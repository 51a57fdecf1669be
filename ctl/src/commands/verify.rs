//! `p2pctl verify ID`

use p2pd::control::protocol::{Request, Response, TorrentState};

use crate::client::Client;
use crate::exit::{CtlError, CtlResult, Exit};

pub fn run(client: &Client, id: String) -> CtlResult {
    let Response::Verifying(t) = client.call(Request::Verify { id })? else {
        return Err(CtlError::failed("unexpected answer from p2pd"));
    };
    let short = t.info_hash.get(..12).unwrap_or(&t.info_hash);
    // A paused torrent touches no data: the check waits for it to resume.
    let paused = super::status::fetch(client, Some(t.info_hash.clone()))
        .is_ok_and(|r| r.torrents.first().is_some_and(|s| s.state == TorrentState::Paused));
    if paused {
        println!("{} ({short}) is paused: every piece is verified when it resumes (`p2pctl resume {short}`)", t.name);
    } else {
        println!("verifying every piece of {} ({short}); follow with `p2pctl status {short}`", t.name);
    }
    Ok(Exit::Ok)
}
