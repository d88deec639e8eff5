//! The command line's definitions (clap): every subcommand and argument with its help text. `main.rs`
//! parses with them and carries the commands out; `examples/generate.rs` writes the shell
//! completions and man pages from them at packaging time, so the generators (clap_complete,
//! clap_mangen) are not part of the program that ships.

use crate::config;
use crate::queue::DeadReason;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

/// Where the config is read from when neither `--config` nor the environment says.
pub const DEFAULT_CONFIG: &str = "/etc/offline-events-agent/config.toml";

#[derive(Parser)]
#[command(name = "offline-events-agent", version, about = "Turns point-of-sale exports into TikTok offline events")]
pub struct Cli {
    /// Config file.
    #[arg(long, short, global = true, env = "OFFLINE_EVENTS_AGENT_CONFIG", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Watch the source folders, queue every sale and send in the background (the service).
    Run {
        /// Ingest the files present now, send everything, then exit (non-zero if something stays queued).
        #[arg(long)]
        once: bool,
        /// Send live events as test events with this code (TikTok Events Manager, Test Events tab).
        #[arg(long, value_parser = test_event_code)]
        test_event_code: Option<String>,
        /// Do everything but the POST: print the exact request bodies instead (uses a separate queue).
        #[arg(long)]
        dry_run: bool,
        /// With --once: how long to keep retrying transient failures before giving up.
        #[arg(long, default_value = "60", value_parser = config::parse_cli_timeout)]
        timeout_secs: Duration,
    },
    /// Validate the config and print the effective settings (the token is never shown).
    CheckConfig {
        /// Also show what this real export becomes with the config, as `preview` does (repeatable).
        #[arg(long, value_name = "FILE")]
        sample: Vec<PathBuf>,
        /// With --sample: use this source's settings; default as for `import`.
        #[arg(long, requires = "sample")]
        source: Option<String>,
    },
    /// Is the service running and delivering? State, queue, each source, and what needs attention.
    /// Works with an invalid config too (it needs only the queue); exit 0 whenever a report is shown.
    Status {
        /// Everything as JSON (for monitoring scripts).
        #[arg(long)]
        json: bool,
        /// The queue to report on, instead of the config's `queue_path`.
        #[arg(long, value_name = "PATH")]
        queue: Option<PathBuf>,
    },
    /// Ingest these files once (no watching; the files are left where they are).
    Import {
        /// Use this source's settings (format, time zone, currency...); default: the source whose folder holds the file, or the only source.
        #[arg(long)]
        source: Option<String>,
        /// Read files again that were read before (same content), with the current config: after
        /// fixing a config mistake. Orders queued or sent before are not queued again.
        #[arg(long)]
        force: bool,
        /// Export files to read.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Show what the agent would make of files (events with PII hashed, skipped sales, rejected rows)
    /// without queueing or sending anything.
    Preview {
        /// Use this source's settings; default as for `import`.
        #[arg(long)]
        source: Option<String>,
        /// Print each event's JSON as it would be sent.
        #[arg(long)]
        json: bool,
        /// Export files to show.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Send what is queued now and exit; non-zero when something could not be delivered.
    Flush {
        /// How long to keep retrying transient failures.
        #[arg(long, default_value = "60", value_parser = config::parse_cli_timeout)]
        timeout_secs: Duration,
    },
    /// Send one test Purchase with a test_event_code, to check the token and event set.
    SendTest {
        /// The code from TikTok Events Manager's Test Events tab, where the event then shows.
        #[arg(long, value_parser = test_event_code)]
        test_event_code: String,
    },
    /// Follow events as they are captured and sent (PII shown only as hashes).
    Watch {
        /// Start with the most recent history instead of only new activity.
        #[arg(long)]
        history: bool,
        /// Exit after this many seconds.
        #[arg(long)]
        exit_after_secs: Option<u64>,
        /// Follow the test session's queue (`run --test-event-code`) instead of the real one.
        #[arg(long)]
        test: bool,
    },
    /// Events that could not be delivered.
    DeadLetter {
        #[command(subcommand)]
        action: DeadAction,
    },
}

#[derive(Subcommand)]
pub enum DeadAction {
    /// List dead events and rejected rows.
    List {
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Put dead events back in the queue.
    Requeue(Selection),
    /// Delete dead events for good.
    Purge(Selection),
    /// Read the files behind rejected rows and events dead on arrival again with the current
    /// config (`import --force`), found where they were read or in the archive.
    Reread {
        /// Every file with rejected rows or events dead on arrival.
        #[arg(long, conflicts_with = "file", required_unless_present = "file")]
        all: bool,
        /// The file with this path (as `dead-letter list` shows it, or its archived path).
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
pub struct Selection {
    /// Every dead event.
    #[arg(long, conflicts_with_all = ["reason", "ids"])]
    pub all: bool,
    /// Dead events with this reason.
    #[arg(long, conflicts_with = "ids", value_parser = dead_reason_parser())]
    pub reason: Option<DeadReason>,
    /// Dead event ids (from `dead-letter list`).
    pub ids: Vec<i64>,
}

/// `--reason` takes exactly the reasons the queue records (listed in help and in the error).
fn dead_reason_parser() -> impl clap::builder::TypedValueParser<Value = DeadReason> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(DeadReason::ALL.map(DeadReason::as_str))
        .map(|r| DeadReason::parse(&r).expect("one of the possible values"))
}

/// A test event code as given on the command line: trimmed, never empty (an empty code would send
/// the sales as live events from the test session's queue, and the real queue again later).
fn test_event_code(text: &str) -> Result<String, String> {
    let code = text.trim();
    if code.is_empty() || code.chars().any(char::is_control) {
        return Err(
            "a test event code is the code shown on the Test Events tab: not empty, no control characters".into()
        );
    }
    Ok(code.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn a_test_event_code_is_trimmed_and_never_empty() {
        let cases =
            [("TEST12345", Some("TEST12345")), (" TEST1 ", Some("TEST1")), ("", None), ("  ", None), ("T\n1", None)];
        for (given, want) in cases {
            assert_eq!(test_event_code(given).ok().as_deref(), want, "{given:?}");
        }
    }

    /// Every subcommand (hidden ones too) and every argument it takes, with the path to it.
    fn walk(cmd: &clap::Command, path: &str, found: &mut Vec<(String, Option<String>)>) {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            let help = arg.get_help().or(arg.get_long_help()).map(|h| h.to_string());
            found.push((format!("{path} {id}"), help));
        }
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let here = format!("{path} {}", sub.get_name());
            found.push((here.clone(), sub.get_about().or(sub.get_long_about()).map(|h| h.to_string())));
            walk(sub, &here, found);
        }
    }

    #[test]
    fn every_subcommand_and_argument_has_help() {
        let mut cmd = Cli::command();
        cmd.build();
        let mut found = Vec::new();
        walk(&cmd, "offline-events-agent", &mut found);
        assert!(found.len() > 30, "the walk found only {found:?}");
        let missing: Vec<&str> = found
            .iter()
            .filter(|(_, help)| help.as_deref().is_none_or(|h| h.trim().is_empty()))
            .map(|(p, _)| p.as_str())
            .collect();
        assert!(missing.is_empty(), "without help text: {missing:?}");
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
