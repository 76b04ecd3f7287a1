//! The `PreToolUse` permission policy: which tool calls cco answers `allow` or `ask` for.
//! An `allow` skips Claude Code's own prompt, so it is given only for calls that provably
//! read inside the session's project and cannot run code or write; everything else gets no
//! opinion and Claude's own rules apply.

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

/// Programs and git sub-commands that create, update or delete.
const CUD_COMMANDS: [&str; 17] = [
    "rm", "rmdir", "mv", "cp", "mkdir", "touch", "chmod", "chown", "ln", "dd", "truncate", "tee",
    "install", "unlink", "shred", "patch", "rsync",
];
const GIT_CUD: [&str; 12] = [
    "commit", "push", "reset", "checkout", "rebase", "merge", "rm", "mv", "clean", "add", "stash",
    "restore",
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

/// `path` (relative to `cwd` when not absolute) resolves, through any symlink, to a place
/// inside `cwd` that is not a secret.
fn inside_project(cwd: &Path, path: &str) -> bool {
    let Ok(root) = cwd.canonicalize() else {
        return false;
    };
    let joined = if Path::new(path).is_absolute() {
        PathBuf::from(path)
    } else {
        cwd.join(path)
    };
    // A path that does not exist yet resolves through its nearest existing ancestor.
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
            Err(_) => match (probe.parent(), probe.file_name()) {
                (Some(parent), Some(name)) => {
                    rest.push(name.to_owned());
                    probe = parent;
                }
                _ => return false,
            },
        }
    };
    let within = resolved.strip_prefix(&root).ok();
    within.is_some_and(|rel| {
        !rel.components().any(|c| c == Component::ParentDir) && !looks_secret(rel)
    })
}

/// How much of a file is scanned for credential-looking content before a read is allowed.
const SCAN_BYTES: u64 = 64 * 1024;

/// A file whose content may be shown: inside the project, not a secret by name, and (when it
/// exists) nothing in its first [`SCAN_BYTES`] looks like a credential — the same rule the
/// context broker applies before it serves a file.
fn readable(cwd: &Path, path: &str) -> bool {
    if !inside_project(cwd, path) {
        return false;
    }
    let full = cwd.join(path);
    match std::fs::metadata(&full) {
        Ok(m) if m.is_file() => {
            use std::io::Read;
            let mut head = Vec::new();
            let read =
                std::fs::File::open(&full).and_then(|f| f.take(SCAN_BYTES).read_to_end(&mut head));
            let name = full
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            read.is_ok() && !crate::secrets::looks_secret(&name, &String::from_utf8_lossy(&head))
        }
        // A directory (an error for cat/head/grep) or nothing yet: no content to show.
        Ok(_) | Err(_) => true,
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
fn is_read_tool(tool: &str, input: &Value, cwd: &Path) -> bool {
    let path = |k: &str| input[k].as_str();
    if FILE_READ_TOOLS.contains(&tool) {
        return path("file_path")
            .or(path("notebook_path"))
            .is_some_and(|p| readable(cwd, p) && cwd.join(p).is_file());
    }
    if LISTING_TOOLS.contains(&tool) {
        return inside_project(cwd, path("path").unwrap_or("."))
            && path("pattern").is_none_or(contained_glob);
    }
    // Grep searches content: only a single file, never a tree (it would read secrets in it).
    tool == "Grep"
        && input["glob"].is_null()
        && path("path").is_some_and(|p| readable(cwd, p) && cwd.join(p).is_file())
}

/// One simple command of a read-only program, with known flags and paths inside the project.
fn is_read_command(cmd: &str, cwd: &Path) -> bool {
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
        if !readable(cwd, arg) {
            return false;
        }
    }
    !expect_number
}

fn is_cud_command(cmd: &str) -> bool {
    if cmd.contains('>') {
        return true; // redirection writes a file
    }
    let words: Vec<&str> = cmd
        .split(|c: char| c.is_whitespace() || matches!(c, ';' | '&' | '|' | '(' | ')' | '`'))
        .filter(|w| !w.is_empty())
        .collect();
    words.iter().enumerate().any(|(i, w)| {
        let w = w.rsplit('/').next().unwrap_or(w);
        CUD_COMMANDS.contains(&w)
            || (w == "sed" && words.get(i + 1).is_some_and(|a| a.starts_with("-i")))
            || (w == "git" && words.get(i + 1).is_some_and(|a| GIT_CUD.contains(a)))
            || (matches!(w, "npm" | "pip" | "pip3" | "cargo" | "apt" | "apt-get")
                && words
                    .get(i + 1)
                    .is_some_and(|a| matches!(*a, "install" | "uninstall" | "remove")))
    })
}

/// The decision for one tool call made in the session whose working directory is `cwd`.
pub fn decide(policy: &Policy, tool: &str, input: &Value, cwd: &Path) -> Decision {
    let command = input["command"].as_str().unwrap_or("");
    let cud = CUD_TOOLS.contains(&tool) || (tool == "Bash" && is_cud_command(command));
    if policy.require_cud_confirmation && cud {
        return Decision::Ask(
            "cco policy: create/update/delete needs confirmation (hooks.require_cud_confirmation)",
        );
    }
    if !policy.auto_allow_read || cud {
        return Decision::NoOpinion;
    }
    if ORCHESTRATION_TOOLS.contains(&tool) {
        return Decision::Allow("cco policy: orchestration (hooks.auto_allow_read)");
    }
    let reading =
        is_read_tool(tool, input, cwd) || (tool == "Bash" && is_read_command(command, cwd));
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
            matches!(decide(&pol, tool, &input, cwd), Decision::Allow(_))
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
            matches!(decide(&pol, tool, &input, cwd), Decision::Allow(_))
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
                cwd
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
                matches!(decide(&pol, t, &json!({}), p.path()), Decision::Ask(_)),
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
                matches!(decide(&pol, "Bash", &bash(cmd), p.path()), Decision::Ask(_)),
                "{cmd}"
            );
        }
        assert_eq!(
            decide(&policy(true, false), "Write", &json!({}), p.path()),
            Decision::NoOpinion
        );
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
