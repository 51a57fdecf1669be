//! `p2pctl watch`: progress bars for active (checking or leeching) torrents until each is
//! complete. Exit 0 when all finished, 7 if any ended in `error`.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use p2pd::control::protocol::TorrentState;

use crate::client::Client;
use crate::exit::{CtlResult, Exit};
use crate::format;

const POLL: Duration = Duration::from_millis(500);

pub fn run(client: &Client) -> CtlResult {
    let report = super::status::fetch(client, None)?;
    let active: Vec<_> = report
        .torrents
        .iter()
        .filter(|t| matches!(t.state, TorrentState::Checking | TorrentState::Queued | TorrentState::Leeching))
        .map(|t| t.info_hash.clone())
        .collect();
    if active.is_empty() {
        println!("no active torrents");
        return Ok(Exit::Ok);
    }
    let terminal = std::io::stdout().is_terminal();
    let multi = MultiProgress::with_draw_target(if terminal {
        ProgressDrawTarget::stdout()
    } else {
        ProgressDrawTarget::hidden()
    });
    let style = ProgressStyle::with_template("{prefix:20!} {bar:30} {percent:>3}% {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    let mut bars: BTreeMap<String, ProgressBar> = BTreeMap::new();
    for t in report.torrents.iter().filter(|t| active.contains(&t.info_hash)) {
        let bar = multi.add(ProgressBar::new(t.length.max(1)));
        bar.set_style(style.clone());
        bar.set_prefix(t.name.clone());
        bars.insert(t.info_hash.clone(), bar);
    }
    let mut failed = false;
    let mut finished: BTreeMap<String, bool> = BTreeMap::new();
    while finished.len() < bars.len() {
        let report = super::status::fetch(client, None)?;
        for (hash, bar) in &bars {
            if finished.contains_key(hash) {
                continue;
            }
            let Some(t) = report.torrents.iter().find(|t| &t.info_hash == hash) else {
                bar.abandon_with_message("removed");
                finished.insert(hash.clone(), false);
                continue;
            };
            bar.set_position(t.bytes_done);
            let eta = t.eta_secs.map(|s| format!(" eta {}", format::duration(s))).unwrap_or_default();
            bar.set_message(format!(
                "{} ↓{} ↑{} {} peers{eta}",
                t.state.as_str(),
                format::rate(t.download_rate),
                format::rate(t.upload_rate),
                t.peers
            ));
            match t.state {
                TorrentState::Seeding => {
                    bar.finish_with_message("complete");
                    if !terminal {
                        println!("{}: complete", t.name);
                    }
                    finished.insert(hash.clone(), true);
                }
                TorrentState::Error => {
                    let e = t.error.clone().unwrap_or_default();
                    bar.abandon_with_message(format!("error: {e}"));
                    if !terminal {
                        println!("{}: error: {e}", t.name);
                    }
                    failed = true;
                    finished.insert(hash.clone(), false);
                }
                _ => {}
            }
        }
        if finished.len() < bars.len() {
            std::thread::sleep(POLL);
        }
    }
    Ok(if failed { Exit::TorrentFailed } else { Exit::Ok })
}
