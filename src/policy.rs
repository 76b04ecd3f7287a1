//! The `PreToolUse` permission policy: which tool calls cco answers `allow` or `ask` for.
//! An `allow` skips Claude Code's own prompt, so it is given only for calls that provably
//! read inside the session's project and cannot run code or write; everything else gets no
//! opinion and Claude's own rules apply. The answer is advisory: Claude reads the file
//! after the hook has answered, so a process that can write the project can still swap it.

mod shell;

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

/// Used when `ORCHESTRATOR_HOOKS_CONFIG` does not say.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(2000);

/// cco's hook policy, from `ORCHESTRATOR_HOOKS_CONFIG` (the sealed hooks file's content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub enabled: bool,
    pub auto_allow_read: bool,
    pub require_cud_confirmation: bool,
    pub timeout: Duration,
}

impl Policy {
    pub fn from_json(v: &Value) -> Policy {
        Policy {
            enabled: v["enabled"].as_bool().unwrap_or(true),
            auto_allow_read: v["permissions"]["auto_allow_read"]
                .as_bool()
                .unwrap_or(true),
            require_cud_confirmation: v["permissions"]["require_cud_confirmation"]
                .as_bool()
                .unwrap_or(false),
            timeout: v["timeouts"]["hook_ms"]
                .as_u64()
                .map_or(DEFAULT_TIMEOUT, Duration::from_millis),
        }
    }
}

/// Claude Code's answer to a `PreToolUse` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow(&'static str),
    Ask(&'static str),
    /// Leave it to Claude's own permission rules.
    NoOpinion,
}

/// Tools that read the content of one file.
const FILE_READ_TOOLS: [&str; 2] = ["Read", "NotebookRead"];
/// Tools that list names only, never content.
const LISTING_TOOLS: [&str; 2] = ["Glob", "LS"];
/// Orchestration tools that touch no file themselves.
const ORCHESTRATION_TOOLS: [&str; 4] = ["Agent", "Task", "SubagentHandback", "TodoWrite"];
/// Tools that create, update or delete files.
const CUD_TOOLS: [&str; 4] = ["Write", "Edit", "MultiEdit", "NotebookEdit"];

/// The files a tool call writes that cco can name, as the call gives them (absolute, or
/// relative to the session's directory): the edit tools' `file_path` / `notebook_path`; for
/// `Bash`, redirection targets and the file operands of `rm`, `mv`, `cp`, `tee`, `sed -i`
/// and the like (`shell::classify`). A command can write files it does not name (a build,
/// a script, a `cd` before a relative path): those are not seen.
pub fn written_paths(tool: &str, input: &Value) -> Vec<String> {
    if CUD_TOOLS.contains(&tool) {
        let path = input["file_path"]
            .as_str()
            .or(input["notebook_path"].as_str());
        return path.map(str::to_string).into_iter().collect();
    }
    match (tool, input["command"].as_str()) {
        ("Bash", Some(command)) => shell::classify(command).paths,
        _ => Vec::new(),
    }
}

/// Claude Code's `PreToolUse` matcher for `policy`: the tools cco may answer for — the
/// ones that write (the lease check, and `ask` under `require_cud_confirmation`) and, with
/// `auto_allow_read`, the ones it may allow. Claude runs no hook for any other tool, so a
/// call cco has no opinion on costs nothing.
pub fn pre_tool_use_matcher(policy: &Policy) -> String {
    let mut tools: Vec<&str> = CUD_TOOLS.to_vec();
    tools.push("Bash");
    if policy.auto_allow_read {
        tools.extend(FILE_READ_TOOLS);
        tools.extend(LISTING_TOOLS);
        tools.push("Grep");
        tools.extend(ORCHESTRATION_TOOLS);
    }
    tools.join("|")
}

/// Read-only programs and the only flags cco accepts for them (single letters, combinable).
/// No git: `git diff`/`show`/`status` run commands a repository configures (textconv,
/// fsmonitor). No rg/sort/uniq/tree/file: each has a flag that runs code or writes a file.
const READ_PROGRAMS: [(&str, &str); 7] = [
    ("ls", "lahR1tSrdF"),
    ("cat", "nAvbs"),
    ("head", "nc"),
    ("tail", "nc"),
    ("wc", "lwcm"),
    // No -r/-R: a recursive grep reads every file below, secrets included.
    ("grep", "nilcvwEFHhoqsx"),
    ("pwd", ""),
];

/// Shell syntax that makes a command more than one simple command, or expands to
/// something cco cannot see.
const SHELL_META: &[char] = &[
    ';', '&', '|', '`', '$', '(', ')', '<', '>', '\n', '\r', '\\', '*', '?', '[', '{', '}', '~',
    '"', '\'', '#', '=',
];
/// A path any component of which names a credential file or directory.
fn looks_secret(path: &Path) -> bool {
    path.components().any(|c| match c {
        Component::Normal(part) => crate::secrets::is_secret_name(&part.to_string_lossy()),
        _ => false,
    })
}

/// Trees whose files are never auto-allowed, wherever the session runs: process memory and
/// environment, kernel state, devices.
const NEVER_READ: &[&str] = &["/proc", "/sys", "/dev"];
/// A file larger than this is never auto-allowed: its whole content is scanned for
/// credentials first, and scanning must stay fast (about 3–4 ms per MiB in a release build).
pub const SCAN_CAP: u64 = 1024 * 1024;

/// The session's project: its canonical working directory, when that is a real project —
/// the rule of the context endpoint (`sidecar::context::check_project`): not `/`, a system
/// directory, `$HOME` or one of its ancestors, nor a credentials directory; and it, or a
/// directory above it below `$HOME`, is a git work tree or holds a project file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    root: PathBuf,
}

impl Project {
    /// `cwd` and `home` as Claude and the environment give them; `None` outside a project.
    pub fn of_session(cwd: &Path, home: Option<&Path>) -> Option<Project> {
        use crate::sidecar::context::check_project;
        let root = cwd.canonicalize().ok()?;
        let home = home.and_then(|h| h.canonicalize().ok());
        let home = home.as_deref();
        if home.is_some_and(|h| h.starts_with(&root)) {
            return None;
        }
        check_project(&root, home, false).ok()?;
        // A sub-directory of a project counts: the project file is above it.
        root.ancestors()
            .any(|dir| check_project(dir, home, true).is_ok())
            .then_some(Project { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `path` (relative to the root when not absolute) resolved through every symlink, if
    /// it lands inside the project, outside [`NEVER_READ`], and is not a secret by name. A
    /// path that does not exist yet resolves through its nearest existing ancestor.
    fn resolve(&self, path: &str) -> Option<PathBuf> {
        let joined = self.root.join(path);
        let mut probe = joined.as_path();
        let mut rest = Vec::new();
        let resolved = loop {
            match probe.canonicalize() {
                Ok(p) => {
                    break rest
                        .iter()
                        .rev()
                        .fold(p, |acc: PathBuf, part| acc.join(part));
                }
                Err(_) => {
                    rest.push(probe.file_name()?.to_owned());
                    probe = probe.parent()?;
                }
            }
        };
        if NEVER_READ.iter().any(|t| resolved.starts_with(t)) {
            return None;
        }
        let rel = resolved.strip_prefix(&self.root).ok()?;
        (!rel.components().any(|c| c == Component::ParentDir) && !looks_secret(rel))
            .then_some(resolved)
    }

    fn inside(&self, path: &str) -> bool {
        self.resolve(path).is_some()
    }

    /// A file whose content may be shown: inside the project, not a secret by name, and
    /// (when it exists) a regular file of at most [`SCAN_CAP`] bytes in whose whole text
    /// nothing looks like a credential — the rule the context broker applies before it
    /// serves a file. Any part of it may be shown (`tail`, `Read` with an offset, `Grep`),
    /// so all of it is scanned. The resolved path is opened once, without following a
    /// symlink swapped in since it was resolved.
    fn readable(&self, path: &str) -> bool {
        self.resolve(path).is_some_and(|r| content_ok(&r))
    }

    /// [`Project::readable`], and a regular file that exists.
    fn readable_file(&self, path: &str) -> bool {
        self.resolve(path)
            .is_some_and(|r| r.is_file() && content_ok(&r))
    }
}

/// The content check of [`Project::readable`] on a resolved path.
fn content_ok(resolved: &Path) -> bool {
    use crate::untrusted::{Links, read_capped};
    match std::fs::symlink_metadata(resolved) {
        Ok(m) if m.is_dir() => true, // an error for cat/head/grep: no content shown
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(_) => false,
        Ok(_) => match read_capped(resolved, SCAN_CAP, Links::Refuse) {
            Ok(bytes) => {
                let name = resolved
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                !crate::secrets::looks_secret(&name, &String::from_utf8_lossy(&bytes))
            }
            Err(_) => false,
        },
    }
}

/// A relative glob that cannot climb out of its directory.
fn contained_glob(pattern: &str) -> bool {
    !pattern.is_empty()
        && !Path::new(pattern).is_absolute()
        && !pattern.starts_with('~')
        && !pattern.contains("..")
}

/// A read-only tool call inside the project.
fn is_read_tool(tool: &str, input: &Value, project: &Project) -> bool {
    let path = |k: &str| input[k].as_str();
    if FILE_READ_TOOLS.contains(&tool) {
        return path("file_path")
            .or(path("notebook_path"))
            .is_some_and(|p| project.readable_file(p));
    }
    if LISTING_TOOLS.contains(&tool) {
        return project.inside(path("path").unwrap_or("."))
            && path("pattern").is_none_or(contained_glob);
    }
    // Grep searches content: only a single file, never a tree (it would read secrets in it).
    tool == "Grep"
        && input["glob"].is_null()
        && path("path").is_some_and(|p| project.readable_file(p))
}

/// One simple command of a read-only program, with known flags and paths inside the project.
fn is_read_command(cmd: &str, project: &Project) -> bool {
    if cmd.contains(SHELL_META) {
        return false;
    }
    let words: Vec<&str> = cmd.split_ascii_whitespace().collect();
    let Some((program, args)) = words.split_first() else {
        return false;
    };
    let Some((_, flags)) = READ_PROGRAMS.iter().find(|(p, _)| p == program) else {
        return false;
    };
    let mut expect_number = false;
    let mut pattern_seen = false;
    for arg in args {
        if expect_number {
            expect_number = false;
            if arg.parse::<u64>().is_ok() {
                continue;
            }
            return false;
        }
        if let Some(letters) = arg.strip_prefix('-') {
            // `head -5` is a count; `--long` options are not accepted.
            if letters.parse::<u64>().is_ok() && matches!(*program, "head" | "tail") {
                continue;
            }
            if letters.is_empty()
                || letters.starts_with('-')
                || !letters.chars().all(|c| flags.contains(c))
            {
                return false;
            }
            expect_number = matches!(*program, "head" | "tail") && letters.ends_with(['n', 'c']);
            continue;
        }
        // grep's first operand is the pattern, not a path.
        if *program == "grep" && !pattern_seen {
            pattern_seen = true;
            continue;
        }
        if !project.readable(arg) {
            return false;
        }
    }
    !expect_number
}

/// Why a call gets `ask` under `hooks.require_cud_confirmation`.
const ASK_CUD: &str =
    "cco policy: create/update/delete needs confirmation (hooks.require_cud_confirmation)";
const ASK_OPAQUE: &str = "cco policy: cco cannot tell what this command changes, so it asks (hooks.require_cud_confirmation)";
/// The answer for a tool call cco could not read (cut or malformed input).
pub const ASK_UNREADABLE: &str = "cco policy: this tool call was too large or malformed for cco to inspect, so it asks (hooks.require_cud_confirmation)";

/// The decision for one tool call made in the session whose working directory is `cwd`,
/// for the user whose home is `home`.
pub fn decide(
    policy: &Policy,
    tool: &str,
    input: &Value,
    cwd: &Path,
    home: Option<&Path>,
) -> Decision {
    let effect = match tool {
        _ if CUD_TOOLS.contains(&tool) => shell::Effect::Writes,
        "Bash" => match input["command"].as_str() {
            Some(command) => shell::effect(command),
            None => shell::Effect::Opaque,
        },
        _ => shell::Effect::Unseen,
    };
    if policy.require_cud_confirmation {
        match effect {
            shell::Effect::Writes => return Decision::Ask(ASK_CUD),
            shell::Effect::Opaque => return Decision::Ask(ASK_OPAQUE),
            shell::Effect::Unseen => {}
        }
    }
    if !policy.auto_allow_read || effect != shell::Effect::Unseen {
        return Decision::NoOpinion;
    }
    if ORCHESTRATION_TOOLS.contains(&tool) {
        return Decision::Allow("cco policy: orchestration (hooks.auto_allow_read)");
    }
    let Some(project) = Project::of_session(cwd, home) else {
        return Decision::NoOpinion;
    };
    let command = input["command"].as_str().unwrap_or("");
    let reading = is_read_tool(tool, input, &project)
        || (tool == "Bash" && is_read_command(command, &project));
    if reading {
        Decision::Allow("cco policy: read-only inside the project (hooks.auto_allow_read)")
    } else {
        Decision::NoOpinion
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(read: bool, cud: bool) -> Policy {
        Policy {
            enabled: true,
            auto_allow_read: read,
            require_cud_confirmation: cud,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    fn project() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("src")).unwrap();
        std::fs::write(tmp.path().join("src/lib.rs"), "").unwrap();
        std::fs::write(tmp.path().join("Cargo.toml"), "[package]").unwrap();
        std::fs::write(tmp.path().join(".env"), "SECRET=1").unwrap();
        std::fs::create_dir_all(tmp.path().join("cfg")).unwrap();
        std::fs::write(
            tmp.path().join("cfg/sa.json"),
            "{\"private_key\": \"-----BEGIN PRIVATE KEY-----\\nMII\"}",
        )
        .unwrap();
        std::fs::write(tmp.path().join("cfg/app.yml"), "db:\n  password: hunter2\n").unwrap();
        std::os::unix::fs::symlink("/etc", tmp.path().join("etclink")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", tmp.path().join("escape")).unwrap();
        tmp
    }

    fn bash(cmd: &str) -> Value {
        json!({ "command": cmd })
    }

    #[test]
    fn reads_inside_the_project_are_allowed() {
        let p = project();
        let cwd = p.path();
        let pol = policy(true, false);
        let allow = |tool: &str, input: Value| {
            matches!(decide(&pol, tool, &input, cwd, None), Decision::Allow(_))
        };
        assert!(allow("Read", json!({"file_path": cwd.join("src/lib.rs")})));
        assert!(allow("Read", json!({"file_path": "src/lib.rs"})));
        assert!(allow("Grep", json!({"pattern": "x", "path": "src/lib.rs"})));
        assert!(allow("Glob", json!({"pattern": "**/*.rs", "path": "src"})));
        assert!(allow("LS", json!({"path": cwd.join("src")})));
        for cmd in [
            "ls -la src",
            "cat src/lib.rs",
            "head -n 5 src/lib.rs",
            "tail -20 src/lib.rs",
            "grep -n parse src/lib.rs",
            "wc -l src/lib.rs",
            "pwd",
        ] {
            assert!(allow("Bash", bash(cmd)), "{cmd}");
        }
        assert!(allow("Agent", json!({"subagent_type": "x"})));
        assert!(allow("SubagentHandback", json!({"message": "done"})));
    }

    #[test]
    fn anything_that_could_leave_the_project_run_code_or_write_gets_no_allow() {
        let p = project();
        let cwd = p.path();
        let pol = policy(true, false);
        let allowed = |tool: &str, input: Value| {
            matches!(decide(&pol, tool, &input, cwd, None), Decision::Allow(_))
        };
        for (tool, input) in [
            ("Read", json!({"file_path": "/root/.ssh/id_rsa"})),
            ("Read", json!({"file_path": "../outside"})),
            ("Read", json!({"file_path": "escape"})),
            ("Read", json!({"file_path": ".env"})),
            ("Grep", json!({"pattern": "x", "path": "/etc"})),
            ("Grep", json!({"pattern": "x"})),
            ("Grep", json!({"pattern": "x", "path": "src"})),
            ("Grep", json!({"pattern": "x", "glob": ".env*"})),
            ("Glob", json!({"pattern": "/root/.ssh/*"})),
            ("Glob", json!({"pattern": "../**"})),
            ("Read", json!({"file_path": "cfg/sa.json"})),
            ("Read", json!({"file_path": "cfg/app.yml"})),
            ("WebFetch", json!({"url": "x"})),
        ] {
            assert!(!allowed(tool, input.clone()), "{tool} {input}");
        }
        for cmd in [
            "cat /root/.ssh/id_rsa",
            "cat .env",
            "cat ../x",
            "cat escape",
            "rg --pre sh . /dir",
            "grep -r x . --pre=sh",
            "git show --ext-diff",
            "git status",
            "git diff",
            "sort -o f x",
            "uniq a b",
            "tree -o f",
            "ls; rm -rf /",
            "cat x | sh",
            "ls $(rm x)",
            "echo hi",
            "cat > f",
            "head -n",
            "grep -P x src",
            "ls ~",
            "cat 'src/lib.rs'",
            "tail --follow=name x",
            "ls --color=always",
        ] {
            assert!(!allowed("Bash", bash(cmd)), "{cmd}");
        }
        assert_eq!(
            decide(
                &policy(false, false),
                "Read",
                &json!({"file_path": "src/lib.rs"}),
                cwd,
                None
            ),
            Decision::NoOpinion
        );
    }

    #[test]
    fn cud_asks_when_required() {
        let p = project();
        let pol = policy(true, true);
        for t in ["Write", "Edit", "MultiEdit", "NotebookEdit"] {
            assert!(
                matches!(
                    decide(&pol, t, &json!({}), p.path(), None),
                    Decision::Ask(_)
                ),
                "{t}"
            );
        }
        for cmd in [
            "rm -rf build",
            "echo x > f",
            "sed -i s/a/b/ f",
            "git commit -m x",
            "ls && /bin/mv a b",
            "npm install left-pad",
        ] {
            assert!(
                matches!(
                    decide(&pol, "Bash", &bash(cmd), p.path(), None),
                    Decision::Ask(_)
                ),
                "{cmd}"
            );
        }
        assert_eq!(
            decide(&policy(true, false), "Write", &json!({}), p.path(), None),
            Decision::NoOpinion
        );
    }

    /// Issue 15 (2): a session in `$HOME` or `/` is not a project; nothing is auto-allowed
    /// there, and `/proc`, `/sys`, `/dev` never are.
    #[test]
    fn no_allow_outside_a_real_project() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        std::fs::create_dir_all(home.join("code/app/src")).unwrap();
        std::fs::write(home.join(".bash_history"), "ls\n").unwrap();
        std::fs::write(home.join("Makefile"), "all:\n").unwrap();
        std::fs::write(home.join("code/app/Cargo.toml"), "[package]").unwrap();
        std::fs::write(home.join("code/app/src/lib.rs"), "").unwrap();
        std::fs::create_dir_all(home.join("notes")).unwrap();
        std::fs::write(home.join("notes/a.md"), "x").unwrap();
        let pol = policy(true, false);
        let verdict =
            |cwd: &Path, tool: &str, input: Value| decide(&pol, tool, &input, cwd, Some(&home));
        let none = |cwd: &Path, tool: &str, input: Value| {
            assert_eq!(
                verdict(cwd, tool, input.clone()),
                Decision::NoOpinion,
                "{} {tool} {input}",
                cwd.display()
            );
        };
        none(&home, "Read", json!({"file_path": ".bash_history"}));
        none(&home, "Bash", bash("ls -laR ."));
        none(&home, "Glob", json!({"pattern": "**/*"}));
        none(tmp.path(), "Bash", bash("ls -la"));
        none(Path::new("/"), "Bash", bash("cat /etc/shadow"));
        none(
            Path::new("/"),
            "Read",
            json!({"file_path": "/proc/self/environ"}),
        );
        none(
            Path::new("/"),
            "Read",
            json!({"file_path": "proc/self/environ"}),
        );
        none(
            Path::new("/proc/self"),
            "Read",
            json!({"file_path": "environ"}),
        );
        none(Path::new("/etc"), "Bash", bash("cat passwd"));
        // A directory with no project file or git is not a project either.
        none(&home.join("notes"), "Read", json!({"file_path": "a.md"}));
        // A real project, and a directory inside it, still get their reads allowed.
        let app = home.join("code/app");
        assert!(matches!(
            verdict(&app, "Read", json!({"file_path": "src/lib.rs"})),
            Decision::Allow(_)
        ));
        assert!(matches!(
            verdict(&app.join("src"), "Bash", bash("cat lib.rs")),
            Decision::Allow(_)
        ));
        // …but never a link from it into /proc.
        std::os::unix::fs::symlink("/proc/self/environ", app.join("env-link")).unwrap();
        none(&app, "Read", json!({"file_path": "env-link"}));
    }

    /// Issue 15 (6): a key after 70 KB of padding is still found, whichever part the tool
    /// shows; a file too large to scan is never auto-allowed.
    #[test]
    fn the_whole_file_is_scanned() {
        let p = project();
        let cwd = p.path();
        let mut padded = "// padding\n".repeat(70 * 1024 / 11);
        padded.push_str("-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----\n");
        std::fs::write(cwd.join("src/padded.rs"), &padded).unwrap();
        let big = "x".repeat(SCAN_CAP as usize + 1);
        std::fs::write(cwd.join("src/big.txt"), big).unwrap();
        let pol = policy(true, false);
        for (tool, input) in [
            (
                "Read",
                json!({"file_path": "src/padded.rs", "offset": 6000}),
            ),
            (
                "Grep",
                json!({"pattern": "PRIVATE", "path": "src/padded.rs"}),
            ),
            ("Bash", bash("tail -n 3 src/padded.rs")),
            ("Read", json!({"file_path": "src/big.txt"})),
            ("Bash", bash("head -c 10 src/big.txt")),
        ] {
            assert_eq!(
                decide(&pol, tool, &input, cwd, None),
                Decision::NoOpinion,
                "{tool} {input}"
            );
        }
    }

    /// Issue 16 (1): a FIFO or device named by a tool call is refused without blocking.
    #[test]
    fn special_files_are_never_read() {
        let p = project();
        let fifo = p.path().join("src/pipe");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        std::os::unix::fs::symlink("/dev/zero", p.path().join("src/zero")).unwrap();
        let pol = policy(true, false);
        for (tool, input) in [
            ("Read", json!({"file_path": "src/pipe"})),
            ("Bash", bash("cat src/pipe")),
            ("Grep", json!({"pattern": "x", "path": "src/pipe"})),
            ("Read", json!({"file_path": "src/zero"})),
            ("Bash", bash("head -c 10 src/zero")),
        ] {
            assert_eq!(
                decide(&pol, tool, &input, p.path(), None),
                Decision::NoOpinion,
                "{tool} {input}"
            );
        }
    }

    /// Issue 15 (11): forms of writing the old classifier missed, and commands cco cannot
    /// see through, get `ask`.
    #[test]
    fn cud_confirmation_fails_closed() {
        let p = project();
        let pol = policy(true, true);
        for cmd in [
            "'rm' -rf build",
            r"r\m -rf build",
            "sh -c \"rm -rf build\"",
            "x=rm; $x -rf build",
            "find . -delete",
            "sed -i s/a/b/ f",
            "perl -pi -e s/a/b/ f",
            "curl -o f https://x",
            "tar xzf a.tgz",
            "npm i left-pad",
            "cargo add serde",
            "echo 'unclosed",
        ] {
            assert!(
                matches!(
                    decide(&pol, "Bash", &bash(cmd), p.path(), None),
                    Decision::Ask(_)
                ),
                "{cmd}"
            );
        }
        assert!(matches!(
            decide(&pol, "Bash", &json!({"command": 5}), p.path(), None),
            Decision::Ask(_)
        ));
        // Reading stays reading.
        assert!(matches!(
            decide(&pol, "Bash", &bash("cat src/lib.rs"), p.path(), None),
            Decision::Allow(_)
        ));
    }

    #[test]
    fn secret_names() {
        for s in [
            ".env",
            "prod.env",
            ".env.local",
            "id_rsa",
            "a/.ssh/config",
            "server.key",
            "x.tfvars",
            "gcp-token.json",
            "client_secret.json",
        ] {
            assert!(looks_secret(Path::new(s)), "{s}");
        }
        for s in ["src/lib.rs", "README.md", "environment.rs"] {
            assert!(!looks_secret(Path::new(s)), "{s}");
        }
    }
}
