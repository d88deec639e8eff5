//! `status`: one report of the queue and the agent's health, as text for people and JSON for tools.
//! [`gather`] reads the queue, the config and the source folders; [`assess`] decides, purely, what
//! needs attention and how bad it is; [`render`] lays the report out, purely, in lines of at most
//! [`render::WIDTH`] columns. Read-only; it never prints the token or any raw identifier (the queue
//! holds none).

mod assess;
mod render;

pub use assess::{assess, Issue, Level};
pub use render::{local_time, render, WIDTH};

use crate::config::{Config, TokenSource};
use crate::event::screen::Coverage;
use crate::queue::{Counts, FileRecord, PositionRecord, Queue, QueueError, RejectRecord, StateCounts};
use crate::source;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Heartbeats this many intervals old mean the service is gone.
pub const STALE_HEARTBEATS: f64 = 2.5;
/// The service's heartbeat interval when the queue does not say.
pub const DEFAULT_HEARTBEAT_SECS: i64 = 30;

#[derive(Debug, Serialize)]
pub struct Report {
    pub queue_path: String,
    pub dry_run: bool,
    pub now: i64,
    /// The config file status was started with.
    pub config_path: String,
    /// The config does not load: its first error (the report then comes from the queue alone).
    pub config_error: Option<String>,
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
    /// Archived files wait for room in the queue to be re-ingested: why.
    pub reconcile_held: Option<String>,
    /// The wall clock disagrees with TikTok's: by how much (expiry is held meanwhile).
    pub clock_wrong: Option<String>,
    pub service: Service,
    pub reload_failed: Option<String>,
    pub reload_failed_at: Option<i64>,
    /// Where a new token goes, from the config's token source (`None` without a config).
    pub token_fix: Option<String>,
    pub dead_by_reason: BTreeMap<String, i64>,
    pub sources: Vec<SourceStatus>,
    pub recent_files: Vec<RecentFile>,
    pub recent_rejects: Vec<RejectRecord>,
    /// Files read in append mode: how far each has been turned into events.
    pub append_files: Vec<AppendFile>,
    /// ok, warn or not_ok: the worst of `issues`.
    pub state: Level,
    /// What needs attention, worst first.
    pub issues: Vec<Issue>,
}

/// Is the service running? From the heartbeat it records in the queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Service {
    pub running: Running,
    pub heartbeat_at: Option<i64>,
    pub heartbeat_secs: Option<i64>,
    pub heartbeat_age_secs: Option<i64>,
    pub started_at: Option<i64>,
    pub stopped_at: Option<i64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Running {
    Yes,
    /// The heartbeat is older than [`STALE_HEARTBEATS`] intervals (killed, crashed, machine off).
    Stale,
    /// Stopped cleanly.
    Stopped,
    /// No service ever ran on this queue.
    #[default]
    Never,
}

impl Service {
    /// Pure: the service's state at `now` from what it recorded.
    pub fn at(
        now: i64,
        heartbeat_at: Option<i64>,
        heartbeat_secs: Option<i64>,
        started_at: Option<i64>,
        stopped_at: Option<i64>,
    ) -> Service {
        let interval = heartbeat_secs.filter(|s| *s > 0).unwrap_or(DEFAULT_HEARTBEAT_SECS);
        // A heartbeat after the last stop is a service that started again (even if the record
        // of its start was not written).
        let stopped = stopped_at.filter(|stop| heartbeat_at.is_none_or(|beat| beat <= *stop));
        let running = match (heartbeat_at, stopped) {
            (None, None) if started_at.is_none() => Running::Never,
            (_, Some(_)) => Running::Stopped,
            (Some(beat), None) if ((now - beat) as f64) <= interval as f64 * STALE_HEARTBEATS => Running::Yes,
            _ => Running::Stale,
        };
        Service {
            running,
            heartbeat_at,
            heartbeat_secs,
            heartbeat_age_secs: heartbeat_at.map(|t| (now - t).max(0)),
            started_at,
            stopped_at,
        }
    }

    /// When the service was last known alive.
    pub fn last_seen(&self) -> Option<i64> {
        [self.heartbeat_at, self.stopped_at].into_iter().flatten().max()
    }
}

/// The folder of a source as found on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Folder {
    Ok,
    Missing,
    NotAFolder,
    Unreadable,
    /// The source is known from the queue only (not in a config that loads).
    Unknown,
}

impl Folder {
    pub fn of(path: &Path) -> Folder {
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Folder::Missing,
            Err(_) => Folder::Unreadable,
            Ok(m) if !m.is_dir() => Folder::NotAFolder,
            Ok(_) => match std::fs::read_dir(path) {
                Ok(_) => Folder::Ok,
                Err(_) => Folder::Unreadable,
            },
        }
    }

    /// What is wrong, in words (`None` when nothing is).
    pub fn problem(self) -> Option<&'static str> {
        match self {
            Folder::Ok | Folder::Unknown => None,
            Folder::Missing => Some("does not exist"),
            Folder::NotAFolder => Some("is not a folder"),
            Folder::Unreadable => Some("cannot be read"),
        }
    }
}

/// Events counted by the best key TikTok can match them by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MatchKeys {
    pub email: u64,
    pub phone: u64,
    pub external_id_only: u64,
    pub none: u64,
}

impl From<Coverage> for MatchKeys {
    fn from(c: Coverage) -> MatchKeys {
        MatchKeys { email: c.email, phone: c.phone, external_id_only: c.external_id_only, none: c.none }
    }
}

impl MatchKeys {
    pub fn coverage(&self) -> Coverage {
        Coverage { email: self.email, phone: self.phone, external_id_only: self.external_id_only, none: self.none }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceStatus {
    pub name: String,
    /// Its folder (`None` for a source known from the queue only).
    pub path: Option<String>,
    /// The config line of its `path`.
    pub path_line: Option<usize>,
    pub folder: Folder,
    pub files: i64,
    /// Files ingested since local midnight.
    pub files_today: i64,
    pub last_file_at: Option<i64>,
    pub events: StateCounts,
    pub rejected: i64,
    pub skipped: i64,
    pub match_keys: MatchKeys,
    pub expect_files_within_secs: Option<u64>,
    /// Files waiting in the folder now (`None` in append mode, or when not looked).
    pub waiting: Option<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RecentFile {
    #[serde(flatten)]
    pub record: FileRecord,
    /// Its events now, by state.
    pub now: StateCounts,
}

#[derive(Debug, Serialize)]
pub struct AppendFile {
    #[serde(flatten)]
    pub record: PositionRecord,
    /// The file's size now (`None` when it is gone): bytes past the offset are still to be taken.
    pub size: Option<u64>,
}

/// How much [`gather`] looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// Everything (`status`).
    Full,
    /// Not the per-source event counts (a pass over all events) nor the files waiting (a folder
    /// scan): the metrics, every 15 s.
    Light,
}

/// Where the report comes from: the queue path, and the config when it loads.
pub struct Origin<'c> {
    pub config: Option<&'c Config>,
    pub config_path: &'c Path,
    pub config_error: Option<String>,
    pub queue_path: PathBuf,
}

impl<'c> Origin<'c> {
    pub fn of(config: &'c Config, config_path: &'c Path) -> Origin<'c> {
        Origin { config: Some(config), config_path, config_error: None, queue_path: config.queue_path.clone() }
    }
}

/// Open the queue (it must exist) and gather the full report.
pub fn gather(origin: &Origin<'_>) -> Result<Report, QueueError> {
    let queue = Queue::open_existing(&origin.queue_path)?;
    gather_from(&queue, origin, crate::now(), Depth::Full)
}

/// Files in a source's folder not yet read: a file kept after reading (`after_ingest = "keep"`,
/// a dry run, a test session) is not waiting unless it changed after it was read.
fn waiting_files(queue: &Queue, s: &crate::config::SourceConfig) -> Result<usize, QueueError> {
    let read = queue.read_paths(&s.name)?;
    let files = source::scan(s).unwrap_or_default();
    Ok(files
        .iter()
        .filter(|(path, _, modified)| {
            let read_at = read.get(&path.display().to_string());
            let modified =
                modified.and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_secs() as i64);
            !matches!((read_at, modified), (Some(at), Some(m)) if *at >= m)
        })
        .count())
}

/// The report from an open queue at `now`.
pub fn gather_from(queue: &Queue, origin: &Origin<'_>, now: i64, depth: Depth) -> Result<Report, QueueError> {
    let counts = queue.counts()?;
    let state = queue.agent_state()?;
    let midnight = local_midnight(now);
    let totals = queue.source_totals(midnight)?;
    let events = match depth {
        Depth::Full => queue.events_by_source()?,
        Depth::Light => BTreeMap::new(),
    };
    let mut sources: Vec<SourceStatus> = Vec::new();
    for s in origin.config.map(|c| c.sources.as_slice()).unwrap_or_default() {
        let waiting = match depth {
            Depth::Full if !s.append => Some(waiting_files(queue, s)?),
            _ => None,
        };
        sources.push(SourceStatus {
            name: s.name.clone(),
            path: Some(s.path.display().to_string()),
            path_line: s.path_line,
            folder: Folder::of(&s.path),
            expect_files_within_secs: s.expect_files_within.map(|d| d.as_secs()),
            waiting,
            ..source_counts(&s.name, &totals, &events)
        });
    }
    for name in totals.keys() {
        if !sources.iter().any(|s| &s.name == name) {
            sources.push(source_counts(name, &totals, &events));
        }
    }
    // Counting recent files' events by state reads the events table (no index on file_id): for
    // `status`, not for the metrics written every 15 s.
    let recent_files = match depth {
        Depth::Full => {
            let by_file = queue.events_of_recent_files(10)?;
            queue
                .recent_files(10)?
                .into_iter()
                .map(|record| RecentFile { now: by_file.get(&record.id).copied().unwrap_or_default(), record })
                .collect()
        }
        Depth::Light => Vec::new(),
    };
    let append_files = queue
        .positions(20)?
        .into_iter()
        .map(|record| AppendFile { size: std::fs::metadata(&record.path).ok().map(|m| m.len()), record })
        .collect();
    let config = origin.config;
    let mut report = Report {
        queue_path: origin.queue_path.display().to_string(),
        dry_run: config.is_some_and(|c| c.dry_run),
        now,
        config_path: origin.config_path.display().to_string(),
        config_error: origin.config_error.clone(),
        oldest_pending_age_secs: counts.oldest_pending_queued_at.map(|t| now - t),
        counts,
        last_success_at: state.last_success_at,
        last_error: state.last_error,
        last_error_at: state.last_error_at,
        next_retry_at: state.next_retry_at,
        paused: state.paused,
        recovered: state.recovered,
        ingest_held: state.ingest_held,
        reconcile_held: state.reconcile_held,
        clock_wrong: state.clock_wrong,
        service: Service::at(now, state.heartbeat_at, state.heartbeat_secs, state.started_at, state.stopped_at),
        reload_failed: state.reload_failed,
        reload_failed_at: state.reload_failed_at,
        // Only a pause about the token itself names where a new token goes.
        token_fix: config
            .and_then(|c| c.token.as_ref())
            .filter(|_| state.paused_on_token)
            .map(|t| token_fix(t, origin.config_path)),
        dead_by_reason: queue.dead_by_reason()?,
        sources,
        recent_files,
        recent_rejects: queue.recent_rejects(10)?,
        append_files,
        state: Level::Ok,
        issues: Vec::new(),
    };
    report.issues = assess(&report);
    report.state = report.issues.first().map_or(Level::Ok, Issue::level);
    Ok(report)
}

/// A source's counts from the queue (its folder unknown until the config says).
fn source_counts(
    name: &str,
    totals: &BTreeMap<String, crate::queue::SourceTotals>,
    events: &BTreeMap<String, StateCounts>,
) -> SourceStatus {
    let t = totals.get(name).cloned().unwrap_or_default();
    SourceStatus {
        name: name.to_string(),
        path: None,
        path_line: None,
        folder: Folder::Unknown,
        files: t.files,
        files_today: t.files_since,
        last_file_at: t.last_file_at,
        events: events.get(name).copied().unwrap_or_default(),
        rejected: t.rejects,
        skipped: t.skipped,
        match_keys: t.coverage.into(),
        expect_files_within_secs: None,
        waiting: None,
    }
}

/// Where a new token goes, for the "paused" fix.
fn token_fix(token: &TokenSource, config_path: &Path) -> String {
    match token {
        TokenSource::File(path) => format!("write the new token to {}", path.display()),
        TokenSource::Credential(name) => {
            format!(
                "write the new token to the file behind the systemd credential `{name}` (LoadCredential=) and restart the service"
            )
        }
        TokenSource::Env(var) => format!("set the new token in ${var} and restart the service"),
        TokenSource::Inline(_) => format!("write the new token as access_token in {}", config_path.display()),
    }
}

/// Unix seconds of the last local midnight at or before `now` (the system's zone, `TZ` honoured).
fn local_midnight(now: i64) -> i64 {
    let tz = jiff::tz::TimeZone::system();
    jiff::Timestamp::from_second(now)
        .ok()
        .and_then(|t| t.to_zoned(tz).start_of_day().ok())
        .map_or(now - now.rem_euclid(86_400), |z| z.timestamp().as_second())
}

/// A Unix time as RFC 3339 in UTC (`watch`, `preview`, `dead-letter list`).
pub fn timestamp(t: i64) -> String {
    jiff::Timestamp::from_second(t).map(|ts| ts.to_string()).unwrap_or_else(|_| t.to_string())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_is_running_while_its_heartbeat_is_fresh() {
        let cases = [
            ("never started", None, None, None, Running::Never),
            ("fresh", Some(990), None, None, Running::Yes),
            ("2.5 intervals is still running", Some(925), None, None, Running::Yes),
            ("older is stale", Some(924), None, None, Running::Stale),
            ("a short interval goes stale sooner", Some(990), Some(2), None, Running::Stale),
            ("stopped cleanly", Some(990), None, Some(995), Running::Stopped),
            ("stopped in the second of its last beat", Some(995), None, Some(995), Running::Stopped),
            ("a beat after the stop: started again", Some(996), None, Some(995), Running::Yes),
        ];
        for (name, beat, secs, stopped, want) in cases {
            assert_eq!(Service::at(1000, beat, secs, beat, stopped).running, want, "{name}");
        }
        assert_eq!(Service::at(1000, Some(990), None, Some(900), Some(995)).last_seen(), Some(995));
    }
}
