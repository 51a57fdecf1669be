//! `p2pctl add FILE.desc [--data DIR]`: prints the info hash on stdout.

use std::path::{Path, PathBuf};

use p2pd::control::protocol::{Request, Response};
use p2pd::descriptor::{Descriptor, MAX_DESCRIPTOR_BYTES};

use crate::client::Client;
use crate::exit::{CtlError, CtlResult, Exit};

pub fn run(client: &Client, file: &Path, data: Option<PathBuf>) -> CtlResult {
    let text = p2pd::yaml::read_bounded(file, MAX_DESCRIPTOR_BYTES)
        .map_err(|e| CtlError::failed(format!("{}: {e}", file.display())))?;
    // Check locally first: a clear message without bothering the daemon (which checks again).
    Descriptor::parse(&text).map_err(|e| CtlError::failed(format!("{}: {e}", file.display())))?;
    let data_dir = match data {
        Some(d) => Some(std::path::absolute(&d).map_err(|e| CtlError::failed(format!("--data {}: {e}", d.display())))?),
        None => None,
    };
    let response = client.call(Request::Add { descriptor: text, source: file.display().to_string(), data_dir })?;
    let Response::Added(added) = response else {
        return Err(CtlError::failed("unexpected answer from p2pd"));
    };
    println!("{}", added.info_hash);
    if added.already_present {
        eprintln!("{} is already added (data in {})", added.name, added.data_dir.display());
    } else {
        eprintln!("added {}: data in {}, recorded in {}", added.name, added.data_dir.display(), added.file.display());
    }
    Ok(Exit::Ok)
}
