//! `p2pctl completions SHELL` and `p2pctl man`: generated from the clap definitions.

use std::io::Write;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;
use crate::exit::{CtlError, CtlResult, Exit};

pub fn completions(shell: Shell) -> CtlResult {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "p2pctl", &mut std::io::stdout());
    Ok(Exit::Ok)
}

pub fn man() -> CtlResult {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut out).map_err(|e| CtlError::failed(e.to_string()))?;
    std::io::stdout().write_all(&out).map_err(|e| CtlError::failed(e.to_string()))?;
    Ok(Exit::Ok)
}
