//! The ingest loop: file-system signals and rescans feed the settle decision; complete files are
//! ingested on the blocking pool; the sender is woken when new events are committed. A file of an
//! append-mode source is read on every time it settles after a change, and once more when it has
//! been idle long enough for its held-back last record to be taken.

use super::{blocking, Health, LogLimiter, Part, Verdict};
use crate::config::Config;
use crate::intake::{self, ingest, FileResult};
use crate::queue::Queue;
use crate::source::watch::{FsSignal, Watcher};
use crate::source::{self, shown, Settle};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, watch, Notify};

type Stamp = (u64, Option<SystemTime>);

struct Watched {
    settle: Settle,
    /// Files looked at and left alone (already ingested and kept, unreadable): skipped until they change.
    handled: HashMap<PathBuf, Stamp>,
    next_rescan: Instant,
    folder_ok: bool,
    /// The network file system type the folder is on, when it is on one (polled, not watched).
    network: Option<String>,
    /// Append-mode files that hold back a record: when to look again if they do not change
    /// before (once they have been idle for `append_idle_secs`).
    idle_looks: HashMap<PathBuf, Instant>,
    /// Files committed but not archived or deleted (a read-only folder): left alone until their
    /// next try, unless they change.
    dispose_retry: HashMap<PathBuf, DisposeRetry>,
}

/// The backoff of a file that could not be archived or deleted.
#[derive(Debug, Clone, PartialEq)]
struct DisposeRetry {
    stamp: Stamp,
    due: Instant,
    delay: Duration,
    failures: u64,
}

/// The longest ingest waits after a committed part of a big file for another connection (the
/// sender marking a batch sent) that waits for the write lock. SQLite's busy handler is not a
/// queue: an ingest that started its next part at once would keep the lock from a waiting sender.
/// A waiter is woken by the commit's release (`queue::lock`) and leaves the wait within
/// microseconds; ingest waits only while someone waits: none of the sender's HTTP time.
const HAND_OVER_MAX: Duration = Duration::from_millis(20);

/// Let a connection waiting for the write lock have it: yield while one waits, at most
/// [`HAND_OVER_MAX`].
fn hand_over_lock() {
    let deadline = Instant::now() + HAND_OVER_MAX;
    while crate::queue::lock_wanted() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(50));
    }
}

/// Why ingest holds after a part of `file` did not fit. With nothing `pending`, sending cannot free
/// space: the file can never fit until the cap is raised (or old records pruned). Pure.
fn full_reason(file: &str, pending: bool, cap_bytes: u64) -> String {
    if pending {
        "queue full: a file did not fit; new files wait in their folders until sending frees space".into()
    } else {
        format!(
            "{file} can never fit: a part of it does not fit in max_queue_mb = {} and nothing is queued to send that would free space; raise max_queue_mb",
            cap_bytes / 1_048_576
        )
    }
}

/// The longest wait between two tries to archive or delete a file.
const MAX_DISPOSE_DELAY: Duration = Duration::from_secs(3600);

/// The next try after a failure: first after `rescan` (the next rescan), then after twice the last
/// wait, up to [`MAX_DISPOSE_DELAY`]. Pure.
fn dispose_backoff(before: Option<&DisposeRetry>, stamp: Stamp, rescan: Duration, now: Instant) -> DisposeRetry {
    let (delay, failures) = match before {
        Some(b) => ((b.delay * 2).min(MAX_DISPOSE_DELAY), b.failures + 1),
        None => (rescan.min(MAX_DISPOSE_DELAY), 1),
    };
    DisposeRetry { stamp, due: now + delay, delay, failures }
}

/// Whether a file seen with `stamp` waits for its next try to be archived (unchanged and not due).
fn waits_for_dispose(retry: Option<&DisposeRetry>, stamp: &Stamp, now: Instant) -> bool {
    retry.is_some_and(|r| r.stamp == *stamp && now < r.due)
}

impl Watched {
    /// Append-mode files due for their idle look now.
    fn idle_due(&self, now: Instant) -> Vec<PathBuf> {
        self.idle_looks.iter().filter(|(_, due)| **due <= now).map(|(p, _)| p.clone()).collect()
    }
}

/// The source folders' watch, set up when the pipeline starts (before READY, while the ingest
/// loop still waits for the queue check): a file renamed into a folder from then on is known to be
/// complete and taken at once, not after the settle time as a file the first scan lists.
pub(super) struct Watching {
    watcher: Option<Watcher>,
    signals: mpsc::Receiver<FsSignal>,
}

impl Watching {
    pub(super) fn start(config: &Config) -> Watching {
        let (tx, signals) = mpsc::channel(4096);
        let watcher = match Watcher::new(tx) {
            Ok(mut w) => {
                // Only local folders here: READY must not wait on a share that does not answer
                // (adding a watch looks the path up). A share's folder, and a folder missing now,
                // is watched by the first rescan, which runs off the runtime (and logs).
                let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
                for src in &config.sources {
                    let network = source::filesystem_of(&mounts, &src.path).is_some_and(|f| source::is_network_fs(&f));
                    if !network {
                        let _ = w.ensure(&src.path);
                    }
                }
                Some(w)
            }
            Err(e) => {
                tracing::warn!("file watching unavailable ({e}); relying on periodic rescans");
                None
            }
        };
        Watching { watcher, signals }
    }
}

pub(super) async fn ingest_loop(
    config: Arc<Config>,
    mut queue: Queue,
    watching: Watching,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
    health: Arc<Health>,
) {
    let mut limiter = LogLimiter::new(Duration::from_secs(600));
    let mut hold_until: Option<Instant> = None;
    let Watching { mut watcher, signals: mut rx } = watching;
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
            network: None,
            idle_looks: HashMap::new(),
            dispose_retry: HashMap::new(),
        })
        .collect();
    let dispose = config.disposes_files();
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
            let ((), (listing, fstype)) = blocking((), move |_| {
                let fstype = std::fs::read_to_string("/proc/self/mountinfo")
                    .ok()
                    .and_then(|m| source::filesystem_of(&m, &s.path));
                (source::scan(&s), fstype)
            })
            .await;
            let network = fstype.filter(|f| source::is_network_fs(f));
            if network != w.network {
                match &network {
                    Some(fs) => tracing::info!(
                        "source {}: {} is on a network file system ({fs}); file events are not reliable there, polling every {:?}",
                        src.name,
                        shown(&src.path),
                        src.network_poll
                    ),
                    None => tracing::info!("source {}: {} is on a local file system", src.name, shown(&src.path)),
                }
                w.network = network;
            }
            if w.network.is_some() {
                w.next_rescan = Instant::now() + src.network_poll;
            }
            match listing {
                Ok(files) => {
                    tracing::debug!("source {}: scanned {}: {} files listed", src.name, shown(&src.path), files.len());
                    if !w.folder_ok {
                        tracing::info!("source {}: folder {} is back", src.name, shown(&src.path));
                        w.folder_ok = true;
                    }
                    let now = ms();
                    w.handled.retain(|p, _| files.iter().any(|(f, _, _)| f == p));
                    w.idle_looks.retain(|p, _| files.iter().any(|(f, _, _)| f == p));
                    w.dispose_retry.retain(|p, _| files.iter().any(|(f, _, _)| f == p));
                    for (path, size, mtime) in files {
                        if w.handled.get(&path) == Some(&(size, mtime))
                            || waits_for_dispose(w.dispose_retry.get(&path), &(size, mtime), Instant::now())
                        {
                            tracing::debug!(
                                "{}: handled already and unchanged (or its archiving waits to be tried again)",
                                shown(&path)
                            );
                            continue;
                        }
                        tracing::debug!(
                            "{}: seen ({size} bytes); taken once unchanged for {:?}",
                            shown(&path),
                            src.settle
                        );
                        if src.append {
                            w.settle.observe_growing(&path, size, mtime, now);
                        } else if src.done_marker.is_some() {
                            // Listed only once its marker exists: the POS says it is complete.
                            w.settle.renamed_in(&path, size, mtime, now);
                        } else {
                            w.settle.observe(&path, size, mtime, now);
                        }
                    }
                }
                Err(e) => {
                    if w.folder_ok {
                        tracing::error!(
                            "source {}: cannot list {}: {e} (will keep trying)",
                            src.name,
                            shown(&src.path)
                        );
                        w.folder_ok = false;
                    }
                }
            }
        }

        let any_ready = config.sources.iter().enumerate().any(|(i, s)| {
            !watched[i].settle.ready(ms(), s.settle).is_empty() || !watched[i].idle_due(Instant::now()).is_empty()
        });
        let in_hold = hold_until.is_some_and(|t| Instant::now() < t);
        let held = in_hold
            || any_ready && {
                let used = queue.used_bytes();
                let full = super::over_high_water(used, config.max_queue_bytes);
                if full {
                    let why = format!(
                        "queue full ({} of {} MB): new files wait in their folders until sending frees space",
                        used / 1_048_576,
                        config.max_queue_bytes / 1_048_576
                    );
                    match limiter.check("queue full", Instant::now()) {
                        Verdict::Log => tracing::warn!("{why}"),
                        Verdict::LogWithCount(n) => tracing::warn!("{why} (still; {n} checks since the last message)"),
                        Verdict::Quiet => {}
                    }
                    let _ = queue.update_agent_state(|s| s.ingest_held = Some(why.clone()));
                    health.set_ingest_held(Some(why));
                    hold_until = Some(Instant::now() + Duration::from_secs(5));
                } else if health.ingest_held().is_some() {
                    tracing::info!("queue has room again; taking files");
                    let _ = queue.update_agent_state(|s| s.ingest_held = None);
                    health.set_ingest_held(None);
                    limiter.reset("queue full");
                }
                full
            };
        let mut work = Vec::new();
        if held && any_ready {
            tracing::debug!("files ready to be taken wait: the queue is full (looking again in 5 s)");
        }
        if !held {
            for (i, src) in config.sources.iter().enumerate() {
                for path in watched[i].settle.ready(ms(), src.settle) {
                    let known = intake::Known {
                        settled: watched[i].settle.stamp(&path),
                        dispose_failed_before: watched[i].dispose_retry.contains_key(&path),
                        ..intake::Known::default()
                    };
                    watched[i].settle.forget(&path);
                    watched[i].idle_looks.remove(&path);
                    work.push((i, path, known));
                }
                for path in watched[i].idle_due(Instant::now()) {
                    watched[i].idle_looks.remove(&path);
                    work.push((i, path, intake::Known::default()));
                }
            }
        }
        if !work.is_empty() {
            crate::fault_point("ingest-loop");
            let cfg = config.clone();
            let h = health.clone();
            let wake_sender = wake.clone();
            health.begin(Part::Ingest);
            let (q, results) = blocking(queue, move |q| {
                // Each committed part of a big file goes out while the rest is read: wake the
                // sender and hand it the queue's write lock if it waits for it.
                let part_done = || {
                    h.progress(Part::Ingest);
                    wake_sender.notify_one();
                    hand_over_lock();
                };
                work.into_iter()
                    .map(|(i, path, known)| {
                        let known = intake::Known { on_part: Some(&part_done), ..known };
                        h.progress(Part::Ingest);
                        // The file about to be taken: once it is archived, whatever is found at its
                        // path is another file (a POS writing the next export under the same name).
                        let before = source::look(&cfg.sources[i], &path).ok().map(|m| ingest::stamp(&m));
                        let result = match intake::companion_settling(&cfg.sources[i], &path) {
                            Some(companion) => {
                                tracing::debug!("{}: waits for {} to settle", shown(&path), shown(&companion));
                                FileResult::Retry
                            }
                            None => intake::take_with(q, &cfg, &cfg.sources[i], &path, dispose, known),
                        };
                        // Each file's events go out while the next file is read.
                        if matches!(result, FileResult::Committed { events, .. } | FileResult::Appended { events, .. } if events > 0) {
                            wake_sender.notify_one();
                            hand_over_lock();
                        }
                        crate::fault_pause("after-take", Duration::from_secs(2));
                        let stamp = source::look(&cfg.sources[i], &path).ok().map(|m| ingest::stamp(&m));
                        (i, path, result, stamp, before)
                    })
                    .collect::<Vec<_>>()
            })
            .await;
            health.end(Part::Ingest);
            queue = q;
            let mut new_events = false;
            for (i, path, result, stamp, before) in results {
                let w = &mut watched[i];
                let src = &config.sources[i];
                let undisposed =
                    matches!(result, FileResult::DisposeFailed | FileResult::Committed { disposed: false, .. });
                match (undisposed, stamp) {
                    (true, Some(stamp)) => {
                        let retry = dispose_backoff(w.dispose_retry.get(&path), stamp, src.rescan, Instant::now());
                        let key = format!("dispose {}", path.display());
                        match limiter.check(&key, Instant::now()) {
                            Verdict::Log if retry.failures == 1 => {}
                            Verdict::Log | Verdict::LogWithCount(_) => tracing::warn!(
                                "{}: still cannot be archived or deleted ({} tries so far); next try in {:?}",
                                shown(&path),
                                retry.failures,
                                retry.delay
                            ),
                            Verdict::Quiet => {}
                        }
                        w.dispose_retry.insert(path.clone(), retry);
                    }
                    (false, _) => {
                        if let Some(retry) = w.dispose_retry.remove(&path) {
                            limiter.reset(&format!("dispose {}", path.display()));
                            tracing::info!("{}: taken care of after {} failed tries", shown(&path), retry.failures);
                        }
                    }
                    (true, None) => {
                        w.dispose_retry.remove(&path);
                    }
                }
                match (result, stamp) {
                    (FileResult::Committed { events, disposed }, _) => {
                        new_events |= events > 0;
                        // Handled is the file that was taken (kept in place, or gone): a new file
                        // at the path since then has another stamp and is read.
                        if let (Some(taken), true) = (before, disposed) {
                            watched[i].handled.insert(path, taken);
                        }
                    }
                    (FileResult::Appended { events, stamp, idle_at }, _) => {
                        new_events |= events > 0;
                        match idle_at {
                            Some(at) => {
                                // A little after the file turns idle, so that the look finds it idle.
                                let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
                                let due = Instant::now() + wait + Duration::from_millis(100);
                                watched[i].idle_looks.insert(path.clone(), due);
                            }
                            None => {
                                watched[i].idle_looks.remove(&path);
                            }
                        }
                        watched[i].handled.insert(path, stamp);
                    }
                    // Not in `handled`: the next rescan (or a chmod's event) looks at it again.
                    (FileResult::DisposeFailed | FileResult::Blocked, _) => {}
                    (FileResult::Done, Some(_)) => {
                        if let Some(taken) = before {
                            watched[i].handled.insert(path, taken);
                        }
                    }
                    (FileResult::Retry, Some((size, mtime))) => watched[i].settle.observe(&path, size, mtime, ms()),
                    (FileResult::QueueFull, Some((size, mtime))) => {
                        watched[i].settle.observe(&path, size, mtime, ms());
                        let pending = queue.has_pending().unwrap_or(true);
                        let why = full_reason(&shown(&path), pending, config.max_queue_bytes);
                        if !pending
                            && limiter.check(&format!("never fits {}", path.display()), Instant::now())
                                != Verdict::Quiet
                        {
                            tracing::error!("{why}");
                        }
                        let _ = queue.update_agent_state(|s| s.ingest_held = Some(why.clone()));
                        health.set_ingest_held(Some(why));
                        hold_until = Some(Instant::now() + Duration::from_secs(5));
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
        let next_rescan =
            watched.iter().map(|w| w.next_rescan).min().unwrap_or_else(|| Instant::now() + Duration::from_secs(60));
        let next_idle_look = watched.iter().filter_map(|w| w.idle_looks.values().min().copied()).min();
        let deadline = [next_settle, next_idle_look].into_iter().flatten().fold(next_rescan, Instant::min);
        let deadline = match hold_until {
            Some(t) if held => deadline.max(t),
            _ => deadline,
        };
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
    let Some(i) = source::owner(&config.sources, &path) else {
        return;
    };
    let src = &config.sources[i];
    let w = &mut watched[i];
    if !source::is_candidate(src, &path) {
        tracing::debug!(
            "{}: not a candidate (its extension, hidden, a done marker or a folder): not read",
            shown(&path)
        );
        if src.done_marker.is_some() {
            // Perhaps a done marker: the next scan lists the file it marks.
            w.next_rescan = Instant::now();
        }
        return;
    }
    // Looked at as a rescan looks at it (a symbolic link not followed, special files listed): one
    // rule for files found at start and while running; opening decides whether one is read.
    match source::look(src, &path) {
        Ok(meta) if !meta.is_dir() => {
            let (size, mtime) = ingest::stamp(&meta);
            if w.handled.get(&path) == Some(&(size, mtime))
                || waits_for_dispose(w.dispose_retry.get(&path), &(size, mtime), Instant::now())
            {
                return;
            }
            if let Some(done) = source::marked_done(src, &path) {
                if done {
                    w.settle.renamed_in(&path, size, mtime, now_ms);
                }
            } else if renamed {
                w.settle.renamed_in(&path, size, mtime, now_ms);
            } else if src.append {
                w.settle.observe_growing(&path, size, mtime, now_ms);
            } else {
                w.settle.observe(&path, size, mtime, now_ms);
            }
        }
        _ => {
            w.settle.forget(&path);
            w.handled.remove(&path);
            w.idle_looks.remove(&path);
            w.dispose_retry.remove(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_with_nothing_to_send_says_the_file_can_never_fit() {
        let cases = [
            (true, "until sending frees space"),
            (false, "big.csv can never fit: a part of it does not fit in max_queue_mb = 16"),
        ];
        for (pending, says) in cases {
            assert!(full_reason("big.csv", pending, 16 * 1_048_576).contains(says), "{pending}");
        }
    }

    #[test]
    fn a_file_that_cannot_be_archived_is_tried_again_less_and_less_often() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let stamp: Stamp = (10, None);
        let mut retry: Option<DisposeRetry> = None;
        let mut delays = Vec::new();
        for _ in 0..16 {
            let next = dispose_backoff(retry.as_ref(), stamp, s(30), t0);
            delays.push(next.delay.as_secs());
            retry = Some(next);
        }
        assert_eq!(&delays[..9], [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(retry.as_ref().unwrap().failures, 16);
        let retry = dispose_backoff(None, stamp, s(1), t0);
        let cases = [
            ("unchanged, not due", stamp, t0, true),
            ("unchanged, due", stamp, t0 + s(1), false),
            ("changed: a new file under the name", (11, None), t0, false),
        ];
        for (name, seen, now, waits) in cases {
            assert_eq!(waits_for_dispose(Some(&retry), &seen, now), waits, "{name}");
        }
        assert!(!waits_for_dispose(None, &stamp, t0));
    }
}
