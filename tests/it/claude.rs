//! Against the real Claude Code CLI (installed by tests/run.sh from npm, pinned): our sealed
//! settings pass Claude's own validator, and the launcher is transparent for `--version`.
//! Without the CLI these tests say so and pass, except in CI (`CI=true` or
//! `CCO_REQUIRE_REAL_CLAUDE=1`), where they fail.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::common::Env;

/// The real CLI, or `None` (with a note) when it is not installed here.
pub fn real_claude() -> Option<PathBuf> {
    let found = std::env::var_os("CCO_TEST_CLAUDE")
        .map(PathBuf::from)
        .filter(|p| p.exists());
    if found.is_none() {
        crate::common::cannot_run(
            "CCO_TEST_CLAUDE does not name an installed Claude Code (tests/run.sh installs it)",
        );
    }
    found
}

fn doctor(env: &Env, claude: &PathBuf, settings: &std::path::Path) -> String {
    let out = Command::new(claude)
        .args([
            "--settings".as_ref(),
            settings.as_os_str(),
            "doctor".as_ref(),
        ])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &env.home)
        .env("DISABLE_AUTOUPDATER", "1")
        .current_dir(env.tmp.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn sealed_settings_pass_claude_codes_own_validator() {
    let Some(claude) = real_claude() else { return };
    let env = Env::new();
    let _d = env.start("daemon");
    let settings = env.runtime_dir().join("orchestrator-settings.json");
    let report = doctor(&env, &claude, &settings);
    assert!(
        report.contains("Claude Code doctor"),
        "doctor did not run:\n{report}"
    );
    assert!(!report.contains("Invalid settings"), "{report}");

    // The validator is real: a broken hook is reported.
    let bad = env.tmp.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"hooks":{"PreToolUse":[{"matcher":"*","hooks":[{"type":"command","command":"x","timeout":"soon"}]}]}}"#,
    )
    .unwrap();
    assert!(doctor(&env, &claude, &bad).contains("Invalid settings"));
}

#[test]
fn cco_version_prints_exactly_what_claude_version_prints() {
    let Some(claude) = real_claude() else { return };
    let mut env = Env::new();
    env.set("CCO_CLAUDE", claude.display().to_string());
    env.set("DISABLE_AUTOUPDATER", "1");
    let _d = env.start("daemon");
    let direct = Command::new(&claude)
        .arg("--version")
        .env("HOME", &env.home)
        .output()
        .unwrap();
    let via = env.run(["--version"]);
    assert!(
        via.status.success(),
        "{}",
        String::from_utf8_lossy(&via.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&via.stdout),
        String::from_utf8_lossy(&direct.stdout)
    );
    assert!(String::from_utf8_lossy(&via.stderr).contains("🚀 Launching Claude Code"));
}
