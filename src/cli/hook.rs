//! `cco hook <event>`: argument parsing for Claude Code's command hooks; the work is in
//! [`crate::hook`].

use std::process::ExitCode;

pub use crate::hook::Event;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Claude Code hook event this invocation handles.
    #[arg(value_enum)]
    pub event: Event,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    crate::hook::run(args.event);
    Ok(ExitCode::SUCCESS)
}
