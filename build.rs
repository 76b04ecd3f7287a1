//! Embeds the built-in agent roster: every `agents/*.md` in the repository, sorted by file
//! name, so the binary never depends on the build machine's home directory.

use std::fmt::Write;
use std::path::Path;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("agents");
    println!("cargo::rerun-if-changed=agents");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("agents/ directory")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .collect();
    names.sort();
    let mut out = String::from("pub const BUILTIN_AGENTS: &[(&str, &str)] = &[\n");
    for n in &names {
        let path = dir.join(n);
        writeln!(
            out,
            "    ({n:?}, include_str!({:?})),",
            path.display().to_string()
        )
        .unwrap();
    }
    out.push_str("];\n");
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap()).join("builtin_agents.rs");
    std::fs::write(dest, out).unwrap();
}
