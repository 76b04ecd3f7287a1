//! `cco cost [--issue I] [--by agent-type|issue|model|session|agent] [--since …] [--json]`:
//! what the sessions' model requests cost, from Claude Code's own telemetry, joined to the
//! agents and issues that made them; `--outcomes` splits it by how the agents ended.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use crate::api::IssueId;
use crate::api::cost::{CostBy, CostOutcomes, CostReport, CostSums};
use crate::api::inert;
use crate::auth::{Keys, Scope, TokenSpec};
use crate::client::{ServiceError, SidecarClient};
use crate::paths::Installation;
use crate::secret::Secret;

/// Lifetime of the token minted for one command.
const TOKEN_TTL: Duration = Duration::from_secs(60);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this issue's spend.
    #[arg(long, value_name = "ISSUE")]
    pub issue: Option<String>,
    /// Group by: agent-type (the main thread is "orchestrator"), issue, model, session or
    /// agent.
    #[arg(long, value_name = "GROUP", default_value = "agent-type", value_parser = parse_by)]
    pub by: CostBy,
    /// Only requests made since then: RFC 3339 (2026-01-31T09:00:00Z) or unix milliseconds.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Per issue, the spend of completed, failed and active agents and the orchestrator's.
    #[arg(long)]
    pub outcomes: bool,
    /// Print the API's JSON (`{"by", "rows", "total"}`; with --outcomes `{"rows"}`).
    #[arg(long)]
    pub json: bool,
}

fn parse_by(s: &str) -> Result<CostBy, String> {
    CostBy::parse(s).ok_or_else(|| {
        format!(
            "expected one of {}",
            CostBy::ALL.map(CostBy::as_str).join(", ")
        )
    })
}

fn client(inst: &Installation) -> anyhow::Result<SidecarClient> {
    let secret = Secret::load(&inst.paths.secret_file())?;
    let keys = Keys::new(&secret)?;
    let mut spec = TokenSpec::session("cco-cost", TOKEN_TTL);
    spec.scopes = vec![Scope::AgentsRead];
    Ok(SidecarClient::new(inst.config.sidecar.port).with_token(keys.mint(&spec).0))
}

pub fn run(config: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    let inst = Installation::from_process(config)?;
    let issue = args
        .issue
        .as_deref()
        .map(|i| {
            IssueId::parse(i).map_err(|e| anyhow::anyhow!("{e} — pass e.g. `--issue issue-42`"))
        })
        .transpose()?;
    if let Some(s) = args.since.as_deref() {
        crate::sidecar::cost::parse_since(s)
            .map_err(|e| anyhow::anyhow!("{e} — e.g. `cco cost --since 2026-01-31T09:00:00Z`"))?;
    }
    let client = client(&inst)?;
    let port = inst.config.sidecar.port;
    let unreachable = |e: ServiceError| match e {
        ServiceError::Unreachable { .. } => anyhow::anyhow!(
            "the sidecar on 127.0.0.1:{port} does not answer ({e}) — check it with `cco health`, start it with `cco daemon start`"
        ),
        e => anyhow::Error::new(e),
    };
    let mut out = std::io::stdout().lock();
    if args.outcomes {
        let got = client.cost_outcomes(issue.as_ref()).map_err(unreachable)?;
        if args.json {
            writeln!(out, "{}", inert::json_pretty(&got)?)?;
        } else {
            out.write_all(render_outcomes(&got).as_bytes())?;
        }
    } else {
        let got = client
            .cost(issue.as_ref(), args.by, args.since.as_deref())
            .map_err(unreachable)?;
        if args.json {
            writeln!(out, "{}", inert::json_pretty(&got)?)?;
        } else {
            out.write_all(render_report(&got).as_bytes())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `$0.0123`: four decimals, since single requests cost fractions of a cent.
fn usd(v: f64) -> String {
    format!("${v:.4}")
}

fn share(part: f64, whole: f64) -> String {
    if whole > 0.0 {
        format!("{:.1}%", 100.0 * part / whole)
    } else {
        "-".into()
    }
}

const NO_RECORDS: &str = "no cost recorded yet — sessions started with `cco` report it (launcher.telemetry, see README \"What it cost\")\n";

/// KEY, REQUESTS, INPUT, OUTPUT, CACHE READ, CACHE WRITE, COST, SHARE; then the total.
pub fn render_report(r: &CostReport) -> String {
    if r.rows.is_empty() {
        return NO_RECORDS.into();
    }
    let width = r
        .rows
        .iter()
        .map(|row| inert::line(&row.key).chars().count())
        .chain([r.by.as_str().len(), "TOTAL".len()])
        .max()
        .unwrap_or(5)
        .min(48);
    let line = |key: &str, s: &CostSums, share: &str| {
        format!(
            "{key:<width$}  {:>8}  {:>10}  {:>10}  {:>10}  {:>11}  {:>10}  {share:>6}\n",
            s.requests,
            s.input_tokens,
            s.output_tokens,
            s.cache_read_tokens,
            s.cache_creation_tokens,
            usd(s.cost_usd),
        )
    };
    let mut out = format!(
        "{:<width$}  {:>8}  {:>10}  {:>10}  {:>10}  {:>11}  {:>10}  {:>6}\n",
        r.by.as_str().to_uppercase(),
        "REQUESTS",
        "INPUT",
        "OUTPUT",
        "CACHE READ",
        "CACHE WRITE",
        "COST",
        "SHARE"
    );
    for row in &r.rows {
        out += &line(
            &inert::line(&row.key),
            &row.sums,
            &share(row.sums.cost_usd, r.total.cost_usd),
        );
    }
    out += &line(
        "TOTAL",
        &r.total,
        &share(r.total.cost_usd, r.total.cost_usd),
    );
    out
}

/// ISSUE, then agents and cost for completed / failed / active agents and the orchestrator.
pub fn render_outcomes(o: &CostOutcomes) -> String {
    if o.rows.is_empty() {
        return NO_RECORDS.into();
    }
    let mut out = format!(
        "{:<24}  {:>18}  {:>18}  {:>18}  {:>12}  {:>10}\n",
        "ISSUE", "COMPLETED", "FAILED", "ACTIVE", "ORCHESTRATOR", "TOTAL"
    );
    let spend = |agents: u64, cost: f64| format!("{agents} × {}", usd(cost));
    for row in &o.rows {
        out += &format!(
            "{:<24}  {:>18}  {:>18}  {:>18}  {:>12}  {:>10}\n",
            inert::line(&row.issue),
            spend(row.completed.agents, row.completed.sums.cost_usd),
            spend(row.failed.agents, row.failed.sums.cost_usd),
            spend(row.active.agents, row.active.sums.cost_usd),
            usd(row.orchestrator.cost_usd),
            usd(row.total.cost_usd),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::cost::CostRow;

    #[test]
    fn the_table_shows_each_group_its_share_and_the_total() {
        let sums = |requests, cost_usd| CostSums {
            requests,
            input_tokens: 10 * requests,
            output_tokens: 5,
            cost_usd,
            ..CostSums::default()
        };
        let report = CostReport {
            by: CostBy::AgentType,
            rows: vec![
                CostRow {
                    key: "rust-specialist".into(),
                    sums: sums(3, 0.75),
                },
                CostRow {
                    key: "orchestrator".into(),
                    sums: sums(1, 0.25),
                },
            ],
            total: sums(4, 1.0),
        };
        let table = render_report(&report);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("AGENT-TYPE"), "{table}");
        assert!(lines[1].starts_with("rust-specialist") && lines[1].ends_with("75.0%"));
        assert!(lines[1].contains("$0.7500"), "{table}");
        assert!(lines[2].starts_with("orchestrator") && lines[2].ends_with("25.0%"));
        assert!(lines[3].starts_with("TOTAL") && lines[3].contains("$1.0000"));
        let empty = CostReport {
            rows: Vec::new(),
            ..report
        };
        assert!(render_report(&empty).starts_with("no cost recorded yet"));
        assert!(parse_by("model").is_ok());
        assert!(parse_by("colour").unwrap_err().contains("agent-type"));
    }
}
