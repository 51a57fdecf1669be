//! `p2pctl add FILE.desc [--data DIR] [--adopt] [--cache]`: prints the info hash on stdout.

use std::path::{Path, PathBuf};

use p2pd::control::protocol::{Request, Response};
use p2pd::descriptor::{Descriptor, MAX_DESCRIPTOR_BYTES};

use crate::client::Client;
use crate::exit::{CtlError, CtlResult, Exit};

pub fn run(client: &Client, file: &Path, data: Option<PathBuf>, adopt: bool, cache: bool) -> CtlResult {
    let text = p2pd::yaml::read_bounded(file, MAX_DESCRIPTOR_BYTES)
        .map_err(|e| CtlError::failed(format!("{}: {e}", file.display())))?;
    // Check locally first: a clear message without bothering the daemon (which checks again).
    Descriptor::parse(&text).map_err(|e| CtlError::failed(format!("{}: {e}", file.display())))?;
    let data_dir = match data {
        Some(d) => Some(std::path::absolute(&d).map_err(|e| CtlError::failed(format!("--data {}: {e}", d.display())))?),
        None => None,
    };
    let response =
        client.call(Request::Add { descriptor: text, source: file.display().to_string(), data_dir, adopt, cache })?;
    let Response::Added(added) = response else {
        return Err(CtlError::failed("unexpected answer from p2pd"));
    };
    println!("{}", added.info_hash);
    let content = added.data_dir.join(&added.name);
    if added.already_present && added.adopted {
        eprintln!("{} is already added; it now owns {} and checks it again", added.name, content.display());
    } else if added.already_present {
        eprintln!("{} is already added (data in {})", added.name, added.data_dir.display());
    } else if added.adopted {
        eprintln!(
            "added {}: adopting {} (checked, then completed in place), recorded in {}",
            added.name,
            content.display(),
            added.file.display()
        );
    } else {
        let cached = if cache { " (as cache: evicted when its filesystem is full)" } else { "" };
        eprintln!(
            "added {}{cached}: data in {}, recorded in {}",
            added.name,
            added.data_dir.display(),
            added.file.display()
        );
    }
    // Older daemons do not say (`cache` absent): nothing to note then.
    if added.already_present && cache && added.cache == Some(false) {
        eprintln!(
            "note: --cache does not change a torrent already added: {} stays non-cache (never evicted); \
             set `cache: true` in {} and run `p2pctl reload` to make it cache",
            added.name,
            added.file.display()
        );
    }
    Ok(Exit::Ok)
}
