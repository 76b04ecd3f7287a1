//! The context endpoint against attacker-shaped projects (issue 16): special files in the
//! tree or as `.git` give an answer, not a hang, and slow context builds never keep results
//! from being stored and listed, nor the sidecar from stopping.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::common::{Env, http};

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// A project with one source file and a manifest.
fn plain_project(root: &Path) {
    std::fs::create_dir_all(root.join("src")).unwrap();
    std::fs::write(root.join("Cargo.toml"), "[package]\nname = \"p\"\n").unwrap();
    std::fs::write(root.join("src/main.rs"), "fn main() {}\n").unwrap();
}

/// A git work tree whose `HEAD` is a FIFO: every git run on it blocks until killed.
fn hanging_git_project(root: &Path) {
    plain_project(root);
    let ok = Command::new("git")
        .args(["init", "-q", "-b", "main"])
        .arg(root)
        .output()
        .unwrap()
        .status
        .success();
    assert!(ok, "git init");
    std::fs::remove_file(root.join(".git/HEAD")).unwrap();
    mkfifo(&root.join(".git/HEAD"));
}

struct Fixture {
    env: Env,
    token: String,
    projects: PathBuf,
}

/// A sidecar and a token bound to a directory of projects (each chosen with `?project=`).
fn fixture() -> (Fixture, crate::common::Service) {
    let env = Env::new();
    let svc = env.start("sidecar");
    let projects = env.tmp.path().join("projects");
    std::fs::create_dir_all(&projects).unwrap();
    let out = env.run(["token", "--project", projects.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    (
        Fixture {
            env,
            token,
            projects,
        },
        svc,
    )
}

impl Fixture {
    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let auth = format!("Bearer {}", self.token);
        let text = body.map(|b| b.to_string());
        let mut headers = vec![("Authorization", auth.as_str())];
        if text.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        let (status, body) = http(
            self.env.sidecar_port,
            method,
            path,
            &headers,
            text.as_deref(),
        );
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    fn context(&self, project: &str) -> (u16, Value) {
        let dir = self.projects.join(project);
        self.request(
            "GET",
            &format!(
                "/api/context/ISSUE-1/rust-specialist?project={}",
                dir.display()
            ),
            None,
        )
    }
}

/// A FIFO `.git`, a `.git` → `/dev/zero`, and FIFOs and device links among the sources
/// each blocked or flooded the sidecar; now each project gets its context without them.
#[test]
fn special_files_in_a_project_give_a_context_not_a_hang() {
    let (f, _svc) = fixture();
    let p = &f.projects;
    plain_project(&p.join("fifo-git"));
    mkfifo(&p.join("fifo-git/.git"));
    plain_project(&p.join("zero-git"));
    std::os::unix::fs::symlink("/dev/zero", p.join("zero-git/.git")).unwrap();
    plain_project(&p.join("special-files"));
    mkfifo(&p.join("special-files/src/pipe.rs"));
    std::os::unix::fs::symlink("/dev/zero", p.join("special-files/README.md")).unwrap();
    std::os::unix::fs::symlink("/dev/urandom", p.join("special-files/src/rand.rs")).unwrap();
    mkfifo(&p.join("special-files/.gitignore"));
    for project in ["fifo-git", "zero-git", "special-files"] {
        let (status, body) = f.context(project);
        assert_eq!(status, 200, "{project}: {body}");
        let ctx = &body["project"];
        assert_eq!(ctx["git"], Value::Null, "{project}");
        assert_eq!(
            ctx["structure"],
            json!(["Cargo.toml", "src/main.rs"]),
            "{project}"
        );
        let files: Vec<_> = ctx["relevant_files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["path"].as_str().unwrap())
            .collect();
        assert_eq!(files, vec!["Cargo.toml", "src/main.rs"], "{project}");
    }
}

/// Context builds stuck on git (a FIFO `HEAD`) for several times the build permits: results
/// are stored and listed meanwhile, and every context request answers — the ones that
/// waited too long with the project part empty and marked truncated — and SIGTERM stops it.
#[test]
fn results_are_stored_and_listed_while_context_builds_are_stuck() {
    const STUCK: usize = 12;
    let (f, mut svc) = fixture();
    for i in 0..STUCK {
        hanging_git_project(&f.projects.join(format!("slow{i}")));
    }
    let f = std::sync::Arc::new(f);
    let waiting: Vec<_> = (0..STUCK)
        .map(|i| {
            let f = f.clone();
            std::thread::spawn(move || f.context(&format!("slow{i}")))
        })
        .collect();
    let result = json!({
        "agent_id": "a1",
        "agent_type": "test-engineer",
        "issue_id": "ISSUE-2",
        "result": {"status": "completed", "summary": "ok"},
    });
    let (status, body) = f.request("POST", "/api/results", Some(&result));
    assert_eq!(status, 201, "{body}");
    let (status, body) = f.request("GET", "/api/results/ISSUE-2", None);
    assert_eq!(status, 200, "{body}");
    assert!(body.to_string().contains("a1"), "{body}");
    let mut degraded = 0;
    for w in waiting {
        let (status, body) = w.join().unwrap();
        assert_eq!(status, 200, "{body}");
        if body["project"]["structure"] == json!([]) {
            assert_eq!(body["truncated"], true, "{body}");
            degraded += 1;
        }
    }
    assert!(degraded > 0, "every stuck build finished within the wait");
    // Builds still running end at their deadlines: SIGTERM stops the sidecar.
    assert!(svc.terminate().success(), "{}", svc.log_text());
}
