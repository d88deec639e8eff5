//! The long-running service and the one-shot commands built from the same parts: watch the source
//! folders, ingest complete files, send in the background, stop cleanly on SIGTERM/SIGINT.
//!
//! Orchestration only: decisions live in [`crate::source`], [`crate::ingest`] and
//! [`crate::sender`]. Blocking work (SQLite, file reads, HTTP) runs on tokio's blocking pool; this
//! module's async tasks only wait.

use crate::append::{self, AppendOutcome};
use crate::config::{self, Config, Overrides, SourceConfig};
use crate::ingest::{self, AgePolicy, Outcome};
use crate::queue::{IngestCounts, Queue, QueueError};
use crate::sender::{self, SendError, Sender, Settings};
use crate::source;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{watch, Notify};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Send(#[from] SendError),
    #[error("cannot start: {0}")]
    Runtime(#[from] std::io::Error),
}

pub fn age_policy(config: &Config, now: i64) -> AgePolicy {
    AgePolicy {
        now,
        window_secs: config.attribution_window.as_secs() as i64,
        future_secs: config.future_tolerance.as_secs() as i64,
    }
}

/// What became of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileResult {
    /// New events were committed; `disposed` is false when archiving or deleting it failed.
    Committed { events: i64, disposed: bool },
    /// Already ingested, but archiving or deleting it failed: the next rescan tries again.
    DisposeFailed,
    /// Nothing new (already ingested, or unreadable and set aside). Do not look again unless it changes.
    Done,
    /// Look again later (it changed while being read, or a transient error).
    Retry,
    /// It could not be opened or read (permissions, an I/O error): it stays in place and is tried
    /// again when it changes (a chmod counts) and on every rescan.
    Blocked,
    /// The queue has no room for it (size cap or disk full): hold files back until sending frees space.
    QueueFull,
    /// A file in append mode was read on from its position (`events` new ones committed with the
    /// new position). `stamp` is the file as it was read: look again when it changes. `idle_at`:
    /// the file holds back a record, so look again at this time (when it will have been idle for
    /// `append_idle_secs`) if it does not change before.
    Appended { events: i64, stamp: ingest::Stamp, idle_at: Option<SystemTime> },
}

/// Ingest one complete file and dispose of it as configured. Blocking.
pub fn process_file(queue: &mut Queue, config: &Config, src: &SourceConfig, path: &Path, dispose: bool) -> FileResult {
    if src.append {
        return process_append(queue, config, src, path);
    }
    let shown = path.display();
    let companion = src.format.companion_of(path);
    let result = ingest::ingest_file(queue, src, path, age_policy(config, crate::now()));
    if matches!(result, Ok(Outcome::Ingested { .. } | Outcome::AlreadyIngested(_)))
        && queue.clear_blocked(path).unwrap_or(false)
    {
        tracing::info!("{shown}: readable now");
    }
    match result {
        Ok(Outcome::Ingested { file_id, counts }) => {
            tracing::info!(
                "{shown}: {} events queued ({} dead on arrival), {} duplicates of earlier exports, {} rows rejected, {} identifiers dropped",
                counts.events - counts.dead,
                counts.dead,
                counts.duplicates,
                counts.rejects,
                counts.warnings
            );
            let disposed = !dispose || dispose_file(queue, src, path, file_id);
            if dispose && disposed {
                dispose_companion(src, companion.as_deref());
            }
            FileResult::Committed { events: counts.events - counts.dead, disposed }
        }
        Ok(Outcome::AlreadyIngested(record)) => {
            tracing::info!("{shown}: same content as {} (already ingested), nothing queued", record.path);
            if dispose && !dispose_file(queue, src, path, record.id) {
                return FileResult::DisposeFailed;
            }
            if dispose {
                dispose_companion(src, companion.as_deref());
            }
            FileResult::Done
        }
        Ok(Outcome::Changed) => {
            tracing::info!("{shown}: changed while being read; will read it again once it settles");
            FileResult::Retry
        }
        Ok(Outcome::Unreadable(reason)) => {
            tracing::error!("{shown}: cannot be read as {:?}: {reason}", src.format);
            let _ = queue.record_unreadable(path, &src.name, &reason, crate::now());
            if dispose {
                quarantine(src, path, &reason);
            }
            FileResult::Done
        }
        Err(e) => failed(queue, src, path, e),
    }
}

/// The companion of a split export that changed within the settle time: the POS may still be
/// writing the other half of the export, so the file waits (the service only; `run --once` takes
/// what is there).
pub(crate) fn companion_settling(src: &SourceConfig, path: &Path) -> Option<PathBuf> {
    let companion = src.format.companion_of(path)?;
    let age = std::fs::metadata(&companion).and_then(|m| m.modified()).ok()?.elapsed().ok()?;
    (age < src.settle).then_some(companion)
}

/// Read on in a file of an append-mode source: never archived, deleted or quarantined.
fn process_append(queue: &mut Queue, config: &Config, src: &SourceConfig, path: &Path) -> FileResult {
    let shown = path.display();
    match append::ingest_append(queue, src, path, age_policy(config, crate::now()), SystemTime::now()) {
        Ok(AppendOutcome::Read { counts, position, size, held, stamp }) => {
            if queue.clear_blocked(path).unwrap_or(false) {
                tracing::info!("{shown}: readable now");
            }
            let offset = position.offset;
            if counts != IngestCounts::default() {
                tracing::info!(
                    "{shown}: {} events queued ({} dead on arrival), {} duplicates of earlier exports, {} rows rejected, {} identifiers dropped; read to byte {offset} of {size}",
                    counts.events - counts.dead,
                    counts.dead,
                    counts.duplicates,
                    counts.rejects,
                    counts.warnings
                );
            }
            if held {
                tracing::debug!(
                    "{shown}: bytes {offset}..{size} wait for more to be written or for the file to be idle for {:?}",
                    src.append_idle
                );
            }
            let idle_at = stamp.1.filter(|_| held).map(|mtime| mtime + src.append_idle);
            FileResult::Appended { events: counts.events - counts.dead, stamp, idle_at }
        }
        Ok(AppendOutcome::Changed) => {
            tracing::info!("{shown}: shrank or was rewritten while being read; will read it again once it settles");
            FileResult::Retry
        }
        Ok(AppendOutcome::Unreadable(reason)) => {
            tracing::error!("{shown}: cannot be read as {:?}: {reason} (append mode: it stays in place)", src.format);
            let _ = queue.record_unreadable_once(path, &src.name, &reason, crate::now());
            FileResult::Done
        }
        Err(e) => failed(queue, src, path, e),
    }
}

/// What an ingest error means for the file.
fn failed(queue: &Queue, src: &SourceConfig, path: &Path, e: ingest::IngestError) -> FileResult {
    let shown = path.display();
    match e {
        ingest::IngestError::Io { path: p, source } if source.kind() == std::io::ErrorKind::NotFound => {
            tracing::info!("{p}: gone before it could be read");
            FileResult::Done
        }
        ingest::IngestError::Io { path: p, source } => {
            // Not readable (permissions, an I/O error): say so where `status` and `dead-letter list`
            // show it, not only in the log. The file stays where it is and is tried again.
            if queue.record_blocked(path, &src.name, &source.to_string(), crate::now()).unwrap_or(true) {
                tracing::error!("{p}: {source} (it stays in place and is tried again on every rescan)");
            } else {
                tracing::debug!("{p}: {source} (still)");
            }
            FileResult::Blocked
        }
        ingest::IngestError::Queue(e) if e.is_full() => {
            tracing::warn!("{shown}: not ingested: the queue is full ({e}); it waits in its folder");
            FileResult::QueueFull
        }
        ingest::IngestError::Queue(e) => {
            tracing::error!("{shown}: not ingested, will retry: {e}");
            FileResult::Retry
        }
    }
}

/// Archive or delete a committed file. False when that failed (disk full, permissions): the file
/// stays, and the next rescan tries again (its content is known, so nothing is queued twice).
fn dispose_file(queue: &Queue, src: &SourceConfig, path: &Path, file_id: i64) -> bool {
    // The content hash names a file only when its name is taken in the archive: read it only then.
    match source::dispose(src, path, || ingest::content_hash(path).unwrap_or_default()) {
        Ok(how) => {
            tracing::debug!("{}: {how}", path.display());
            let _ = queue.mark_disposed(file_id, &how);
            if src.after_ingest != crate::config::AfterIngest::Keep {
                drop_marker(src, path);
            }
            true
        }
        Err(e) => {
            tracing::error!("{e} (its events are safely queued; the file stays where it is and is tried again)");
            false
        }
    }
}

fn quarantine(src: &SourceConfig, path: &Path, reason: &str) {
    let dir = src.path.join("quarantine");
    match source::move_aside(path, &dir, || ingest::content_hash(path).unwrap_or_default()) {
        Ok(target) => {
            let mut reason_path = target.clone().into_os_string();
            reason_path.push(".reason");
            let _ = std::fs::write(&reason_path, format!("{reason}\n"));
            tracing::warn!("{}: moved to {}", path.display(), target.display());
            drop_marker(src, path);
        }
        Err(e) => tracing::error!("{}: cannot move to quarantine {}: {e}", path.display(), dir.display()),
    }
}

/// Archive or delete the companion of a disposed file with it (it belongs to that export alone); a
/// failure is logged and leaves it in place, where it does no harm.
fn dispose_companion(src: &SourceConfig, companion: Option<&Path>) {
    let Some(c) = companion else { return };
    match source::dispose(src, c, || ingest::content_hash(c).unwrap_or_default()) {
        Ok(how) => tracing::debug!("{}: {how} (companion)", c.display()),
        Err(e) => tracing::warn!("{e} (the companion of a file that was taken; it stays)"),
    }
}

fn drop_marker(src: &SourceConfig, path: &Path) {
    if let Err(e) = source::remove_marker(src, path) {
        tracing::warn!("{}: cannot remove its done marker: {e}", path.display());
    }
}

/// Which source a file belongs to: the one whose folder holds it.
pub fn source_of<'c>(config: &'c Config, path: &Path) -> Option<&'c SourceConfig> {
    config.sources.iter().find(|s| path.parent() == Some(s.path.as_path()))
}

/// `run --once`: ingest every complete file now, then flush. Returns the flush report.
pub fn run_once(config: &Config, timeout: Duration) -> Result<sender::FlushReport, DaemonError> {
    let mut queue = Queue::open(&config.queue_path)?;
    for src in &config.sources {
        match source::scan(src) {
            Ok(files) => {
                for (path, _, _) in files {
                    process_file(&mut queue, config, src, &path, !config.dry_run);
                }
            }
            Err(e) => tracing::error!("source {}: cannot list {}: {e}", src.name, src.path.display()),
        }
    }
    let mut sender = Sender::new(Queue::open(&config.queue_path)?, config, Settings::from_config(config))?;
    Ok(sender::flush(&mut sender, timeout)?)
}

/// Run `f` on the blocking pool with `value`, and get `value` back.
async fn blocking<T, R>(mut value: T, f: impl FnOnce(&mut T) -> R + Send + 'static) -> (T, R)
where
    T: Send + 'static,
    R: Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let r = f(&mut value);
        (value, r)
    })
    .await
    .expect("a blocking task panicked")
}

mod health;
mod ingest_loop;
mod send_loop;
mod service;

pub use health::{Health, LogLimiter, Part, Verdict};

/// The service: watch, ingest and send until SIGTERM or SIGINT; SIGHUP re-reads the config.
pub fn run(config: Config, config_path: PathBuf, overrides: Overrides) -> Result<(), DaemonError> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().max_blocking_threads(8).build()?;
    let result = runtime.block_on(serve(config, config_path, overrides));
    // `serve` gave in-flight work its 4 s. A blocking call still running (a request hanging for up
    // to request_timeout_secs) must not hold the exit: its events stay queued and are re-sent.
    runtime.shutdown_background();
    result
}

/// The two loops of one configuration, and how to stop them.
struct Pipeline {
    config: Arc<Config>,
    stop: watch::Sender<bool>,
    ingest: tokio::task::JoinHandle<()>,
    send: tokio::task::JoinHandle<()>,
}

impl Pipeline {
    fn start(config: Config, health: Arc<Health>) -> Result<Pipeline, DaemonError> {
        let config = Arc::new(config);
        let (ingest_queue, recovery) = Queue::open_checked(&config.queue_path)?;
        if let Some(r) = recovery {
            tracing::error!(
                "the queue {} was damaged ({}); it was moved aside to {} and a fresh queue started with {} events carried over; export files not yet archived are ingested again",
                config.queue_path.display(),
                r.reason,
                r.moved_to.display(),
                r.salvaged
            );
        }
        ingest_queue.set_size_limit(config.max_queue_bytes)?;
        let send_queue = Queue::open(&config.queue_path)?;
        send_queue.set_size_limit(config.max_queue_bytes)?;
        let sender = Sender::new(send_queue, &config, Settings::from_config(&config))?;
        tracing::info!(
            "started: {} source(s), queue {}, sending to {}{}{}",
            config.sources.len(),
            config.queue_path.display(),
            sender.endpoint(),
            if config.dry_run { " (dry run: nothing is sent)" } else { "" },
            config.test_event_code.as_deref().map(|c| format!(" as test events ({c})")).unwrap_or_default()
        );
        for w in &config.warnings {
            tracing::warn!("config: {w}");
        }
        let (stop, stop_rx) = watch::channel(false);
        let wake = Arc::new(Notify::new());
        let ingest = tokio::spawn(ingest_loop::ingest_loop(
            config.clone(),
            ingest_queue,
            wake.clone(),
            stop_rx.clone(),
            health.clone(),
        ));
        let send = tokio::spawn(send_loop::send_loop(config.clone(), sender, wake, stop_rx, health));
        Ok(Pipeline { config, stop, ingest, send })
    }

    /// Stop taking new work; give in-flight work up to `bound`. Returns false if it had to abandon
    /// something (its events stay queued and are re-sent later with the same ids).
    async fn stop(self, bound: Duration) -> bool {
        let _ = self.stop.send(true);
        let both = async {
            let _ = self.ingest.await;
            let _ = self.send.await;
        };
        tokio::time::timeout(bound, both).await.is_ok()
    }
}

async fn serve(config: Config, config_path: PathBuf, overrides: Overrides) -> Result<(), DaemonError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let watchdog = sd_notify::watchdog_enabled();
    let health = Arc::new(Health::default());
    let mut pipeline = Pipeline::start(config, health.clone())?;
    let mut monitor = Monitor::open(&pipeline.config)?;
    service::ready(&monitor.status_line(&pipeline.config, &health));
    let tick = watchdog.map_or(Duration::from_secs(30), |w| (w / 3).min(Duration::from_secs(30)));
    let mut stuck_logged = false;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                service::reloading();
                match config::load(&config_path) {
                    Err(e) => {
                        tracing::error!("config reload failed; keeping the running configuration: {e}");
                        service::status(&format!("config reload failed: {e}"));
                    }
                    Ok(mut new) => {
                        overrides.apply(&mut new);
                        tracing::info!("config reloaded from {}; restarting the pipeline", config_path.display());
                        if !pipeline.stop(Duration::from_secs(4)).await {
                            tracing::warn!("a request was abandoned for the reload; its events stay queued");
                        }
                        pipeline = Pipeline::start(new, health.clone())?;
                        monitor = Monitor::open(&pipeline.config)?;
                    }
                }
                service::ready(&monitor.status_line(&pipeline.config, &health));
            }
            _ = tokio::time::sleep(tick) => {
                let limit = watchdog.unwrap_or(Duration::from_secs(120)).max(pipeline.config.sender.request_timeout + Duration::from_secs(5));
                match health.stuck(Instant::now(), limit) {
                    None => {
                        stuck_logged = false;
                        if watchdog.is_some() {
                            service::watchdog();
                        }
                    }
                    Some(part) => {
                        if !stuck_logged {
                            tracing::error!("the {} part has made no progress for over {:?}; not pinging the watchdog", part.name(), limit);
                            stuck_logged = true;
                        }
                    }
                }
                service::status(&monitor.status_line(&pipeline.config, &health));
                monitor.write_metrics(&pipeline.config, &health, stuck_logged);
            }
        }
    }
    service::stopping();
    tracing::info!("stopping: no new files taken; in-flight work gets up to 4 s");
    if !pipeline.stop(Duration::from_secs(4)).await {
        tracing::warn!(
            "stopped with a request still in flight; its events stay queued and are re-sent with the same event ids"
        );
    }
    tracing::info!("stopped");
    Ok(())
}

/// The supervisor's own read connection, for STATUS lines and metrics.
struct Monitor {
    queue: Queue,
    last_metrics: Option<Instant>,
}

impl Monitor {
    fn open(config: &Config) -> Result<Monitor, DaemonError> {
        Ok(Monitor { queue: Queue::open(&config.queue_path)?, last_metrics: None })
    }

    fn status_line(&self, _config: &Config, health: &Health) -> String {
        let pending = self.queue.pending_count().unwrap_or(-1);
        let state: HashMap<String, String> = self.queue.state().unwrap_or_default().into_iter().collect();
        let last = state
            .get("last_success_at")
            .and_then(|t| t.parse::<i64>().ok())
            .map_or("never".to_string(), |t| format!("{}s ago", crate::now() - t));
        let mut line = format!("{pending} events queued, last delivery {last}");
        if let Some(p) = state.get("paused") {
            line.push_str(&format!("; PAUSED: {p}"));
        } else if let Some(e) = state.get("last_error").filter(|_| state.contains_key("next_retry_at")) {
            line.push_str(&format!("; retrying: {e}"));
        }
        if let Some(held) = health.ingest_held() {
            line.push_str(&format!("; {held}"));
        }
        line
    }

    fn write_metrics(&mut self, config: &Config, health: &Health, stuck: bool) {
        let Some(path) = &config.metrics_textfile else {
            return;
        };
        if self.last_metrics.is_some_and(|t| t.elapsed() < Duration::from_secs(15)) {
            return;
        }
        self.last_metrics = Some(Instant::now());
        let state: HashMap<String, String> = self.queue.state().unwrap_or_default().into_iter().collect();
        let snapshot = service::Snapshot {
            counts: self.queue.counts().unwrap_or_default(),
            now: crate::now(),
            last_success_at: state.get("last_success_at").and_then(|t| t.parse().ok()),
            paused: state.contains_key("paused"),
            ingest_held: health.ingest_held().is_some(),
            healthy: !stuck,
            queue_bytes: self.queue.used_bytes(),
        };
        if let Err(e) = service::write_metrics(path, &service::metrics_text(&snapshot)) {
            tracing::warn!("cannot write metrics to {}: {e}", path.display());
        }
    }
}
