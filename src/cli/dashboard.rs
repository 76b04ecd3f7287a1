//! `cco dashboard`: asks the daemon for a one-time login link and opens it in the browser
//! (`xdg-open` / `open`), or prints it with `--no-open`. The link works once, for 60 s.

use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use crate::auth::{Keys, Scope, TokenSpec};
use crate::client::DaemonClient;
use crate::paths::Installation;
use crate::secret::Secret;

/// Lifetime of the token that asks for the code (it is used at once).
const TOKEN_TTL: Duration = Duration::from_secs(60);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the login URL instead of opening a browser.
    #[arg(long)]
    pub no_open: bool,
}

/// The platform's "open this URL" program.
fn opener() -> &'static str {
    if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    }
}

pub fn run(config: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    let inst = Installation::from_process(config)?;
    let secret = Secret::load(&inst.paths.secret_file())?;
    let keys = Keys::new(&secret)?;
    let mut spec = TokenSpec::session("cco-dashboard", TOKEN_TTL);
    spec.scopes = vec![Scope::AgentsRead];
    let token = keys.mint(&spec).0;
    let port = inst.config.daemon.port;
    let code = DaemonClient::new(port).login_code(&token).map_err(|e| {
        anyhow::anyhow!(
            "cannot get a dashboard login link from the daemon on 127.0.0.1:{port}: {e} — check `cco status`, then `cco daemon restart`"
        )
    })?;
    if args.no_open {
        println!("{}", code.url);
        return Ok(ExitCode::SUCCESS);
    }
    let opened = std::process::Command::new(opener())
        .arg(&code.url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match opened {
        Ok(s) if s.success() => {
            eprintln!(
                "opened the cco dashboard in your browser (the link works once, for {} s)",
                code.expires_in_seconds
            );
        }
        _ => {
            eprintln!(
                "could not start `{}`; open this link yourself (it works once, for {} s):",
                opener(),
                code.expires_in_seconds
            );
            println!("{}", code.url);
        }
    }
    Ok(ExitCode::SUCCESS)
}
