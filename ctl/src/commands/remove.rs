//! `p2pctl remove ID [--delete-data]`

use p2pd::control::protocol::{Request, Response};

use crate::client::Client;
use crate::exit::{CtlError, CtlResult, Exit};

pub fn run(client: &Client, id: String, delete_data: bool) -> CtlResult {
    let Response::Removed(r) = client.call(Request::Remove { id, delete_data })? else {
        return Err(CtlError::failed("unexpected answer from p2pd"));
    };
    let data = if r.data_deleted { " and deleted its data" } else { "" };
    println!("removed {} ({}){data}", r.name, r.info_hash.get(..12).unwrap_or(&r.info_hash));
    if let Some(kept) = r.data_kept {
        eprintln!("p2pctl: {kept}");
    }
    Ok(Exit::Ok)
}
