//! The long-running service: watch the source folders, take complete files, send in the
//! background, stop cleanly on SIGTERM/SIGINT, re-read the config on SIGHUP, tell systemd.
//!
//! Orchestration only: what becomes of a file is [`crate::intake`], delivery is [`crate::sender`].
//! Blocking work (SQLite, file reads, HTTP) runs on tokio's blocking pool; this module's async tasks
//! only wait. The supervisor watches both loops: if either ends or panics while the service runs,
//! it stops pinging the watchdog and exits non-zero, so systemd restarts the whole service.

use crate::config::{self, Config, Overrides};
use crate::queue::{Queue, QueueError, Role};
use crate::sender::{SendError, Sender, Settings};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Send(#[from] SendError),
    #[error("cannot start: {0}")]
    Runtime(#[from] std::io::Error),
    #[error("the {part} part of the pipeline {how}; exiting so that the service is restarted")]
    PartEnded { part: &'static str, how: String },
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
mod redo_loop;
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

type Task = (&'static str, tokio::task::JoinHandle<()>);

/// Whether a queue using `used` bytes of its `cap` is too full to take more files (or archived
/// files to reconcile): past 90%, so that sending, which needs some room to record what it did,
/// never finds it full. Pure.
fn over_high_water(used: u64, cap: u64) -> bool {
    used > cap / 10 * 9
}

/// Where the full check of the queue file (`PRAGMA quick_check`, seconds for a big queue) stands.
/// It runs after READY; the loops start once it passed, so a damaged queue is still caught before
/// anything is written to it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Check {
    Running,
    Passed,
    /// The queue must be moved aside and salvaged: the pipeline is restarted with
    /// [`Pipeline::start`]'s `full_check` (its connections closed first).
    Damaged(String),
}

/// The loops of one configuration (ingest, send, redo), and how to stop them.
struct Pipeline {
    config: Arc<Config>,
    stop: watch::Sender<bool>,
    tasks: Vec<Task>,
    check: watch::Receiver<Check>,
}

/// Run `work` once the queue check passed; never when it found damage (then wait for the stop
/// that the restart sends: a loop that returned on its own would end the service).
async fn after_check(
    check: watch::Receiver<Check>,
    mut stop: watch::Receiver<bool>,
    work: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) {
    let start = tokio::select! {
        _ = stop.wait_for(|s| *s) => false,
        _ = passed(check) => true,
    };
    if start {
        work.await
    }
}

impl Pipeline {
    /// Open the queue and start the loops. With `full_check` the queue file is checked (and
    /// recovered) before this returns; without it, after (see [`Check`]): start-up to READY does
    /// not read the whole file.
    fn start(config: Config, health: Arc<Health>, full_check: bool) -> Result<Pipeline, DaemonError> {
        let config = Arc::new(config);
        let (ingest_queue, recovery) = Queue::open_recovering(&config.queue_path, full_check)?;
        if let Some(r) = recovery {
            tracing::error!(
                "the queue {} was damaged ({}); it was moved aside to {} and a fresh queue started with {} events carried over; export files not yet archived are ingested again, archived ones re-ingested from the archive",
                config.queue_path.display(),
                r.reason,
                r.moved_to.display(),
                r.salvaged
            );
        }
        Role::Ingest.configure(&ingest_queue, config.max_queue_bytes)?;
        let send_queue = Role::Send.open(&config.queue_path, config.max_queue_bytes)?;
        let sender = Sender::new(send_queue, &config, Settings::from_config(&config))?;
        if let Some(code) = config.test_event_code.as_deref().filter(|_| !config.dry_run) {
            tracing::warn!("{}", test_session_warning(code, &config.queue_path));
        }
        tracing::info!(
            "started: {}{} source(s), queue {}, sending to {}{}{}",
            if config.test_session() && !config.dry_run { "TEST SESSION, " } else { "" },
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
        let (check_tx, check) = watch::channel(if full_check { Check::Passed } else { Check::Running });
        if !full_check {
            let path = config.queue_path.clone();
            tokio::spawn(async move {
                let result = tokio::task::spawn_blocking(move || {
                    crate::fault_pause("queue-check", Duration::from_secs(2));
                    Queue::quick_check(&path)
                })
                .await;
                let _ = check_tx.send(match result {
                    Ok(Ok(())) => Check::Passed,
                    Ok(Err(reason)) => Check::Damaged(reason),
                    Err(e) => Check::Damaged(format!("the check panicked: {e}")),
                });
            });
        }
        let wake = Arc::new(Notify::new());
        let watching = ingest_loop::Watching::start(&config);
        let ingest = tokio::spawn(after_check(
            check.clone(),
            stop_rx.clone(),
            Box::pin(ingest_loop::ingest_loop(
                config.clone(),
                ingest_queue,
                watching,
                wake.clone(),
                stop_rx.clone(),
                health.clone(),
            )),
        ));
        // In the background: reconciling the archive with the queue never delays READY; it ends
        // with the pipeline (between two files).
        let redo = tokio::spawn(after_check(
            check.clone(),
            stop_rx.clone(),
            Box::pin(redo_loop::redo_loop(config.clone(), wake.clone(), stop_rx.clone(), health.clone())),
        ));
        let send = tokio::spawn(after_check(
            check.clone(),
            stop_rx.clone(),
            Box::pin(send_loop::send_loop(config.clone(), sender, wake, stop_rx, health)),
        ));
        let tasks = vec![(Part::Ingest.name(), ingest), (Part::Send.name(), send), ("archive", redo)];
        Ok(Pipeline { config, stop, tasks, check })
    }

    /// Stop taking new work; give in-flight work up to `bound`. Returns false if it had to abandon
    /// something (its events stay queued and are re-sent later with the same ids).
    async fn stop(self, bound: Duration) -> bool {
        let _ = self.stop.send(true);
        let all = async {
            for (_, task) in self.tasks {
                let _ = task.await;
            }
        };
        tokio::time::timeout(bound, all).await.is_ok()
    }

    /// Wait until a loop ends. None should while the service runs (they return only when told to
    /// stop): one that does has panicked or given up, and the service must not go on half alive
    /// with the watchdog still fed. Which one (its index), and how it ended.
    async fn ended(&mut self) -> (usize, Result<(), tokio::task::JoinError>) {
        first_to_end(&mut self.tasks).await
    }

    /// After task `index` ended on its own: stop the others (up to `bound`) and say what happened.
    async fn abandon(
        mut self,
        index: usize,
        result: Result<(), tokio::task::JoinError>,
        bound: Duration,
    ) -> DaemonError {
        let (name, _) = self.tasks.remove(index);
        if !self.stop(bound).await {
            tracing::warn!("the other parts did not stop in time; their work is abandoned (events stay queued)");
        }
        part_ended(name, result)
    }
}

/// The loud word at the start of a test session: what it does and what it does not.
fn test_session_warning(code: &str, queue: &std::path::Path) -> String {
    format!(
        "TEST SESSION (test_event_code {code}): every sale is sent as a test event, which TikTok shows only on the Test Events page and never counts in reporting; the test queue {} is used and export files are left where they are, so a normal run sends them for real later",
        queue.display()
    )
}

/// Wait until the queue check passed (pending for ever if it finds damage).
async fn passed(mut check: watch::Receiver<Check>) {
    // The `Ref` the wait returns is not `Send`: dropped before any other await.
    let passed = check.wait_for(|c| *c == Check::Passed).await.is_ok();
    if !passed {
        std::future::pending::<()>().await;
    }
}

/// Wait until the queue check finds damage (pending for ever once it passed).
async fn damaged(mut check: watch::Receiver<Check>) -> String {
    let found = match check.wait_for(|c| matches!(c, Check::Damaged(_))).await {
        Ok(c) => match &*c {
            Check::Damaged(reason) => Some(reason.clone()),
            _ => None,
        },
        Err(_) => None,
    };
    match found {
        Some(reason) => reason,
        None => std::future::pending().await,
    }
}

/// The first of the tasks to end: its index, and how it ended. (Pending for ever without tasks.)
async fn first_to_end(tasks: &mut [Task]) -> (usize, Result<(), tokio::task::JoinError>) {
    use std::future::Future as _;
    std::future::poll_fn(|cx| {
        for (i, (_, task)) in tasks.iter_mut().enumerate() {
            if let std::task::Poll::Ready(r) = std::pin::Pin::new(task).poll(cx) {
                return std::task::Poll::Ready((i, r));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// The error for a part that ended while the service was running.
fn part_ended(part: &'static str, result: Result<(), tokio::task::JoinError>) -> DaemonError {
    let how = match result {
        Ok(()) => "ended unexpectedly".to_string(),
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            format!("panicked ({message})")
        }
        Err(_) => "was cancelled".to_string(),
    };
    DaemonError::PartEnded { part, how }
}

async fn serve(config: Config, config_path: PathBuf, overrides: Overrides) -> Result<(), DaemonError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let watchdog = sd_notify::watchdog_enabled();
    let health = Arc::new(Health::default());
    let mut pipeline = Pipeline::start(config, health.clone(), false)?;
    let mut monitor = Monitor::open(&pipeline.config, pipeline.check.clone())?;
    // No counts yet: counting a big queue's pending events would delay READY; STATUS follows.
    service::ready("started; checking the queue");
    let tick = watchdog.map_or(Duration::from_secs(30), |w| (w / 3).min(Duration::from_secs(30)));
    // The heartbeat `status` reads: written at start and on every tick, `stopped_at` at a clean
    // stop; a good start clears an earlier failed reload.
    let heartbeat_secs = tick.as_secs().max(1) as i64;
    monitor.record(move |s, now| {
        s.started_at = Some(now);
        s.heartbeat_at = Some(now);
        s.heartbeat_secs = Some(heartbeat_secs);
        s.stopped_at = None;
        s.reload_failed = None;
        s.reload_failed_at = None;
    });
    // A deadline, not a sleep per turn: the other arms (STATUS refreshes) wake the loop often, and
    // must not push the watchdog ping back.
    let mut next_tick = Instant::now() + tick;
    let mut stuck_logged = false;
    // STATUS follows what the loops do (queue drained, retrying, paused), at most once a second.
    let mut status_due: Option<Instant> = None;
    let mut status_sent = Instant::now();
    loop {
        let check = pipeline.check.clone();
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            (index, result) = pipeline.ended() => {
                let e = pipeline.abandon(index, result, Duration::from_secs(4)).await;
                tracing::error!("{e}");
                monitor.quiet();
                service::status(&e.to_string());
                return Err(e);
            }
            _ = passed(check.clone()), if !monitor.deferred.is_empty() => {
                // The queue check passed: the start (or reload) is recorded, and STATUS turns from
                // "checking the queue" to the counts.
                monitor.write_deferred();
                monitor.refresh_status(&health);
                status_sent = Instant::now();
            }
            reason = damaged(check) => {
                tracing::error!("the queue check found damage ({reason}); restarting the pipeline to recover it");
                let config = Config::clone(&pipeline.config);
                if !pipeline.stop(Duration::from_secs(4)).await {
                    tracing::warn!("a part did not stop in time for the recovery");
                }
                // Every connection to the damaged file closed before it is moved aside (bounded: a
                // metrics task may be waiting on a hung network share).
                if tokio::time::timeout(Duration::from_secs(4), monitor.close()).await.is_err() {
                    tracing::warn!("a monitor task still held the queue when its damaged file was moved aside");
                }
                pipeline = Pipeline::start(config, health.clone(), true)?;
                monitor = Monitor::open(&pipeline.config, pipeline.check.clone())?;
            }
            _ = hup.recv() => {
                service::reloading();
                match config::load(&config_path) {
                    Err(e) => {
                        tracing::error!("config reload failed; keeping the running configuration: {e}");
                        let error = reload_error(&e);
                        // One line: a STATUS value cannot hold a line break.
                        let shown = error.replace('\n', " ");
                        service::ready(&format!("config reload failed, the running configuration is kept: {shown}"));
                        monitor.record(move |s, now| {
                            s.reload_failed = Some(error);
                            s.reload_failed_at = Some(now);
                        });
                    }
                    Ok(mut new) => {
                        overrides.apply(&mut new);
                        tracing::info!("config reloaded from {}; restarting the pipeline", config_path.display());
                        if !pipeline.stop(Duration::from_secs(4)).await {
                            tracing::warn!("a request was abandoned for the reload; its events stay queued");
                        }
                        pipeline = Pipeline::start(new, health.clone(), false)?;
                        monitor = Monitor::open(&pipeline.config, pipeline.check.clone())?;
                        monitor.record(move |s, now| {
                            s.reload_failed = None;
                            s.reload_failed_at = None;
                            s.heartbeat_at = Some(now);
                            s.heartbeat_secs = Some(heartbeat_secs);
                            s.stopped_at = None;
                        });
                        service::ready("configuration reloaded");
                        monitor.refresh_status(&health);
                        status_sent = Instant::now();
                    }
                }
            }
            _ = health.changed(), if status_due.is_none() => {
                status_due = Some((status_sent + monitor.status_gap()).max(Instant::now()));
            }
            _ = tokio::time::sleep_until(status_due.unwrap_or(next_tick).into()), if status_due.is_some() => {
                status_due = None;
                monitor.refresh_status(&health);
                status_sent = Instant::now();
            }
            _ = tokio::time::sleep_until(next_tick.into()) => {
                next_tick = Instant::now() + tick;
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
                // Within the gap too: a count that takes long is not repeated at every tick.
                if Instant::now() >= status_sent + monitor.status_gap() {
                    monitor.refresh_status(&health);
                    status_sent = Instant::now();
                }
                monitor.beat();
                monitor.write_metrics(&pipeline.config, &config_path, &health, stuck_logged);
            }
        }
    }
    monitor.quiet();
    service::stopping();
    tracing::info!("stopping: no new files taken; in-flight work gets up to 4 s");
    if !pipeline.stop(Duration::from_secs(4)).await {
        tracing::warn!(
            "stopped with a request still in flight; its events stay queued and are re-sent with the same event ids"
        );
    }
    monitor.record(|s, now| s.stopped_at = Some(now));
    tracing::info!("stopped");
    service::flush(Duration::from_secs(1));
    Ok(())
}

/// A failed reload's error for `status`: the first problem (the log has them all).
fn reload_error(e: &config::LoadError) -> String {
    match e {
        config::LoadError::Invalid { errors, .. } if errors.len() > 1 => {
            format!("{} (and {} more: `check-config`)", errors[0], errors.len() - 1)
        }
        config::LoadError::Invalid { errors, .. } if errors.len() == 1 => errors[0].to_string(),
        other => other.to_string(),
    }
}

/// The supervisor's own read connection, for STATUS lines, and a connection for the heartbeat and
/// metrics, both used on the blocking pool: a busy queue must not hold up the supervisor, and
/// counting a big backlog's pending events takes a while (~0.1 s for a million). Each is taken out
/// (`None`) when the monitor closes, so that no task still holds it open.
struct Monitor {
    queue: Shared,
    heartbeat: Shared,
    status: Arc<StatusTask>,
    last_metrics: Option<Instant>,
    /// The pipeline's queue check: nothing is written before it passed.
    check: watch::Receiver<Check>,
    /// State changes recorded while the check runs, written once it passed.
    deferred: Vec<Change>,
}

type Shared = Arc<std::sync::Mutex<Option<Queue>>>;

/// The STATUS count on the blocking pool ([`Monitor::refresh_status`]).
#[derive(Default)]
struct StatusTask {
    /// A task is counting.
    running: AtomicBool,
    /// A line was asked for since the running task started its count.
    again: AtomicBool,
    /// No more lines ([`Monitor::quiet`]).
    quiet: AtomicBool,
    /// What the last count took, in microseconds ([`status_gap`]).
    cost_us: AtomicU64,
}

impl StatusTask {
    /// A line is wanted: whether the caller is to start a count (else the running one counts
    /// once more when it is done).
    fn ask(&self) -> bool {
        self.again.store(true, SeqCst);
        !self.running.swap(true, SeqCst)
    }

    /// A count starts: it serves what was asked so far.
    fn start(&self) {
        self.again.store(false, SeqCst);
    }

    /// A count ended: whether it is to count again (asked meanwhile, and no new task took over).
    fn end(&self) -> bool {
        self.stopped();
        self.once_more()
    }

    fn stopped(&self) {
        self.running.store(false, SeqCst);
    }

    /// Whether a task that stopped counting is to count again, and takes the count if so.
    fn once_more(&self) -> bool {
        self.again.load(SeqCst) && !self.running.swap(true, SeqCst)
    }
}

/// The connection in `shared`, while the monitor is open; waits for the task using it.
fn connection(shared: &Shared) -> std::sync::MutexGuard<'_, Option<Queue>> {
    shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The least time between two STATUS lines: a second, or fifty times what counting the pending
/// events took the last time, so that the count never takes over 2% of a core.
fn status_gap(cost: Duration) -> Duration {
    cost.saturating_mul(50).max(Duration::from_secs(1))
}

/// The STATUS line: the pending events, the last delivery, a pause or a retry, a held ingest.
fn status_line(queue: &Queue, ingest_held: Option<&str>) -> String {
    let pending = queue.pending_count().unwrap_or(-1);
    let state = queue.agent_state().unwrap_or_default();
    let last = state.last_success_at.map_or("never".to_string(), |t| format!("{}s ago", crate::now() - t));
    let mut line = format!("{pending} events queued, last delivery {last}");
    if let Some(p) = &state.paused {
        line.push_str(&format!("; PAUSED: {p}"));
    } else if let Some(e) = state.last_error.filter(|_| state.next_retry_at.is_some()) {
        line.push_str(&format!("; retrying: {e}"));
    }
    if let Some(held) = ingest_held {
        line.push_str(&format!("; {held}"));
    }
    line
}

/// A change of the service's own state, given the time it is written.
type Change = Box<dyn FnOnce(&mut crate::queue::AgentState, i64) + Send>;

impl Monitor {
    fn open(config: &Config, check: watch::Receiver<Check>) -> Result<Monitor, DaemonError> {
        let queue = Queue::open(&config.queue_path)?;
        // It counts the pending events once a second: a full-size cache would hold the whole
        // (state, id) index of a big backlog, beside the sender's and ingest's own.
        queue.set_cache_kib(256);
        let heartbeat = Queue::open(&config.queue_path)?;
        heartbeat.set_cache_kib(256);
        Ok(Monitor {
            queue: Arc::new(std::sync::Mutex::new(Some(queue))),
            heartbeat: Arc::new(std::sync::Mutex::new(Some(heartbeat))),
            status: Arc::default(),
            last_metrics: None,
            check,
            deferred: Vec::new(),
        })
    }

    /// Record a change of the service's own state (start, stop, reload); logged if it fails. Held
    /// back while the queue check runs (a damaged queue is not written to), written once it passed.
    fn record(&mut self, change: impl FnOnce(&mut crate::queue::AgentState, i64) + Send + 'static) {
        self.deferred.push(Box::new(change));
        self.write_deferred();
    }

    /// Write the changes held back, if the queue check has passed.
    fn write_deferred(&mut self) {
        if self.deferred.is_empty() || *self.check.borrow() != Check::Passed {
            return;
        }
        let changes = std::mem::take(&mut self.deferred);
        let now = crate::now();
        // On this thread: these are rare (start, reload, stop); a STATUS count in progress holds
        // the connection for its time (~0.1 s with a million events pending).
        let queue = connection(&self.queue);
        let Some(queue) = queue.as_ref() else { return };
        if let Err(e) = queue.update_agent_state(|s| changes.into_iter().for_each(|c| c(s, now))) {
            tracing::warn!("cannot record the service's state in the queue: {e}");
        }
    }

    /// Write the heartbeat in the background; skipped while the previous one is still waiting.
    fn beat(&self) {
        if *self.check.borrow() != Check::Passed {
            return;
        }
        let heartbeat = self.heartbeat.clone();
        tokio::task::spawn_blocking(move || {
            let Ok(queue) = heartbeat.try_lock() else { return };
            let Some(queue) = queue.as_ref() else { return };
            let now = crate::now();
            if let Err(e) = queue.update_agent_state(|s| s.heartbeat_at = Some(now)) {
                tracing::debug!("heartbeat not recorded: {e}");
            }
        });
    }

    /// Send a STATUS line, counted on the blocking pool by one task at a time: asked while one
    /// counts, that task counts once more when it is done, so the last line sent is the newest.
    fn refresh_status(&self, health: &Arc<Health>) {
        let task = self.status.clone();
        if !task.ask() {
            return;
        }
        let (queue, health) = (self.queue.clone(), health.clone());
        tokio::task::spawn_blocking(move || loop {
            task.start();
            let line = {
                let queue = connection(&queue);
                let Some(queue) = queue.as_ref() else {
                    task.stopped();
                    return;
                };
                let started = Instant::now();
                let line = status_line(queue, health.held().as_deref());
                task.cost_us.store(started.elapsed().as_micros() as u64, SeqCst);
                line
            };
            if !task.quiet.load(SeqCst) {
                service::status(&line);
            }
            if !task.end() {
                return;
            }
        });
    }

    /// The least time from this STATUS line to the next.
    fn status_gap(&self) -> Duration {
        status_gap(Duration::from_micros(self.status.cost_us.load(SeqCst)))
    }

    /// No more STATUS lines: the service is stopping or failing, and says so.
    fn quiet(&self) {
        self.status.quiet.store(true, SeqCst);
    }

    /// Close both connections, once the tasks using them are done.
    async fn close(self) {
        let (queue, heartbeat) = (self.queue, self.heartbeat);
        let _ = tokio::task::spawn_blocking(move || {
            connection(&queue).take();
            connection(&heartbeat).take();
        })
        .await;
    }

    /// Write the metrics file (at most every 15 s), on the blocking pool: the report looks at the
    /// sources' folders (often network shares) and counts in the queue, neither of which may hold
    /// up the supervisor.
    fn write_metrics(&mut self, config: &Arc<Config>, config_path: &std::path::Path, health: &Health, stuck: bool) {
        if config.metrics_textfile.is_none() || *self.check.borrow() != Check::Passed {
            return;
        }
        if self.last_metrics.is_some_and(|t| t.elapsed() < Duration::from_secs(15)) {
            return;
        }
        self.last_metrics = Some(Instant::now());
        let (config, config_path) = (config.clone(), config_path.to_path_buf());
        let ingest_held = health.held().is_some();
        let heartbeat = self.heartbeat.clone();
        tokio::task::spawn_blocking(move || {
            // Waits for a heartbeat write on the same connection (never more than the busy timeout).
            let queue = connection(&heartbeat);
            let Some(queue) = queue.as_ref() else { return };
            let Some(path) = &config.metrics_textfile else { return };
            let now = crate::now();
            let origin = crate::status::Origin::of(&config, &config_path);
            // The report has read the counts and the agent's state already.
            let report = crate::status::gather_from(queue, &origin, now, crate::status::Depth::Light).ok();
            let snapshot = service::Snapshot {
                counts: report.as_ref().map(|r| r.counts.clone()).unwrap_or_default(),
                now,
                last_success_at: report.as_ref().and_then(|r| r.last_success_at),
                paused: report.as_ref().is_some_and(|r| r.paused.is_some()),
                ingest_held,
                healthy: !stuck,
                queue_bytes: queue.used_bytes(),
                status: report.as_ref().map(service::StatusGauges::of),
            };
            if let Err(e) = service::write_metrics(path, &service::metrics_text(&snapshot)) {
                tracing::warn!("cannot write metrics to {}: {e}", path.display());
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_is_over_its_high_water_past_nine_tenths_of_its_cap() {
        let cases = [(0, 100, false), (90, 100, false), (91, 100, true), (100, 100, true), (8_999, 10_000, false)];
        for (used, cap, over) in cases {
            assert_eq!(over_high_water(used, cap), over, "{used} of {cap}");
        }
    }

    /// One STATUS count at a time; a line asked for during a count is counted once more after it,
    /// by the task that counts, unless a new task took over.
    #[test]
    fn a_status_asked_for_while_one_is_counted_is_counted_once_more() {
        let t = StatusTask::default();
        assert!(t.ask(), "nothing counts: start");
        t.start();
        assert!(!t.ask() && !t.ask(), "one counts: it counts again");
        assert!(t.end(), "asked meanwhile: once more");
        t.start();
        assert!(!t.end(), "nothing asked since");
        assert!(t.ask(), "idle again: start");
        t.start();
        // The count ends, and a new task starts before the old one looks again: the new one counts.
        t.stopped();
        assert!(t.ask());
        assert!(!t.once_more(), "the old task stops");
    }

    #[test]
    fn status_lines_are_a_second_apart_or_fifty_counts() {
        let ms = Duration::from_millis;
        for (cost, gap) in [(0, 1000), (2, 1000), (20, 1000), (21, 1050), (100, 5000), (1000, 50_000)] {
            assert_eq!(status_gap(ms(cost)), ms(gap), "{cost} ms");
        }
    }

    #[tokio::test]
    async fn a_part_that_ends_is_named_with_how_it_ended() {
        let cases: [(bool, usize, &str); 2] = [
            (true, 0, "the ingest part of the pipeline panicked (boom at a file)"),
            (false, 1, "the send part of the pipeline ended unexpectedly"),
        ];
        for (ingest_panics, expected, message) in cases {
            let ingest = tokio::spawn(async move {
                if ingest_panics {
                    panic!("boom at a file");
                }
                std::future::pending::<()>().await
            });
            let send = tokio::spawn(async move {
                if ingest_panics {
                    std::future::pending::<()>().await
                }
            });
            let archive = tokio::spawn(std::future::pending::<()>());
            let mut tasks: Vec<Task> = vec![("ingest", ingest), ("send", send), ("archive", archive)];
            let (index, result) = first_to_end(&mut tasks).await;
            assert_eq!(index, expected);
            let e = part_ended(tasks[index].0, result).to_string();
            assert!(e.starts_with(message), "{e}");
            for (_, task) in &tasks {
                task.abort();
            }
        }
    }
}
