//! The agent roster and the orchestrator rules. Built-in agents are the repository's
//! `agents/*.md` files (Claude Code's subagent format plus cco's `context:` globs), embedded
//! at build time; files in `~/.config/cco/agents/*.md` add agents or override them by name.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::api::AgentType;
use crate::paths::{self, PathError};
use crate::untrusted::{self, Links, ReadError};

include!(concat!(env!("OUT_DIR"), "/builtin_agents.rs"));

/// One agent type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Agent {
    pub name: String,
    pub description: String,
    pub prompt: String,
    /// Tool names; empty means "inherit all tools".
    pub tools: Vec<String>,
    /// `opus`, `sonnet`, `haiku` or `inherit`.
    pub model: Option<String>,
    /// Globs of the files this agent type wants in its context.
    pub context: Vec<String>,
    /// Where it came from: `builtin:<file>` or a path.
    pub source: String,
}

/// The shape `claude --agents` accepts: name → definition.
#[derive(Debug, Serialize)]
struct ClaudeAgent<'a> {
    description: &'a str,
    prompt: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    tools: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct AgentError {
    pub source_name: String,
    pub message: String,
}

const MODELS: [&str; 4] = ["opus", "sonnet", "haiku", "inherit"];

/// The roster and the rules each travel to Claude as one command-line argument, and Linux
/// refuses an argument over 128 KiB (`MAX_ARG_STRLEN`): stay well under it.
pub const MAX_ARG_BYTES: usize = 120 * 1024;

/// Claude Code's built-in tool names, as `tools:` lists them. MCP tools (`mcp__server__tool`)
/// are accepted too; see [`is_known_tool`].
pub const KNOWN_TOOLS: &[&str] = &[
    "Read",
    "Grep",
    "Glob",
    "Edit",
    "MultiEdit",
    "Write",
    "Bash",
    "BashOutput",
    "KillShell",
    "WebSearch",
    "WebFetch",
    "TodoWrite",
    "NotebookEdit",
    "Task",
    "Agent",
    "SlashCommand",
    "Skill",
    "ExitPlanMode",
];

/// Whether `tool` names a Claude Code tool: a built-in one or an MCP tool.
pub fn is_known_tool(tool: &str) -> bool {
    KNOWN_TOOLS.contains(&tool) || tool.starts_with("mcp__")
}

impl Agent {
    /// Parses Claude Code's subagent format: `---` front matter of `key: value` lines, then
    /// the system prompt. Known keys: name, description, tools, model, context.
    pub fn parse(source: &str, text: &str) -> Result<Agent, AgentError> {
        let err = |message: String| AgentError {
            source_name: source.to_string(),
            message,
        };
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let rest = text
            .strip_prefix("---\n")
            .or_else(|| text.strip_prefix("---\r\n"))
            .ok_or_else(|| err("must start with a `---` front matter line".into()))?;
        let end = rest
            .find("\n---")
            .ok_or_else(|| err("front matter is not closed with `---`".into()))?;
        let (front, body) = (&rest[..end], &rest[end + 4..]);
        let body = body.trim_start_matches(['\r', '\n']).trim_end();

        let mut fields = BTreeMap::new();
        for (i, line) in front.lines().enumerate() {
            let line = line.trim_end();
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let (k, v) = line.split_once(':').ok_or_else(|| {
                err(format!(
                    "front matter line {}: expected `key: value`",
                    i + 2
                ))
            })?;
            fields.insert(k.trim().to_string(), unquote(v.trim()).to_string());
        }
        let take = |k: &str| fields.get(k).cloned().filter(|v| !v.is_empty());
        let name = take("name").ok_or_else(|| err("missing `name`".into()))?;
        AgentType::parse(&name).map_err(|e| err(e.to_string()))?;
        let description = take("description").ok_or_else(|| err("missing `description`".into()))?;
        if body.is_empty() {
            return Err(err(
                "the prompt (text after the front matter) is empty".into()
            ));
        }
        let model = take("model");
        if let Some(m) = &model
            && !MODELS.contains(&m.as_str())
            && !m.starts_with("claude-")
        {
            return Err(err(format!(
                "model {m:?} is not one of {MODELS:?} or a claude-* model id"
            )));
        }
        for k in fields.keys() {
            if !["name", "description", "tools", "model", "context", "color"].contains(&k.as_str())
            {
                return Err(err(format!("unknown front matter key `{k}`")));
            }
        }
        Ok(Agent {
            name,
            description,
            prompt: body.to_string(),
            tools: list(take("tools").as_deref()),
            model,
            context: list(take("context").as_deref()),
            source: source.to_string(),
        })
    }
}

/// `"x"` → `x`; a value holding more quotes (`"a", "b"`) is a list and stays as it is.
fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .filter(|inner| !inner.contains('"'))
        .unwrap_or(v)
}

/// `a, b, "c d"` or `[a, b]` → items.
fn list(v: Option<&str>) -> Vec<String> {
    let Some(v) = v else { return Vec::new() };
    let v = v.trim().trim_start_matches('[').trim_end_matches(']');
    v.split(',')
        .map(|s| unquote(s.trim()).trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// What loading the user's agent files found, beside the roster itself.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Files (or the directory) not used, and why.
    pub problems: Vec<AgentError>,
    /// Files used, with something their author probably did not mean.
    pub warnings: Vec<AgentError>,
}

/// The whole roster, sorted by name.
#[derive(Debug, Clone, Default)]
pub struct Roster {
    pub agents: BTreeMap<String, Agent>,
}

impl Roster {
    /// The embedded agents. They are reviewed files; a parse failure is a build defect,
    /// caught by the test suite.
    pub fn builtin() -> Result<Roster, AgentError> {
        let mut agents = BTreeMap::new();
        for (file, text) in BUILTIN_AGENTS {
            let a = Agent::parse(&format!("builtin:{file}"), text)?;
            agents.insert(a.name.clone(), a);
        }
        Ok(Roster { agents })
    }

    /// Built-ins overlaid with the user's `*.md` files from `dir` (missing dir: none).
    /// Returns the roster and the problems found in user files (those files are skipped).
    pub fn load(user_dir: &Path) -> Result<(Roster, Vec<AgentError>), AgentError> {
        let (roster, report) = Roster::load_checked(user_dir)?;
        Ok((roster, report.problems))
    }

    /// [`Roster::load`] with the warnings too: what `cco agents lint` reports.
    pub fn load_checked(user_dir: &Path) -> Result<(Roster, LoadReport), AgentError> {
        let mut roster = Roster::builtin()?;
        let mut report = LoadReport::default();
        // Agent prompts are sealed into every session: a directory another user can write
        // to could smuggle one in, so none of its files is used.
        if let Err(e) = paths::check_trusted_dir(user_dir) {
            report.problems.push(untrusted(user_dir, &e));
            return Ok((roster, report));
        }
        match user_files(user_dir) {
            Ok(files) => roster.overlay(&files, &mut report),
            Err(e) => report.problems.push(AgentError {
                source_name: user_dir.display().to_string(),
                message: format!("cannot list it: {e}"),
            }),
        }
        Ok((roster, report))
    }

    /// Built-ins overlaid with `files`, exactly as [`Roster::load`] overlays a directory's.
    pub fn load_files(files: &[PathBuf]) -> Result<(Roster, LoadReport), AgentError> {
        let mut roster = Roster::builtin()?;
        let mut report = LoadReport::default();
        roster.overlay(files, &mut report);
        Ok((roster, report))
    }

    /// Adds each file's agent. A file that cannot be read, trusted or parsed, or that names an
    /// agent an earlier file already defined, is skipped with a problem; overriding a
    /// built-in and unknown tools are allowed with a warning.
    fn overlay(&mut self, files: &[PathBuf], report: &mut LoadReport) {
        let mut defined_by: BTreeMap<String, String> = BTreeMap::new();
        for path in files {
            let source = path.display().to_string();
            let agent = match read_agent_file(path).and_then(|text| Agent::parse(&source, &text)) {
                Ok(a) => a,
                Err(e) => {
                    report.problems.push(e);
                    continue;
                }
            };
            let note = |message: String| AgentError {
                source_name: source.clone(),
                message,
            };
            if let Some(first) = defined_by.get(&agent.name) {
                report.problems.push(note(format!(
                    "agent `{}` is already defined in {first}; this file is not used: rename or remove one",
                    agent.name
                )));
                continue;
            }
            if self
                .agents
                .get(&agent.name)
                .is_some_and(|a| a.source.starts_with("builtin:"))
            {
                report.warnings.push(note(format!(
                    "overrides the built-in agent `{}` (allowed; remove this file to use the built-in again)",
                    agent.name
                )));
            }
            for tool in agent.tools.iter().filter(|t| !is_known_tool(t)) {
                report.warnings.push(note(format!(
                    "`{tool}` is not a known Claude Code tool (known: {}, or mcp__SERVER__TOOL)",
                    KNOWN_TOOLS.join(", ")
                )));
            }
            defined_by.insert(agent.name.clone(), source.clone());
            self.agents.insert(agent.name.clone(), agent);
        }
    }

    pub fn get(&self, name: &str) -> Option<&Agent> {
        self.agents.get(name)
    }

    /// The JSON `claude --agents` accepts.
    pub fn claude_json(&self) -> String {
        let map: BTreeMap<&str, ClaudeAgent> = self
            .agents
            .values()
            .map(|a| {
                (
                    a.name.as_str(),
                    ClaudeAgent {
                        description: &a.description,
                        prompt: &a.prompt,
                        tools: &a.tools,
                        model: a.model.as_deref(),
                    },
                )
            })
            .collect();
        serde_json::to_string(&map).expect("roster serializes")
    }
}

/// Largest user agent file read. A prompt travels inside one command-line argument of at
/// most [`MAX_ARG_BYTES`], so nothing useful is larger; a bigger file is refused unread.
pub const MAX_AGENT_FILE_BYTES: u64 = MAX_ARG_BYTES as u64;

/// Reads a user agent file as cco trusts it: a regular file (never a FIFO or device, which
/// could block or never end, opened without waiting), no symlink, owned by this user or
/// root, not writable by group or others, in a directory that passes the same, and at most
/// [`MAX_AGENT_FILE_BYTES`].
pub fn read_agent_file(path: &Path) -> Result<String, AgentError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        paths::check_trusted_dir(dir).map_err(|e| untrusted(path, &e))?;
    }
    let unreadable = |e: ReadError| {
        let message = match e {
            ReadError::Io { source, .. } => format!("cannot read it: {source}"),
            ReadError::Symlink { .. } => {
                "not used: it is a symlink, which cco does not follow here — copy the file in its place".into()
            }
            ReadError::NotRegular { kind, .. } => {
                format!("not used: it is a {kind}, not a regular file — replace it with a regular file")
            }
            ReadError::TooLarge { cap, .. } => format!(
                "not used: it is larger than {} KiB — shorten the prompt",
                cap / 1024
            ),
        };
        AgentError {
            source_name: path.display().to_string(),
            message,
        }
    };
    let (file, meta) = untrusted::open_regular(path, Links::Refuse).map_err(unreadable)?;
    crate::securefs::check_trusted_meta(path, &meta).map_err(|e| untrusted(path, &e))?;
    let mut bytes = Vec::new();
    file.take(MAX_AGENT_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| {
            unreadable(ReadError::Io {
                path: path.into(),
                source,
            })
        })?;
    if bytes.len() as u64 > MAX_AGENT_FILE_BYTES {
        return Err(unreadable(ReadError::TooLarge {
            path: path.into(),
            cap: MAX_AGENT_FILE_BYTES,
        }));
    }
    String::from_utf8(bytes).map_err(|e| AgentError {
        source_name: path.display().to_string(),
        message: format!("not used: it is not UTF-8 text ({e})"),
    })
}

/// A file (or directory) that cannot be read or trusted, as a problem of `path`. The error
/// usually names `path` first; that is said once.
pub fn untrusted(path: &Path, e: &PathError) -> AgentError {
    let source_name = path.display().to_string();
    let message = match e {
        PathError::Io { source, .. } => format!("cannot read it: {source}"),
        e => {
            let text = e.to_string();
            match text.strip_prefix(&source_name) {
                Some(rest) => format!("not used: it{rest}"),
                None => format!("not used: {text}"),
            }
        }
    };
    AgentError {
        source_name,
        message,
    }
}

/// The `*.md` files directly in `dir`, sorted; a missing directory has none.
pub fn user_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut files = Vec::new();
    for e in entries {
        let path = e?.path();
        if path.extension().is_some_and(|x| x == "md") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The orchestrator rules appended to Claude's system prompt.
pub fn rules(roster: &Roster) -> String {
    let mut s = String::from(include_str!("../agents/RULES.txt"));
    s.push_str("\n## Agent types\n\n");
    for a in roster.agents.values() {
        s.push_str(&format!("- `{}`: {}\n", a.name, a.description));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_roster_parses() {
        let r = Roster::builtin().unwrap();
        assert!(!r.agents.is_empty());
        let json: serde_json::Value = serde_json::from_str(&r.claude_json()).unwrap();
        for (name, def) in json.as_object().unwrap() {
            assert!(
                def["description"].is_string() && def["prompt"].is_string(),
                "{name}"
            );
        }
    }

    /// Linux caps one argv string at 128 KiB (MAX_ARG_STRLEN); the roster travels as one.
    const MAX_BUILTIN_JSON: usize = 110_000;
    const MIN_BUILTIN_AGENTS: usize = 119;

    #[test]
    fn builtin_roster_is_large_enough_and_fits_one_argument() {
        let r = Roster::builtin().unwrap();
        assert!(
            r.agents.len() >= MIN_BUILTIN_AGENTS,
            "{} agents",
            r.agents.len()
        );
        let size = r.claude_json().len();
        assert!(size < MAX_BUILTIN_JSON, "roster JSON is {size} bytes");
    }

    #[test]
    fn builtin_agents_are_well_formed() {
        let r = Roster::builtin().unwrap();
        for (file, _) in BUILTIN_AGENTS {
            let stem = file.strip_suffix(".md").unwrap();
            assert!(
                r.get(stem).is_some(),
                "{file}: `name` must match the file name"
            );
        }
        for a in r.agents.values() {
            let n = &a.name;
            assert!(
                n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !n.starts_with('-'),
                "{n}: not kebab-case"
            );
            assert!(!a.tools.is_empty(), "{n}: no tools");
            for t in &a.tools {
                assert!(KNOWN_TOOLS.contains(&t.as_str()), "{n}: unknown tool {t}");
            }
            assert!(
                matches!(a.model.as_deref(), Some("opus" | "sonnet" | "haiku")),
                "{n}: model tier"
            );
            assert!(!a.context.is_empty(), "{n}: no context globs");
            let lines = a.prompt.lines().count();
            assert!((4..=8).contains(&lines), "{n}: prompt has {lines} lines");
            assert!(
                a.description.ends_with('.') && a.description.matches(". ").count() == 0,
                "{n}: description must be one sentence"
            );
        }
    }

    #[test]
    fn builtin_roster_covers_every_category() {
        // Category → agents that belong to it; each category needs several present.
        const CATEGORIES: &[(&str, &[&str])] = &[
            (
                "architecture",
                &[
                    "chief-architect",
                    "backend-architect",
                    "frontend-architect",
                    "api-designer",
                    "database-architect",
                    "cloud-architect",
                    "microservices-architect",
                    "event-driven-architect",
                ],
            ),
            (
                "languages",
                &[
                    "rust-specialist",
                    "python-specialist",
                    "typescript-specialist",
                    "go-specialist",
                    "java-specialist",
                    "cpp-specialist",
                    "shell-scripter",
                    "sql-specialist",
                ],
            ),
            (
                "frameworks",
                &[
                    "react-specialist",
                    "vue-specialist",
                    "django-specialist",
                    "fastapi-specialist",
                    "rails-specialist",
                    "spring-boot-specialist",
                ],
            ),
            (
                "testing",
                &[
                    "test-engineer",
                    "unit-test-writer",
                    "integration-tester",
                    "e2e-tester",
                    "fuzz-tester",
                    "qa-lead",
                ],
            ),
            (
                "security",
                &[
                    "security-auditor",
                    "penetration-tester",
                    "dependency-auditor",
                    "secrets-scanner",
                    "threat-modeler",
                    "crypto-reviewer",
                ],
            ),
            (
                "infrastructure",
                &[
                    "devops-engineer",
                    "kubernetes-specialist",
                    "terraform-specialist",
                    "docker-specialist",
                    "ci-cd-engineer",
                    "sre",
                ],
            ),
            (
                "data",
                &[
                    "data-engineer",
                    "ml-engineer",
                    "data-scientist",
                    "database-admin",
                    "postgres-specialist",
                    "mlops-engineer",
                ],
            ),
            (
                "documentation",
                &[
                    "documentation-writer",
                    "api-documenter",
                    "tutorial-writer",
                    "changelog-writer",
                    "adr-writer",
                    "readme-writer",
                ],
            ),
            (
                "research and review",
                &[
                    "code-reviewer",
                    "architecture-reviewer",
                    "researcher",
                    "refactoring-specialist",
                    "debugger",
                    "incident-responder",
                ],
            ),
        ];
        let r = Roster::builtin().unwrap();
        for (category, names) in CATEGORIES {
            let missing: Vec<_> = names.iter().filter(|n| r.get(n).is_none()).collect();
            assert!(missing.is_empty(), "{category}: missing {missing:?}");
        }
    }

    #[test]
    fn builtin_prompts_are_not_near_copies() {
        let r = Roster::builtin().unwrap();
        let words = |s: &str| -> std::collections::BTreeSet<String> {
            s.split(|c: char| !c.is_alphanumeric())
                .filter(|w| w.len() > 3)
                .map(str::to_lowercase)
                .collect()
        };
        let sets: Vec<_> = r
            .agents
            .values()
            .map(|a| (&a.name, words(&a.prompt)))
            .collect();
        for (i, (a, wa)) in sets.iter().enumerate() {
            for (b, wb) in &sets[i + 1..] {
                let common = wa.intersection(wb).count() as f64;
                let jaccard = common / wa.union(wb).count() as f64;
                assert!(jaccard < 0.5, "{a} and {b} prompts are {jaccard:.2} alike");
            }
        }
    }

    #[test]
    fn parse_errors_are_specific() {
        let ok = "---\nname: a-b\ndescription: d\ntools: Read, Grep\ncontext: \"**/*.py\", pyproject.toml\n---\nPrompt.\n";
        let a = Agent::parse("t", ok).unwrap();
        assert_eq!(a.tools, ["Read", "Grep"]);
        assert_eq!(a.context, ["**/*.py", "pyproject.toml"]);
        let both = "---\nname: a\ndescription: \"d\"\ncontext: \"a/*\", b, \"c/*\"\n---\nP.\n";
        let a = Agent::parse("t", both).unwrap();
        assert_eq!(a.description, "d");
        assert_eq!(
            a.context,
            ["a/*", "b", "c/*"],
            "first and last items quoted"
        );
        for (text, want) in [
            ("no front matter", "front matter"),
            ("---\nname: x\n", "not closed"),
            ("---\ndescription: d\n---\np", "missing `name`"),
            ("---\nname: ../x\ndescription: d\n---\np", "agent_type"),
            ("---\nname: x\ndescription: d\n---\n", "prompt"),
            ("---\nname: x\ndescription: d\nmodel: gpt\n---\np", "model"),
            ("---\nname: x\ndescription: d\nfoo: 1\n---\np", "unknown"),
        ] {
            let e = Agent::parse("t", text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?} → {e}");
        }
    }

    fn set_mode(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    const EVIL: &str = "---\nname: evil\ndescription: d\n---\nObey me.\n";

    #[test]
    fn writable_or_foreign_agent_files_are_skipped_and_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("agents");
        std::fs::create_dir(&dir).unwrap();
        set_mode(&dir, 0o755);
        let evil = dir.join("evil.md");
        std::fs::write(&evil, EVIL).unwrap();
        set_mode(&evil, 0o666);
        std::fs::write(dir.join("ok.md"), EVIL.replace("evil", "fine")).unwrap();
        set_mode(&dir.join("ok.md"), 0o644);
        std::os::unix::fs::symlink(dir.join("ok.md"), dir.join("link.md")).unwrap();

        let (r, problems) = Roster::load(&dir).unwrap();
        assert!(r.get("evil").is_none(), "a 666 file is not used");
        assert!(r.get("fine").is_some());
        let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 2, "{shown:#?}");
        assert!(
            shown
                .iter()
                .any(|s| s.starts_with(&format!("{}: ", evil.display()))
                    && s.contains(&format!("chmod go-w {}", evil.display()))),
            "{shown:#?}"
        );
        assert!(
            shown
                .iter()
                .any(|s| s.contains("link.md") && s.contains("symlink")),
            "{shown:#?}"
        );

        // Root can give the file away; another user's file is not trusted even when 0644.
        if paths::current_uid() == 0 {
            set_mode(&evil, 0o644);
            std::os::unix::fs::chown(&evil, Some(65534), Some(65534)).unwrap();
            let (r, problems) = Roster::load(&dir).unwrap();
            assert!(r.get("evil").is_none(), "a foreign file is not used");
            let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
            assert!(
                shown.iter().any(|s| s.contains("owned by uid 65534")
                    && s.contains(&format!("chown 0 {}", evil.display()))),
                "{shown:#?}"
            );
        }

        // A directory others can write to: none of its files is used.
        set_mode(&dir, 0o777);
        let (r, problems) = Roster::load(&dir).unwrap();
        assert!(r.get("fine").is_none() && r.get("evil").is_none());
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].source_name, dir.display().to_string());
        assert!(
            problems[0].to_string().contains("chmod go-w"),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn user_agents_override_and_bad_ones_are_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let first = Roster::builtin()
            .unwrap()
            .agents
            .keys()
            .next()
            .unwrap()
            .clone();
        std::fs::write(
            tmp.path().join("mine.md"),
            format!("---\nname: {first}\ndescription: mine\n---\nMy prompt.\n"),
        )
        .unwrap();
        std::fs::write(tmp.path().join("bad.md"), "nope").unwrap();
        let (r, problems) = Roster::load(tmp.path()).unwrap();
        assert_eq!(r.get(&first).unwrap().description, "mine");
        assert_eq!(problems.len(), 1);
        assert!(problems[0].source_name.ends_with("bad.md"));
    }
}
