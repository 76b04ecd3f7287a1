//! `cco agents list|show|lint` as a user runs them: the real binary against an isolated
//! installation, with user agent files in its config directory.

use std::path::PathBuf;
use std::process::Output;

use crate::common::Env;

/// Writes `~/.config/cco/agents/<file>` of `env` and returns its path.
fn user_agent(env: &Env, file: &str, text: &str) -> PathBuf {
    let dir = env.config_dir().join("agents");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    path
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn builtin_names() -> Vec<String> {
    std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/agents"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".md").map(String::from))
        .collect()
}

const MINE: &str = "---\nname: my-helper\ndescription: Helps me.\ntools: Read, Grep\nmodel: haiku\ncontext: \"**/*.txt\"\n---\nYou help.\nReport what you did.\n";

#[test]
fn list_shows_every_builtin_and_user_files_with_their_path() {
    let env = Env::new();
    let over = user_agent(
        &env,
        "rust.md",
        "---\nname: rust-specialist\ndescription: My own Rust agent.\n---\nMine.\n",
    );
    user_agent(&env, "mine.md", MINE);
    let out = env.run(["agents", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("NAME") && lines[0].contains("DESCRIPTION"));
    for name in builtin_names() {
        assert!(
            lines.iter().any(|l| l.starts_with(&format!("{name} "))),
            "{name} missing from:\n{text}"
        );
    }
    assert_eq!(
        lines.len(),
        1 + builtin_names().len() + 1,
        "header + built-ins + mine"
    );
    let rust = lines
        .iter()
        .find(|l| l.starts_with("rust-specialist "))
        .unwrap();
    assert!(rust.contains(&over.display().to_string()), "{rust}");
    let mine = lines.iter().find(|l| l.starts_with("my-helper ")).unwrap();
    assert!(mine.contains("haiku") && mine.contains("mine.md"), "{mine}");
    let chief = lines
        .iter()
        .find(|l| l.starts_with("chief-architect "))
        .unwrap();
    assert!(chief.contains(" builtin "), "{chief}");
}

#[test]
fn list_fits_80_columns_or_columns_when_not_a_terminal() {
    let mut env = Env::new();
    let width = |out: &Output| {
        stdout(out)
            .lines()
            .map(|l| l.chars().count())
            .max()
            .unwrap()
    };
    let out = env.run(["agents", "list"]);
    assert_eq!(width(&out), 80, "{}", stdout(&out));
    assert!(stdout(&out).contains('…'), "long descriptions are cut");
    env.set("COLUMNS", "120");
    let out = env.run(["agents", "list"]);
    assert_eq!(width(&out), 120, "{}", stdout(&out));
}

#[test]
fn list_json_is_machine_readable() {
    let env = Env::new();
    user_agent(&env, "mine.md", MINE);
    let out = env.run(["agents", "list", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let agents = v.as_array().unwrap();
    assert_eq!(agents.len(), builtin_names().len() + 1);
    let mine = agents.iter().find(|a| a["name"] == "my-helper").unwrap();
    assert_eq!(mine["model"], "haiku");
    assert_eq!(mine["tools"], serde_json::json!(["Read", "Grep"]));
    assert_eq!(mine["context"], serde_json::json!(["**/*.txt"]));
    assert!(mine["source"].as_str().unwrap().ends_with("mine.md"));
}

#[test]
fn list_warns_about_broken_user_files_and_still_lists() {
    let env = Env::new();
    let bad = user_agent(&env, "bad.md", "no front matter");
    let out = env.run(["agents", "list"]);
    assert!(out.status.success());
    assert!(
        stderr(&out).contains(&bad.display().to_string())
            && stderr(&out).contains("cco agents lint"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).contains("chief-architect"));
}

#[test]
fn show_prints_the_definition_and_prompt() {
    let env = Env::new();
    let out = env.run(["agents", "show", "rust-specialist"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let file = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/agents/rust-specialist.md"
    ))
    .unwrap();
    let prompt = file.rsplit("\n---\n").next().unwrap().trim();
    assert!(text.contains(prompt), "{text}");
    for field in [
        "name: rust-specialist",
        "description: ",
        "tools: ",
        "model: sonnet",
        "context: ",
    ] {
        assert!(text.contains(field), "{field} in {text}");
    }

    user_agent(&env, "mine.md", MINE);
    let out = env.run(["agents", "show", "my-helper"]);
    let text = stdout(&out);
    assert!(text.contains("You help.\nReport what you did."), "{text}");
    assert!(text.contains("mine.md"), "the source is shown: {text}");
}

#[test]
fn show_unknown_name_suggests_close_matches_and_fails() {
    let env = Env::new();
    let out = env.run(["agents", "show", "rust-specalist"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("no agent named \"rust-specalist\""), "{err}");
    assert!(err.contains("did you mean rust-specialist"), "{err}");
    assert!(err.contains("cco agents list"), "{err}");

    let out = env.run(["agents", "show", "qqqqqqqqqqqq"]);
    assert!(!out.status.success());
    assert!(!stderr(&out).contains("did you mean"), "{}", stderr(&out));
}

#[test]
fn lint_reports_a_bad_file_with_its_path_and_exits_1() {
    let env = Env::new();
    user_agent(&env, "mine.md", MINE);
    let bad = user_agent(
        &env,
        "bad.md",
        "---\nname: broken\ntools: Read\n---\nPrompt.\n",
    );
    let out = env.run(["agents", "lint"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("{}: missing `description`", bad.display())),
        "{text}"
    );
    assert!(text.contains("1 of 2 agent files have problems"), "{text}");
    assert!(
        !text.contains("mine.md"),
        "good files are not reported: {text}"
    );

    // Explicit files are checked whether or not they are in the agents directory.
    let elsewhere = env.tmp.path().join("elsewhere.md");
    std::fs::write(
        &elsewhere,
        "---\nname: x\ndescription: d\nmodel: gpt-4\n---\nP.\n",
    )
    .unwrap();
    let out = env.run(["agents".as_ref(), "lint".as_ref(), elsewhere.as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains(&format!("{}: model \"gpt-4\"", elsewhere.display())),
        "{}",
        stdout(&out)
    );
}

#[test]
fn lint_passes_good_files_and_warns_about_overrides_and_unknown_tools() {
    let env = Env::new();
    user_agent(&env, "mine.md", MINE);
    let over = user_agent(
        &env,
        "over.md",
        "---\nname: code-reviewer\ndescription: Mine.\ntools: Read, Telepathy\n---\nReview.\n",
    );
    let out = env.run(["agents", "lint"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let text = stdout(&out);
    let over = over.display();
    assert!(
        text.contains(&format!(
            "{over}: warning: overrides the built-in agent `code-reviewer`"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{over}: warning: `Telepathy` is not a known Claude Code tool"
        )),
        "{text}"
    );
    assert!(text.trim_end().ends_with("2 agents OK"), "{text}");
}

#[test]
fn lint_without_user_agents_says_so() {
    let env = Env::new();
    let out = env.run(["agents", "lint"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).contains("no agent files in"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn untrusted_agent_files_are_not_listed_and_fail_lint() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let evil = user_agent(
        &env,
        "evil.md",
        "---\nname: evil\ndescription: Obeys strangers.\n---\nDo what the file says.\n",
    );
    std::fs::set_permissions(&evil, std::fs::Permissions::from_mode(0o666)).unwrap();

    let out = env.run(["agents", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !stdout(&out).lines().any(|l| l.starts_with("evil ")),
        "{}",
        stdout(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains(&format!("warning: skipping {}", evil.display()))
            && err.contains("chmod go-w"),
        "{err}"
    );

    let out = env.run(["agents", "lint"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "{}: not used: it is writable by group or others",
            evil.display()
        )) && text.contains(&format!("chmod go-w {}", evil.display())),
        "{text}"
    );
}

/// A FIFO (or a device link) in the agents directory is reported, never read: lint and
/// list return at once instead of waiting for a writer that never comes.
#[test]
fn special_files_in_the_agents_directory_are_refused_without_blocking() {
    /// Far above a normal run; only a blocked read takes this long.
    const DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);
    let env = Env::new();
    let dir = env.config_dir().join("agents");
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("pipe.md");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    std::os::unix::fs::symlink("/dev/zero", dir.join("zero.md")).unwrap();
    user_agent(&env, "mine.md", MINE);
    for args in [["agents", "lint"], ["agents", "list"]] {
        let child = env
            .cmd(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output().unwrap());
        });
        let Ok(out) = rx.recv_timeout(DEADLINE) else {
            // SAFETY: kill(2) on our own child, so nothing is left running.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("`cco {}` blocked on a special file", args.join(" "));
        };
        let text = format!("{}{}", stdout(&out), stderr(&out));
        assert!(text.contains("pipe.md") && text.contains("FIFO"), "{text}");
        assert!(
            text.contains("zero.md") && text.contains("symlink"),
            "{text}"
        );
    }
}

/// A user agent whose description is over the limit is still used, but lint fails and says
/// why and what to do.
#[test]
fn lint_fails_on_a_description_over_the_limit() {
    let env = Env::new();
    let long = "Does many things, ".repeat(6) + "and more.";
    let path = user_agent(
        &env,
        "wordy.md",
        &format!("---\nname: wordy\ndescription: {long}\n---\nYou help.\n"),
    );
    let out = env.run(["agents", "lint"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("{}: warning: the description is", path.display()))
            && text.contains("over the limit of 80"),
        "{text}"
    );
    assert!(
        text.trim_end()
            .ends_with("shorten them and run `cco agents lint` again"),
        "{text}"
    );
    let list = env.run(["agents", "list", "--json"]);
    assert!(stdout(&list).contains("\"wordy\""), "still used");
}

/// `cco agents cost` in a Rust crate: the core and the Rust specialist, the bytes of each
/// and the totals; `--roster none` leaves only the rules; the text form says the same.
#[test]
fn cost_shows_the_agents_and_bytes_for_this_directory() {
    let env = Env::new();
    let crate_dir = env.tmp.path().join("crate");
    std::fs::create_dir_all(&crate_dir).unwrap();
    std::fs::write(crate_dir.join("Cargo.toml"), "[package]\nname = \"x\"\n").unwrap();
    let cost = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["agents", "cost", "--json"];
        args.extend(extra);
        let out = env.cmd(&args).current_dir(&crate_dir).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };

    let auto = cost(&[]);
    assert_eq!(auto["roster"], "auto");
    assert_eq!(auto["chosen_by"], "launcher.roster");
    let agents = auto["agents"].as_array().unwrap();
    let rust = agents
        .iter()
        .find(|a| a["name"] == "rust-specialist")
        .expect("the Rust specialist");
    assert_eq!(rust["reason"], "detected: Cargo.toml");
    assert!(agents.iter().any(|a| a["reason"] == "core"));
    assert!(!agents.iter().any(|a| a["name"] == "go-specialist"));
    let main = &auto["main_turn"];
    let lines: u64 = agents
        .iter()
        .map(|a| a["line_bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(main["roster_bytes"].as_u64().unwrap(), lines);
    let bytes = main["bytes"].as_u64().unwrap();
    assert_eq!(bytes, lines + main["rules_bytes"].as_u64().unwrap());
    assert_eq!(main["tokens"].as_u64().unwrap(), bytes.div_ceil(4));
    assert!(bytes <= 8_000, "{bytes}");
    assert!(auto["subagent_turn"]["max_prompt_bytes"].as_u64().unwrap() > 0);

    let none = cost(&["--roster", "none"]);
    assert_eq!(none["chosen_by"], "--roster");
    assert!(none["agents"].as_array().unwrap().is_empty());
    assert_eq!(none["main_turn"]["bytes"], none["main_turn"]["rules_bytes"]);

    let all = cost(&["--roster", "all"]);
    assert_eq!(
        all["agents"].as_array().unwrap().len(),
        builtin_names().len()
    );

    let out = env
        .cmd(["agents", "cost"])
        .current_dir(&crate_dir)
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(
        text.contains("rust-specialist") && text.contains("detected: Cargo.toml"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "per main-thread request: {bytes} B ≈ {} tokens",
            bytes.div_ceil(4)
        )),
        "{text}"
    );
    let bad = env.run(["agents", "cost", "--roster", "../x"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
}
