//! `cco sidecar …`: run the sidecar in the foreground (`sidecar::run`, what the service
//! manager starts) or operate it, with the same command shape as `cco daemon`.

use std::path::Path;
use std::process::ExitCode;

use crate::service::Service;

pub use super::daemon::Args;

pub fn run(config_flag: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    args.action
        .dispatch(config_flag, Service::Sidecar, crate::sidecar::run)
}
