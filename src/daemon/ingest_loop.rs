//! The ingest loop: file-system signals and rescans feed the settle decision; complete files are
//! ingested on the blocking pool; the sender is woken when new events are committed. A file of an
//! append-mode source is read on every time it settles after a change, and once more when it has
//! been idle long enough for its held-back last record to be taken.

use super::{blocking, Health, LogLimiter, Part, Verdict};
use crate::config::Config;
use crate::intake::{self, ingest, FileResult};
use crate::queue::Queue;
use crate::source::watch::{FsSignal, Watcher};
use crate::source::{self, Settle};
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
}

impl Watched {
    /// Append-mode files due for their idle look now.
    fn idle_due(&self, now: Instant) -> Vec<PathBuf> {
        self.idle_looks.iter().filter(|(_, due)| **due <= now).map(|(p, _)| p.clone()).collect()
    }
}

pub(super) async fn ingest_loop(
    config: Arc<Config>,
    mut queue: Queue,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
    health: Arc<Health>,
) {
    let mut limiter = LogLimiter::new(Duration::from_secs(600));
    let mut hold_until: Option<Instant> = None;
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
            network: None,
            idle_looks: HashMap::new(),
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
                        src.path.display(),
                        src.network_poll
                    ),
                    None => tracing::info!("source {}: {} is on a local file system", src.name, src.path.display()),
                }
                w.network = network;
            }
            if w.network.is_some() {
                w.next_rescan = Instant::now() + src.network_poll;
            }
            match listing {
                Ok(files) => {
                    if !w.folder_ok {
                        tracing::info!("source {}: folder {} is back", src.name, src.path.display());
                        w.folder_ok = true;
                    }
                    let now = ms();
                    w.handled.retain(|p, _| files.iter().any(|(f, _, _)| f == p));
                    w.idle_looks.retain(|p, _| files.iter().any(|(f, _, _)| f == p));
                    for (path, size, mtime) in files {
                        if w.handled.get(&path) == Some(&(size, mtime)) {
                            continue;
                        }
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
                            src.path.display()
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
                let full = used > config.max_queue_bytes / 10 * 9;
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
        if !held {
            for (i, src) in config.sources.iter().enumerate() {
                for path in watched[i].settle.ready(ms(), src.settle) {
                    watched[i].settle.forget(&path);
                    watched[i].idle_looks.remove(&path);
                    work.push((i, path));
                }
                for path in watched[i].idle_due(Instant::now()) {
                    watched[i].idle_looks.remove(&path);
                    work.push((i, path));
                }
            }
        }
        if !work.is_empty() {
            crate::fault_point("ingest-loop");
            let cfg = config.clone();
            let h = health.clone();
            health.begin(Part::Ingest);
            let (q, results) = blocking(queue, move |q| {
                work.into_iter()
                    .map(|(i, path)| {
                        h.progress(Part::Ingest);
                        let result = match intake::companion_settling(&cfg.sources[i], &path) {
                            Some(companion) => {
                                tracing::debug!("{}: waits for {} to settle", path.display(), companion.display());
                                FileResult::Retry
                            }
                            None => intake::take(q, &cfg, &cfg.sources[i], &path, dispose),
                        };
                        let stamp = std::fs::metadata(&path).ok().map(|m| ingest::stamp(&m));
                        (i, path, result, stamp)
                    })
                    .collect::<Vec<_>>()
            })
            .await;
            health.end(Part::Ingest);
            queue = q;
            let mut new_events = false;
            for (i, path, result, stamp) in results {
                match (result, stamp) {
                    (FileResult::Committed { events, disposed }, stamp) => {
                        new_events |= events > 0;
                        if let (Some(stamp), true) = (stamp, disposed) {
                            watched[i].handled.insert(path, stamp);
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
                    (FileResult::Done, Some(stamp)) => {
                        watched[i].handled.insert(path, stamp);
                    }
                    (FileResult::Retry, Some((size, mtime))) => watched[i].settle.observe(&path, size, mtime, ms()),
                    (FileResult::QueueFull, Some((size, mtime))) => {
                        watched[i].settle.observe(&path, size, mtime, ms());
                        let why =
                            "queue full: a file did not fit; new files wait in their folders until sending frees space";
                        let _ = queue.update_agent_state(|s| s.ingest_held = Some(why.to_string()));
                        health.set_ingest_held(Some(why.to_string()));
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
        if src.done_marker.is_some() {
            // Perhaps a done marker: the next scan lists the file it marks.
            w.next_rescan = Instant::now();
        }
        return;
    }
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_file() => {
            let (size, mtime) = ingest::stamp(&meta);
            if w.handled.get(&path) == Some(&(size, mtime)) {
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
        }
    }
}
