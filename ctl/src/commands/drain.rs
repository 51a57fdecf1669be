//! `p2pctl drain [--min-copies K] [--timeout SECS] [--no-wait]`: starts a drain and waits for
//! its end, which the daemon answers just before it stops; meanwhile `status` is polled on a
//! second connection to show which torrents still wait for copies.
//!
//! Exit: 0 every torrent had its copies; 6 the timeout came first; 1 p2pd stopped otherwise
//! before the drain ended (killed, or stopped by someone else); 3 p2pd was not reachable.

use std::time::Duration;

use p2pd::control::protocol::{DrainReport, Request, Response};

use crate::client::Client;
use crate::exit::{CtlError, CtlResult, Exit};

const POLL: Duration = Duration::from_secs(1);
/// How long past `--timeout` the answer may take (stopping the torrents comes after it).
const SLACK: Duration = Duration::from_secs(120);
/// Without `--timeout`: as long as a drain may last.
const FOREVER: Duration = Duration::from_secs(366 * 24 * 3600);

/// `name 1/2` for each torrent still short of copies.
fn short(report: &DrainReport) -> Vec<String> {
    report
        .torrents
        .iter()
        .filter(|t| t.copies < report.min_copies)
        .map(|t| format!("{} {}/{}", t.name, t.copies, report.min_copies))
        .collect()
}

/// Prints which torrents wait for copies whenever that changes, until the process exits.
fn show_progress(client: Client) {
    std::thread::spawn(move || {
        let mut shown = Vec::new();
        loop {
            std::thread::sleep(POLL);
            let Ok(Some(report)) = super::status::fetch(&client, None).map(|s| s.node.drain) else { continue };
            let now = short(&report);
            if now != shown && !now.is_empty() && !report.done {
                eprintln!("waiting for copies: {}", now.join(", "));
            }
            shown = now;
        }
    });
}

pub fn run(client: &Client, min_copies: u32, timeout: Option<u64>, no_wait: bool) -> CtlResult {
    let limit = timeout.map(|s| format!(", at most {s} s")).unwrap_or_default();
    eprintln!(
        "draining: starting no downloads; seeding until each torrent has {min_copies} other complete copies{limit}"
    );
    let request = Request::Drain { min_copies, timeout_secs: timeout, wait: !no_wait };
    if no_wait {
        let Response::Draining(report) = client.call(request)? else {
            return Err(CtlError::failed("unexpected answer from p2pd"));
        };
        for t in &report.stopped {
            eprintln!("stopped {} (incomplete; it resumes when p2pd next starts)", t.name);
        }
        return Ok(Exit::Ok);
    }
    show_progress(client.clone());
    let patience = timeout.map(|s| Duration::from_secs(s) + SLACK).unwrap_or(FOREVER);
    let report = match client.call_waiting(request, patience) {
        Ok(Response::Draining(report)) => report,
        Ok(_) => return Err(CtlError::failed("unexpected answer from p2pd")),
        Err(e) if e.exit == Exit::Refused || e.exit == Exit::Unreachable => return Err(e),
        Err(e) => return Err(CtlError::failed(format!("p2pd stopped before the drain ended: {e}"))),
    };
    for t in &report.stopped {
        eprintln!("stopped {} (incomplete; it resumes when p2pd next starts)", t.name);
    }
    if report.satisfied() {
        eprintln!("drained: every torrent has at least {min_copies} other complete copies; p2pd is stopping");
        return Ok(Exit::Ok);
    }
    Err(CtlError::new(
        Exit::TimedOut,
        format!("timed out; p2pd is stopping with too few copies of: {}", short(&report).join(", ")),
    ))
}
