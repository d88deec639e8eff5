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
use crate::queue::{CorruptEvent, FileState, Queue, QueueError};
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Archived files young enough to be looked at.
    pub looked_at: usize,
    /// Of those, the files that had to be hashed (not recorded as they are).
    pub hashed: usize,
    /// Files whose content the queue did not know, ingested again.
    pub reingested: usize,
    /// Events those files queued again (not known to the queue any more).
    pub events: i64,
    /// It stopped at a file that did not fit the queue (its cap, or the disk), named here with
    /// the error: that file and the ones after it wait for the next reconcile (the parts of it
    /// that fitted are kept). The caller says so (once, not at every try).
    pub waiting_for_room: Option<String>,
}

/// Why an archived file was not reconciled.
enum NotReconciled {
    /// The queue is full: the file waits for room, and so do the ones after it.
    QueueFull(QueueError),
    Failed(String),
}

impl From<QueueError> for NotReconciled {
    fn from(e: QueueError) -> Self {
        if e.is_full() {
            NotReconciled::QueueFull(e)
        } else {
            NotReconciled::Failed(e.to_string())
        }
    }
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
/// between two files once `stop` says so, and at a file that does not fit the queue
/// ([`Reconciled::waiting_for_room`]: call it again once there is room). Loud: one warning per
/// file, one summary, and the queue's `recovered` note for `status`.
pub fn reconcile(queue: &mut Queue, config: &Config, stop: &dyn Fn() -> bool) -> Reconciled {
    let mut done = Reconciled::default();
    let now = SystemTime::now();
    'sources: for src in config.sources.iter().filter(|s| archives(s)) {
        let keep = src.archive_keep(config.attribution_window);
        for (path, meta) in archived_files(src) {
            if stop() {
                break 'sources;
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
            match reconcile_file(queue, config, src, &path, &meta, &mut done) {
                Ok(()) => {}
                Err(NotReconciled::QueueFull(e)) => {
                    done.waiting_for_room = Some(format!("{}: the queue is full ({e})", shown(&path)));
                    break 'sources;
                }
                Err(NotReconciled::Failed(e)) => {
                    tracing::warn!("{}: archived file not reconciled with the queue: {e}", shown(&path))
                }
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
) -> Result<(), NotReconciled> {
    let text = path.display().to_string();
    let hash = ingest::content_hash(path, open::Links::Refuse).map_err(|e| NotReconciled::Failed(e.to_string()))?;
    let remember = |queue: &Queue, hash: &str| {
        queue.remember_archived(&text, &src.name, meta.len(), mtime_ns(meta), hash, crate::now())
    };
    // Known whole: only recorded. Known in part (a reconcile stopped by a full queue committed
    // some of its parts): read on, from where it stopped.
    let known = queue.file_by_hash(&hash)?;
    if known.as_ref().is_some_and(|f| f.state == FileState::Ingested) {
        return Ok(remember(queue, &hash)?);
    }
    // What those parts queued (dead on arrival ones too: the row does not tell them apart), counted
    // here with the rest: the stopped reconcile counted none of them.
    let earlier = known.map_or(0, |f| f.events);
    let outcome = match ingest::ingest_file(queue, src, path, age_policy(config, crate::now())) {
        Ok(outcome) => outcome,
        Err(ingest::IngestError::Queue(e)) => return Err(e.into()),
        Err(e) => return Err(NotReconciled::Failed(e.to_string())),
    };
    match outcome {
        ingest::Outcome::Ingested { counts, .. } => {
            let queued = counts.events - counts.dead + earlier;
            tracing::warn!(
                "{}: archived, but the queue no longer knew its content (lost after its commit): re-ingested from the archive, {queued} events queued again, {} already known",
                shown(path),
                counts.duplicates
            );
            done.reingested += 1;
            done.events += queued;
            Ok(remember(queue, &hash)?)
        }
        ingest::Outcome::AlreadyIngested(_) => Ok(remember(queue, &hash)?),
        ingest::Outcome::Changed => Err(NotReconciled::Failed("it changed while being read".into())),
        ingest::Outcome::Unreadable(reason) => Err(NotReconciled::Failed(format!("cannot be read: {reason}"))),
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
            // A row whose name or id cannot be read (damaged) matches no archived event; two such
            // rows would also be one key below, and the other offered again every time.
            Some(key) if !event.event_name.is_empty() && !event.event_id.is_empty() => {
                by_file.entry(key).or_default().push(event)
            }
            _ => lost.push(event),
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
                    crate::queue::event_named(&event.event_id, event.id),
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
            crate::queue::event_named(&event.event_id, event.id)
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

    /// A config reading native CSV from `dir/inbox` (archived to `dir/inbox/archive`), its queue in
    /// `dir`.
    fn archiving_config(dir: &Path) -> Config {
        let text = format!(
            "event_source_id = \"7181537436256731137\"\naccess_token_file = \"token\"\nqueue_path = \"{}\"\n\n[[source]]\npath = \"{}\"\nformat = \"native-csv\"\ntime_zone = \"UTC\"\ncurrency = \"USD\"\nshop_id = \"s042\"\n",
            dir.join("q.sqlite").display(),
            dir.join("inbox").display()
        );
        let ctx = crate::config::Context {
            config_dir: dir.into(),
            state_directory: Some(dir.join("state")),
            user_data_dir: None,
        };
        crate::config::parse(&text, &ctx).unwrap()
    }

    /// [`archiving_config`] in `dir`, its source folder made, and its queue opened for `role`.
    fn archiving_queue(dir: &Path, role: crate::queue::Role) -> (Config, Queue) {
        let config = archiving_config(dir);
        std::fs::create_dir_all(&config.sources[0].path).unwrap();
        let queue = role.open(&config.queue_path, 1 << 30).unwrap();
        (config, queue)
    }

    /// Write `text` as the file `name` in the source folder and take it: committed and archived.
    fn take_and_archive(queue: &mut Queue, config: &Config, name: &str, text: &str) {
        let src = &config.sources[0];
        let path = src.path.join(name);
        std::fs::write(&path, text).unwrap();
        let taken = super::super::take(queue, config, src, &path, true);
        assert!(matches!(taken, super::super::FileResult::Committed { disposed: true, .. }), "{taken:?}");
        assert!(!path.exists(), "archived");
    }

    /// A native CSV of `orders` one-item orders `{prefix}0`, `{prefix}1`..., sold an hour ago.
    fn orders_csv(prefix: &str, orders: usize) -> String {
        let at = crate::now() - 3600;
        let mut out = String::from("order_id,event_time,email,content_id,content_name,price,quantity\n");
        for o in 0..orders {
            out.push_str(&format!("{prefix}{o},{at},c{o}@example.com,SKU-{o},item {o},{}.50,1\n", o % 90 + 1));
        }
        out
    }

    /// The service's ingest connection takes files (read, committed, archived) compiling their
    /// statements once, though each file has a rejected row and a re-export of an order taken
    /// before (a day-so-far export): with rusqlite's default of 16 kept statements, every such
    /// file compiled its statements afresh, and a statement compiled again counts its runs from 0.
    #[test]
    fn taking_files_compiles_their_statements_once() {
        let dir = tempfile::tempdir().unwrap();
        let (config, mut queue) = archiving_queue(dir.path(), crate::queue::Role::Ingest);
        let files = 4;
        for file in 0..files {
            let mut text = orders_csv("d", 2 + file);
            text.push_str("bad,1796585696,x@example.com,SKU-1,item,n/a,1\n");
            take_and_archive(&mut queue, &config, &format!("day-{file}.csv"), &text);
        }
        for sql in [
            "INSERT INTO files (content_hash, path, source, state, ingested_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            "UPDATE files SET ingested_at = ?2 WHERE id = ?1",
            "UPDATE files SET state = ?2 WHERE id = ?1",
            "DELETE FROM positions WHERE file_id = ?1",
        ] {
            assert_eq!(queue.statement_counts(sql), (0, files as i32), "{sql}");
        }
    }

    /// Corrupt events whose rows are damaged past their payload (event ids that are not text, two
    /// of them from one archived file): no archived event can be matched to them, so each is given
    /// up at once, not offered again at every rebuild; a corrupt event with its id intact is
    /// rebuilt from the same file.
    #[test]
    fn corrupt_events_without_a_readable_event_id_are_given_up_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (config, mut queue) = archiving_queue(dir.path(), crate::queue::Role::Send);
        take_and_archive(&mut queue, &config, "a.csv", &orders_csv("r", 3));
        let ids: Vec<i64> = queue.pending_batch(10).unwrap().events.iter().map(|e| e.id).collect();
        let damage = rusqlite::Connection::open(&config.queue_path).unwrap();
        for id in &ids[..2] {
            damage.execute("UPDATE events SET event_id = zeroblob(id) WHERE id = ?1", [id]).unwrap();
        }
        queue.mark_dead(&ids, crate::queue::DeadReason::Corrupt, crate::queue::DeadReason::CORRUPT_MESSAGE).unwrap();
        assert_eq!(queue.corrupt_to_rebuild(10).unwrap().len(), 3);
        assert_eq!(rebuild_corrupt(&mut queue, &config).unwrap(), 1, "the one with its id");
        assert!(queue.corrupt_to_rebuild(10).unwrap().is_empty(), "the two without are given up");
        assert_eq!(rebuild_corrupt(&mut queue, &config).unwrap(), 0);
        let counts = queue.counts().unwrap();
        assert_eq!((counts.pending, counts.dead), (1, 2));
    }

    /// Archived files whose events the queue lost, re-ingested into a queue that fills on the way:
    /// the reconcile stops at the file that does not fit (the parts of it that did are kept) and
    /// says so; once there is room, the next one reads that file on from where it stopped and takes
    /// the files after it. Every order is queued once.
    #[test]
    fn a_reconcile_stopped_by_a_full_queue_goes_on_from_where_it_stopped_once_there_is_room() {
        let dir = tempfile::tempdir().unwrap();
        let config = archiving_config(dir.path());
        let archive = &config.sources[0].archive_dir;
        std::fs::create_dir_all(archive).unwrap();
        let per_file = 4 * ingest::PART_ORDERS as usize;
        for prefix in ["a", "b", "c"] {
            std::fs::write(archive.join(format!("{prefix}.csv")), orders_csv(prefix, per_file)).unwrap();
        }
        let mut queue = Queue::open(&config.queue_path).unwrap();
        // A few parts fit, not three files.
        queue.set_size_limit(3 * 1024 * 1024, crate::queue::WalDuty::AtBound).unwrap();

        let first = reconcile(&mut queue, &config, &|| false);
        assert!(
            first.waiting_for_room.as_deref().is_some_and(|w| w.contains("a.csv") || w.contains("b.csv")),
            "{first:?}"
        );
        assert!(first.reingested < 3, "{first:?}");
        let queued_first = queue.counts().unwrap().pending;
        assert!(queued_first > 0 && queued_first < 3 * per_file as i64, "{queued_first} queued");

        queue.set_size_limit(1 << 30, crate::queue::WalDuty::AtBound).unwrap();
        let second = reconcile(&mut queue, &config, &|| false);
        assert_eq!(second.waiting_for_room, None, "{second:?}");
        assert_eq!(first.reingested + second.reingested, 3, "{first:?} then {second:?}");
        // The file read on is counted whole, its parts from before the stop too.
        assert_eq!(first.events + second.events, 3 * per_file as i64, "{first:?} then {second:?}");
        let batch = queue.pending_batch(4 * per_file).unwrap();
        let mut queued: Vec<String> =
            batch.events.iter().map(|e| batch.event_id(e).rsplit(':').next().unwrap().to_string()).collect();
        queued.sort();
        let mut expected: Vec<String> =
            ["a", "b", "c"].iter().flat_map(|p| (0..per_file).map(move |o| format!("{p}{o}"))).collect();
        expected.sort();
        assert_eq!(queued.len(), expected.len(), "each order once");
        assert_eq!(queued, expected);

        let third = reconcile(&mut queue, &config, &|| false);
        assert_eq!((third.hashed, third.reingested), (0, 0), "recorded as reconciled: {third:?}");
    }
}
