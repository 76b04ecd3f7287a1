//! `cco agents list|show|lint|cost`: inspect the roster (built-ins overlaid with the user's
//! `~/.config/cco/agents/*.md`), check the user's agent files before the daemon loads them,
//! and show what the roster and rules cost Claude's context in a directory.

use std::borrow::Cow;
use std::fmt;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::api::inert;
use crate::paths::Installation;
use crate::roster::MAX_ARG_BYTES;
use crate::roster::{self, Agent, AgentError, LoadReport, Roster, RosterChoice};

/// Table width when stdout is not a terminal (or its width is unknown).
const DEFAULT_WIDTH: usize = 80;
/// The description column never shrinks below this, even on a narrow terminal.
const MIN_DESCRIPTION_WIDTH: usize = 20;
/// How many "did you mean" names an unknown agent name lists.
const MAX_SUGGESTIONS: usize = 5;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: AgentsCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum AgentsCommand {
    /// List every agent type: the built-ins and the user's (~/.config/cco/agents/*.md).
    List(ListArgs),
    /// Print one agent type's full definition, in the agent file format; or, given an agent
    /// id, that agent: what cco told it (context, note, inbox) and its result.
    Show(ShowArgs),
    /// Check agent files; prints `path: message` per problem and exits 1 if there is one.
    Lint(LintArgs),
    /// Which agents `cco` would pass to Claude in the current directory, and the bytes
    /// (≈ tokens) cco adds to each main-thread and sub-agent request.
    Cost(CostArgs),
}

#[derive(Debug, clap::Args)]
pub struct CostArgs {
    /// Price this choice instead of `launcher.roster`: auto, all, none or agent names
    /// separated by commas (as `cco --roster` takes it).
    #[arg(long, value_name = "WHICH", value_parser = RosterChoice::parse)]
    pub roster: Option<RosterChoice>,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Print the agents as a JSON array (every field, including the prompt).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The agent type's name, as `cco agents list` shows it, or an agent's id, as
    /// `GET /api/agents` gives it.
    pub name: String,
    /// Print it as JSON (an agent id: the `GET /api/agents/{agent_id}` answer).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct LintArgs {
    /// Agent files to check (default: every *.md in ~/.config/cco/agents).
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

pub fn run(config: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    let inst = Installation::from_process(config)?;
    let user_dir = inst.paths.user_agents_dir();
    match args.command {
        AgentsCommand::List(a) => list(&user_dir, a),
        AgentsCommand::Show(a) => show(&inst, &user_dir, a),
        AgentsCommand::Lint(a) => lint(&user_dir, a),
        AgentsCommand::Cost(a) => cost(&inst, &user_dir, a),
    }
}

fn load(user_dir: &Path) -> anyhow::Result<Roster> {
    let (roster, problems) = Roster::load(user_dir)?;
    for p in &problems {
        eprintln!(
            "warning: skipping {} (check it with `cco agents lint`)",
            inert::line(&p.to_string())
        );
    }
    Ok(roster)
}

fn list(user_dir: &Path, args: ListArgs) -> anyhow::Result<ExitCode> {
    let roster = load(user_dir)?;
    let agents: Vec<&Agent> = roster.agents.values().collect();
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", inert::json_pretty(&agents)?)?;
    } else {
        out.write_all(render_table(&agents, output_width()).as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}

fn show(inst: &Installation, user_dir: &Path, args: ShowArgs) -> anyhow::Result<ExitCode> {
    let roster = load(user_dir)?;
    let Some(agent) = roster.get(&args.name) else {
        // Not a type: an agent of the registry, by id.
        let mut unreachable = String::new();
        if let Ok(id) = crate::api::AgentId::parse(&args.name) {
            match super::told::fetch(inst, &id)? {
                super::told::Lookup::Found(detail) => {
                    super::told::print(&detail, args.json)?;
                    return Ok(ExitCode::SUCCESS);
                }
                super::told::Lookup::Unreachable(why) => unreachable = format!("; {why}"),
                super::told::Lookup::Unknown => {}
            }
        }
        let names = roster.agents.keys().map(String::as_str);
        let close = close_matches(&args.name, names);
        let hint = if close.is_empty() {
            String::new()
        } else {
            format!("; did you mean {}?", close.join(", "))
        };
        anyhow::bail!(
            "no agent named \"{}\"{hint} (`cco agents list` shows every agent){unreachable}",
            inert::line(&args.name)
        );
    };
    if args.json {
        writeln!(std::io::stdout(), "{}", inert::json_pretty(agent)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    std::io::stdout().write_all(inert::block(&render_definition(agent)).as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

fn lint(user_dir: &Path, args: LintArgs) -> anyhow::Result<ExitCode> {
    // The daemon's own loader: lint reports exactly what it would skip or warn about.
    let (roster, report, checked) = if args.files.is_empty() {
        let files = roster::user_files(user_dir).with_context(|| {
            format!(
                "cannot list {} — check its permissions with `ls -ld {}`",
                user_dir.display(),
                user_dir.display()
            )
        })?;
        let (roster, report) = Roster::load_checked(user_dir)?;
        if files.is_empty() && report.problems.is_empty() {
            println!(
                "no agent files in {} (add NAME.md files there to define or override agents)",
                inert::line(&user_dir.display().to_string())
            );
            return Ok(ExitCode::SUCCESS);
        }
        (roster, report, files.len())
    } else {
        let (roster, report) = Roster::load_files(&args.files)?;
        (roster, report, args.files.len())
    };
    let mut out = std::io::stdout().lock();
    for d in diagnostics(&report) {
        writeln!(out, "{}", inert::line(&d.to_string()))?;
    }
    let bad = files_with_problems(&report);
    if bad > 0 {
        writeln!(
            out,
            "{bad} of {checked} agent files have problems: fix them and run `cco agents lint` again"
        )?;
        return Ok(ExitCode::FAILURE);
    }
    // The whole roster travels to Claude as one argument: check what the launcher will pass.
    let size = roster.claude_json().len();
    if size > MAX_ARG_BYTES {
        writeln!(
            out,
            "the roster (built-ins and your agents) is {} KiB as JSON; Claude can be passed at most {} KiB — shorten your agents' prompts and run `cco agents lint` again",
            size / 1024,
            MAX_ARG_BYTES / 1024
        )?;
        return Ok(ExitCode::FAILURE);
    }
    let long: Vec<&Agent> = roster
        .agents
        .values()
        .filter(|a| {
            !a.source.starts_with("builtin:")
                && a.description.chars().count() > roster::MAX_DESCRIPTION_CHARS
        })
        .collect();
    if !long.is_empty() {
        writeln!(
            out,
            "{} agent descriptions are over {} characters (Claude repeats each in every main-thread request): shorten them and run `cco agents lint` again",
            long.len(),
            roster::MAX_DESCRIPTION_CHARS
        )?;
        return Ok(ExitCode::FAILURE);
    }
    writeln!(out, "{checked} agents OK")?;
    Ok(ExitCode::SUCCESS)
}

/// Bytes per token, roughly, for English text and JSON: what "≈ tokens" divides by.
pub const BYTES_PER_TOKEN: usize = 4;

/// What cco adds to Claude's requests in one directory: `cco agents cost`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Cost {
    pub directory: String,
    /// `auto`, `all`, `none` or the names.
    pub roster: String,
    /// Where the choice came from: `launcher.roster`, `launcher.pass_agents` or `--roster`.
    pub chosen_by: &'static str,
    pub agents: Vec<AgentCost>,
    /// Listed names that no agent has.
    pub unknown: Vec<String>,
    pub main_turn: MainTurn,
    pub subagent_turn: SubagentTurn,
    /// How long the launcher's part took here (looking at the directory, cutting the
    /// roster JSON down), in microseconds.
    pub selection_micros: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct AgentCost {
    pub name: String,
    pub reason: String,
    /// Its line in every main-thread request.
    pub line_bytes: usize,
    /// Its prompt: the system prompt of its own sub-agent requests.
    pub prompt_bytes: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct MainTurn {
    /// `--append-system-prompt` (0 with `launcher.append_rules = false`).
    pub rules_bytes: usize,
    /// The agents' lines as Claude shows them.
    pub roster_bytes: usize,
    pub bytes: usize,
    pub tokens: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SubagentTurn {
    /// The largest prompt among the passed agents.
    pub max_prompt_bytes: usize,
    /// The context cco injects when a sub-agent starts is at most this
    /// (`sidecar.context_budget_bytes`); a small project's is far less.
    pub max_context_bytes: usize,
    pub max_bytes: usize,
    pub max_tokens: usize,
}

/// The cost of `choice` for `roster` in `dir`.
pub fn price(
    roster: &Roster,
    choice: &RosterChoice,
    dir: &Path,
    rules_bytes: usize,
    max_context_bytes: usize,
) -> (Vec<AgentCost>, Vec<String>, MainTurn, SubagentTurn, u64) {
    // The launcher's own path, timed: it runs on every `cco` start.
    let sealed = roster.claude_json();
    let started = std::time::Instant::now();
    let passed = crate::cli::launch::roster_arg(sealed.as_bytes(), choice, dir);
    let micros = started.elapsed().as_micros() as u64;
    drop(passed);
    let selection = roster::select(choice, roster.agents.keys().map(String::as_str), || {
        roster::Project::scan(dir)
    });
    let agents: Vec<AgentCost> = selection
        .agents
        .iter()
        .filter_map(|(name, why)| {
            let a = roster.get(name)?;
            Some(AgentCost {
                name: name.clone(),
                reason: why.to_string(),
                line_bytes: json_len(&roster::claude_roster_line(a)),
                prompt_bytes: a.prompt.len(),
            })
        })
        .collect();
    let roster_bytes = agents.iter().map(|a| a.line_bytes).sum();
    let bytes = rules_bytes + roster_bytes;
    let main = MainTurn {
        rules_bytes,
        roster_bytes,
        bytes,
        tokens: bytes.div_ceil(BYTES_PER_TOKEN),
    };
    let max_prompt_bytes = agents.iter().map(|a| a.prompt_bytes).max().unwrap_or(0);
    let max_bytes = max_prompt_bytes + max_context_bytes;
    let sub = SubagentTurn {
        max_prompt_bytes,
        max_context_bytes,
        max_bytes,
        max_tokens: max_bytes.div_ceil(BYTES_PER_TOKEN),
    };
    (agents, selection.unknown, main, sub, micros)
}

fn cost(inst: &Installation, user_dir: &Path, args: CostArgs) -> anyhow::Result<ExitCode> {
    let roster = load(user_dir)?;
    let launcher = &inst.config.launcher;
    let (choice, chosen_by) = match (args.roster, launcher.pass_agents) {
        (Some(c), _) => (c, "--roster"),
        (None, false) => (RosterChoice::None, "launcher.pass_agents"),
        (None, true) => (launcher.roster.clone(), "launcher.roster"),
    };
    let dir = std::env::current_dir()
        .context("cannot read the current directory — `cd` into a project")?;
    let rules_bytes = if launcher.append_rules {
        json_len(roster::rules())
    } else {
        0
    };
    let (agents, unknown, main_turn, subagent_turn, selection_micros) = price(
        &roster,
        &choice,
        &dir,
        rules_bytes,
        inst.config.sidecar.context_budget_bytes,
    );
    let cost = Cost {
        directory: dir.display().to_string(),
        roster: choice.label(),
        chosen_by,
        agents,
        unknown,
        main_turn,
        subagent_turn,
        selection_micros,
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", inert::json_pretty(&cost)?)?;
    } else {
        out.write_all(render_cost(&cost).as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Bytes of `text` inside a JSON request body (newlines and quotes are escaped there).
fn json_len(text: &str) -> usize {
    serde_json::to_string(text).map_or(text.len(), |s| s.len() - 2)
}

/// `cco agents cost` for people.
pub fn render_cost(c: &Cost) -> String {
    let mut s = format!(
        "roster {} ({}) in {}: {} agents passed to Claude\n",
        inert::line(&c.roster),
        c.chosen_by,
        inert::line(&c.directory),
        c.agents.len()
    );
    let width = c.agents.iter().map(|a| a.name.len()).max().unwrap_or(0);
    for a in &c.agents {
        s.push_str(&format!(
            "  {:width$}  {:>4} B line  {:>5} B prompt  {}\n",
            inert::line(&a.name),
            a.line_bytes,
            a.prompt_bytes,
            inert::line(&a.reason)
        ));
    }
    for n in &c.unknown {
        s.push_str(&format!(
            "  (no agent named \"{}\": not passed — `cco agents list` shows the names)\n",
            inert::line(n)
        ));
    }
    let m = &c.main_turn;
    s.push_str(&format!(
        "per main-thread request: {} B ≈ {} tokens (rules {} B + agent lines {} B)\n",
        m.bytes, m.tokens, m.rules_bytes, m.roster_bytes
    ));
    let sub = &c.subagent_turn;
    s.push_str(&format!(
        "per sub-agent request: at most {} B ≈ {} tokens (its prompt, at most {} B, + the context cco injects, at most {} B)\n",
        sub.max_bytes, sub.max_tokens, sub.max_prompt_bytes, sub.max_context_bytes
    ));
    s.push_str(&format!(
        "choosing the agents took the launcher {} µs here; `cco agents cost --roster all` prices the full roster\n",
        c.selection_micros
    ));
    s
}

/// One finding of `cco agents lint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub path: String,
    pub severity: Severity,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The file is not used by the daemon.
    Error,
    /// Used, but probably not what the author meant.
    Warning,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.severity {
            Severity::Error => write!(f, "{}: {}", self.path, self.message),
            Severity::Warning => write!(f, "{}: warning: {}", self.path, self.message),
        }
    }
}

/// The loader's problems and warnings, in file order (problems of a file before its warnings).
pub fn diagnostics(report: &LoadReport) -> Vec<Diagnostic> {
    let as_diag = |severity| {
        move |e: &AgentError| Diagnostic {
            path: e.source_name.clone(),
            severity,
            message: e.message.clone(),
        }
    };
    let mut all: Vec<Diagnostic> = report
        .problems
        .iter()
        .map(as_diag(Severity::Error))
        .chain(report.warnings.iter().map(as_diag(Severity::Warning)))
        .collect();
    // Stable: within one file, the loader's order stays.
    all.sort_by(|a, b| a.path.cmp(&b.path));
    all
}

/// How many files (or directories) the loader did not use.
pub fn files_with_problems(report: &LoadReport) -> usize {
    report
        .problems
        .iter()
        .map(|p| p.source_name.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

/// Where an agent came from, for the SOURCE column.
fn source_label(agent: &Agent) -> &str {
    if agent.source.starts_with("builtin:") {
        "builtin"
    } else {
        &agent.source
    }
}

/// The `list` table: NAME, MODEL, SOURCE, DESCRIPTION, the description cut to fit `width`.
pub fn render_table(agents: &[&Agent], width: usize) -> String {
    // Descriptions, models and paths come from files: each cell is made inert.
    let rows: Vec<[Cow<str>; 4]> = agents
        .iter()
        .map(|a| {
            [
                inert::line(&a.name),
                inert::line(a.model.as_deref().unwrap_or("-")),
                inert::line(source_label(a)),
                inert::line(&a.description),
            ]
        })
        .collect();
    let header = ["NAME", "MODEL", "SOURCE", "DESCRIPTION"].map(Cow::Borrowed);
    let col = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([header[i].len()])
            .max()
            .unwrap_or(0)
    };
    let (w0, w1, w2) = (col(0), col(1), col(2));
    let used = w0 + w1 + w2 + 6;
    let desc_width = width.saturating_sub(used).max(MIN_DESCRIPTION_WIDTH);
    let mut out = String::new();
    for r in std::iter::once(header).chain(rows) {
        let line = format!(
            "{:w0$}  {:w1$}  {:w2$}  {}",
            r[0],
            r[1],
            r[2],
            truncate(&r[3], desc_width)
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `s` cut to at most `max` characters, ending in `…` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

/// The agent in its file format (so `cco agents show x > ~/.config/cco/agents/x.md` starts an
/// override), with its source as a front matter comment.
pub fn render_definition(a: &Agent) -> String {
    let mut s = format!("---\n# source: {}\n", a.source);
    s.push_str(&format!("name: {}\n", a.name));
    s.push_str(&format!("description: {}\n", a.description));
    if !a.tools.is_empty() {
        s.push_str(&format!("tools: {}\n", a.tools.join(", ")));
    }
    if let Some(m) = &a.model {
        s.push_str(&format!("model: {m}\n"));
    }
    if !a.context.is_empty() {
        let globs: Vec<String> = a
            .context
            .iter()
            .map(|g| {
                if g.contains(['*', ' ', '?', '[']) {
                    format!("{g:?}")
                } else {
                    g.clone()
                }
            })
            .collect();
        s.push_str(&format!("context: {}\n", globs.join(", ")));
    }
    s.push_str("---\n");
    s.push_str(&a.prompt);
    s.push('\n');
    s
}

/// Names close to `wanted`: sharing a prefix or containing it, or within a small edit
/// distance; nearest first.
pub fn close_matches<'a>(wanted: &str, names: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let wanted = wanted.to_lowercase();
    let limit = (wanted.chars().count() / 4).max(2);
    let mut scored: Vec<(usize, &str)> = names
        .filter_map(|n| {
            let d = edit_distance(&wanted, n);
            let related = !wanted.is_empty() && (n.starts_with(&wanted) || n.contains(&wanted));
            (related || d <= limit).then_some((if related { 0 } else { d }, n))
        })
        .collect();
    scored.sort();
    scored
        .into_iter()
        .take(MAX_SUGGESTIONS)
        .map(|(_, n)| n)
        .collect()
}

/// Levenshtein distance over characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let subst = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = subst.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The terminal's width when stdout is one, else `$COLUMNS`, else [`DEFAULT_WIDTH`].
fn output_width() -> usize {
    let stdout = std::io::stdout();
    if stdout.is_terminal() {
        // SAFETY: TIOCGWINSZ writes one `winsize` into the struct we own.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
        if ok && ws.ws_col > 0 {
            return usize::from(ws.ws_col);
        }
    }
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|&c| c > 0)
        .unwrap_or(DEFAULT_WIDTH)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(name: &str, source: &str, description: &str) -> Agent {
        Agent {
            name: name.into(),
            description: description.into(),
            prompt: "Do the thing.\nReport it.".into(),
            tools: vec!["Read".into(), "Grep".into()],
            model: Some("sonnet".into()),
            context: vec!["**/*.rs".into(), "Cargo.toml".into()],
            source: source.into(),
        }
    }

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("abc", ""), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("rust-specialist", "rust-specialist"), 0);
        assert_eq!(edit_distance("sre", "sr"), 1);
    }

    #[test]
    fn close_matches_prefer_prefixes_and_typos() {
        let names = [
            "rust-specialist",
            "ruby-specialist",
            "react-specialist",
            "sre",
            "security-auditor",
        ];
        let m = close_matches("rust", names.iter().copied());
        assert_eq!(m, ["rust-specialist"]);
        let m = close_matches("rust-specalist", names.iter().copied());
        assert_eq!(m[0], "rust-specialist");
        assert!(m.contains(&"ruby-specialist"), "{m:?}");
        assert_eq!(close_matches("SRE", names.iter().copied()), ["sre"]);
        assert!(close_matches("zzzzzzzzzz", names.iter().copied()).is_empty());
        let many = ["a-x", "a-y", "a-z", "a-w", "a-v", "a-u"];
        assert_eq!(
            close_matches("a-", many.iter().copied()).len(),
            MAX_SUGGESTIONS
        );
    }

    #[test]
    fn truncate_marks_cuts() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("exactly10!", 10), "exactly10!");
        assert_eq!(truncate("much longer text", 8), "much lo…");
        assert_eq!(truncate("ééééé", 3), "éé…");
    }

    #[test]
    fn table_aligns_columns_and_fits_the_width() {
        let a = agent("a", "builtin:a.md", &"word ".repeat(40));
        let b = agent("longer-name", "/home/u/.config/cco/agents/x.md", "short");
        let table = render_table(&[&a, &b], 100);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[0].starts_with("NAME         MODEL   SOURCE"),
            "{table}"
        );
        assert!(
            lines[1].starts_with("a            sonnet  builtin "),
            "{table}"
        );
        assert!(lines[2].contains("/home/u/.config/cco/agents/x.md  short"));
        assert!(lines.iter().all(|l| l.chars().count() <= 100), "{table}");
        assert!(lines[1].ends_with('…'));
        // Too narrow for the fixed columns: the description keeps its minimum.
        let narrow = render_table(&[&a], 10);
        assert!(narrow.lines().nth(1).unwrap().ends_with('…'));
        assert!(narrow.contains(&truncate(&a.description, MIN_DESCRIPTION_WIDTH)));
    }

    #[test]
    fn the_table_prints_file_text_inert() {
        let a = agent("a", "/tmp/x\u{1b}]0;t\u{7}.md", "evil \u{9b}2J \u{202e}txt");
        let table = render_table(&[&a], 200);
        assert!(
            !table.chars().any(|c| inert::is_unsafe(c) && c != '\n'),
            "{table:?}"
        );
        assert!(table.contains("evil \\u009b2J \\u202etxt"), "{table}");
    }

    #[test]
    fn definition_round_trips_through_the_parser() {
        for a in Roster::builtin().unwrap().agents.values() {
            let text = render_definition(a);
            assert!(text.contains(&a.prompt));
            let back = Agent::parse(&a.source, &text).unwrap();
            assert_eq!(&back, a);
        }
    }

    #[test]
    fn lint_reports_what_the_loader_skips_and_warns_about() {
        let tmp = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let p = tmp.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let good = write(
            "good.md",
            "---\nname: mine\ndescription: d\ntools: Read, mcp__gh__issues\n---\nP.\n",
        );
        let bad = write("bad.md", "---\nname: x\n---\nP.\n");
        let over = write(
            "over.md",
            "---\nname: rust-specialist\ndescription: d\ntools: Read, Frobnicate\n---\nP.\n",
        );
        let dup = write("dup.md", "---\nname: mine\ndescription: e\n---\nQ.\n");
        let missing = tmp.path().join("missing.md");

        let (_, clean) = Roster::load_files(std::slice::from_ref(&good)).unwrap();
        assert!(diagnostics(&clean).is_empty(), "{clean:?}");

        let (roster, report) =
            Roster::load_files(&[good, bad.clone(), over.clone(), dup.clone(), missing]).unwrap();
        let shown: Vec<String> = diagnostics(&report)
            .iter()
            .map(ToString::to_string)
            .collect();
        let has = |path: &Path, text: &str| {
            shown
                .iter()
                .any(|s| s.starts_with(&format!("{}: ", path.display())) && s.contains(text))
        };
        assert!(has(&bad, "missing `description`"), "{shown:#?}");
        assert!(has(
            &over,
            "warning: overrides the built-in agent `rust-specialist`"
        ));
        assert!(has(
            &over,
            "warning: `Frobnicate` is not a known Claude Code tool"
        ));
        assert!(has(&dup, "already defined in"), "{shown:#?}");
        assert_eq!(
            roster.get("mine").unwrap().description,
            "d",
            "the first definition is used"
        );
        assert!(
            shown
                .iter()
                .any(|s| s.contains("missing.md: cannot read it"))
        );
        assert_eq!(files_with_problems(&report), 3, "{shown:#?}");
    }

    #[test]
    fn lint_and_the_daemon_refuse_a_fifo_and_an_oversized_file() {
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("fifo.md");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let big = tmp.path().join("big.md");
        let prompt = "x".repeat(roster::MAX_AGENT_FILE_BYTES as usize);
        std::fs::write(
            &big,
            format!("---\nname: big\ndescription: d\n---\n{prompt}\n"),
        )
        .unwrap();
        // The loader returns at once (a FIFO without a writer would block a plain open).
        let (roster, problems) = Roster::load(tmp.path()).unwrap();
        assert!(roster.get("big").is_none());
        let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert!(
            shown
                .iter()
                .any(|s| s.contains("fifo.md") && s.contains("FIFO")),
            "{shown:#?}"
        );
        assert!(
            shown
                .iter()
                .any(|s| s.contains("big.md") && s.contains("larger than")),
            "{shown:#?}"
        );
    }
}
