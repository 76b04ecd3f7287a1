//! `cco health` and `cco status`: ask both services through their typed clients, print a
//! table (or `--json`), and exit non-zero when one of them is not healthy.

use std::path::Path;
use std::process::ExitCode;

use serde::Serialize;
use serde_json::{Value, json};

use crate::api::inert;
use crate::api::sidecar::{SidecarHealth, SidecarStatus};
use crate::api::{DaemonHealth, DaemonStatus};
use crate::client::{DaemonClient, ServiceError, SidecarClient};
use crate::paths::Installation;

#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    /// Print the raw JSON of both services.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Print the raw JSON of both services.
    #[arg(long)]
    pub json: bool,
}

/// One service's answer, or why there was none.
pub struct Probe<T> {
    pub name: &'static str,
    pub port: u16,
    pub result: Result<T, ServiceError>,
}

impl<T: Serialize> Probe<T> {
    /// Another user listens on the port: its answer, if any, is not cco's.
    pub fn foreign_uid(&self) -> Option<u32> {
        match self.result {
            Err(ServiceError::Foreign { uid, .. }) => Some(uid),
            _ => None,
        }
    }

    /// Why there is no answer, in words that are safe to print.
    pub fn error(&self) -> Option<String> {
        self.result
            .as_ref()
            .err()
            .map(|e| inert::line(&e.to_string()).into_owned())
    }

    fn as_json(&self) -> Value {
        match (&self.result, self.foreign_uid()) {
            (Ok(v), _) => serde_json::to_value(v).unwrap_or(Value::Null),
            (Err(e), Some(uid)) => {
                json!({"status": "foreign_listener", "owner_uid": uid, "error": e.to_string()})
            }
            (Err(e), None) => json!({"status": "unreachable", "error": e.to_string()}),
        }
    }
}

/// Both services' `/health`.
pub struct Healths {
    pub daemon: Probe<DaemonHealth>,
    pub sidecar: Probe<SidecarHealth>,
}

impl Healths {
    pub fn ask(inst: &Installation) -> Healths {
        let (d, s) = (inst.config.daemon.port, inst.config.sidecar.port);
        Healths {
            daemon: Probe {
                name: "daemon",
                port: d,
                result: DaemonClient::new(d).health(),
            },
            sidecar: Probe {
                name: "sidecar",
                port: s,
                result: SidecarClient::new(s).health(),
            },
        }
    }

    pub fn daemon_healthy(&self) -> bool {
        self.daemon
            .result
            .as_ref()
            .is_ok_and(|h| h.status == "healthy")
    }

    pub fn sidecar_healthy(&self) -> bool {
        self.sidecar
            .result
            .as_ref()
            .is_ok_and(|h| h.status == "healthy")
    }
}

/// The fix for what the probes found (`ports` and `errors` of the probes, in order).
fn fix_hint(foreign_port: Option<u16>, all_down: bool) -> String {
    if let Some(port) = foreign_port {
        format!(
            "fix: see who holds the port with `ss -ltnp 'sport = :{port}'`; free it, or change the port in your config if it is legitimately theirs"
        )
    } else if all_down {
        "fix: run `cco install` once (or `cco daemon start` where there is no service manager); `cco doctor` checks the rest".into()
    } else {
        "fix: `cco logs <service>` shows why; `cco daemon restart` / `cco sidecar restart` restarts it".into()
    }
}

fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The two probes as one JSON object, inert.
fn both_json(daemon: Value, sidecar: Value) -> anyhow::Result<String> {
    Ok(inert::json_pretty(
        &json!({"daemon": daemon, "sidecar": sidecar}),
    )?)
}

/// One row of the health table.
fn row(name: &str, port: u16, status: &str, uptime: &str, detail: &str) -> String {
    format!(
        "{:<9} {:<16} {:<10} {:>8}  {}",
        name,
        format!("127.0.0.1:{port}"),
        inert::line(status),
        uptime,
        inert::line(detail)
    )
}

pub fn run_health(config: Option<&Path>, args: HealthArgs) -> anyhow::Result<ExitCode> {
    let inst = Installation::from_process(config)?;
    let h = Healths::ask(&inst);
    let ok = h.daemon_healthy() && h.sidecar_healthy();
    if args.json {
        println!("{}", both_json(h.daemon.as_json(), h.sidecar.as_json())?);
        return Ok(exit(ok));
    }
    println!(
        "{:<9} {:<16} {:<10} {:>8}  DETAIL",
        "SERVICE", "ADDRESS", "STATUS", "UPTIME"
    );
    let (d, s) = (&h.daemon, &h.sidecar);
    println!(
        "{}",
        match &d.result {
            Ok(v) => row(
                d.name,
                d.port,
                &v.status,
                &format!("{}s", v.uptime_seconds),
                &format!(
                    "v{} settings generation {}",
                    v.version, v.settings_generation
                ),
            ),
            Err(e) => row(d.name, d.port, "DOWN", "-", &e.to_string()),
        }
    );
    println!(
        "{}",
        match &s.result {
            Ok(v) => row(
                s.name,
                s.port,
                &v.status,
                &format!("{}s", v.uptime_seconds),
                &format!(
                    "v{} storage {} events {} agents {}",
                    v.version, v.checks.storage, v.checks.event_bus, v.checks.active_agents
                ),
            ),
            Err(e) => row(s.name, s.port, "DOWN", "-", &e.to_string()),
        }
    );
    if !ok {
        let foreign = [(d.foreign_uid(), d.port), (s.foreign_uid(), s.port)]
            .into_iter()
            .find_map(|(uid, port)| uid.map(|_| port));
        eprintln!(
            "{}",
            fix_hint(foreign, d.result.is_err() && s.result.is_err())
        );
    }
    Ok(exit(ok))
}

pub fn run_status(config: Option<&Path>, args: StatusArgs) -> anyhow::Result<ExitCode> {
    let inst = Installation::from_process(config)?;
    let (dp, sp) = (inst.config.daemon.port, inst.config.sidecar.port);
    let daemon: Probe<DaemonStatus> = Probe {
        name: "daemon",
        port: dp,
        result: DaemonClient::new(dp).status(),
    };
    let sidecar: Probe<SidecarStatus> = Probe {
        name: "sidecar",
        port: sp,
        result: SidecarClient::new(sp).status(),
    };
    let ok = daemon.result.is_ok() && sidecar.result.is_ok();
    if args.json {
        println!("{}", both_json(daemon.as_json(), sidecar.as_json())?);
        return Ok(exit(ok));
    }
    for (name, port, value, error) in [
        (daemon.name, dp, daemon.as_json(), daemon.error()),
        (sidecar.name, sp, sidecar.as_json(), sidecar.error()),
    ] {
        println!("{name} (127.0.0.1:{port})");
        match error {
            None => print_tree(&value, 1),
            Some(e) => println!("  DOWN: {e}"),
        }
    }
    if !ok {
        let foreign = [(daemon.foreign_uid(), dp), (sidecar.foreign_uid(), sp)]
            .into_iter()
            .find_map(|(uid, port)| uid.map(|_| port));
        eprintln!(
            "{}",
            fix_hint(foreign, daemon.result.is_err() && sidecar.result.is_err())
        );
    }
    Ok(exit(ok))
}

/// Prints nested JSON objects as an indented `key: value` list, every value inert.
fn print_tree(v: &Value, depth: usize) {
    let pad = "  ".repeat(depth);
    let Some(map) = v.as_object() else {
        println!("{pad}{}", inert::line(&v.to_string()));
        return;
    };
    for (k, v) in map {
        let k = inert::line(k);
        match v {
            Value::Object(o) if !o.is_empty() => {
                println!("{pad}{k}:");
                print_tree(v, depth + 1);
            }
            Value::String(s) => println!("{pad}{k}: {}", inert::line(s)),
            other => println!("{pad}{k}: {}", inert::line(&other.to_string())),
        }
    }
}
