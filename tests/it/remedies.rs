//! Error messages name the fix for the problem at hand, once.

use std::os::unix::fs::PermissionsExt;

use crate::common::Env;

#[test]
fn a_readable_secret_gets_the_chmod_fix_not_the_set_up_one() {
    let env = Env::new();
    let mut daemon = env.start("daemon");
    daemon.terminate();
    let secret = env.config_dir().join("secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();

    let out = env.run(["token"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("mode 0644") && stderr.contains("chmod 600"),
        "{stderr}"
    );
    assert!(!stderr.contains("start the services once"), "{stderr}");

    // Doctor: the secret's problem on one line, its fix on the next, nothing repeated; an
    // absent Claude Code likewise.
    let empty = env.tmp.path().join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let out = env.cmd(["doctor"]).env("PATH", &empty).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("❌") && l.contains("mode 0644"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(!lines[at].contains("chmod"), "{text}");
    assert!(lines[at + 1].contains("→ run `chmod 600"), "{text}");
    assert!(!lines[at + 1].contains("daemon restart"), "{text}");
    assert_eq!(text.matches("chmod 600").count(), 1, "{text}");
    assert_eq!(text.matches("Claude Code not found").count(), 1, "{text}");
    assert_eq!(text.matches("npm install -g").count(), 1, "{text}");
}

#[test]
fn a_missing_secret_still_says_how_to_set_up() {
    let env = Env::new();
    let out = env.run(["token"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("cco install"), "{stderr}");
    assert_eq!(stderr.matches("cco install").count(), 1, "{stderr}");
}
