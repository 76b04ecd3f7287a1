//! `cco health` and `cco status`: ask both services, print a table (or `--json`), and exit
//! non-zero when one of them is not healthy.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Value, json};

use crate::client::{self, ClientError, Request};
use crate::paths::Installation;

/// Long enough for a socket-activated cold start, short enough for a script.
const TIMEOUT: Duration = Duration::from_secs(3);

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

/// One service's answer to a GET, or why there was none.
pub struct Probe {
    pub name: &'static str,
    pub port: u16,
    pub result: Result<Value, String>,
    /// Another user listens on the port: its answer, if any, is not cco's.
    pub foreign_uid: Option<u32>,
}

impl Probe {
    pub fn healthy(&self) -> bool {
        self.result
            .as_ref()
            .is_ok_and(|v| v["status"] == "healthy" || v.get("status").is_none())
    }
    fn as_json(&self) -> Value {
        match &self.result {
            Ok(v) => v.clone(),
            Err(e) => match self.foreign_uid {
                Some(uid) => json!({"status": "foreign_listener", "owner_uid": uid, "error": e}),
                None => json!({"status": "unreachable", "error": e}),
            },
        }
    }
}

pub fn probe(name: &'static str, port: u16, path: &str) -> Probe {
    // Whatever another user's listener answers, it is not this cco.
    if let Some(uid) = client::foreign_listener(port) {
        return Probe {
            name,
            port,
            result: Err(format!("held by another user (uid {uid}), not by your cco")),
            foreign_uid: Some(uid),
        };
    }
    let result = match client::send(client::local(port), &Request::get(path), TIMEOUT) {
        Ok(r) if r.status == 200 => r.json::<Value>().map_err(|e| e.to_string()),
        Ok(r) => Err(format!(
            "HTTP {}: {}",
            r.status,
            String::from_utf8_lossy(&r.body).trim()
        )),
        Err(ClientError::Refused) => Err("connection refused".into()),
        Err(e) => Err(e.to_string()),
    };
    Probe {
        name,
        port,
        result,
        foreign_uid: None,
    }
}

pub fn both(inst: &Installation, path: &str) -> [Probe; 2] {
    [
        probe("daemon", inst.config.daemon.port, path),
        probe("sidecar", inst.config.sidecar.port, path),
    ]
}

fn fix_hint(probes: &[Probe]) -> String {
    if let Some(p) = probes.iter().find(|p| p.foreign_uid.is_some()) {
        format!(
            "fix: see who holds the port with `ss -ltnp 'sport = :{}'`; free it, or change the port in your config if it is legitimately theirs",
            p.port
        )
    } else if probes.iter().all(|p| p.result.is_err()) {
        "fix: run `cco install` once (or `cco daemon start` where there is no service manager); `cco doctor` checks the rest".into()
    } else {
        "fix: `cco logs <service>` shows why; `cco daemon restart` / `cco sidecar restart` restarts it".into()
    }
}

pub fn run_health(config: Option<&Path>, args: HealthArgs) -> anyhow::Result<ExitCode> {
    let inst = Installation::from_process(config)?;
    let probes = both(&inst, "/health");
    let ok = probes.iter().all(Probe::healthy);
    if args.json {
        let out: serde_json::Map<String, Value> = probes
            .iter()
            .map(|p| (p.name.to_string(), p.as_json()))
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{:<9} {:<16} {:<10} {:>8}  DETAIL",
            "SERVICE", "ADDRESS", "STATUS", "UPTIME"
        );
        for p in &probes {
            let addr = format!("127.0.0.1:{}", p.port);
            match &p.result {
                Ok(v) => {
                    let detail = match p.name {
                        "daemon" => format!(
                            "v{} settings generation {}",
                            v["version"].as_str().unwrap_or("?"),
                            v["settings_generation"]
                        ),
                        _ => format!(
                            "v{} storage {} events {} agents {}",
                            v["version"].as_str().unwrap_or("?"),
                            v["checks"]["storage"].as_str().unwrap_or("?"),
                            v["checks"]["event_bus"].as_str().unwrap_or("?"),
                            v["checks"]["active_agents"]
                        ),
                    };
                    println!(
                        "{:<9} {:<16} {:<10} {:>8}  {detail}",
                        p.name,
                        addr,
                        v["status"].as_str().unwrap_or("?"),
                        format!("{}s", v["uptime_seconds"])
                    );
                }
                Err(e) => println!("{:<9} {:<16} {:<10} {:>8}  {e}", p.name, addr, "DOWN", "-"),
            }
        }
        if !ok {
            eprintln!("{}", fix_hint(&probes));
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub fn run_status(config: Option<&Path>, args: StatusArgs) -> anyhow::Result<ExitCode> {
    let inst = Installation::from_process(config)?;
    let probes = both(&inst, "/status");
    let ok = probes.iter().all(|p| p.result.is_ok());
    if args.json {
        let out: serde_json::Map<String, Value> = probes
            .iter()
            .map(|p| (p.name.to_string(), p.as_json()))
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    for p in &probes {
        println!("{} (127.0.0.1:{})", p.name, p.port);
        match &p.result {
            Ok(v) => print_tree(v, 1),
            Err(e) => println!("  DOWN: {e}"),
        }
    }
    if !ok {
        eprintln!("{}", fix_hint(&probes));
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Prints nested JSON objects as an indented `key: value` list.
fn print_tree(v: &Value, depth: usize) {
    let pad = "  ".repeat(depth);
    let Some(map) = v.as_object() else {
        println!("{pad}{v}");
        return;
    };
    for (k, v) in map {
        match v {
            Value::Object(o) if !o.is_empty() => {
                println!("{pad}{k}:");
                print_tree(v, depth + 1);
            }
            Value::String(s) => println!("{pad}{k}: {s}"),
            other => println!("{pad}{k}: {other}"),
        }
    }
}
