//! The life of one export file: take it (read, build, commit), then archive, delete or quarantine
//! it, with its done marker and its split export's companion. The one place that decides what
//! becomes of a file; the service's ingest loop and the one-shot commands (`run --once`, `import`)
//! both call [`take`].
//!
//! Downward only: [`crate::source`] (listing, settling, moving files) → here → [`crate::format`]
//! (readers) → [`crate::event`] (pure) → [`crate::queue`] (the commit). Whole files go through
//! [`ingest`], growing day files of append-mode sources through [`append`].

pub mod append;
pub mod ingest;
pub mod redo;

use crate::config::{Config, SourceConfig};
use crate::queue::{IngestCounts, Queue};
use crate::source::{self, open, shown};
use append::AppendOutcome;
use ingest::{AgePolicy, Outcome};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub fn age_policy(config: &Config, now: i64) -> AgePolicy {
    AgePolicy {
        now,
        window_secs: config.attribution_window.as_secs() as i64,
        future_secs: config.future_tolerance.as_secs() as i64,
        clock_trusted: true,
    }
}

/// [`age_policy`] as the queue's agent state says: a clock the sender found wrong (against
/// TikTok's `Date`) is not trusted to make anything dead on arrival.
fn age_policy_for(queue: &Queue, config: &Config) -> AgePolicy {
    let clock_wrong = queue.agent_state().map(|s| s.clock_wrong.is_some()).unwrap_or(false);
    AgePolicy { clock_trusted: !clock_wrong, ..age_policy(config, crate::now()) }
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

/// What the caller knows of a file it hands to [`take_with`] (the service's ingest loop).
#[derive(Default, Clone, Copy)]
pub struct Known<'a> {
    /// The size and mtime the file settled at: found otherwise, it is not the file that settled
    /// and is looked at again once it settles ([`FileResult::Retry`]).
    pub settled: Option<ingest::Stamp>,
    /// Archiving or deleting it failed before, and the caller summarises the repeats: another
    /// failure is logged at debug level only.
    pub dispose_failed_before: bool,
    /// Called after each committed part of a big file (the service wakes the sender).
    pub on_part: Option<&'a (dyn Fn() + Sync)>,
    /// `import --force`: this `files` row is an earlier read of the same content; the file is read
    /// again, and that read replaced in the new read's first commit.
    pub reread: Option<i64>,
}

/// Take one complete file: ingest it and, when `dispose`, archive/delete/quarantine it as its source
/// says (with its done marker and companion). A file of an append-mode source is read on from its
/// position instead and never disposed of. Blocking.
pub fn take(queue: &mut Queue, config: &Config, src: &SourceConfig, path: &Path, dispose: bool) -> FileResult {
    take_with(queue, config, src, path, dispose, Known::default())
}

/// [`take`], with what the caller knows of the file.
pub fn take_with(
    queue: &mut Queue,
    config: &Config,
    src: &SourceConfig,
    path: &Path,
    dispose: bool,
    known: Known<'_>,
) -> FileResult {
    if src.append {
        return take_append(queue, config, src, path);
    }
    let shown = shown(path);
    let quiet = known.dispose_failed_before;
    let companion = src.format.companion_of(path);
    let on_part = |_: &IngestCounts| known.on_part.map_or((), |f| f());
    let ages = age_policy_for(queue, config);
    let result = ingest::ingest_settled(queue, src, path, ages, known.settled, known.reread, &on_part);
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
            let disposed = !dispose || dispose_file(queue, src, path, file_id, quiet);
            if dispose && disposed {
                dispose_companion(src, companion.as_deref());
            }
            FileResult::Committed { events: counts.events - counts.dead, disposed }
        }
        Ok(Outcome::AlreadyIngested(record)) => {
            let known_as = shown_text(&record.path);
            if quiet {
                tracing::debug!("{shown}: same content as {known_as} (already ingested), nothing queued");
            } else {
                tracing::info!("{shown}: same content as {known_as} (already ingested), nothing queued; to read it again with the current config: offline-events-agent import --force FILE");
            }
            if dispose && !dispose_file(queue, src, path, record.id, quiet) {
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
    let age = std::fs::symlink_metadata(&companion).and_then(|m| m.modified()).ok()?.elapsed().ok()?;
    (age < src.settle).then_some(companion)
}

/// A path the queue stored as text, shown like [`shown`] (the text may hold control characters).
fn shown_text(text: &str) -> String {
    shown(Path::new(text))
}

/// Read on in a file of an append-mode source: never archived, deleted or quarantined.
fn take_append(queue: &mut Queue, config: &Config, src: &SourceConfig, path: &Path) -> FileResult {
    let shown = shown(path);
    let ages = age_policy_for(queue, config);
    match append::ingest_append(queue, src, path, ages, SystemTime::now()) {
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
    let shown = shown(path);
    match e {
        ingest::IngestError::Io { path: p, source } if open::refusal(&source).is_some() => {
            // A symbolic link or a special file: never read, never moved. Listed once in `status`
            // and `dead-letter list` (nothing of its target is named), looked at again if it changes.
            if queue.record_blocked(path, &src.name, &source.to_string(), crate::now()).unwrap_or(true) {
                tracing::warn!("{p}: {source}");
            } else {
                tracing::debug!("{p}: {source} (still)");
            }
            FileResult::Done
        }
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
/// stays, and is tried again later (its content is known, so nothing is queued twice). `quiet`:
/// it failed before and the caller summarises repeats.
fn dispose_file(queue: &Queue, src: &SourceConfig, path: &Path, file_id: i64, quiet: bool) -> bool {
    let before =
        (src.after_ingest == crate::config::AfterIngest::Archive).then(|| std::fs::symlink_metadata(path).ok());
    // The content hash names a file only when its name is taken in the archive: read it only then.
    match source::dispose(src, path, || ingest::content_hash(path, open::links(src)).unwrap_or_default()) {
        Ok(how) => {
            tracing::debug!("{}: {how}", shown(path));
            if let Some(Some(before)) = &before {
                redo::remember_archived(queue, src, path, before, file_id);
            }
            let _ = queue.mark_disposed(file_id, &how);
            if src.after_ingest != crate::config::AfterIngest::Keep {
                drop_marker(src, path);
            }
            true
        }
        Err(e) if quiet => {
            tracing::debug!("{e} (still)");
            false
        }
        Err(e) => {
            tracing::error!("{e} (its events are safely queued; the file stays where it is and is tried again later)");
            false
        }
    }
}

fn quarantine(src: &SourceConfig, path: &Path, reason: &str) {
    let dir = src.path.join("quarantine");
    match source::move_aside(path, &dir, || ingest::content_hash(path, open::links(src)).unwrap_or_default()) {
        Ok(target) => {
            let mut reason_path = target.clone().into_os_string();
            reason_path.push(".reason");
            let _ = std::fs::write(&reason_path, format!("{reason}\n"));
            tracing::warn!("{}: moved to {}", shown(path), shown(&target));
            drop_marker(src, path);
        }
        Err(e) => tracing::error!("{}: cannot move to quarantine {}: {e}", shown(path), shown(&dir)),
    }
}

/// Archive or delete the companion of a disposed file with it (it belongs to that export alone); a
/// failure is logged and leaves it in place, where it does no harm.
fn dispose_companion(src: &SourceConfig, companion: Option<&Path>) {
    let Some(c) = companion else { return };
    match source::dispose(src, c, || ingest::content_hash(c, open::links(src)).unwrap_or_default()) {
        Ok(how) => tracing::debug!("{}: {how} (companion)", shown(c)),
        Err(e) => tracing::warn!("{e} (the companion of a file that was taken; it stays)"),
    }
}

fn drop_marker(src: &SourceConfig, path: &Path) {
    if let Err(e) = source::remove_marker(src, path) {
        tracing::warn!("{}: cannot remove its done marker: {e}", shown(path));
    }
}

/// Take every complete file present now in every source folder (`run --once`). A folder that cannot
/// be listed is logged and skipped.
pub fn take_present(queue: &mut Queue, config: &Config, dispose: bool) {
    for src in &config.sources {
        match source::scan(src) {
            Ok(files) => {
                for (path, _, _) in files {
                    take(queue, config, src, &path, dispose);
                }
            }
            Err(e) => tracing::error!("source {}: cannot list {}: {e}", src.name, shown(&src.path)),
        }
    }
}
