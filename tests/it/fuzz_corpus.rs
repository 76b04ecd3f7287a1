//! The fuzz targets' committed corpus (fuzz/corpus/<target>/) replayed as ordinary tests, so CI
//! covers it without a nightly toolchain; hook inputs also go through the real `cco hook`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{CCO, run_with_stdin};

#[allow(dead_code)]
#[path = "../../fuzz/harness.rs"]
mod harness;

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no corpus for {target} in {}",
        dir.display()
    );
    files
}

#[test]
fn every_corpus_input_passes_its_target() {
    for (name, target) in harness::TARGETS {
        for file in corpus(name) {
            let data = std::fs::read(&file).unwrap();
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(
                outcome.is_ok(),
                "fuzz target {name} fails on {}",
                file.display()
            );
        }
    }
}

/// The in-process rig really serves: known inputs get their known answers.
#[test]
fn the_post_body_rig_answers_like_the_sidecar() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/post_body");
    for (file, want) in [
        // The rig is shared with the corpus replay: a repeated result is "unchanged" (200).
        ("result_ok", &[200, 201][..]),
        ("publish_ok", &[201]),
        ("publish_reserved", &[403]),
        ("result_traversal", &[400]),
        ("garbage", &[400]),
    ] {
        let data = std::fs::read(dir.join(file)).unwrap();
        let got = harness::post_status(&data).map(|s| s.as_u16());
        assert!(got.is_some_and(|g| want.contains(&g)), "{file}: {got:?}");
    }
}

/// Hooks must never break Claude: every hook input exits 0 with nothing or JSON on stdout,
/// with no sidecar to talk to.
#[test]
fn every_hook_corpus_input_exits_0_through_the_real_hook() {
    let tmp = tempfile::tempdir().unwrap();
    for file in corpus("hook_stdin") {
        let data = std::fs::read(&file).unwrap();
        for event in [
            "pre-tool-use",
            "subagent-start",
            "subagent-stop",
            "session-start",
        ] {
            let mut cmd = Command::new(CCO);
            cmd.args(["hook", event])
                .env_clear()
                .env("HOME", tmp.path())
                .env("ORCHESTRATOR_SIDECAR_URL", "http://127.0.0.1:9")
                .env(
                    "ORCHESTRATOR_HOOKS_CONFIG",
                    r#"{"permissions":{"require_cud_confirmation":true}}"#,
                )
                .current_dir(tmp.path());
            let out = run_with_stdin(&mut cmd, &data);
            assert!(
                out.status.success(),
                "cco hook {event} < {}: {out:?}",
                file.display()
            );
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                stdout.trim().is_empty()
                    || serde_json::from_str::<serde_json::Value>(&stdout).is_ok(),
                "cco hook {event} < {}: stdout is not JSON: {stdout}",
                file.display()
            );
        }
    }
}
