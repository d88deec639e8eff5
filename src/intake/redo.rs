//! The archive is the queue's redo log. A file is archived only after its events committed, so an
//! archived file whose content the queue does not know lost its events after the commit (the
//! tail of a damaged WAL dropped on replay, a damaged queue moved aside): [`reconcile`] ingests
//! it again from the archive, without moving it (event ids keep TikTok free of duplicates), loudly.
//! An event whose stored JSON failed its checksum is rebuilt from its archived file
//! ([`rebuild_corrupt`]). Archived files are kept for `archive_keep_days` ([`prune_archive`]).
//!
//! Cheap when nothing is missing: the queue records each archived file's path, size and mtime
//! with its content hash, so only files it has not seen as they are now are hashed, and only files
//! younger than the attribution window are looked at. [`archive_age`] is the pure decision.

use super::{age_policy, ingest};
use crate::config::{AfterIngest, Config, SourceConfig};
use crate::queue::{CorruptEvent, Queue, QueueError};
use crate::source::{open, shown};
use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// What an archived file's age means for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveAge {
    /// Younger than the attribution window: its events could still be sent, so the queue must
    /// know its content.
    Reconcile,
    /// Kept, but nothing in it could still be sent.
    Keep,
    /// Older than the source keeps archived files: removed.
    Prune,
}

/// A file last modified at `mtime`, seen at `now`, for an attribution `window` and a `keep` time.
/// Pure.
pub fn archive_age(mtime: SystemTime, now: SystemTime, window: Duration, keep: Duration) -> ArchiveAge {
    let age = now.duration_since(mtime).unwrap_or_default();
    if age >= keep {
        ArchiveAge::Prune
    } else if age < window {
        ArchiveAge::Reconcile
    } else {
        ArchiveAge::Keep
    }
}

/// What [`reconcile`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Archived files young enough to be looked at.
    pub looked_at: usize,
    /// Of those, the files that had to be hashed (not recorded as they are).
    pub hashed: usize,
    /// Files whose content the queue did not know, ingested again.
    pub reingested: usize,
    /// Events those files queued again (not known to the queue any more).
    pub events: i64,
}

/// The archived files of `src` (regular files its format reads; companions and other files
/// are left alone), with their metadata. A missing archive folder has none.
fn archived_files(src: &SourceConfig) -> Vec<(PathBuf, std::fs::Metadata)> {
    let Ok(entries) = std::fs::read_dir(&src.archive_dir) else { return Vec::new() };
    let mut files: Vec<_> = entries
        .flatten()
        .filter_map(|e| {
            let meta = std::fs::symlink_metadata(e.path()).ok()?;
            meta.is_file().then(|| (e.path(), meta))
        })
        .collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files
}

/// Whether `path`, in an archive folder, is a file `src` reads (by its name).
fn reads(src: &SourceConfig, path: &Path) -> bool {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy()) else { return false };
    let ext = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase());
    !name.starts_with('.') && ext.is_some_and(|e| src.extensions.contains(&e)) && src.format.reads_file(&name)
}

fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos().min(i64::MAX as u128) as i64)
}

fn archives(src: &SourceConfig) -> bool {
    src.after_ingest == AfterIngest::Archive && !src.append
}

/// Ingest again every archived file younger than the attribution window whose content the queue
/// does not know; record the others' size and mtime so the next start does not hash them. Stops
/// between two files once `stop` says so. Loud: one warning per file, one summary, and the
/// queue's `recovered` note for `status`.
pub fn reconcile(queue: &mut Queue, config: &Config, stop: &dyn Fn() -> bool) -> Reconciled {
    let mut done = Reconciled::default();
    let now = SystemTime::now();
    for src in config.sources.iter().filter(|s| archives(s)) {
        let keep = src.archive_keep(config.attribution_window);
        for (path, meta) in archived_files(src) {
            if stop() {
                return done;
            }
            let (Ok(mtime), true) = (meta.modified(), reads(src, &path)) else { continue };
            if archive_age(mtime, now, config.attribution_window, keep) != ArchiveAge::Reconcile {
                continue;
            }
            done.looked_at += 1;
            let text = path.display().to_string();
            if queue.archive_known(&text, meta.len(), mtime_ns(&meta)).unwrap_or(false) {
                continue;
            }
            done.hashed += 1;
            if let Err(e) = reconcile_file(queue, config, src, &path, &meta, &mut done) {
                tracing::warn!("{}: archived file not reconciled with the queue: {e}", shown(&path));
            }
        }
    }
    if done.reingested > 0 {
        let note = format!(
            "re-ingested {} archived files ({} events queued again) whose events the queue had lost",
            done.reingested, done.events
        );
        tracing::warn!("{note}");
        let _ = queue.update_agent_state(|s| {
            s.recovered = Some(match s.recovered.take() {
                Some(before) => format!("{before}; {note}"),
                None => note.clone(),
            })
        });
    }
    done
}

/// One archived file not recorded as it is: hash it; ingest it again if the queue does not know
/// its content; record it.
fn reconcile_file(
    queue: &mut Queue,
    config: &Config,
    src: &SourceConfig,
    path: &Path,
    meta: &std::fs::Metadata,
    done: &mut Reconciled,
) -> Result<(), String> {
    let text = path.display().to_string();
    let hash = ingest::content_hash(path, open::Links::Refuse).map_err(|e| e.to_string())?;
    let remember = |queue: &Queue, hash: &str| {
        queue.remember_archived(&text, &src.name, meta.len(), mtime_ns(meta), hash, crate::now())
    };
    if queue.file_by_hash(&hash).map_err(|e| e.to_string())?.is_some() {
        return remember(queue, &hash).map_err(|e| e.to_string());
    }
    match ingest::ingest_file(queue, src, path, age_policy(config, crate::now())).map_err(|e| e.to_string())? {
        ingest::Outcome::Ingested { counts, .. } => {
            let queued = counts.events - counts.dead;
            tracing::warn!(
                "{}: archived, but the queue no longer knew its content (lost after its commit): re-ingested from the archive, {queued} events queued again, {} already known",
                shown(path),
                counts.duplicates
            );
            done.reingested += 1;
            done.events += queued;
            remember(queue, &hash).map_err(|e| e.to_string())
        }
        ingest::Outcome::AlreadyIngested(_) => remember(queue, &hash).map_err(|e| e.to_string()),
        ingest::Outcome::Changed => Err("it changed while being read".into()),
        ingest::Outcome::Unreadable(reason) => Err(format!("cannot be read: {reason}")),
    }
}

/// Record where a file of `src` went when it was archived (`before`: its metadata before the
/// move), with the content hash of its `files` row, so that [`reconcile`] need not hash it.
pub fn remember_archived(queue: &Queue, src: &SourceConfig, path: &Path, before: &std::fs::Metadata, file_id: i64) {
    use std::os::unix::fs::MetadataExt;
    let Some(name) = path.file_name() else { return };
    // Under its own name, or with part of its hash added when the name was taken: the one that
    // is the same inode (a rename) or, copied across file systems, of the same size.
    let candidates = std::fs::read_dir(&src.archive_dir).into_iter().flatten().flatten().map(|e| e.path());
    let stem = path.file_stem().unwrap_or_default().to_string_lossy().to_string();
    for candidate in std::iter::once(src.archive_dir.join(name)).chain(
        candidates.filter(|c| c.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&format!("{stem}.")))),
    ) {
        let Ok(meta) = std::fs::symlink_metadata(&candidate) else { continue };
        if meta.is_file() && (meta.ino() == before.ino() && meta.dev() == before.dev()) {
            let text = candidate.display().to_string();
            let _ = queue.remember_archived_file(&text, &src.name, meta.len(), mtime_ns(&meta), file_id, crate::now());
            return;
        }
    }
}

/// Rebuild the JSON of events dead-lettered as `corrupt` from their archived files (the same
/// event id read again), which puts them back in the queue; those no archived file can rebuild
/// stay dead, with a message saying so. Returns how many were rebuilt.
pub fn rebuild_corrupt(queue: &mut Queue, config: &Config) -> Result<usize, QueueError> {
    let corrupt = queue.corrupt_to_rebuild(10_000)?;
    let mut by_file: BTreeMap<(String, String), Vec<CorruptEvent>> = BTreeMap::new();
    let mut lost: Vec<CorruptEvent> = Vec::new();
    for event in corrupt {
        match event.archived.clone() {
            Some(key) => by_file.entry(key).or_default().push(event),
            None => lost.push(event),
        }
    }
    let mut rebuilt = 0;
    for ((path, source), events) in by_file {
        let path = PathBuf::from(path);
        let Some(src) = config.sources.iter().find(|s| s.name == source) else {
            lost.extend(events);
            continue;
        };
        let mut wanted: HashMap<(String, String), CorruptEvent> =
            events.into_iter().map(|e| ((e.event_name.clone(), e.event_id.clone()), e)).collect();
        let expected = wanted.values().next().and_then(|e| e.content_hash.clone());
        let mut found: Vec<(CorruptEvent, crate::event::Event)> = Vec::new();
        match ingest::scan_content(&path) {
            Ok((hash, utf8)) if Some(&hash) == expected.as_ref() => {
                let ages = age_policy(config, crate::now());
                let _ = ingest::read_file(src, &path, utf8, ages, &mut |f| {
                    if let ingest::Found::Event { event, .. } = f {
                        let key = (event.event.to_string(), event.event_id.as_str().to_string());
                        if let Some(e) = wanted.remove(&key) {
                            found.push((e, event.clone()));
                        }
                    }
                    ControlFlow::Continue(())
                });
            }
            Ok(_) => tracing::warn!("{}: not the archived file it was (its content changed)", shown(&path)),
            Err(e) => tracing::warn!("{}: cannot read the archived file: {e}", shown(&path)),
        }
        for (event, built) in found {
            if queue.restore_payload(event.id, &built)? {
                tracing::warn!(
                    "event {}: its damaged JSON was rebuilt from {} and it is queued again",
                    event.event_id,
                    shown(&path)
                );
                rebuilt += 1;
            }
        }
        lost.extend(wanted.into_values());
    }
    for event in &lost {
        tracing::error!(
            "event {}: its stored JSON is damaged and no archived copy of its file can rebuild it; dead-lettered as corrupt",
            event.event_id
        );
    }
    queue.give_up_rebuild(&lost.iter().map(|e| e.id).collect::<Vec<_>>())?;
    Ok(rebuilt)
}

/// Remove archived files older than their source keeps them (by modification time), logged per
/// source. Returns how many were removed.
pub fn prune_archive(queue: &Queue, config: &Config) -> usize {
    let now = SystemTime::now();
    let mut total = 0;
    for src in config.sources.iter().filter(|s| archives(s)) {
        let keep = src.archive_keep(config.attribution_window);
        let mut removed = 0;
        for (path, meta) in archived_files(src) {
            let Ok(mtime) = meta.modified() else { continue };
            if archive_age(mtime, now, config.attribution_window, keep) != ArchiveAge::Prune {
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    let _ = queue.forget_archived(&path.display().to_string());
                    removed += 1;
                }
                Err(e) => tracing::warn!("{}: cannot remove the old archived file: {e}", shown(&path)),
            }
        }
        if removed > 0 {
            tracing::info!(
                "source {}: removed {removed} archived files older than {} days from {}",
                src.name,
                keep.as_secs() / 86_400,
                shown(&src.archive_dir)
            );
        }
        total += removed;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_archived_file_is_reconciled_within_the_window_kept_after_it_and_pruned_past_keep() {
        let day = Duration::from_secs(86_400);
        let now = SystemTime::UNIX_EPOCH + day * 1000;
        let cases = [
            ("just archived", Duration::ZERO, 28, 35, ArchiveAge::Reconcile),
            ("a day short of the window", day * 27, 28, 35, ArchiveAge::Reconcile),
            ("at the window", day * 28, 28, 35, ArchiveAge::Keep),
            ("in the margin", day * 34, 28, 35, ArchiveAge::Keep),
            ("at keep", day * 35, 28, 35, ArchiveAge::Prune),
            ("keep shorter than the window wins", day * 2, 28, 1, ArchiveAge::Prune),
        ];
        for (name, age, window, keep, expected) in cases {
            assert_eq!(archive_age(now - age, now, day * window, day * keep), expected, "{name}");
        }
        // A modification time in the future (a clock set back) is young.
        assert_eq!(archive_age(now + day, now, day * 28, day * 35), ArchiveAge::Reconcile);
    }
}
