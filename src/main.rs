//! The command line. Parses arguments, loads the config (exit 78 when it is invalid), sets up
//! logging and hands over to the library. `anyhow` lives here and nowhere else.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use offline_events_agent::config::{self, Config};
use offline_events_agent::event::{self, RawItem, RawOrder, SourceDefaults};
use offline_events_agent::queue::{DeadFilter, Queue};
use offline_events_agent::sender::{self, Sender, Settings};
use offline_events_agent::tiktok::{classify, client, wire};
use offline_events_agent::{daemon, status, tap};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const EXIT_UNDELIVERED: u8 = 75;
const EXIT_CONFIG: u8 = 78;
const DEFAULT_CONFIG: &str = "/etc/offline-events-agent/config.toml";

#[derive(Parser)]
#[command(name = "offline-events-agent", version, about = "Turns point-of-sale exports into TikTok offline events")]
struct Cli {
    /// Config file.
    #[arg(long, short, global = true, env = "OFFLINE_EVENTS_AGENT_CONFIG", default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Watch the source folders, queue every sale and send in the background (the service).
    Run {
        /// Ingest the files present now, send everything, then exit (non-zero if something stays queued).
        #[arg(long)]
        once: bool,
        /// Send live events as test events with this code (TikTok Events Manager, Test Events tab).
        #[arg(long)]
        test_event_code: Option<String>,
        /// Do everything but the POST: print the exact request bodies instead (uses a separate queue).
        #[arg(long)]
        dry_run: bool,
        /// With --once: how long to keep retrying transient failures before giving up.
        #[arg(long, default_value_t = 60)]
        timeout_secs: u64,
    },
    /// Validate the config and print the effective settings (the token is never shown).
    CheckConfig,
    /// Queue depth, last delivery, errors, files.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Ingest these files once (no watching; the files are left where they are).
    Import {
        /// Use this source's settings (format, time zone, currency...); default: the source whose folder holds the file, or the only source.
        #[arg(long)]
        source: Option<String>,
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
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Send what is queued now and exit; non-zero when something could not be delivered.
    Flush {
        /// How long to keep retrying transient failures.
        #[arg(long, default_value_t = 60)]
        timeout_secs: u64,
    },
    /// Send one test Purchase with a test_event_code, to check the token and event set.
    SendTest {
        #[arg(long)]
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
    },
    /// Events that could not be delivered.
    DeadLetter {
        #[command(subcommand)]
        action: DeadAction,
    },
}

#[derive(Subcommand)]
enum DeadAction {
    /// List dead events and rejected rows.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Put dead events back in the queue.
    Requeue(Selection),
    /// Delete dead events for good.
    Purge(Selection),
}

#[derive(clap::Args)]
struct Selection {
    /// Every dead event.
    #[arg(long, conflicts_with_all = ["reason", "ids"])]
    all: bool,
    /// Dead events with this reason (expired, future, invalid, too_large, pii_not_hashed).
    #[arg(long, conflicts_with = "ids")]
    reason: Option<String>,
    /// Dead event ids (from `dead-letter list`).
    ids: Vec<i64>,
}

impl Selection {
    fn filter(&self) -> anyhow::Result<DeadFilter> {
        match (self.all, &self.reason, self.ids.is_empty()) {
            (true, _, _) => Ok(DeadFilter::All),
            (_, Some(r), _) => Ok(DeadFilter::Reason(r.clone())),
            (_, None, false) => Ok(DeadFilter::Ids(self.ids.clone())),
            _ => anyhow::bail!("say which: --all, --reason REASON, or ids"),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let mut config = match config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let overrides = match &cli.command {
        Command::Run { test_event_code, dry_run, .. } => {
            config::Overrides { test_event_code: test_event_code.clone(), dry_run: *dry_run }
        }
        _ => config::Overrides::default(),
    };
    overrides.apply(&mut config);
    match execute(cli.command, config, &cli.config, overrides) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    offline_events_agent::logging::init();
}

fn execute(
    command: Command,
    config: Config,
    path: &std::path::Path,
    overrides: config::Overrides,
) -> anyhow::Result<ExitCode> {
    match command {
        Command::CheckConfig => {
            print!("{}", config::describe(&config));
            if !config.dry_run {
                if let Err(e) = config::load_token(config.token.as_ref()) {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::from(EXIT_CONFIG));
                }
            }
            println!("ok");
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { once: false, .. } => {
            daemon::run(config, path.to_path_buf(), overrides)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { once: true, timeout_secs, .. } => {
            let report = daemon::run_once(&config, Duration::from_secs(timeout_secs))?;
            Ok(flush_exit(&report))
        }
        Command::Status { json } => {
            let report = status::gather(&config)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", status::render(&report));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Import { source, files } => import(&config, source.as_deref(), &files),
        Command::Preview { source, json, files } => preview(&config, source.as_deref(), json, &files),
        Command::Flush { timeout_secs } => {
            let queue = Queue::open(&config.queue_path)?;
            let mut sender = Sender::new(queue, &config, Settings::from_config(&config))?;
            let report = sender::flush(&mut sender, Duration::from_secs(timeout_secs))?;
            Ok(flush_exit(&report))
        }
        Command::SendTest { test_event_code } => send_test(&config, &test_event_code),
        Command::Watch { history, exit_after_secs } => {
            let queue = Queue::open_existing(&config.queue_path)?;
            let options = tap::Options { history, exit_after: exit_after_secs.map(Duration::from_secs) };
            tap::follow(&queue, &options, &mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::DeadLetter { action } => dead_letter(&config, action),
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
        None => match daemon::source_of(config, path) {
            Some(s) => Ok(s),
            None if config.sources.len() == 1 => Ok(&config.sources[0]),
            None => anyhow::bail!(
                "{}: not in a source folder; say which source's settings to use with --source",
                path.display()
            ),
        },
    }
}

fn import(config: &Config, source: Option<&str>, files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let mut queue = Queue::open(&config.queue_path)?;
    let mut failed = false;
    for file in files {
        let path = std::path::absolute(file).with_context(|| format!("{}", file.display()))?;
        let src = source_for(config, source, &path)?;
        let result = daemon::process_file(&mut queue, config, src, &path, false);
        failed |= matches!(result, daemon::FileResult::Retry | daemon::FileResult::QueueFull);
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn preview(config: &Config, source: Option<&str>, json: bool, files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    use offline_events_agent::ingest::{self, Found};
    let mut unreadable = false;
    for file in files {
        let path = std::path::absolute(file).with_context(|| format!("{}", file.display()))?;
        let src = source_for(config, source, &path)?;
        let (_, utf8) = ingest::scan_content(&path).with_context(|| format!("{}", path.display()))?;
        let shown = path.display().to_string();
        let (mut events, mut skipped, mut rejected) = (0, 0, 0);
        let ages = daemon::age_policy(config, offline_events_agent::now());
        let read = ingest::read_file(src, &path, utf8, ages, &mut |found| {
            match found {
                Found::Event { event, line, dead_reason, warnings } => {
                    events += 1;
                    let user = [
                        ("email", event.user.email.len()),
                        ("phone", event.user.phone.len()),
                        ("external_id", event.user.external_id.len()),
                    ]
                    .iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(k, n)| format!("{k}×{n}"))
                    .collect::<Vec<_>>();
                    println!(
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
                        println!("{shown}:{}:   warning: field `{}`: {}", w.line, w.field, w.reason);
                    }
                    if json {
                        println!("  {}", wire::event_json(event));
                    }
                }
                Found::Skip(skip) => {
                    skipped += 1;
                    println!("{shown}:{}: skipped order `{}`: {}", skip.line, skip.order_id, skip.reason);
                }
                Found::Reject { line, field, reason } => {
                    rejected += 1;
                    println!(
                        "{shown}:{line}: rejected: {}{reason}",
                        field.map(|f| format!("field `{f}`: ")).unwrap_or_default()
                    );
                }
            }
            std::ops::ControlFlow::Continue(())
        });
        match read {
            Ok(_) => println!(
                "{shown}: {events} events, {skipped} skipped, {rejected} rejected (format {})",
                src.format.name()
            ),
            Err(e) => {
                unreadable = true;
                println!("{shown}: cannot be read as {}: {e}", src.format.name());
            }
        }
    }
    Ok(if unreadable { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn send_test(config: &Config, code: &str) -> anyhow::Result<ExitCode> {
    let now = offline_events_agent::now();
    let first = config.sources.first();
    let defaults = SourceDefaults {
        time_zone: jiff::tz::TimeZone::UTC,
        time_formats: vec![],
        currency: first.and_then(|s| s.defaults.currency).or_else(|| event::money::Currency::parse("USD")),
        shop_id: Some(first.and_then(|s| s.defaults.shop_id.clone()).unwrap_or_else(|| "send-test".into())),
        till_id: None,
        decimal_separator: '.',
        phone_region: None,
        event_names: event::name::NameTable::default(),
    };
    let raw = RawOrder {
        line: 1,
        order_id: format!("send-test-{now}"),
        event_time: now.to_string(),
        items: vec![RawItem {
            line: 1,
            content_id: Some("send-test".into()),
            content_name: Some("offline-events-agent test purchase".into()),
            price: Some("1.00".into()),
            quantity: Some("1".into()),
            ..RawItem::default()
        }],
        ..RawOrder::default()
    };
    let (ev, _) = event::build(&raw, &defaults).context("building the test event")?;
    let body = wire::batch_body(&config.event_source_id, Some(code), [wire::event_json(&ev).as_str()]);
    if config.dry_run {
        println!("{body}");
        return Ok(ExitCode::SUCCESS);
    }
    let token = config::load_token(config.token.as_ref())?;
    let http = client::Client::new(&sender::client_config(config))?;
    println!("sending test Purchase {} to {} with test_event_code {code}", ev.event_id.as_str(), http.url());
    let reply = http.post(token.expose(), &body)?;
    let outcome = classify::classify(reply.status, reply.retry_after.as_deref(), &reply.body);
    println!("http {}: {}", reply.status, reply.body.trim());
    match outcome {
        classify::Outcome::Delivered { .. } => {
            println!("ok: open Events Manager > your offline event set > Test Events to see it");
            Ok(ExitCode::SUCCESS)
        }
        other => {
            println!("not delivered: {other:?}");
            Ok(ExitCode::from(EXIT_UNDELIVERED))
        }
    }
}

fn dead_letter(config: &Config, action: DeadAction) -> anyhow::Result<ExitCode> {
    let queue = Queue::open_existing(&config.queue_path)?;
    match action {
        DeadAction::List { json } => {
            let dead = queue.dead_events(10_000)?;
            let rejects = queue.recent_rejects(10_000)?;
            if json {
                println!("{}", serde_json::json!({ "dead_events": dead, "rejected_rows": rejects }));
                return Ok(ExitCode::SUCCESS);
            }
            println!("dead events: {}", dead.len());
            for d in &dead {
                println!(
                    "  #{} {} order {} at {} [{}] after {} attempts: {}",
                    d.id,
                    d.event_id,
                    d.order_id,
                    status::timestamp(d.event_time),
                    d.reason,
                    d.attempts,
                    d.message.as_deref().unwrap_or("")
                );
            }
            println!("rejected rows: {}", rejects.len());
            for r in &rejects {
                println!("  {}", status::reject_line(r));
            }
        }
        DeadAction::Requeue(sel) => println!("requeued {} events", queue.requeue(&sel.filter()?)?),
        DeadAction::Purge(sel) => println!("purged {} events", queue.purge(&sel.filter()?)?),
    }
    Ok(ExitCode::SUCCESS)
}
