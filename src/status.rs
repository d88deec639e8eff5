//! `status`: one report of the queue and the agent's health, as text for people and JSON for tools.
//! Read-only; it never prints the token or any raw identifier (the queue holds none).

use crate::config::Config;
use crate::queue::{Counts, FileRecord, FileState, PositionRecord, Queue, QueueError, RejectRecord};
use crate::source;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

#[derive(Debug, Serialize)]
pub struct Report {
    pub queue_path: String,
    pub dry_run: bool,
    pub now: i64,
    pub counts: Counts,
    /// Seconds since the oldest pending event was queued.
    pub oldest_pending_age_secs: Option<i64>,
    pub last_success_at: Option<i64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
    pub next_retry_at: Option<i64>,
    pub paused: Option<String>,
    pub recovered: Option<String>,
    pub ingest_held: Option<String>,
    /// The wall clock disagrees with TikTok's: by how much (expiry is held meanwhile).
    pub clock_wrong: Option<String>,
    pub dead_by_reason: BTreeMap<String, i64>,
    pub files_waiting: BTreeMap<String, usize>,
    pub recent_files: Vec<FileRecord>,
    pub recent_rejects: Vec<RejectRecord>,
    /// Files read in append mode: how far each has been turned into events.
    pub append_files: Vec<AppendFile>,
}

#[derive(Debug, Serialize)]
pub struct AppendFile {
    #[serde(flatten)]
    pub record: PositionRecord,
    /// The file's size now (`None` when it is gone): bytes past the offset are still to be taken.
    pub size: Option<u64>,
}

pub fn gather(config: &Config) -> Result<Report, QueueError> {
    let queue = Queue::open_existing(&config.queue_path)?;
    let now = crate::now();
    let counts = queue.counts()?;
    let state = queue.agent_state()?;
    let mut dead_by_reason = BTreeMap::new();
    for d in queue.dead_events(100_000)? {
        *dead_by_reason.entry(d.reason).or_insert(0) += 1;
    }
    // Files in append mode never wait: they are read as they grow.
    let files_waiting = config
        .sources
        .iter()
        .filter(|s| !s.append)
        .map(|s| (s.name.clone(), source::scan(s).map_or(0, |f| f.len())))
        .collect();
    let append_files = queue
        .positions(20)?
        .into_iter()
        .map(|record| AppendFile { size: std::fs::metadata(&record.path).ok().map(|m| m.len()), record })
        .collect();
    Ok(Report {
        queue_path: config.queue_path.display().to_string(),
        dry_run: config.dry_run,
        now,
        oldest_pending_age_secs: counts.oldest_pending_queued_at.map(|t| now - t),
        counts,
        last_success_at: state.last_success_at,
        last_error: state.last_error,
        last_error_at: state.last_error_at,
        next_retry_at: state.next_retry_at,
        paused: state.paused,
        recovered: state.recovered,
        ingest_held: state.ingest_held,
        clock_wrong: state.clock_wrong,
        dead_by_reason,
        files_waiting,
        recent_files: queue.recent_files(10)?,
        recent_rejects: queue.recent_rejects(10)?,
        append_files,
    })
}

fn when(t: Option<i64>, now: i64) -> String {
    match t {
        None => "never".into(),
        Some(t) => format!("{} ({} ago)", timestamp(t), ago(now - t)),
    }
}

pub fn timestamp(t: i64) -> String {
    jiff::Timestamp::from_second(t).map(|ts| ts.to_string()).unwrap_or_else(|_| t.to_string())
}

fn ago(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let health = if let Some(p) = &r.paused {
        format!("PAUSED: {}", printable(p))
    } else if r.next_retry_at.is_some() {
        "RETRYING: the last delivery failed, events stay queued".into()
    } else {
        "ok".into()
    };
    let _ = writeln!(out, "state:           {health}");
    if let Some(r) = &r.recovered {
        let _ = writeln!(out, "QUEUE RECOVERED: {r}");
    }
    if let Some(h) = &r.ingest_held {
        let _ = writeln!(out, "INGEST HELD:     {h}");
    }
    if let Some(c) = &r.clock_wrong {
        let _ = writeln!(out, "CLOCK WRONG:     {}", printable(c));
    }
    let _ = writeln!(out, "queue:           {}{}", r.queue_path, if r.dry_run { " (dry run)" } else { "" });
    let c = &r.counts;
    let _ = writeln!(out, "events:          {} queued, {} sent, {} dead", c.pending, c.sent, c.dead);
    if let Some(age) = r.oldest_pending_age_secs {
        let _ = writeln!(out, "oldest queued:   {} ago", ago(age));
    }
    let _ = writeln!(out, "last delivery:   {}", when(r.last_success_at, r.now));
    if let Some(e) = &r.last_error {
        let _ = writeln!(out, "last error:      {} [{}]", printable(e), when(r.last_error_at, r.now));
    }
    if let Some(t) = r.next_retry_at {
        let _ = writeln!(out, "next retry:      {}", timestamp(t));
    }
    if !r.dead_by_reason.is_empty() {
        let reasons: Vec<String> = r.dead_by_reason.iter().map(|(k, v)| format!("{v} {k}")).collect();
        let _ = writeln!(out, "dead letters:    {} (see `dead-letter list`)", reasons.join(", "));
    }
    let _ = writeln!(out, "files:           {} ingested, {} rows rejected", c.files, c.rejects);
    for (name, n) in &r.files_waiting {
        let _ = writeln!(out, "  waiting in {name}: {n}");
    }
    if !r.recent_files.is_empty() {
        let _ = writeln!(out, "recent files:");
        for f in &r.recent_files {
            let _ = writeln!(
                out,
                "  {} {} [{}] {} events, {} duplicates, {} rejected{}",
                timestamp(f.ingested_at),
                printable(&f.path),
                f.source,
                f.events,
                f.duplicates,
                f.rejects,
                match (f.state, f.disposed.as_deref()) {
                    (FileState::Append, _) => ", append mode (stays in place)".to_string(),
                    (_, Some(d)) => format!(", {}", printable(d)),
                    (_, None) => String::new(),
                }
            );
        }
    }
    if !r.append_files.is_empty() {
        let _ = writeln!(out, "append files:");
        for f in &r.append_files {
            let p = &f.record.position;
            let size = match f.size {
                Some(size) if size > p.offset => format!("of {size} ({} not taken yet)", size - p.offset),
                Some(size) => format!("of {size}"),
                None => "(the file is gone)".into(),
            };
            let _ = writeln!(
                out,
                "  {} {} [{}] read to byte {} {size}, {} lines",
                timestamp(f.record.updated_at),
                printable(&f.record.path),
                f.record.source,
                p.offset,
                p.lines
            );
        }
    }
    if !r.recent_rejects.is_empty() {
        let _ = writeln!(out, "recent rejected rows:");
        for x in &r.recent_rejects {
            let _ = writeln!(out, "  {}", reject_line(x));
        }
    }
    out
}

pub fn reject_line(x: &RejectRecord) -> String {
    format!(
        "{}:{}: {}{}",
        printable(&x.path),
        x.line,
        x.field.as_deref().map(|f| format!("field `{}`: ", printable(f))).unwrap_or_default(),
        printable(&x.reason)
    )
}

/// Text from the queue (file names, reasons, TikTok's messages) as it is safe to print on a
/// terminal: control characters and bidirectional overrides escaped (see [`crate::source::shown`]).
pub fn printable(text: &str) -> String {
    crate::source::shown(std::path::Path::new(text))
}
