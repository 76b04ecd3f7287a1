//! The agent roster and the orchestrator rules. Built-in agents are the repository's
//! `agents/*.md` files (Claude Code's subagent format plus cco's `context:` globs), embedded
//! at build time; files in `~/.config/cco/agents/*.md` add agents or override them by name.

use std::borrow::Cow;
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
    description: Cow<'a, str>,
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

/// Longest agent description, in characters. Claude repeats the description of every agent
/// it is passed in each main-thread request, so this bounds what one agent costs per turn.
pub const MAX_DESCRIPTION_CHARS: usize = 80;

/// Most bytes the rules may take: they are appended to every main-thread system prompt.
pub const MAX_RULES_BYTES: usize = 1024;

/// Claude Code's name for every tool of cco's MCP server (`mcp__cco__publish`, …): added to
/// each built-in agent that lists its tools, so sub-agents can coordinate through cco.
pub const CCO_MCP_TOOLS: &str = "mcp__cco";

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
            let mut a = Agent::parse(&format!("builtin:{file}"), text)?;
            // An agent without a `tools` list inherits every tool, MCP ones included.
            if !a.tools.is_empty() && !a.tools.iter().any(|t| t == CCO_MCP_TOOLS) {
                a.tools.push(CCO_MCP_TOOLS.to_string());
            }
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
            let chars = agent.description.chars().count();
            if chars > MAX_DESCRIPTION_CHARS {
                report.warnings.push(note(format!(
                    "the description is {chars} characters, over the limit of {MAX_DESCRIPTION_CHARS}: Claude repeats it in every main-thread request, so cco cuts it there — shorten it"
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
                        description: short_description(&a.description),
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

/// The orchestrator rules appended to Claude's system prompt. They never list the agents:
/// Claude already shows the roster it is passed, and every line here is paid on every turn.
pub fn rules() -> &'static str {
    include_str!("../agents/RULES.txt")
}

/// `description` as Claude is passed it: at most [`MAX_DESCRIPTION_CHARS`] characters, cut
/// with `…` (the loader warns about a longer one).
pub fn short_description(description: &str) -> Cow<'_, str> {
    if description.chars().count() <= MAX_DESCRIPTION_CHARS {
        return Cow::Borrowed(description);
    }
    let mut s: String = description
        .chars()
        .take(MAX_DESCRIPTION_CHARS - 1)
        .collect();
    s.push('…');
    Cow::Owned(s)
}

/// Which agents the launcher passes to Claude (`launcher.roster`, `cco --roster`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RosterChoice {
    /// [`CORE_AGENTS`], the specialists the project's files call for, and the user's own.
    #[default]
    Auto,
    All,
    None,
    /// Exactly these agents.
    Names(Vec<String>),
}

impl RosterChoice {
    /// `auto`, `all`, `none`, or agent names separated by commas (the `--roster` form).
    pub fn parse(s: &str) -> Result<RosterChoice, String> {
        match s.trim() {
            "auto" => Ok(RosterChoice::Auto),
            "all" => Ok(RosterChoice::All),
            "none" => Ok(RosterChoice::None),
            list => {
                let names: Vec<String> = list
                    .split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .map(str::to_string)
                    .collect();
                RosterChoice::names(names)
            }
        }
    }

    fn names(names: Vec<String>) -> Result<RosterChoice, String> {
        if names.is_empty() {
            return Err("expected \"auto\", \"all\", \"none\" or agent names".into());
        }
        for n in &names {
            AgentType::parse(n).map_err(|e| e.to_string())?;
        }
        Ok(RosterChoice::Names(names))
    }

    /// How `cco agents cost` and the config spell it.
    pub fn label(&self) -> String {
        match self {
            RosterChoice::Auto => "auto".into(),
            RosterChoice::All => "all".into(),
            RosterChoice::None => "none".into(),
            RosterChoice::Names(n) => n.join(","),
        }
    }
}

impl Serialize for RosterChoice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            RosterChoice::Names(n) => n.serialize(s),
            other => s.serialize_str(&other.label()),
        }
    }
}

impl<'de> serde::Deserialize<'de> for RosterChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Repr {
            One(String),
            Many(Vec<String>),
        }
        let expected = "expected \"auto\", \"all\", \"none\" or a list of agent names";
        match Repr::deserialize(d).map_err(|_| serde::de::Error::custom(expected))? {
            Repr::One(s) if matches!(s.as_str(), "auto" | "all" | "none") => {
                RosterChoice::parse(&s).map_err(serde::de::Error::custom)
            }
            Repr::One(s) => Err(serde::de::Error::custom(format!(
                "{s:?}: {expected} (a list is written [\"{s}\"])"
            ))),
            Repr::Many(names) => RosterChoice::names(names).map_err(serde::de::Error::custom),
        }
    }
}

/// The generalists `auto` always passes: enough to plan, build, test, review and document
/// any project.
pub const CORE_AGENTS: &[&str] = &[
    "chief-architect",
    "code-reviewer",
    "debugger",
    "documentation-writer",
    "refactoring-specialist",
    "researcher",
    "security-auditor",
    "test-engineer",
];

/// Most specialists `auto` adds for one project (the first matches in [`SPECIALISTS`] order).
pub const MAX_DETECTED_SPECIALISTS: usize = 6;
/// Directory entries of the project root that detection looks at, at most: it lists one
/// directory and never walks a tree (the launcher is a hot path).
pub const MAX_SCANNED_ENTRIES: usize = 1000;
/// Largest `package.json` read to look for frameworks.
pub const MAX_MANIFEST_BYTES: u64 = 256 * 1024;

/// What detection sees of a project: its root's file names and its `package.json`.
#[derive(Debug, Default)]
pub struct Project {
    names: std::collections::HashSet<String>,
    package_json: String,
}

impl Project {
    /// Lists `dir` (one `read_dir`, at most [`MAX_SCANNED_ENTRIES`] names) and reads its
    /// `package.json` if there is one. An unreadable directory is an empty project.
    pub fn scan(dir: &Path) -> Project {
        let mut p = Project::default();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten().take(MAX_SCANNED_ENTRIES) {
                if let Ok(name) = e.file_name().into_string() {
                    p.names.insert(name);
                }
            }
        }
        if p.has("package.json")
            && let Ok((bytes, _)) =
                untrusted::read_head(&dir.join("package.json"), MAX_MANIFEST_BYTES, Links::Follow)
        {
            p.package_json = String::from_utf8_lossy(&bytes).into_owned();
        }
        p
    }

    /// A project with these root names and `package.json` text (for tests).
    pub fn from_names(names: &[&str], package_json: &str) -> Project {
        Project {
            names: names.iter().map(|n| n.to_string()).collect(),
            package_json: package_json.to_string(),
        }
    }

    fn has(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    fn has_suffix(&self, suffix: &str) -> bool {
        self.names.iter().any(|n| n.ends_with(suffix))
    }

    /// `package.json` names `dep` (as a dependency, in practice: a quoted key).
    fn uses(&self, dep: &str) -> bool {
        self.package_json.contains(&format!("\"{dep}\""))
    }
}

/// A specialist, the project marker that calls for it (shown by `cco agents cost`), and the test.
type Specialist = (&'static str, &'static str, fn(&Project) -> bool);

/// Specialists by what the project root holds; frameworks before their languages, since
/// only the first [`MAX_DETECTED_SPECIALISTS`] matches are passed.
pub const SPECIALISTS: &[Specialist] = &[
    ("nextjs-specialist", "package.json: next", |p| {
        p.uses("next")
    }),
    ("react-specialist", "package.json: react", |p| {
        p.uses("react")
    }),
    ("vue-specialist", "package.json: vue", |p| p.uses("vue")),
    ("svelte-specialist", "package.json: svelte", |p| {
        p.uses("svelte")
    }),
    ("angular-specialist", "package.json: @angular/core", |p| {
        p.uses("@angular/core")
    }),
    ("nestjs-specialist", "package.json: @nestjs/core", |p| {
        p.uses("@nestjs/core")
    }),
    ("express-specialist", "package.json: express", |p| {
        p.uses("express") || p.uses("fastify")
    }),
    ("tauri-specialist", "src-tauri/", |p| p.has("src-tauri")),
    ("django-specialist", "manage.py", |p| p.has("manage.py")),
    ("rails-specialist", "config.ru", |p| {
        p.has("config.ru") && p.has("Gemfile")
    }),
    ("rust-specialist", "Cargo.toml", |p| p.has("Cargo.toml")),
    ("go-specialist", "go.mod", |p| p.has("go.mod")),
    ("python-specialist", "pyproject.toml", |p| {
        ["pyproject.toml", "setup.py", "requirements.txt", "Pipfile"]
            .iter()
            .any(|n| p.has(n))
    }),
    ("typescript-specialist", "tsconfig.json", |p| {
        p.has("tsconfig.json")
    }),
    ("javascript-specialist", "package.json", |p| {
        p.has("package.json") && !p.has("tsconfig.json")
    }),
    ("java-specialist", "pom.xml", |p| {
        p.has("pom.xml") || p.has("build.gradle")
    }),
    ("kotlin-specialist", "build.gradle.kts", |p| {
        p.has("build.gradle.kts")
    }),
    ("csharp-specialist", "*.csproj", |p| {
        p.has_suffix(".csproj") || p.has_suffix(".sln")
    }),
    ("cpp-specialist", "CMakeLists.txt", |p| {
        p.has("CMakeLists.txt")
    }),
    ("ruby-specialist", "Gemfile", |p| p.has("Gemfile")),
    ("php-specialist", "composer.json", |p| {
        p.has("composer.json")
    }),
    ("elixir-specialist", "mix.exs", |p| p.has("mix.exs")),
    ("dart-flutter-specialist", "pubspec.yaml", |p| {
        p.has("pubspec.yaml")
    }),
    ("swift-specialist", "Package.swift", |p| {
        p.has("Package.swift")
    }),
    ("scala-specialist", "build.sbt", |p| p.has("build.sbt")),
    ("haskell-specialist", "*.cabal", |p| {
        p.has_suffix(".cabal") || p.has("stack.yaml")
    }),
    ("zig-specialist", "build.zig", |p| p.has("build.zig")),
    ("terraform-specialist", "*.tf", |p| p.has_suffix(".tf")),
    ("helm-specialist", "Chart.yaml", |p| p.has("Chart.yaml")),
    ("kubernetes-specialist", "kustomization.yaml", |p| {
        p.has("kustomization.yaml") || p.has("k8s")
    }),
    ("docker-specialist", "Dockerfile", |p| {
        [
            "Dockerfile",
            "compose.yaml",
            "docker-compose.yml",
            "docker-compose.yaml",
        ]
        .iter()
        .any(|n| p.has(n))
    }),
    ("ansible-specialist", "ansible.cfg", |p| {
        p.has("ansible.cfg")
    }),
    ("ci-cd-engineer", ".gitlab-ci.yml", |p| {
        p.has(".gitlab-ci.yml") || p.has("Jenkinsfile")
    }),
];

/// Why an agent is passed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// One of [`CORE_AGENTS`].
    Core,
    /// The project has this marker.
    Detected(&'static str),
    /// The user's own agent file.
    User,
    /// Named in the config or `--roster`.
    Listed,
    /// `all`.
    All,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Core => f.write_str("core"),
            Reason::Detected(marker) => write!(f, "detected: {marker}"),
            Reason::User => f.write_str("your agent file"),
            Reason::Listed => f.write_str("listed"),
            Reason::All => f.write_str("all"),
        }
    }
}

/// The line Claude Code (2.1.x) shows for one agent in every main-thread request:
/// `- name: description (Tools: …)`. cco's main-turn estimate is the sum of these.
pub fn claude_roster_line(agent: &Agent) -> String {
    let tools = if agent.tools.is_empty() {
        "All tools".to_string()
    } else {
        agent.tools.join(", ")
    };
    format!(
        "- {}: {} (Tools: {tools})\n",
        agent.name,
        short_description(&agent.description)
    )
}

/// The agents passed to Claude, in name order, and the listed names no agent has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub agents: BTreeMap<String, Reason>,
    pub unknown: Vec<String>,
}

/// Whether `name` is a built-in agent (possibly overridden by a user file of that name).
pub fn is_builtin_name(name: &str) -> bool {
    BUILTIN_AGENTS
        .iter()
        .any(|(file, _)| file.strip_suffix(".md") == Some(name))
}

/// The specialists `project` calls for, with the marker that did: at most
/// [`MAX_DETECTED_SPECIALISTS`].
pub fn detect(project: &Project) -> Vec<(&'static str, &'static str)> {
    SPECIALISTS
        .iter()
        .filter(|(_, _, matches)| matches(project))
        .map(|(name, marker, _)| (*name, *marker))
        .take(MAX_DETECTED_SPECIALISTS)
        .collect()
}

/// The agents of `available` (the roster's names) that `choice` passes for `project`.
/// `project` is only scanned for [`RosterChoice::Auto`].
pub fn select<'a>(
    choice: &RosterChoice,
    available: impl IntoIterator<Item = &'a str>,
    project: impl FnOnce() -> Project,
) -> Selection {
    let available: std::collections::BTreeSet<&str> = available.into_iter().collect();
    let mut s = Selection::default();
    let mut add = |name: &str, why: Reason| {
        if available.contains(name) {
            s.agents.entry(name.to_string()).or_insert(why);
        }
    };
    match choice {
        RosterChoice::None => {}
        RosterChoice::All => available.iter().for_each(|n| add(n, Reason::All)),
        RosterChoice::Auto => {
            CORE_AGENTS.iter().for_each(|n| add(n, Reason::Core));
            for (name, marker) in detect(&project()) {
                add(name, Reason::Detected(marker));
            }
            for n in available.iter().filter(|n| !is_builtin_name(n)) {
                add(n, Reason::User);
            }
        }
        RosterChoice::Names(names) => {
            for n in names {
                add(n, Reason::Listed);
            }
            s.unknown = names
                .iter()
                .filter(|n| !available.contains(n.as_str()))
                .cloned()
                .collect();
        }
    }
    s
}

/// The roster JSON (`claude --agents` shape, as sealed) cut down to what `choice` selects
/// for `project`, parsed once (the launcher runs this on every start); and the listed names
/// no agent has.
pub fn cut_claude_json(
    full: &[u8],
    choice: &RosterChoice,
    project: impl FnOnce() -> Project,
) -> Result<(String, Vec<String>), serde_json::Error> {
    let all: BTreeMap<String, &serde_json::value::RawValue> = serde_json::from_slice(full)?;
    let s = select(choice, all.keys().map(String::as_str), project);
    let picked: BTreeMap<&String, &serde_json::value::RawValue> = all
        .iter()
        .filter(|(name, _)| s.agents.contains_key(*name))
        .map(|(name, def)| (name, *def))
        .collect();
    Ok((serde_json::to_string(&picked)?, s.unknown))
}

/// The names in a roster JSON (`claude --agents` shape).
pub fn claude_json_names(full: &[u8]) -> Result<Vec<String>, serde_json::Error> {
    let all: BTreeMap<String, serde::de::IgnoredAny> = serde_json::from_slice(full)?;
    Ok(all.into_keys().collect())
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
                assert!(
                    KNOWN_TOOLS.contains(&t.as_str()) || t == CCO_MCP_TOOLS,
                    "{n}: unknown tool {t}"
                );
            }
            assert_eq!(
                a.tools.last().map(String::as_str),
                Some(CCO_MCP_TOOLS),
                "{n}"
            );
            assert!(
                a.description.chars().count() <= MAX_DESCRIPTION_CHARS,
                "{n}: description over {MAX_DESCRIPTION_CHARS} characters"
            );
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

    /// The files do not list `mcp__cco`: the loader adds it to built-ins with a tools list,
    /// once, and leaves user agents as their authors wrote them.
    #[test]
    fn builtin_agents_get_cco_mcp_tools_once() {
        for (file, text) in BUILTIN_AGENTS {
            assert!(!text.contains(CCO_MCP_TOOLS), "{file} lists it itself");
        }
        let r = Roster::builtin().unwrap();
        let json: serde_json::Value = serde_json::from_str(&r.claude_json()).unwrap();
        let tools = json["rust-specialist"]["tools"].as_array().unwrap();
        assert_eq!(tools.iter().filter(|t| *t == CCO_MCP_TOOLS).count(), 1);
        let (_, report) = Roster::load_files(&[]).unwrap();
        assert!(report.warnings.is_empty());
        let tmp = tempfile::tempdir().unwrap();
        let own = tmp.path().join("own.md");
        std::fs::write(
            &own,
            "---\nname: own\ndescription: d\ntools: Read\n---\nP.\n",
        )
        .unwrap();
        let (r, _) = Roster::load_files(&[own]).unwrap();
        assert_eq!(r.get("own").unwrap().tools, ["Read"]);
    }

    /// A user description over the limit is used, with a warning, and cut where Claude sees it.
    #[test]
    fn long_descriptions_are_warned_about_and_cut_for_claude() {
        let tmp = tempfile::tempdir().unwrap();
        let long = "word ".repeat(40);
        let path = tmp.path().join("long.md");
        std::fs::write(
            &path,
            format!("---\nname: long\ndescription: {long}\n---\nP.\n"),
        )
        .unwrap();
        let (r, report) = Roster::load_files(std::slice::from_ref(&path)).unwrap();
        assert!(report.problems.is_empty());
        assert!(
            report
                .warnings
                .iter()
                .any(|w| w.message.contains("over the limit of 80")
                    && w.message.ends_with("shorten it")),
            "{report:?}"
        );
        let json: serde_json::Value = serde_json::from_str(&r.claude_json()).unwrap();
        let shown = json["long"]["description"].as_str().unwrap();
        assert_eq!(shown.chars().count(), MAX_DESCRIPTION_CHARS);
        assert!(shown.ends_with('…'));
        assert_eq!(short_description("short"), "short");
    }

    /// The rules say how to coordinate in a few lines; they never list the agents (Claude
    /// already does) nor the REST API (the MCP tools describe themselves).
    #[test]
    fn rules_are_short_and_do_not_repeat_the_roster() {
        let text = rules();
        assert!(
            text.len() <= MAX_RULES_BYTES,
            "rules are {} bytes",
            text.len()
        );
        assert!(text.contains("mcp__cco__"));
        for a in Roster::builtin().unwrap().agents.values() {
            assert!(!text.contains(&a.name), "rules name {}", a.name);
        }
        assert!(!text.contains("/api/") && !text.contains("curl"));
    }

    #[test]
    fn detection_maps_project_files_to_specialists() {
        let names = |p: Project| -> Vec<&str> { detect(&p).into_iter().map(|(n, _)| n).collect() };
        assert_eq!(
            names(Project::from_names(&["Cargo.toml", "src"], "")),
            ["rust-specialist"]
        );
        let web = Project::from_names(
            &["package.json", "tsconfig.json", "Dockerfile"],
            r#"{"dependencies":{"react":"19","react-dom":"19"}}"#,
        );
        assert_eq!(
            names(web),
            [
                "react-specialist",
                "typescript-specialist",
                "docker-specialist"
            ]
        );
        let js = Project::from_names(&["package.json"], r#"{"dependencies":{"preact":"1"}}"#);
        assert_eq!(names(js), ["javascript-specialist"], "preact is not react");
        assert_eq!(
            names(Project::from_names(&["main.tf", "go.mod"], "")),
            ["go-specialist", "terraform-specialist"]
        );
        assert!(names(Project::from_names(&["README.md"], "")).is_empty());
        let everything: Vec<&str> = SPECIALISTS.iter().map(|(n, _, _)| *n).collect();
        let r = Roster::builtin().unwrap();
        for n in everything.iter().chain(CORE_AGENTS) {
            assert!(r.get(n).is_some(), "{n} is not a built-in agent");
        }
        let busy = Project::from_names(
            &[
                "Cargo.toml",
                "go.mod",
                "pyproject.toml",
                "pom.xml",
                "Gemfile",
                "mix.exs",
                "build.zig",
            ],
            "",
        );
        assert_eq!(detect(&busy).len(), MAX_DETECTED_SPECIALISTS);
    }

    /// Scanning reads one directory and `package.json`; a subdirectory's files do not count.
    #[test]
    fn scan_reads_only_the_top_directory() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("sub")).unwrap();
        std::fs::write(tmp.path().join("sub/Cargo.toml"), "").unwrap();
        std::fs::write(
            tmp.path().join("package.json"),
            r#"{"devDependencies":{"vue":"3"}}"#,
        )
        .unwrap();
        let found: Vec<_> = detect(&Project::scan(tmp.path()))
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(found, ["vue-specialist", "javascript-specialist"]);
        assert!(detect(&Project::scan(&tmp.path().join("missing"))).is_empty());

        // A huge directory costs at most MAX_SCANNED_ENTRIES names.
        let big = tmp.path().join("big");
        std::fs::create_dir(&big).unwrap();
        for i in 0..MAX_SCANNED_ENTRIES + 10 {
            std::fs::write(big.join(format!("f{i}")), "").unwrap();
        }
        assert_eq!(Project::scan(&big).names.len(), MAX_SCANNED_ENTRIES);
    }

    #[test]
    fn selection_by_choice() {
        let avail = [
            "chief-architect",
            "debugger",
            "rust-specialist",
            "go-specialist",
            "mine",
        ];
        let rust = || Project::from_names(&["Cargo.toml"], "");
        let s = select(&RosterChoice::Auto, avail, rust);
        let picked: Vec<(&str, &Reason)> = s.agents.iter().map(|(n, r)| (n.as_str(), r)).collect();
        assert_eq!(
            picked,
            [
                ("chief-architect", &Reason::Core),
                ("debugger", &Reason::Core),
                ("mine", &Reason::User),
                ("rust-specialist", &Reason::Detected("Cargo.toml")),
            ]
        );
        assert_eq!(
            select(&RosterChoice::All, avail, rust).agents.len(),
            avail.len()
        );
        assert!(
            select(&RosterChoice::None, avail, || unreachable!())
                .agents
                .is_empty()
        );
        let listed = RosterChoice::Names(vec!["go-specialist".into(), "nope".into()]);
        let s = select(&listed, avail, || unreachable!());
        assert_eq!(s.agents.keys().collect::<Vec<_>>(), ["go-specialist"]);
        assert_eq!(s.unknown, ["nope"]);
    }

    #[test]
    fn roster_choice_parses_from_config_and_flag() {
        #[derive(serde::Deserialize)]
        struct T {
            roster: RosterChoice,
        }
        let parse = |s: &str| toml::from_str::<T>(s).map(|t| t.roster);
        assert_eq!(parse("roster = \"all\"").unwrap(), RosterChoice::All);
        assert_eq!(parse("roster = \"none\"").unwrap(), RosterChoice::None);
        assert_eq!(
            parse("roster = [\"sre\", \"debugger\"]").unwrap(),
            RosterChoice::Names(vec!["sre".into(), "debugger".into()])
        );
        let e = parse("roster = \"sre\"").unwrap_err().to_string();
        assert!(e.contains("[\"sre\"]"), "{e}");
        assert!(parse("roster = [\"../x\"]").is_err());
        assert!(parse("roster = []").is_err());
        assert_eq!(RosterChoice::parse(" auto ").unwrap(), RosterChoice::Auto);
        assert!(RosterChoice::parse(",").is_err());
        let back = serde_json::to_string(&RosterChoice::Names(vec!["sre".into()])).unwrap();
        assert_eq!(back, "[\"sre\"]");
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
