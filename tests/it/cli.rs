//! What people read: `cco help`, every subcommand's `--help` and common error messages,
//! as insta snapshots (ports and temp paths redacted), so a change to them is deliberate.

use clap::CommandFactory;

use crate::common::Env;

/// Help is wrapped to the terminal; pin the width so snapshots do not depend on it.
const COLUMNS: &str = "100";

fn stdout_of(env: &Env, args: &[&str]) -> String {
    let out = env.cmd(args).env("COLUMNS", COLUMNS).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `cco ARGS…` that must fail: its stderr, with what differs per run replaced.
fn error_of(env: &Env, args: &[&str]) -> String {
    let out = env.cmd(args).env("COLUMNS", COLUMNS).output().unwrap();
    assert!(!out.status.success(), "{args:?} succeeded");
    redact(env, &String::from_utf8_lossy(&out.stderr))
}

fn redact(env: &Env, text: &str) -> String {
    text.replace(&env.tmp.path().display().to_string(), "[TMP]")
        .replace(&env.daemon_port.to_string(), "[DAEMON_PORT]")
        .replace(&env.sidecar_port.to_string(), "[SIDECAR_PORT]")
}

/// Every command path under `cmd`, depth first: `["daemon"]`, `["daemon", "run"]`, …
fn command_paths(cmd: &clap::Command, prefix: &[String], out: &mut Vec<Vec<String>>) {
    for sub in cmd.get_subcommands() {
        let mut path = prefix.to_vec();
        path.push(sub.get_name().to_string());
        out.push(path.clone());
        command_paths(sub, &path, out);
    }
}

#[test]
fn help_texts() {
    let env = Env::new();
    insta::assert_snapshot!("help", stdout_of(&env, &["help"]));
    let mut paths = Vec::new();
    command_paths(&cco::cli::Cli::command(), &[], &mut paths);
    assert!(paths.len() > 13, "{paths:?}");
    for path in paths {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let name = format!("help_{}", path.join("_"));
        insta::assert_snapshot!(name, stdout_of(&env, &args));
    }
}

#[test]
fn common_error_messages() {
    let env = Env::new();
    // Nothing installed yet: no secret, nothing listening.
    insta::assert_snapshot!("error_token_before_setup", error_of(&env, &["token"]));
    insta::assert_snapshot!(
        "error_events_bad_topic",
        error_of(&env, &["events", "--topic", "a\nb"])
    );
    insta::assert_snapshot!(
        "error_events_bad_type",
        error_of(&env, &["events", "--type", "../x"])
    );
    insta::assert_snapshot!(
        "error_agents_show_unknown",
        error_of(&env, &["agents", "show", "rust-specalist"])
    );
    insta::assert_snapshot!("error_unknown_flag", error_of(&env, &["health", "--bogus"]));
    // Set up (the daemon made the secret), but nothing listens now.
    env.start("daemon").terminate();
    insta::assert_snapshot!(
        "error_events_nothing_listening",
        error_of(&env, &["events"])
    );
    // `cco health` down: the table on stdout, the fix on stderr.
    let out = env.run(["health"]);
    assert!(!out.status.success());
    let text = format!(
        "{}--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    insta::assert_snapshot!("error_health_down", redact(&env, &text));
}

#[test]
fn an_error_quoting_a_hostile_path_is_printed_inert() {
    let env = Env::new();
    // A project directory whose name carries a CSI and a bidi override.
    let missing = env.tmp.path().join("proj\u{9b}2J\u{202e}");
    let out = env
        .cmd(["token", "--project", missing.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr
            .chars()
            .any(|c| cco::api::inert::is_unsafe(c) && c != '\n'),
        "{stderr:?}"
    );
}
