//! `cco leases [--issue I] [--json]` lists the live file leases agents hold; `cco leases
//! release ID` force-releases one (an agent that died holding it, or a stuck plan).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;

use crate::api::IssueId;
use crate::api::inert;
use crate::api::leases::Lease;
use crate::auth::{Keys, Scope, TokenSpec};
use crate::client::{ServiceError, SidecarClient};
use crate::paths::Installation;
use crate::secret::Secret;

/// Lifetime of the token minted for one command.
const TOKEN_TTL: Duration = Duration::from_secs(60);

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<LeasesCommand>,
    /// Only this issue's leases.
    #[arg(long, global = true, value_name = "ISSUE")]
    pub issue: Option<String>,
    /// Print the leases as JSON (`{"leases": [...]}`).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum LeasesCommand {
    /// Force-release a lease by its id (as `cco leases` shows it), whoever holds it.
    Release {
        /// The lease id, e.g. lease_0123456789abcdef.
        id: String,
    },
}

fn client(inst: &Installation) -> anyhow::Result<SidecarClient> {
    let secret = Secret::load(&inst.paths.secret_file())?;
    let keys = Keys::new(&secret)?;
    let mut spec = TokenSpec::session("cco-leases", TOKEN_TTL);
    spec.scopes = vec![Scope::AgentsRead, Scope::AgentsWrite];
    Ok(SidecarClient::new(inst.config.sidecar.port).with_token(keys.mint(&spec).0))
}

fn parse_issue(issue: Option<&str>) -> anyhow::Result<Option<IssueId>> {
    issue
        .map(|i| {
            IssueId::parse(i).map_err(|e| anyhow::anyhow!("{e} — pass e.g. `--issue issue-42`"))
        })
        .transpose()
}

pub fn run(config: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    let inst = Installation::from_process(config)?;
    let issue = parse_issue(args.issue.as_deref())?;
    let client = client(&inst)?;
    let port = inst.config.sidecar.port;
    // Only "no answer" gets the remedy; a refusal speaks for itself.
    let unreachable = |e: ServiceError| match e {
        ServiceError::Unreachable { .. } => anyhow::anyhow!(
            "the sidecar on 127.0.0.1:{port} does not answer ({e}) — check it with `cco health`, start it with `cco daemon start`"
        ),
        e => anyhow::Error::new(e),
    };
    match args.command {
        None => {
            let list = client.leases(issue.as_ref()).map_err(unreachable)?;
            let mut out = std::io::stdout().lock();
            if args.json {
                writeln!(out, "{}", inert::json_pretty(&list)?)?;
            } else {
                out.write_all(render_table(&list.leases).as_bytes())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(LeasesCommand::Release { id }) => {
            let all = client.leases(issue.as_ref()).map_err(unreachable)?;
            let Some(lease) = all.leases.iter().find(|l| l.lease_id == id) else {
                bail!(
                    "no live lease {} (it may have expired or been released) — list them with `cco leases`",
                    inert::line(&id)
                );
            };
            let done = client
                .release_lease(&lease.issue_id, &id, None)
                .map_err(unreachable)?;
            for id in done.released {
                println!(
                    "released {id} ({} held by {})",
                    lease.paths.join(", "),
                    lease.agent_id
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// One row per lease: ID, ISSUE, AGENT, MODE, EXPIRES, PATHS, REASON.
pub fn render_table(leases: &[Lease]) -> String {
    if leases.is_empty() {
        return "no leases\n".into();
    }
    let mut out = format!(
        "{:<22}  {:<16}  {:<20}  {:<9}  {:<24}  {}\n",
        "ID", "ISSUE", "AGENT", "MODE", "EXPIRES", "PATHS (REASON)"
    );
    for l in leases {
        let agent = match &l.agent_type {
            Some(t) => format!("{} ({t})", l.agent_id),
            None => l.agent_id.to_string(),
        };
        let line = format!(
            "{:<22}  {:<16}  {:<20}  {:<9}  {:<24}  {}{}",
            inert::line(&l.lease_id),
            l.issue_id,
            agent,
            l.mode.as_str(),
            inert::line(&l.expires_at),
            inert::line(&l.paths.join(", ")),
            if l.reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", inert::line(&l.reason))
            }
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
