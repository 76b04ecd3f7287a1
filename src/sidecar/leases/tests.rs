//! Lease conflict rules (globs, shared vs exclusive), expiry on an injected clock, renewal,
//! release, and restart.

use super::*;

fn issue() -> IssueId {
    IssueId::parse("issue-1").unwrap()
}
fn agent(a: &str) -> AgentId {
    AgentId::parse(a).unwrap()
}
fn req(a: &str, paths: &[&str], mode: LeaseMode) -> ReserveRequest {
    ReserveRequest {
        agent: agent(a),
        paths: paths.iter().map(|p| p.to_string()).collect(),
        mode,
        ttl_secs: None,
        reason: "refactor".into(),
    }
}

fn open(dir: &Path, now: u64) -> LeaseStore {
    let db = dir.join("o").join("state.db");
    crate::paths::ensure_private_dir(db.parent().unwrap()).unwrap();
    let mut conn = crate::sidecar::journal::schema::open_conn(&db).unwrap();
    crate::sidecar::journal::schema::migrate(&mut conn, &db).unwrap();
    LeaseStore::open(&db, now).unwrap()
}

#[test]
fn normalize_keeps_paths_inside_the_project() {
    assert_eq!(normalize("./src//lib.rs").unwrap(), "src/lib.rs");
    assert_eq!(normalize("src/").unwrap(), "src");
    assert_eq!(normalize(".").unwrap(), ".");
    for bad in [
        "",
        "/etc/passwd",
        "../x",
        "src/../../x",
        "a\\b",
        "src/[",
        "a\nb",
    ] {
        assert!(normalize(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn glob_overlap_is_conservative_but_not_blind() {
    let yes = [
        ("src/lib.rs", "src/lib.rs"),
        ("src", "src/lib.rs"),
        ("src/*.rs", "src/lib.rs"),
        ("src/**", "src/a/b/c.rs"),
        ("**/*.rs", "docs/x.md"), // conservative: `**` may stand for anything
        ("src/*", "src/a/b.rs"),  // `src/a` is matched, and a directory covers its files
        ("src/l*", "src/*.rs"),
        ("a*", "*b"),
        (".", "anything"),
        ("src/{a,b}.rs", "src/a.rs"),
    ];
    for (a, b) in yes {
        assert!(patterns_overlap(a, b), "{a} vs {b}");
        assert!(patterns_overlap(b, a), "{b} vs {a}");
    }
    let no = [
        ("src/lib.rs", "src/main.rs"),
        ("src/*.rs", "src/*.md"),
        ("src/*.rs", "tests/lib.rs"),
        ("src/a*", "src/b*"),
        ("docs/*.md", "src/lib.rs"),
    ];
    for (a, b) in no {
        assert!(!patterns_overlap(a, b), "{a} vs {b}");
        assert!(!patterns_overlap(b, a), "{b} vs {a}");
    }
}

#[test]
fn a_path_is_covered_by_its_glob_or_a_parent_directory() {
    assert!(pattern_covers("src/lib.rs", "src/lib.rs"));
    assert!(pattern_covers("src", "src/a/lib.rs"));
    assert!(pattern_covers("src/**/*.rs", "src/a/b/lib.rs"));
    assert!(pattern_covers("*.toml", "Cargo.toml"));
    assert!(
        !pattern_covers("*.toml", "sub/Cargo.toml"),
        "`*` stops at `/`"
    );
    assert!(!pattern_covers("src/**/*.rs", "src/notes.md"));
    assert!(!pattern_covers("src/lib.rs", "src/lib.rs.bak"));
    assert!(pattern_covers(".", "anything/at/all"));
}

#[test]
fn exclusive_and_shared_conflict_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), 0);
    let i = issue();
    // shared + shared: fine.
    s.reserve(&i, &req("a", &["src/*.rs"], LeaseMode::Shared), None, 0)
        .unwrap();
    s.reserve(&i, &req("b", &["src/lib.rs"], LeaseMode::Shared), None, 0)
        .unwrap();
    // exclusive vs shared: conflict, naming both holders.
    let e = s
        .reserve(
            &i,
            &req("c", &["src/lib.rs"], LeaseMode::Exclusive),
            None,
            0,
        )
        .unwrap_err();
    let LeaseError::Conflict(c) = e else {
        panic!("{e}")
    };
    assert_eq!(c.len(), 2);
    // An agent never conflicts with itself.
    s.reserve(
        &i,
        &req("a", &["src/lib.rs"], LeaseMode::Exclusive),
        None,
        0,
    )
    .unwrap_err(); // b's shared lease is in the way
    s.reserve(&i, &req("c", &["docs"], LeaseMode::Exclusive), None, 0)
        .unwrap();
    s.reserve(&i, &req("c", &["docs/x.md"], LeaseMode::Exclusive), None, 0)
        .unwrap();
    // exclusive vs exclusive and shared vs exclusive: conflict.
    for mode in [LeaseMode::Exclusive, LeaseMode::Shared] {
        let e = s
            .reserve(&i, &req("d", &["docs/**"], mode), None, 0)
            .unwrap_err();
        assert!(
            e.to_string().contains("agent c") && e.to_string().contains("mcp__cco__wait"),
            "{e}"
        );
    }
    // Another issue is another namespace.
    let other = IssueId::parse("issue-2").unwrap();
    s.reserve(
        &other,
        &req("d", &["docs/**"], LeaseMode::Exclusive),
        None,
        0,
    )
    .unwrap();
}

#[test]
fn expiry_ends_leases_on_the_injected_clock_and_the_holder_may_renew() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), 0);
    let i = issue();
    let t0 = 1_000_000;
    let l = s
        .reserve(
            &i,
            &req("a", &["src/lib.rs"], LeaseMode::Exclusive),
            None,
            t0,
        )
        .unwrap();
    assert_eq!(l.expires_at_ms, t0 + DEFAULT_TTL.as_millis() as u64);
    let just_before = l.expires_at_ms - 1;
    assert!(
        s.exclusive_holder(&i, "src/lib.rs", Some(&agent("b")), &|_| true, just_before)
            .is_some()
    );
    assert!(
        s.exclusive_holder(&i, "src/lib.rs", Some(&agent("a")), &|_| true, just_before)
            .is_none(),
        "the holder itself is not blocked"
    );
    // Renewal by someone else is refused; by the holder it extends.
    assert!(matches!(
        s.renew(&i, &l.lease_id, &agent("b"), Some(60), just_before),
        Err(LeaseError::NotHolder { .. })
    ));
    let r = s
        .renew(&i, &l.lease_id, &agent("a"), Some(60), just_before)
        .unwrap();
    assert_eq!(r.expires_at_ms, just_before + 60_000);
    assert!(
        s.exclusive_holder(&i, "src/lib.rs", None, &|_| true, l.expires_at_ms)
            .is_some()
    );
    let after = r.expires_at_ms;
    assert!(
        s.exclusive_holder(&i, "src/lib.rs", None, &|_| true, after)
            .is_none()
    );
    assert!(s.list(Some(&i), after).is_empty());
    // Expired: free for another agent, and a renewal comes too late.
    s.reserve(
        &i,
        &req("b", &["src/lib.rs"], LeaseMode::Exclusive),
        None,
        after,
    )
    .unwrap();
    assert!(matches!(
        s.renew(&i, &l.lease_id, &agent("a"), None, after),
        Err(LeaseError::NotFound(_))
    ));
    // TTL limits.
    let mut long = req("c", &["x"], LeaseMode::Exclusive);
    long.ttl_secs = Some(MAX_TTL.as_secs() + 1);
    assert!(matches!(
        s.reserve(&i, &long, None, after),
        Err(LeaseError::Invalid(_))
    ));
}

#[test]
fn release_by_holder_by_force_and_per_agent() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), 0);
    let i = issue();
    let a1 = s
        .reserve(&i, &req("a", &["x"], LeaseMode::Exclusive), None, 0)
        .unwrap();
    s.reserve(&i, &req("a", &["y"], LeaseMode::Exclusive), None, 0)
        .unwrap();
    let b1 = s
        .reserve(&i, &req("b", &["z"], LeaseMode::Exclusive), None, 0)
        .unwrap();
    assert!(matches!(
        s.release(&i, &a1.lease_id, Some(&agent("b")), 0),
        Err(LeaseError::NotHolder { .. })
    ));
    s.release(&i, &b1.lease_id, None, 0).unwrap();
    assert!(matches!(
        s.release(&i, &b1.lease_id, None, 0),
        Err(LeaseError::NotFound(_))
    ));
    assert_eq!(s.release_agent(&i, &agent("a")).unwrap().len(), 2);
    assert!(s.list(Some(&i), 0).is_empty());
    assert!(s.is_empty());
}

#[test]
fn leases_survive_a_restart_and_expired_ones_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let i = issue();
    let (kept, renewed) = {
        let s = open(dir.path(), 0);
        let kept = s
            .reserve(
                &i,
                &req("a", &["src/lib.rs"], LeaseMode::Exclusive),
                None,
                0,
            )
            .unwrap();
        let mut short = req("b", &["docs"], LeaseMode::Shared);
        short.ttl_secs = Some(1);
        let short = s.reserve(&i, &short, None, 0).unwrap();
        let renewed = s
            .renew(&i, &short.lease_id, &agent("b"), Some(120), 500)
            .unwrap();
        let gone = s
            .reserve(&i, &req("c", &["tmp"], LeaseMode::Exclusive), None, 0)
            .unwrap();
        s.release(&i, &gone.lease_id, None, 0).unwrap();
        (kept, renewed)
    };
    let s = open(dir.path(), 1_000);
    let mut got = s.list(Some(&i), 1_000);
    got.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
    assert_eq!(got, vec![kept.clone(), renewed]);
    // Reopened after the renewed one expired: only the long one is left.
    drop(s);
    let later = 500 + 120_000;
    let s = open(dir.path(), later);
    assert_eq!(s.list(Some(&i), later), vec![kept]);
}
