//! The `cco` binary: parse, run, map the error to an exit code. Everything else is in the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    match cco::cli::run(std::env::args_os().collect()) {
        Ok(code) => code,
        Err(e) => {
            // A closed stdout (`cco status | head -1`) is not a failure.
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            // Errors quote paths, the environment and the services' answers: print them inert.
            eprintln!("cco: error: {}", cco::api::inert::block(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}
