//! The long-running service and the one-shot commands built from the same parts: watch the source
//! folders, ingest complete files, send in the background, stop cleanly on SIGTERM/SIGINT.
//!
//! Orchestration only: decisions live in [`crate::source`], [`crate::ingest`] and
//! [`crate::sender`]. Blocking work (SQLite, file reads, HTTP) runs on tokio's blocking pool; this
//! module's async tasks only wait.

use crate::config::{Config, SourceConfig};
use crate::ingest::{self, AgePolicy, Outcome};
use crate::queue::{Queue, QueueError};
use crate::sender::{self, SendError, Sender, Settings, Step};
use crate::source::watch::{FsSignal, Watcher};
use crate::source::{self, Settle};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, watch, Notify};

type Stamp = (u64, Option<SystemTime>);

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
    /// New events were committed.
    Committed { events: i64 },
    /// Nothing new (already ingested, or unreadable and set aside). Do not look again unless it changes.
    Done,
    /// Look again later (it changed while being read, or a transient error).
    Retry,
}

/// Ingest one complete file and dispose of it as configured. Blocking.
pub fn process_file(
    queue: &mut Queue,
    config: &Config,
    src: &SourceConfig,
    path: &Path,
    dispose: bool,
) -> FileResult {
    let shown = path.display();
    match ingest::ingest_file(queue, src, path, age_policy(config, crate::now())) {
        Ok(Outcome::Ingested { file_id, counts }) => {
            tracing::info!(
                "{shown}: {} events queued ({} dead on arrival), {} duplicates of earlier exports, {} rows rejected, {} identifiers dropped",
                counts.events - counts.dead,
                counts.dead,
                counts.duplicates,
                counts.rejects,
                counts.warnings
            );
            if dispose {
                dispose_file(queue, src, path, file_id);
            }
            FileResult::Committed {
                events: counts.events - counts.dead,
            }
        }
        Ok(Outcome::AlreadyIngested(record)) => {
            tracing::info!(
                "{shown}: same content as {} (already ingested), nothing queued",
                record.path
            );
            if dispose {
                dispose_file(queue, src, path, record.id);
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
        Err(ingest::IngestError::Io { path: p, source })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            tracing::info!("{p}: gone before it could be read");
            FileResult::Done
        }
        Err(ingest::IngestError::Io { path: p, source }) => {
            tracing::error!("{p}: {source}");
            FileResult::Done
        }
        Err(ingest::IngestError::Queue(e)) => {
            tracing::error!("{shown}: not ingested, will retry: {e}");
            FileResult::Retry
        }
    }
}

fn dispose_file(queue: &Queue, src: &SourceConfig, path: &Path, file_id: i64) {
    let hash = ingest::content_hash(path).unwrap_or_default();
    match source::dispose(src, path, &hash) {
        Ok(how) => {
            tracing::debug!("{}: {how}", path.display());
            let _ = queue.mark_disposed(file_id, &how);
        }
        Err(e) => tracing::error!("{e} (its events are safely queued; the file stays where it is)"),
    }
}

fn quarantine(src: &SourceConfig, path: &Path, reason: &str) {
    let dir = src.path.join("quarantine");
    let hash = ingest::content_hash(path).unwrap_or_default();
    match source::move_aside(path, &dir, &hash) {
        Ok(target) => {
            let mut reason_path = target.clone().into_os_string();
            reason_path.push(".reason");
            let _ = std::fs::write(&reason_path, format!("{reason}\n"));
            tracing::warn!("{}: moved to {}", path.display(), target.display());
        }
        Err(e) => tracing::error!(
            "{}: cannot move to quarantine {}: {e}",
            path.display(),
            dir.display()
        ),
    }
}

/// Which source a file belongs to: the one whose folder holds it.
pub fn source_of<'c>(config: &'c Config, path: &Path) -> Option<&'c SourceConfig> {
    config
        .sources
        .iter()
        .find(|s| path.parent() == Some(s.path.as_path()))
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
            Err(e) => tracing::error!(
                "source {}: cannot list {}: {e}",
                src.name,
                src.path.display()
            ),
        }
    }
    let mut sender = Sender::new(
        Queue::open(&config.queue_path)?,
        config,
        Settings::from_config(config),
    )?;
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

/// The service: watch, ingest and send until SIGTERM or SIGINT.
pub fn run(config: Config) -> Result<(), DaemonError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(8)
        .build()?;
    runtime.block_on(serve(Arc::new(config)))
}

async fn serve(config: Arc<Config>) -> Result<(), DaemonError> {
    let ingest_queue = Queue::open(&config.queue_path)?;
    let sender = Sender::new(
        Queue::open(&config.queue_path)?,
        &config,
        Settings::from_config(&config),
    )?;
    tracing::info!(
        "started: {} source(s), queue {}, sending to {}{}{}",
        config.sources.len(),
        config.queue_path.display(),
        sender.endpoint(),
        if config.dry_run {
            " (dry run: nothing is sent)"
        } else {
            ""
        },
        config
            .test_event_code
            .as_deref()
            .map(|c| format!(" as test events ({c})"))
            .unwrap_or_default()
    );
    for w in &config.warnings {
        tracing::warn!("config: {w}");
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let wake = Arc::new(Notify::new());
    let ingest = tokio::spawn(ingest_loop(
        config.clone(),
        ingest_queue,
        wake.clone(),
        stop_rx.clone(),
    ));
    let send = tokio::spawn(send_loop(config.clone(), sender, wake, stop_rx));

    wait_for_stop_signal().await;
    tracing::info!("stopping: no new files taken; in-flight work gets up to 4 s");
    let _ = stop_tx.send(true);
    let both = async {
        let _ = ingest.await;
        let _ = send.await;
    };
    if tokio::time::timeout(Duration::from_secs(4), both)
        .await
        .is_err()
    {
        tracing::warn!("stopped with a request still in flight; its events stay queued and are re-sent with the same event ids");
    }
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

struct Watched {
    settle: Settle,
    /// Files looked at and left alone (already ingested and kept, unreadable): skipped until they change.
    handled: HashMap<PathBuf, Stamp>,
    next_rescan: Instant,
    folder_ok: bool,
}

async fn ingest_loop(
    config: Arc<Config>,
    mut queue: Queue,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let (tx, mut rx) = mpsc::channel(4096);
    let mut watcher = match Watcher::new(tx) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!("file watching unavailable ({e}); relying on periodic rescans");
            None
        }
    };
    let start = Instant::now();
    let ms = move || start.elapsed().as_millis() as u64;
    let mut watched: Vec<Watched> = config
        .sources
        .iter()
        .map(|_| Watched {
            settle: Settle::default(),
            handled: HashMap::new(),
            next_rescan: Instant::now(),
            folder_ok: true,
        })
        .collect();
    let dispose = !config.dry_run;
    loop {
        if *stop.borrow() {
            return;
        }
        let overflow = watcher.as_ref().is_some_and(Watcher::take_overflow);
        for (i, src) in config.sources.iter().enumerate() {
            let w = &mut watched[i];
            if !overflow && Instant::now() < w.next_rescan {
                continue;
            }
            w.next_rescan = Instant::now() + src.rescan;
            if let Some(watcher) = watcher.as_mut() {
                let _ = watcher.ensure(&src.path);
            }
            let s = src.clone();
            let ((), listing) = blocking((), move |_| source::scan(&s)).await;
            match listing {
                Ok(files) => {
                    if !w.folder_ok {
                        tracing::info!(
                            "source {}: folder {} is back",
                            src.name,
                            src.path.display()
                        );
                        w.folder_ok = true;
                    }
                    let now = ms();
                    w.handled
                        .retain(|p, _| files.iter().any(|(f, _, _)| f == p));
                    for (path, size, mtime) in files {
                        if w.handled.get(&path) != Some(&(size, mtime)) {
                            w.settle.observe(&path, size, mtime, now);
                        }
                    }
                }
                Err(e) => {
                    if w.folder_ok {
                        tracing::error!(
                            "source {}: cannot list {}: {e} (will keep trying)",
                            src.name,
                            src.path.display()
                        );
                        w.folder_ok = false;
                    }
                }
            }
        }

        let mut work = Vec::new();
        for (i, src) in config.sources.iter().enumerate() {
            for path in watched[i].settle.ready(ms(), src.settle) {
                watched[i].settle.forget(&path);
                work.push((i, path));
            }
        }
        if !work.is_empty() {
            let cfg = config.clone();
            let (q, results) = blocking(queue, move |q| {
                work.into_iter()
                    .map(|(i, path)| {
                        let result = process_file(q, &cfg, &cfg.sources[i], &path, dispose);
                        let stamp = std::fs::metadata(&path).ok().map(|m| ingest::stamp(&m));
                        (i, path, result, stamp)
                    })
                    .collect::<Vec<_>>()
            })
            .await;
            queue = q;
            let mut new_events = false;
            for (i, path, result, stamp) in results {
                match (result, stamp) {
                    (FileResult::Committed { events }, stamp) => {
                        new_events |= events > 0;
                        if let Some(stamp) = stamp {
                            watched[i].handled.insert(path, stamp);
                        }
                    }
                    (FileResult::Done, Some(stamp)) => {
                        watched[i].handled.insert(path, stamp);
                    }
                    (FileResult::Retry, Some((size, mtime))) => {
                        watched[i].settle.observe(&path, size, mtime, ms())
                    }
                    (_, None) => {}
                }
            }
            if new_events {
                wake.notify_one();
            }
            queue.release_memory();
            continue;
        }

        let now = ms();
        let next_settle = config
            .sources
            .iter()
            .enumerate()
            .filter_map(|(i, s)| watched[i].settle.next_due_ms(s.settle))
            .min()
            .map(|due| Instant::now() + Duration::from_millis(due.saturating_sub(now)));
        let next_rescan = watched
            .iter()
            .map(|w| w.next_rescan)
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(60));
        let deadline = next_settle.map_or(next_rescan, |s| s.min(next_rescan));
        tokio::select! {
            _ = stop.changed() => return,
            signal = rx.recv() => {
                let mut pending = signal.into_iter().collect::<Vec<_>>();
                while let Ok(more) = rx.try_recv() {
                    pending.push(more);
                }
                for signal in pending {
                    apply_signal(&config, &mut watched, signal, ms());
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => {}
        }
    }
}

fn apply_signal(config: &Config, watched: &mut [Watched], signal: FsSignal, now_ms: u64) {
    let (path, renamed) = match signal {
        FsSignal::Rescan => {
            for w in watched.iter_mut() {
                w.next_rescan = Instant::now();
            }
            return;
        }
        FsSignal::Changed(p) => (p, false),
        FsSignal::RenamedIn(p) => (p, true),
    };
    let Some(i) = config
        .sources
        .iter()
        .position(|s| path.parent() == Some(s.path.as_path()))
    else {
        return;
    };
    let src = &config.sources[i];
    let w = &mut watched[i];
    if !source::is_candidate(src, &path) {
        return;
    }
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_file() => {
            let (size, mtime) = ingest::stamp(&meta);
            if w.handled.get(&path) == Some(&(size, mtime)) {
                return;
            }
            if renamed {
                w.settle.renamed_in(&path, size, mtime, now_ms);
            } else {
                w.settle.observe(&path, size, mtime, now_ms);
            }
        }
        _ => {
            w.settle.forget(&path);
            w.handled.remove(&path);
        }
    }
}

async fn send_loop(
    config: Arc<Config>,
    mut sender: Sender,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    const MAINTENANCE_EVERY: Duration = Duration::from_secs(600);
    let mut next_maintenance = Instant::now();
    let mut paused_logged = false;
    loop {
        if *stop.borrow() {
            return;
        }
        if Instant::now() >= next_maintenance {
            let retention = config.sender.sent_retention;
            let (s, r) = blocking(sender, move |s| s.maintain(crate::now(), retention)).await;
            sender = s;
            if let Err(e) = r {
                tracing::error!("queue maintenance failed: {e}");
            }
            next_maintenance = Instant::now() + MAINTENANCE_EVERY;
        }
        let (s, step) = blocking(sender, |s| s.step(crate::now())).await;
        sender = s;
        let wait = match step {
            Ok(Step::Progress { sent, dead }) => {
                if paused_logged {
                    tracing::info!("sending resumed");
                    paused_logged = false;
                }
                tracing::info!(
                    "delivered {sent} events{}",
                    if dead > 0 {
                        format!(", {dead} dead-lettered")
                    } else {
                        String::new()
                    }
                );
                continue;
            }
            Ok(Step::Idle) => {
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep_until(next_maintenance.into()) => {}
                }
                continue;
            }
            Ok(Step::Retry {
                delay,
                connect_failure,
                reason,
            }) => {
                tracing::warn!(
                    "delivery failed: {reason}; events stay queued, next try in {:.1}s",
                    delay.as_secs_f64()
                );
                let probe = connect_failure.then(|| first_hop(&config)).flatten();
                (delay, probe)
            }
            Ok(Step::Paused { retry, reason }) => {
                if !paused_logged {
                    tracing::error!("{reason}");
                    paused_logged = true;
                }
                (retry, None)
            }
            Err(e) => {
                tracing::error!("sender: {e}; retrying in 5s");
                (Duration::from_secs(5), None)
            }
        };
        let (delay, probe) = wait;
        let recovered = async {
            match probe {
                Some(addr) => {
                    wait_until_reachable(
                        &addr,
                        config.sender.recovery_probe,
                        config.sender.recovery_jitter,
                    )
                    .await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(delay) => {}
            _ = recovered => tracing::info!("{} is reachable again; sending now", config.api_base),
        }
    }
}

/// `host:port` the client connects to first: the proxy if one is set, else the API host.
fn first_hop(config: &Config) -> Option<String> {
    let proxy = config.proxy.clone().or_else(|| {
        ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
            .iter()
            .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    });
    let url = proxy.as_deref().unwrap_or(&config.api_base);
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let authority = rest.split('/').next()?.rsplit('@').next()?;
    if authority.is_empty() {
        return None;
    }
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
        && !authority.ends_with(']');
    if has_port {
        Some(authority.to_string())
    } else {
        Some(format!(
            "{authority}:{}",
            if scheme == "https" { 443 } else { 80 }
        ))
    }
}

/// Return once a TCP connection to `addr` succeeds, plus a random jitter so that a fleet of tills
/// recovering from one outage does not send in lockstep.
async fn wait_until_reachable(addr: &str, every: Duration, jitter: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let attempt =
            tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr))
                .await;
        if matches!(attempt, Ok(Ok(_))) {
            tokio::time::sleep(jitter.mul_f64(fastrand::f64())).await;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_hop_of_urls() {
        let mut config = crate::config::parse(
            "event_source_id = \"7181537436256731137\"\ndry_run = true\nqueue_path = \"/tmp/q\"\n",
            &crate::config::Context::default(),
        )
        .unwrap();
        let cases = [
            (
                "https://business-api.tiktok.com",
                "business-api.tiktok.com:443",
            ),
            ("http://127.0.0.1:8080/", "127.0.0.1:8080"),
            ("http://localhost", "localhost:80"),
        ];
        for (base, expected) in cases {
            config.api_base = base.into();
            config.proxy = None;
            assert_eq!(first_hop(&config).as_deref(), Some(expected));
        }
        config.proxy = Some("http://user:pw@proxy.example:3128".into());
        assert_eq!(first_hop(&config).as_deref(), Some("proxy.example:3128"));
    }
}
