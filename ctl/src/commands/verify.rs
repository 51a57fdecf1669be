//! `p2pctl verify ID`

use p2pd::control::protocol::{Request, Response};

use crate::client::Client;
use crate::exit::{CtlError, CtlResult, Exit};

pub fn run(client: &Client, id: String) -> CtlResult {
    let Response::Verifying(t) = client.call(Request::Verify { id })? else {
        return Err(CtlError::failed("unexpected answer from p2pd"));
    };
    println!(
        "verifying every piece of {} ({}); follow with `p2pctl status {}`",
        t.name,
        &t.info_hash[..12],
        &t.info_hash[..12]
    );
    Ok(Exit::Ok)
}
