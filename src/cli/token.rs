//! `cco token`: mints a scoped token for scripts and agents, printed on stdout only, so
//! `TOKEN=$(cco token --issue issue-1)` works.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::api::{AgentType, IssueId};
use crate::auth::{Keys, Scope, TokenSpec};
use crate::paths::Installation;
use crate::paths::PathError;
use crate::secret::{Secret, SecretError};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Bind the token to one agent type (routes for other types answer 403).
    #[arg(long, value_name = "TYPE")]
    pub agent_type: Option<AgentType>,
    /// Bind the token to one issue.
    #[arg(long, value_name = "ISSUE")]
    pub issue: Option<IssueId>,
    /// Lifetime ("1h", "30m", "7d").
    #[arg(long, default_value = "1h", value_parser = crate::config::parse_token_ttl)]
    pub ttl: Duration,
    /// Scopes (repeat or comma-separate): context:read results:read results:write
    /// events:publish events:wait agents:read agents:write. Default: all.
    #[arg(long, value_delimiter = ',', value_parser = parse_scope)]
    pub scope: Vec<Scope>,
    /// Project directory the token may read context from (default: the current directory).
    #[arg(long, value_name = "DIR", conflicts_with = "any_project")]
    pub project: Option<PathBuf>,
    /// Do not bind the token to a project (context requests then pass `?project=`).
    #[arg(long)]
    pub any_project: bool,
    /// Subject recorded in the token (default: "cli").
    #[arg(long, default_value = "cli")]
    pub sub: String,
}

fn parse_scope(s: &str) -> Result<Scope, String> {
    Scope::parse(s.trim()).ok_or_else(|| {
        let all: Vec<_> = Scope::ALL.iter().map(|s| s.as_str()).collect();
        format!("unknown scope {s:?}; use one of {}", all.join(", "))
    })
}

pub fn run(config: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    let inst = Installation::from_process(config)?;
    let secret_file = inst.paths.secret_file();
    // Each secret error names its own fix (set up, chmod, rm); only a bare I/O error needs
    // saying what was being read.
    let secret = Secret::load(&secret_file).map_err(|e| match e {
        SecretError::Path(PathError::Io { .. } | PathError::WrongKind { .. }) => {
            anyhow::anyhow!("cannot read the secret: {e}")
        }
        e => e.into(),
    })?;
    let keys = Keys::new(&secret).map_err(|e| anyhow::anyhow!("{e}: {}", secret_file.display()))?;
    let project = if args.any_project {
        None
    } else {
        let dir = match args.project {
            Some(p) => p,
            None => std::env::current_dir().context("cannot read the current directory")?,
        };
        let dir = std::fs::canonicalize(&dir)
            .with_context(|| format!("project directory {} does not exist", dir.display()))?;
        Some(dir.display().to_string())
    };
    let spec = TokenSpec {
        sub: args.sub,
        ttl: args.ttl,
        scopes: if args.scope.is_empty() {
            Scope::ALL.to_vec()
        } else {
            args.scope
        },
        project,
        issue_id: args.issue.map(|i| i.to_string()),
        agent_type: args.agent_type.map(|t| t.to_string()),
    };
    println!("{}", keys.mint(&spec).0);
    Ok(ExitCode::SUCCESS)
}
