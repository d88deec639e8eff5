//! The command line. Parses arguments, loads the config (exit 78 when it is invalid), sets up
//! logging and hands over to the library. `anyhow` lives here and nowhere else.

use anyhow::Context as _;
use clap::Parser as _;
use offline_events_agent::cli::{Cli, Command, DeadAction, Selection};
use offline_events_agent::config::{self, Config};
use offline_events_agent::queue::{DeadFilter, Queue};
use offline_events_agent::sender;
use offline_events_agent::tiktok::wire;
use offline_events_agent::{commands, daemon, logging, status, tap};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const EXIT_UNDELIVERED: u8 = 75;
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Absolute once, here: relative source folders resolve against it, and the watcher reports
    // absolute paths, so a relative `--config` would make every file event miss its source.
    let config_path = std::path::absolute(&cli.config).unwrap_or_else(|_| cli.config.clone());
    let mut config = match config::load(&config_path) {
        Ok(c) => c,
        Err(e) => {
            logging::eprint_error(&e);
            if let Command::Status { json, queue } = &cli.command {
                return status_without_config(&config_path, &e, queue.clone(), *json);
            }
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match logging::choose_format(config.log_format, std::env::var(logging::FORMAT_ENV).ok().as_deref()) {
        Ok(format) => logging::init(format),
        Err(e) => {
            logging::eprint_error(&e);
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    let overrides = match &cli.command {
        Command::Run { test_event_code, dry_run, .. } => {
            config::Overrides { test_event_code: test_event_code.clone(), dry_run: *dry_run }
        }
        _ => config::Overrides::default(),
    };
    overrides.apply(&mut config);
    if matches!(cli.command, Command::Watch { test: true, .. }) && !config.test_session() && !config.dry_run {
        config.queue_path = config::test_queue(&config.queue_path);
    }
    match execute(cli.command, config, &config_path, overrides) {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            logging::eprint_error(&format_args!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// `print!`/`println!` that end the process quietly when standard output is gone (`| head -1`)
/// instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = write!(std::io::stdout().lock(), $($arg)*) {
            stdout_failed(e)
        }
    }};
}
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            stdout_failed(e)
        }
    }};
}

/// Standard output cannot be written: a closed pipe is the reader's choice (exit quietly, as
/// `head` expects); anything else is an error.
fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    logging::eprint_error(&format_args!("cannot write to standard output: {e}"));
    std::process::exit(1);
}

/// Whether an error comes from writing to a pipe whose reader has gone.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

fn execute(
    command: Command,
    config: Config,
    path: &std::path::Path,
    overrides: config::Overrides,
) -> anyhow::Result<ExitCode> {
    match command {
        Command::CheckConfig { sample, source } => {
            out!("{}", config::describe(&config));
            if !config.dry_run {
                if let Err(e) = config::load_token(config.token.as_ref()) {
                    logging::eprint_error(&e);
                    return Ok(ExitCode::from(EXIT_CONFIG));
                }
            }
            outln!("ok");
            if sample.is_empty() {
                return Ok(ExitCode::SUCCESS);
            }
            outln!("\nwhat the samples become (nothing is queued or sent):");
            preview(&config, source.as_deref(), false, &sample)
        }
        Command::Run { once: false, .. } => {
            daemon::run(config, path.to_path_buf(), overrides)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { once: true, timeout_secs, .. } => {
            let report = commands::run_once(&config, timeout_secs)?;
            Ok(flush_exit(&report))
        }
        Command::Status { json, queue } => {
            let mut origin = status::Origin::of(&config, path);
            if let Some(queue) = queue {
                origin.queue_path = queue;
            }
            show_status(&status::gather(&origin)?, json)
        }
        Command::Import { source, force, files } => import(&config, source.as_deref(), force, &files),
        Command::Preview { source, json, files } => preview(&config, source.as_deref(), json, &files),
        Command::Flush { timeout_secs } => {
            let report = commands::flush(&config, timeout_secs)?;
            Ok(flush_exit(&report))
        }
        Command::SendTest { test_event_code } => send_test(&config, &test_event_code),
        Command::Watch { history, exit_after_secs, .. } => {
            let queue = Queue::open_existing(&config.queue_path)?;
            let options = tap::Options { history, exit_after: exit_after_secs.map(Duration::from_secs) };
            tap::follow(&queue, &options, &mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::DeadLetter { action } => dead_letter(&config, action),
    }
}

fn show_status(report: &status::Report, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        outln!("{}", serde_json::to_string_pretty(report)?);
    } else {
        out!("{}", status::render(report, &jiff::tz::TimeZone::system()));
    }
    Ok(ExitCode::SUCCESS)
}

/// `status` when the config does not load: the queue from `--queue`, or found leniently in the
/// config text (or the default location). Exit 0 with the report (its state not ok, the first
/// config error in it); exit 78 when there is no queue to report on.
fn status_without_config(
    config_path: &std::path::Path,
    error: &config::LoadError,
    queue: Option<PathBuf>,
    json: bool,
) -> ExitCode {
    let first = match error {
        config::LoadError::Invalid { errors, .. } => errors.first().map(|e| e.to_string()),
        config::LoadError::Read { .. } => None,
    }
    .unwrap_or_else(|| error.to_string());
    let Some(queue_path) = queue.or_else(|| config::queue_path_leniently(config_path)) else {
        logging::eprint_error(&"no queue to report on: the config does not say where it is; try `status --queue PATH`");
        return ExitCode::from(EXIT_CONFIG);
    };
    let origin = status::Origin { config: None, config_path, config_error: Some(first), queue_path };
    match status::gather(&origin).map_err(anyhow::Error::from).and_then(|r| show_status(&r, json)) {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            logging::eprint_error(&format_args!("{e:#}"));
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn flush_exit(report: &sender::FlushReport) -> ExitCode {
    match &report.undelivered {
        None => {
            eprintln!("delivered {} events, {} dead-lettered; nothing left queued", report.sent, report.dead);
            ExitCode::SUCCESS
        }
        Some(reason) => {
            eprintln!(
                "delivered {} events, {} dead-lettered; events remain queued: {reason}",
                report.sent, report.dead
            );
            ExitCode::from(EXIT_UNDELIVERED)
        }
    }
}

/// The source whose settings apply to `path`: the one named, the one whose folder holds it, or the
/// only one.
fn source_for<'c>(
    config: &'c Config,
    name: Option<&str>,
    path: &std::path::Path,
) -> anyhow::Result<&'c config::SourceConfig> {
    match name {
        Some(name) => config
            .sources
            .iter()
            .find(|s| s.name == name)
            .with_context(|| format!("no source named `{name}` in the config")),
        None => match offline_events_agent::source::owner(&config.sources, path) {
            Some(i) => Ok(&config.sources[i]),
            None if config.sources.len() == 1 => Ok(&config.sources[0]),
            None => anyhow::bail!(
                "{}: not in a source folder; say which source's settings to use with --source",
                path.display()
            ),
        },
    }
}

fn import(config: &Config, source: Option<&str>, force: bool, files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let mut chosen = Vec::new();
    for file in files {
        let path = std::path::absolute(file).with_context(|| format!("{}", file.display()))?;
        chosen.push((source_for(config, source, &path)?, path));
    }
    let failed = commands::import(config, chosen, force, &mut print_imported)?;
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Say what `import` did with a file when the log does not (it logs every file it reads).
fn print_imported(path: &std::path::Path, imported: &commands::Imported) {
    if let commands::Imported::Known { known_as } = imported {
        let shown = offline_events_agent::source::shown(path);
        eprintln!(
            "{shown}: same content as {known_as} (already ingested), nothing queued; to read it again with the current config: import --force {shown}"
        );
    }
}

/// `dead-letter reread`: find the files behind rejected rows and events dead on arrival (where
/// they were read, else in the archive) and import them again with `--force`. A file found nowhere is an error naming it.
fn reread(config: &Config, file: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    let queue = Queue::open_existing(&config.queue_path)?;
    let wanted = file.map(|f| std::path::absolute(f).unwrap_or_else(|_| f.to_path_buf()));
    let files = queue.rejected_files(wanted.as_ref().map(|p| p.display().to_string()).as_deref())?;
    drop(queue);
    let mut chosen = Vec::new();
    let mut gone = Vec::new();
    for f in &files {
        let Some(src) = config.sources.iter().find(|s| s.name == f.source) else {
            gone.push(format!("{}: its source `{}` is no longer in the config", f.path, f.source));
            continue;
        };
        match commands::locate(src, f) {
            Some(path) => chosen.push((src, path)),
            None => gone.push(format!(
                "{}: gone (not there{} any more, or changed)",
                f.path,
                if f.archived.is_empty() { String::new() } else { format!(" nor at {}", f.archived.join(", ")) }
            )),
        }
    }
    if files.is_empty() {
        match &wanted {
            // A file the queue knows no rejects of: read it again all the same.
            Some(path) if path.exists() => chosen.push((source_for(config, None, path)?, path.clone())),
            Some(path) => anyhow::bail!(
                "{}: no rejected rows or events dead on arrival from this file, and it does not exist",
                path.display()
            ),
            None => {
                outln!("no rejected rows or events dead on arrival from files that were read: nothing to read again");
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
    for path in &chosen {
        outln!("reading again: {}", offline_events_agent::source::shown(&path.1));
    }
    let failed = !chosen.is_empty() && commands::import(config, chosen, true, &mut print_imported)?;
    for g in &gone {
        logging::eprint_error(&format_args!("{g}"));
    }
    Ok(if failed || !gone.is_empty() { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn preview(config: &Config, source: Option<&str>, json: bool, files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    use offline_events_agent::event::screen::{Coverage, MatchKey};
    use offline_events_agent::intake::ingest::Found;
    let mut unreadable = false;
    for file in files {
        let path = std::path::absolute(file).with_context(|| format!("{}", file.display()))?;
        let src = source_for(config, source, &path)?;
        let shown = path.display().to_string();
        if let Some(why) = src.format.not_read(&path) {
            logging::eprint_error(&format_args!("{shown}: {why}"));
            unreadable = true;
            continue;
        }
        let (mut events, mut skipped, mut rejected) = (0, 0, 0);
        let mut coverage = Coverage::default();
        let read = commands::preview(config, src, &path, &mut |found| {
            match found {
                Found::Event { event, line, dead_reason, warnings } => {
                    events += 1;
                    coverage.add(MatchKey::of(&event.user));
                    let user = [
                        ("email", event.user.email.len()),
                        ("phone", event.user.phone.len()),
                        ("external_id", event.user.external_id.len()),
                    ]
                    .iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(k, n)| format!("{k}×{n}"))
                    .collect::<Vec<_>>();
                    outln!(
                        "{shown}:{line}: {} {} at {} value {} {}, {} lines / {} units, customer: {}{}",
                        event.event,
                        event.event_id.as_str(),
                        status::timestamp(event.event_time),
                        event.value,
                        event.currency.code(),
                        event.contents.len(),
                        event.num_items(),
                        if user.is_empty() { "none".to_string() } else { user.join(", ") },
                        dead_reason.map(|r| format!(" [NOT SENT: {r}]")).unwrap_or_default(),
                    );
                    for w in warnings {
                        outln!("{shown}:{}:   warning: field `{}`: {}", w.line, w.field, w.reason);
                    }
                    if json {
                        outln!("  {}", wire::event_json(event));
                    }
                }
                Found::Skip(skip) => {
                    skipped += 1;
                    outln!("{shown}:{}: skipped order `{}`: {}", skip.line, skip.order_id, skip.reason);
                }
                Found::Reject { line, field, reason } => {
                    rejected += 1;
                    outln!(
                        "{shown}:{line}: rejected: {}{reason}",
                        field.map(|f| format!("field `{f}`: ")).unwrap_or_default()
                    );
                }
            }
            std::ops::ControlFlow::Continue(())
        })?;
        match read {
            Ok(_) => {
                outln!(
                    "{shown}: {events} events, {skipped} skipped, {rejected} rejected (format {})",
                    src.format.name()
                );
                outln!("{shown}: {}", coverage.summary());
                if let Some(hint) = coverage.hint() {
                    outln!("{shown}: {hint}");
                }
            }
            Err(e) => {
                unreadable = true;
                outln!("{shown}: cannot be read as {}: {e}", src.format.name());
            }
        }
    }
    Ok(if unreadable { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn send_test(config: &Config, code: &str) -> anyhow::Result<ExitCode> {
    let test = match sender::TestSend::prepare(config, code, offline_events_agent::now())? {
        sender::TestSend::DryRun { body } => {
            outln!("{body}");
            return Ok(ExitCode::SUCCESS);
        }
        sender::TestSend::Ready(test) => test,
    };
    outln!("sending test Purchase {} to {} with test_event_code {code}", test.event_id, test.endpoint());
    let report = test.send()?;
    if let Err(e) = commands::record_send_test(config, &report.log_entry(offline_events_agent::now(), code)) {
        logging::eprint_error(&format_args!("the request is not in the send log: {e}"));
    }
    outln!("http {}: {}", report.status, report.body.trim());
    outln!("{}", report.explain());
    Ok(if report.delivered() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_UNDELIVERED) })
}

fn dead_letter(config: &Config, action: DeadAction) -> anyhow::Result<ExitCode> {
    let queue = Queue::open_existing(&config.queue_path)?;
    match action {
        DeadAction::List { json } => {
            let dead = queue.dead_events(10_000)?;
            let rejects = queue.recent_rejects(10_000)?;
            if json {
                outln!("{}", serde_json::json!({ "dead_events": dead, "rejected_rows": rejects }));
                return Ok(ExitCode::SUCCESS);
            }
            outln!("dead events: {}", dead.len());
            for d in &dead {
                outln!(
                    "  #{} {} order {} at {} [{}] after {} attempts: {}",
                    d.id,
                    d.event_id,
                    d.order_id,
                    status::timestamp(d.event_time),
                    d.reason,
                    d.attempts,
                    status::printable(d.message.as_deref().unwrap_or(""))
                );
            }
            outln!("rejected rows: {}", rejects.len());
            for r in &rejects {
                outln!("  {}", status::reject_line(r));
            }
        }
        DeadAction::Requeue(sel) => outln!("requeued {} events", queue.requeue(&dead_filter(&sel, &queue)?)?),
        DeadAction::Purge(sel) => outln!("purged {} events", queue.purge(&dead_filter(&sel, &queue)?)?),
        DeadAction::Reread { file, .. } => {
            drop(queue);
            return reread(config, file.as_deref());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What a `dead-letter requeue|purge` acts on; ids that name no dead event are an error, not "0
/// requeued".
fn dead_filter(selection: &Selection, queue: &Queue) -> anyhow::Result<DeadFilter> {
    match (selection.all, &selection.reason, selection.ids.is_empty()) {
        (true, _, _) => Ok(DeadFilter::All),
        (_, Some(r), _) => Ok(DeadFilter::Reason(*r)),
        (_, None, false) => {
            let missing = queue.not_dead(&selection.ids)?;
            if !missing.is_empty() {
                let list = missing.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
                anyhow::bail!("no dead event with id {list} (see `dead-letter list`); nothing changed");
            }
            Ok(DeadFilter::Ids(selection.ids.clone()))
        }
        _ => anyhow::bail!("say which: --all, --reason REASON, or ids"),
    }
}
