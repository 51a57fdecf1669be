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

fn main() -> ExitCode {
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

fn run(cli: Cli) -> CtlResult {
    let client = || Client::locate(cli.socket.clone(), cli.config_dir.clone());
    match cli.command {
        Command::Create { path, output, piece_size, bootstrap } => {
            commands::create::run(&path, output, piece_size, bootstrap)
        }
        Command::Add { descriptor, data, adopt } => commands::add::run(&client()?, &descriptor, data, adopt),
        Command::Remove { id, delete_data } => commands::remove::run(&client()?, id, delete_data),
        Command::Status { id, json } => commands::status::run(&client()?, id, json),
        Command::List { json } => commands::status::list(&client()?, json),
        Command::Peers { id, json } => commands::peers::run(&client()?, id, json),
        Command::Reload => commands::reload::run(&client()?),
        Command::Verify { id } => commands::verify::run(&client()?, id),
        Command::Wait { id, timeout } => commands::wait::run(&client()?, id, timeout),
        Command::Watch => commands::watch::run(&client()?),
        Command::Completions { shell } => commands::docs::completions(shell),
        Command::Man => commands::docs::man(),
    }
}
