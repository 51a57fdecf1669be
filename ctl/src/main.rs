//! `p2pctl`: drives a p2pd daemon over its control socket, and makes descriptors.
//!
//! Thin: parse the command line, run the subcommand, print any error once as one line
//! (`p2pctl: …`) and exit with its documented code (see [`exit::Exit`]).

mod cli;
mod client;
mod commands;
mod exit;
mod format;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};
use client::Client;
use exit::{CtlResult, Exit};
use p2pd::control::protocol::SettingsChange;

fn main() -> ExitCode {
    restore_default_sigpipe();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(Exit::Usage as u8) } else { ExitCode::SUCCESS };
        }
    };
    match run(cli) {
        Ok(code) => code.into(),
        Err(e) => {
            eprintln!("p2pctl: {e}");
            e.exit.into()
        }
    }
}

/// Rust ignores SIGPIPE, so printing into a closed pipe (`p2pctl status | head -1`) panicked
/// with "failed printing to stdout". Like other Unix tools, p2pctl ends quietly instead: the
/// default action ends the process when its reader has gone.
fn restore_default_sigpipe() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: called first thing in `main`, before any other thread exists; SIG_DFL installs
    // no Rust handler.
    if let Err(e) = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) } {
        eprintln!("p2pctl: cannot restore the default SIGPIPE action: {e}");
    }
}

fn run(cli: Cli) -> CtlResult {
    let client = || Client::locate(cli.socket.clone(), cli.config_dir.clone());
    match cli.command {
        Command::Create { path, output, piece_size, bootstrap } => {
            commands::create::run(&path, output, piece_size, bootstrap)
        }
        Command::Add { descriptor, data, adopt, cache } => {
            commands::add::run(&client()?, &descriptor, data, adopt, cache)
        }
        Command::Remove { id, delete_data } => commands::remove::run(&client()?, id, delete_data),
        Command::Status { id, json } => commands::status::run(&client()?, id, json),
        Command::List { json } => commands::status::list(&client()?, json),
        Command::Peers { id, json } => commands::peers::run(&client()?, id, json),
        Command::Reload => commands::reload::run(&client()?),
        Command::Verify { id } => commands::verify::run(&client()?, id),
        Command::Pause { id, json } => {
            commands::set::run(&client()?, id, SettingsChange { paused: Some(true), ..Default::default() }, json)
        }
        Command::Resume { id, json } => {
            commands::set::run(&client()?, id, SettingsChange { paused: Some(false), ..Default::default() }, json)
        }
        Command::Set { id, download_rate, upload_rate, max_peers, priority, json } => {
            let change = SettingsChange { paused: None, download_rate, upload_rate, max_peers, priority };
            commands::set::run(&client()?, id, change, json)
        }
        Command::Wait { id, timeout } => commands::wait::run(&client()?, id, timeout),
        Command::Watch => commands::watch::run(&client()?),
        Command::Drain { min_copies, timeout, no_wait } => {
            commands::drain::run(&client()?, min_copies, timeout, no_wait)
        }
        Command::Completions { shell } => commands::docs::completions(shell),
        Command::Man => commands::docs::man(),
    }
}
