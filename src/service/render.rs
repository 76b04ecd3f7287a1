//! Unit text for systemd and launchd as a pure function of a [`UnitSpec`]. The checked-in
//! reference units (`systemd/`, `launchd/`) are this output for [`UnitSpec::reference`].

use std::fmt::Write;

use super::{Scope, Service, UnitSpec};

/// One rendered file: its name in the unit directory and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitFile {
    pub name: String,
    pub text: String,
}

/// The four systemd units: a socket and a service per process.
pub fn systemd_units(spec: &UnitSpec) -> Vec<UnitFile> {
    let mut out = Vec::new();
    for s in Service::ALL {
        out.push(UnitFile {
            name: s.socket_unit(),
            text: systemd_socket(spec, s),
        });
        out.push(UnitFile {
            name: s.service_unit(),
            text: systemd_service(spec, s),
        });
    }
    out
}

/// The two launchd plists.
pub fn launchd_plists(spec: &UnitSpec) -> Vec<UnitFile> {
    Service::ALL
        .iter()
        .map(|&s| UnitFile {
            name: s.plist_name(),
            text: launchd_plist(spec, s),
        })
        .collect()
}

fn header(s: Service) -> String {
    format!(
        "# cco {} — written by `cco install`, which rewrites it; the reference copy lives in\n\
         # systemd/ in the cco sources. Change ports in cco's config and run `cco install` again.\n",
        s.name()
    )
}

fn systemd_socket(spec: &UnitSpec, s: Service) -> String {
    let port = spec.port(s);
    let mut t = header(s);
    let _ = write!(
        t,
        "[Unit]\n\
         Description=cco {name} socket (Claude Code Orchestra, 127.0.0.1:{port})\n\
         \n\
         [Socket]\n\
         # The manager owns the port; the first connection starts {service}.\n\
         ListenStream=127.0.0.1:{port}\n\
         FileDescriptorName={name}\n\
         NoDelay=yes\n\
         \n\
         [Install]\n\
         WantedBy=sockets.target\n",
        name = s.name(),
        service = s.service_unit(),
    );
    t
}

fn systemd_service(spec: &UnitSpec, s: Service) -> String {
    let mut t = header(s);
    let socket = s.socket_unit();
    let _ = writeln!(t, "[Unit]");
    let _ = writeln!(t, "Description=cco {} (Claude Code Orchestra)", s.name());
    let _ = writeln!(t, "Requires={socket}");
    let _ = writeln!(t, "After={socket}");
    if let (Scope::System, Some(user)) = (spec.scope, &spec.run_as) {
        // System units get no XDG_RUNTIME_DIR; use the user's, which this unit creates.
        let _ = writeln!(t, "Requires=user-runtime-dir@{}.service", user.uid);
        let _ = writeln!(t, "After=user-runtime-dir@{}.service", user.uid);
    }
    let _ = writeln!(t);
    let _ = writeln!(t, "[Service]");
    let _ = writeln!(t, "Type=notify");
    let argv = [
        spec.bin.to_string_lossy().into_owned(),
        s.name().into(),
        "run".into(),
    ];
    let exec: Vec<String> = argv.iter().map(|a| exec_arg(a)).collect();
    let _ = writeln!(t, "ExecStart={}", exec.join(" "));
    if let (Scope::System, Some(user)) = (spec.scope, &spec.run_as) {
        let _ = writeln!(t, "User={}", user.name);
        let _ = writeln!(
            t,
            "{}",
            environment("XDG_RUNTIME_DIR", &format!("/run/user/{}", user.uid))
        );
    }
    for (k, v) in &spec.env {
        let _ = writeln!(t, "{}", environment(k, v));
    }
    let _ = write!(
        t,
        "Restart=on-failure\n\
         # Longer than cco's own shutdown grace (10 s): in-flight requests finish first.\n\
         TimeoutStopSec=20\n\
         # Hardening that works in user units (no mount namespaces: PrivateTmp= and\n\
         # ProtectSystem= need user namespaces there, and the runtime dir may be under /tmp).\n\
         NoNewPrivileges=yes\n\
         LockPersonality=yes\n\
         RestrictRealtime=yes\n\
         RestrictSUIDSGID=yes\n\
         MemoryDenyWriteExecute=yes\n\
         SystemCallArchitectures=native\n\
         # seccomp, which needs no namespace: the system calls a service uses; one outside\n\
         # the set fails with EPERM instead of killing the process.\n\
         SystemCallFilter=@system-service\n\
         SystemCallFilter=~@privileged\n\
         SystemCallErrorNumber=EPERM\n\
         RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\n\
         RestrictNamespaces=yes\n\
         KeyringMode=private\n\
         # (CapabilityBoundingSet= stops a user unit from starting at all.)\n\
         UMask=0077\n\
         LimitNOFILE={nofile}\n",
        nofile = LIMIT_NOFILE
    );
    t
}

/// Open files per service: enough for `server::MAX_CONNECTIONS` (two descriptors each, plus
/// a reserve) so the connection cap is not lowered.
pub const LIMIT_NOFILE: u32 = 16_384;

/// One `ExecStart=` word: bare when it is plainly safe, else double-quoted with C escapes.
/// `%` starts a specifier and `$` a variable in systemd command lines, so both are doubled.
pub fn exec_arg(arg: &str) -> String {
    let safe = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._+-:,@=".contains(c));
    let body = if safe {
        arg.to_string()
    } else {
        format!("\"{}\"", c_escape(arg))
    };
    body.replace('%', "%%").replace('$', "$$")
}

/// `Environment="KEY=VALUE"`: quoted, C-escaped, `%` doubled (no `$` expansion there).
pub fn environment(key: &str, value: &str) -> String {
    format!(
        "Environment=\"{}\"",
        c_escape(&format!("{key}={value}")).replace('%', "%%")
    )
}

fn c_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

fn launchd_plist(spec: &UnitSpec, s: Service) -> String {
    let mut t = String::new();
    t.push_str(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n",
    );
    let _ = writeln!(
        t,
        "<!-- cco {} — written by `cco install`, which rewrites it; reference copy in launchd/.\n     \
         No RunAtLoad/KeepAlive on purpose: launchd starts the job on the first connection. -->",
        s.name()
    );
    t.push_str("<plist version=\"1.0\">\n<dict>\n");
    let key = |t: &mut String, k: &str, v: &str| {
        let _ = writeln!(t, "\t<key>{}</key>\n\t<string>{}</string>", xml(k), xml(v));
    };
    key(&mut t, "Label", &s.label());
    t.push_str("\t<key>ProgramArguments</key>\n\t<array>\n");
    for a in [&*spec.bin.to_string_lossy(), s.name(), "run"] {
        let _ = writeln!(t, "\t\t<string>{}</string>", xml(a));
    }
    t.push_str("\t</array>\n");
    let _ = write!(
        t,
        "\t<key>Sockets</key>\n\t<dict>\n\
         \t\t<key>{name}</key>\n\t\t<dict>\n\
         \t\t\t<key>SockFamily</key>\n\t\t\t<string>IPv4</string>\n\
         \t\t\t<key>SockNodeName</key>\n\t\t\t<string>127.0.0.1</string>\n\
         \t\t\t<key>SockServiceName</key>\n\t\t\t<string>{port}</string>\n\
         \t\t\t<key>SockType</key>\n\t\t\t<string>stream</string>\n\
         \t\t</dict>\n\t</dict>\n",
        name = s.name(),
        port = spec.port(s),
    );
    if let (Scope::System, Some(user)) = (spec.scope, &spec.run_as) {
        key(&mut t, "UserName", &user.name);
    }
    if !spec.env.is_empty() {
        t.push_str("\t<key>EnvironmentVariables</key>\n\t<dict>\n");
        for (k, v) in &spec.env {
            let _ = writeln!(
                t,
                "\t\t<key>{}</key>\n\t\t<string>{}</string>",
                xml(k),
                xml(v)
            );
        }
        t.push_str("\t</dict>\n");
    }
    let log = spec.launchd_log_dir.join(format!("{}.log", s.name()));
    key(&mut t, "StandardOutPath", &log.to_string_lossy());
    key(&mut t, "StandardErrorPath", &log.to_string_lossy());
    t.push_str("</dict>\n</plist>\n");
    t
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::service::RunAs;

    fn odd_spec() -> UnitSpec {
        UnitSpec {
            bin: PathBuf::from("/home/a b/100%/$bin/\"cco\""),
            daemon_port: 4000,
            sidecar_port: 4001,
            scope: Scope::User,
            env: vec![
                ("CCO_CONFIG".into(), "/home/a b/cfg %h/daemon.toml".into()),
                ("CCO_DATA_DIR".into(), "/data/<&>".into()),
            ],
            run_as: None,
            launchd_log_dir: PathBuf::from("/Users/a b/Library/Logs/cco"),
        }
    }

    fn repo(rel: &str) -> String {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// The checked-in units are exactly what `cco install` renders for the reference spec.
    #[test]
    fn reference_units_match_the_renderer() {
        let spec = UnitSpec::reference();
        // `CCO_BLESS_UNITS=1 cargo test reference_units` rewrites the checked-in copies.
        if std::env::var_os("CCO_BLESS_UNITS").is_some() {
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            for (dir, files) in [
                ("systemd", systemd_units(&spec)),
                ("launchd", launchd_plists(&spec)),
            ] {
                std::fs::create_dir_all(root.join(dir)).unwrap();
                for f in files {
                    std::fs::write(root.join(dir).join(&f.name), &f.text).unwrap();
                }
            }
        }
        for (dir, files) in [
            ("systemd", systemd_units(&spec)),
            ("launchd", launchd_plists(&spec)),
        ] {
            for f in files {
                let path = format!("{dir}/{}", f.name);
                assert_eq!(repo(&path), f.text, "{path}");
            }
        }
    }

    #[test]
    fn reference_units_snapshot() {
        for f in systemd_units(&UnitSpec::reference())
            .into_iter()
            .chain(launchd_plists(&UnitSpec::reference()))
        {
            insta::assert_snapshot!(format!("reference_{}", f.name), f.text);
        }
    }

    #[test]
    fn odd_paths_are_quoted_and_escaped() {
        let units = systemd_units(&odd_spec());
        let service = &units[1].text;
        insta::assert_snapshot!("odd_cco-daemon.service", service);
        assert!(
            service.contains(r#"ExecStart="/home/a b/100%%/$$bin/\"cco\"" daemon run"#),
            "{service}"
        );
        assert!(service.contains(r#"Environment="CCO_CONFIG=/home/a b/cfg %%h/daemon.toml""#));
        assert!(units[0].text.contains("ListenStream=127.0.0.1:4000\n"));
        assert!(units[2].text.contains("ListenStream=127.0.0.1:4001\n"));
        assert!(units[2].text.contains("FileDescriptorName=sidecar\n"));
    }

    #[test]
    fn exec_words() {
        assert_eq!(exec_arg("/usr/bin/cco"), "/usr/bin/cco");
        assert_eq!(exec_arg("a b"), "\"a b\"");
        assert_eq!(exec_arg("50%"), "\"50%%\"");
        assert_eq!(exec_arg("$HOME"), "\"$$HOME\"");
        assert_eq!(exec_arg("a\\b\n"), "\"a\\\\b\\n\"");
        assert_eq!(exec_arg(""), "\"\"");
    }

    #[test]
    fn plists_parse_and_say_what_launchd_needs() {
        for spec in [UnitSpec::reference(), odd_spec()] {
            for (f, s) in launchd_plists(&spec).iter().zip(Service::ALL) {
                let v: plist::Value = plist::from_bytes(f.text.as_bytes())
                    .unwrap_or_else(|e| panic!("{}: {e}\n{}", f.name, f.text));
                let d = v.as_dictionary().unwrap();
                assert_eq!(d["Label"].as_string(), Some(&*s.label()));
                let argv: Vec<&str> = d["ProgramArguments"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_string().unwrap())
                    .collect();
                assert_eq!(argv, [&*spec.bin.to_string_lossy(), s.name(), "run"]);
                let sock = d["Sockets"].as_dictionary().unwrap()[s.name()]
                    .as_dictionary()
                    .unwrap();
                assert_eq!(sock["SockNodeName"].as_string(), Some("127.0.0.1"));
                assert_eq!(sock["SockFamily"].as_string(), Some("IPv4"));
                assert_eq!(
                    sock["SockServiceName"].as_string(),
                    Some(&*spec.port(s).to_string())
                );
                // Either key would make launchd start the job eagerly.
                assert!(!d.contains_key("RunAtLoad") && !d.contains_key("KeepAlive"));
                let log = d["StandardErrorPath"].as_string().unwrap();
                assert!(Path::new(log).is_absolute(), "{log}");
                for (k, v) in &spec.env {
                    let env = d["EnvironmentVariables"].as_dictionary().unwrap();
                    assert_eq!(env[k].as_string(), Some(&**v));
                }
            }
        }
    }

    #[test]
    fn system_scope_runs_as_the_user_with_their_runtime_dir() {
        let spec = UnitSpec {
            scope: Scope::System,
            run_as: Some(RunAs {
                name: "alice".into(),
                uid: 1000,
                gid: 1000,
                home: "/home/alice".into(),
            }),
            ..UnitSpec::reference()
        };
        let units = systemd_units(&spec);
        insta::assert_snapshot!("system_cco-sidecar.service", units[3].text);
        let plist = &launchd_plists(&spec)[0].text;
        assert!(plist.contains("<key>UserName</key>\n\t<string>alice</string>"));
    }
}
