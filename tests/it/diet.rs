//! The context diet, measured with the real Claude Code CLI: the bytes a plain `claude -p`
//! and a `cco -p` send to the (fake) Messages API, per main-thread and per sub-agent request.
//! A size assertion, not a timing: the default roster and rules stay within the budget.
//! `bench/context_bytes.sh` runs this test and shows the table it prints.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::claude::real_claude;
use crate::common::Env;
use crate::e2e::{env_for, project, run_bounded};
use crate::fake_anthropic::{FakeAnthropic, Reply, Rules};

/// Most bytes cco may add to a main-thread request with the default config (issue 11).
const MAIN_BUDGET_BYTES: usize = 8_000;
/// The agent the cco runs delegate to: passed by `auto` in a Rust project, and by `all`.
const SPECIALIST: &str = "rust-specialist";
/// Claude Code's own general agent, which a run without cco's roster delegates to.
const GENERAL: &str = "general-purpose";

/// Delegate once to `agent_type`, then finish when its result is in.
fn fake(agent_type: &str) -> FakeAnthropic {
    FakeAnthropic::with_rules(
        Rules::new()
            .when(|c| c.is_subagent(), Reply::text("SUB-DONE"))
            .when(|c| c.has_tool_result(), Reply::text("MAIN-DONE"))
            .otherwise(Reply::tool_use(
                "Agent",
                format!(
                    r#"{{"subagent_type":"{agent_type}","description":"Check it","prompt":"Check the crate.","run_in_background":false}}"#
                ),
            )),
    )
}

/// Body sizes of one run's first main-thread request and first sub-agent request.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    main: usize,
    sub: usize,
}

/// The run finished as scripted, its sub-agent ran; the sizes it sent.
fn sizes(what: &str, out: &Output, fake: &FakeAnthropic) -> Sizes {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim() == "MAIN-DONE",
        "{what}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let calls = fake.calls();
    let first = |sub: bool| {
        calls
            .iter()
            .find(|c| c.is_subagent() == sub)
            .unwrap_or_else(|| {
                panic!(
                    "{what}: no {} request",
                    if sub { "sub-agent" } else { "main" }
                )
            })
            .request
            .body
            .len()
    };
    Sizes {
        main: first(false),
        sub: first(true),
    }
}

/// `claude [EXTRA] -p hello` itself, with the installation's environment but none of cco's,
/// delegating to `agent`.
fn plain(env: &Env, claude: &Path, cwd: &Path, extra: &[&str], agent: &str) -> Sizes {
    let fake = fake(agent);
    let mut cmd = Command::new(claude);
    cmd.args(extra)
        .args(["-p", "hello"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &env.home)
        .env("ANTHROPIC_BASE_URL", fake.url())
        .envs(
            env.extra
                .iter()
                .filter(|(k, _)| k != "ANTHROPIC_BASE_URL")
                .cloned(),
        )
        .current_dir(cwd)
        .stdin(Stdio::null());
    let out = cmd.output().unwrap();
    sizes("claude -p hello", &out, &fake)
}

/// `cco [ROSTER ARGS] -p hello`, delegating to `agent_type`.
fn via_cco(env: &mut Env, cwd: &Path, roster: &[&str], agent: &str) -> Sizes {
    let fake = fake(agent);
    env.extra.retain(|(k, _)| k != "ANTHROPIC_BASE_URL");
    env.set("ANTHROPIC_BASE_URL", fake.url());
    let mut args: Vec<&str> = vec!["--quiet"];
    args.extend(roster);
    args.extend(["-p", "hello"]);
    let out = run_bounded(env, cwd, &args, &fake);
    sizes(&format!("cco {}", args.join(" ")), &out, &fake)
}

/// One line of the table the bench script shows.
fn row(run: &str, agent: &str, cells: [String; 4]) {
    let [main, plus_main, sub, plus_sub] = cells;
    eprintln!("{run:<20} {agent:<16} {main:>7} {plus_main:>7} {sub:>7} {plus_sub:>7}");
}

#[test]
fn cco_adds_at_most_8000_bytes_to_a_main_request_and_the_full_roster_still_works() {
    let Some(claude) = real_claude() else { return };
    let placeholder = fake(GENERAL);
    let mut env = env_for(&claude, &placeholder);
    let _daemon = env.start("daemon");
    let _sidecar = env.start("sidecar");
    let cwd = project(&env);

    let base = plain(&env, &claude, &cwd, &[], GENERAL);
    // The specialist as cco passes it, given to Claude without cco: what a sub-agent of that
    // type costs anyway, so that its `+sub` is what cco adds (context, hooks).
    let sealed = std::fs::read_to_string(env.runtime_dir().join("agents-sealed.json")).unwrap();
    let sealed: serde_json::Value = serde_json::from_str(&sealed).unwrap();
    let one = serde_json::json!({ SPECIALIST: sealed[SPECIALIST] }).to_string();
    let same = plain(&env, &claude, &cwd, &["--agents", &one], SPECIALIST);

    let runs = [
        (
            "cco (default: auto)",
            SPECIALIST,
            via_cco(&mut env, &cwd, &[], SPECIALIST),
        ),
        (
            "cco --roster all",
            SPECIALIST,
            via_cco(&mut env, &cwd, &["--roster", "all"], SPECIALIST),
        ),
        (
            "cco --roster none",
            GENERAL,
            via_cco(&mut env, &cwd, &["--roster", "none"], GENERAL),
        ),
    ];
    let n = |v: usize| v.to_string();
    let diff = |a: usize, b: usize| (a as i64 - b as i64).to_string();
    eprintln!("request bytes: main = first main-thread request, +main = over `claude -p`;");
    eprintln!("sub = first sub-agent request, +sub = over plain `claude` with that sub-agent type");
    let head = ["main", "+main", "sub", "+sub"].map(String::from);
    row("run", "sub-agent", head);
    row(
        "claude -p",
        GENERAL,
        [n(base.main), n(0), n(base.sub), n(0)],
    );
    row(
        "claude --agents ONE",
        SPECIALIST,
        [n(same.main), diff(same.main, base.main), n(same.sub), n(0)],
    );
    for (run, agent, s) in &runs {
        let sub_base = if *agent == GENERAL {
            base.sub
        } else {
            same.sub
        };
        row(
            run,
            agent,
            [
                n(s.main),
                diff(s.main, base.main),
                n(s.sub),
                diff(s.sub, sub_base),
            ],
        );
    }

    let default_added = runs[0].2.main as i64 - base.main as i64;
    assert!(
        default_added <= MAIN_BUDGET_BYTES as i64,
        "cco adds {default_added} bytes to a main request by default, over the {MAIN_BUDGET_BYTES}-byte budget"
    );
    // `none` still appends the rules: it adds something, and less than the default.
    let none_added = runs[2].2.main as i64 - base.main as i64;
    assert!(
        0 < none_added && none_added < default_added,
        "{none_added} vs {default_added}"
    );
}

/// The agent names in the `--agents` argument the launcher passed, if it passed one.
fn passed_agents(env: &Env) -> Option<Vec<String>> {
    let (argv, _) = crate::launcher::recorded(env);
    let at = argv.iter().position(|a| a == "--agents")?;
    let roster: serde_json::Value = serde_json::from_str(&argv[at + 1]).unwrap();
    Some(roster.as_object().unwrap().keys().cloned().collect())
}

/// `launcher.roster` picks the agents; `--roster` overrides it for one launch; unknown names
/// warn and the rest still go.
#[test]
fn the_config_and_the_flag_choose_the_roster() {
    let env = crate::launcher::with_claude(Env::new());
    std::fs::create_dir_all(env.config_dir()).unwrap();
    std::fs::write(
        env.config_file(),
        "[launcher]\nroster = [\"debugger\", \"sre\", \"no-such-agent\"]\n",
    )
    .unwrap();
    let _d = env.start("daemon");

    let out = env.run(["--quiet", "-p", "x"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(passed_agents(&env).unwrap(), ["debugger", "sre"], "{err}");
    assert!(
        err.contains("no agent named \"no-such-agent\"") && err.contains("cco agents list"),
        "{err}"
    );

    env.run(["--roster", "none", "-p", "x"]);
    assert_eq!(passed_agents(&env), None);
    let (argv, _) = crate::launcher::recorded(&env);
    assert!(argv.iter().any(|a| a == "--append-system-prompt"));
    assert_eq!(
        argv[argv.len() - 2..],
        ["-p", "x"],
        "--roster is cco's, not Claude's"
    );

    env.run(["--roster=all", "-p", "x"]);
    assert_eq!(passed_agents(&env).unwrap().len(), builtin_count());

    // `auto` in a Go module: the core and the Go specialist.
    std::fs::write(env.config_file(), "").unwrap();
    let go = env.tmp.path().join("go-project");
    std::fs::create_dir_all(&go).unwrap();
    std::fs::write(go.join("go.mod"), "module example.com/x\n").unwrap();
    env.cmd(["-p", "x"]).current_dir(&go).output().unwrap();
    let auto = passed_agents(&env).unwrap();
    assert!(auto.contains(&"go-specialist".to_string()), "{auto:?}");
    assert!(auto.contains(&"chief-architect".to_string()), "{auto:?}");
    assert!(auto.len() < 16, "{auto:?}");
}

fn builtin_count() -> usize {
    std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/agents"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".md")
        })
        .count()
}
