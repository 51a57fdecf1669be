//! `p2pctl reload`: exit 1 if anything was rejected.

use p2pd::control::protocol::{Request, Response};

use crate::client::Client;
use crate::exit::{CtlError, CtlResult, Exit};

pub fn run(client: &Client) -> CtlResult {
    let Response::Reloaded(report) = client.call(Request::Reload)? else {
        return Err(CtlError::failed("unexpected answer from p2pd"));
    };
    let sections =
        [("applied", &report.applied), ("needs restart", &report.needs_restart), ("rejected", &report.rejected)];
    let mut any = false;
    for (title, lines) in sections {
        if lines.is_empty() {
            continue;
        }
        any = true;
        println!("{title}:");
        for line in lines {
            println!("  {line}");
        }
    }
    if !any {
        println!("nothing changed");
    }
    Ok(if report.rejected.is_empty() { Exit::Ok } else { Exit::Failed })
}
