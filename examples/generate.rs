//! Shell completions and man pages, generated from the command line's definitions
//! (`offline_events_agent::cli`), for packaging. Run at packaging time, not shipped:
//!
//! ```sh
//! cargo run --locked --example generate -- completions DIR   # bash, zsh and fish
//! cargo run --locked --example generate -- man DIR           # section 1, one page a subcommand
//! ```
//!
//! It lives here rather than in the program so that the generators (clap_complete, clap_mangen)
//! are dev-dependencies: the release binary that every till installs does not carry them.

use clap::CommandFactory as _;
use offline_events_agent::cli::Cli;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: generate completions|man DIR";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [what, dir] = args.as_slice() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    match generate(what, &PathBuf::from(dir)) {
        Ok(written) => {
            for path in written {
                println!("{}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Write the completions or the man pages into `dir` (created if missing); the paths written.
fn generate(what: &str, dir: &std::path::Path) -> Result<Vec<PathBuf>, String> {
    let cmd = Cli::command();
    let name = cmd.get_name().to_string();
    let in_dir = |e: std::io::Error| format!("{what} into {}: {e}", dir.display());
    match what {
        "completions" => {
            std::fs::create_dir_all(dir).map_err(in_dir)?;
            [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish]
                .into_iter()
                .map(|shell| clap_complete::generate_to(shell, &mut cmd.clone(), &name, dir).map_err(in_dir))
                .collect()
        }
        "man" => {
            std::fs::create_dir_all(dir).map_err(in_dir)?;
            clap_mangen::generate_to(cmd, dir).map_err(in_dir)?;
            Ok(vec![dir.to_path_buf()])
        }
        other => Err(format!("nothing to generate called {other:?}; {USAGE}")),
    }
}
