//! The queue: one SQLite database, the agent's only durable state. Only this module knows SQL.
//!
//! Events are stored as the JSON of their `data[]` element, already normalised and hashed: no raw
//! PII ever reaches this file. Ingesting a file is one transaction: its events, its rejected rows
//! and its "done" record commit together or not at all. Commits are durable (`synchronous=FULL`
//! in WAL mode) before the caller is told, so a file may be archived once [`Ingest::commit`]
//! returns.

mod schema;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction};
use serde::Serialize;
use std::path::{Path, PathBuf};

pub const PENDING: i64 = 0;
pub const SENT: i64 = 1;
pub const DEAD: i64 = 2;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue {path}: {source}")]
    Sqlite { path: PathBuf, source: rusqlite::Error },
    #[error("queue {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("queue {0} does not exist (has the agent run yet?)")]
    Missing(PathBuf),
    #[error("queue {path} has schema version {found}, newer than this agent knows ({known}); upgrade the agent")]
    TooNew { path: PathBuf, found: i64, known: i64 },
}

pub type Result<T> = std::result::Result<T, QueueError>;

impl QueueError {
    /// The database hit its size cap (`max_page_count`) or the disk is full.
    pub fn is_full(&self) -> bool {
        match self {
            QueueError::Sqlite { source, .. } => source.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull),
            QueueError::Io { source, .. } => source.raw_os_error() == Some(28),
            _ => false,
        }
    }
}

pub struct Queue {
    conn: Connection,
    path: PathBuf,
}

/// What [`Queue::open_checked`] did about a damaged queue.
#[derive(Debug, Clone)]
pub struct Recovery {
    pub moved_to: PathBuf,
    pub salvaged: usize,
    pub reason: String,
}

type SalvagedValues = (String, String, i64, String, i64, i64, i64, Option<i64>, Option<String>, Option<String>, String);

struct SalvagedRow {
    id: i64,
    values: SalvagedValues,
}

fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase))
}

/// An event ready to be queued.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub event_name: &'a str,
    pub event_id: &'a str,
    pub event_time: i64,
    pub order_id: &'a str,
    pub payload: &'a str,
    /// `Some(reason)` queues it directly as dead (e.g. `expired`).
    pub dead_reason: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    Queued,
    /// The same event was queued before, from another file (a re-export).
    Duplicate,
    /// The same event id appeared earlier in this very file (rows of one order not consecutive).
    RepeatedInFile,
}

/// A queued event as the sender sees it.
#[derive(Debug, Clone)]
pub struct Queued {
    pub id: i64,
    pub event_id: String,
    pub event_time: i64,
    pub payload: String,
}

/// An event as `watch` shows it.
#[derive(Debug, Clone)]
pub struct TapEvent {
    pub id: i64,
    pub state: i64,
    pub file: Option<String>,
    pub payload: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileRecord {
    pub id: i64,
    pub content_hash: String,
    pub path: String,
    pub source: String,
    pub state: String,
    pub events: i64,
    pub duplicates: i64,
    pub rejects: i64,
    pub warnings: i64,
    pub ingested_at: i64,
    pub disposed: Option<String>,
    pub skipped: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeadEvent {
    pub id: i64,
    pub event_id: String,
    pub order_id: String,
    pub event_time: i64,
    pub reason: String,
    pub message: Option<String>,
    pub attempts: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RejectRecord {
    pub id: i64,
    pub path: String,
    pub line: i64,
    pub field: Option<String>,
    pub reason: String,
    pub at: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SendLogEntry {
    pub id: i64,
    pub at: i64,
    pub events: i64,
    pub http_status: Option<i64>,
    pub code: Option<i64>,
    pub class: String,
    pub message: String,
    pub request_id: Option<String>,
    pub test_event_code: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub pending: i64,
    pub sent: i64,
    pub dead: i64,
    pub oldest_pending_queued_at: Option<i64>,
    pub oldest_pending_event_time: Option<i64>,
    pub files: i64,
    pub rejects: i64,
}

/// How far a file read in append mode has been turned into events (see `crate::append`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Position {
    /// Bytes from the start of the file whose events (rejects, skips) are committed.
    pub offset: u64,
    /// Physical lines (LF) before `offset`.
    pub lines: u64,
    /// SHA-256 (hex) of the first min(`offset`, 4096) bytes.
    pub fingerprint: String,
    pub inode: u64,
}

/// A stored [`Position`] with the file it belongs to, as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PositionRecord {
    pub source: String,
    pub path: String,
    #[serde(flatten)]
    pub position: Position,
    /// The `files` row its events are recorded under.
    pub file_id: Option<i64>,
    pub updated_at: i64,
}

/// What one delivery attempt did to its events.
#[derive(Debug, Clone, Copy)]
pub enum Disposition<'a> {
    Sent { at: i64 },
    Dead { reason: &'a str, message: &'a str },
    StillPending,
}

/// Which dead events a `dead-letter` command acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadFilter {
    All,
    Ids(Vec<i64>),
    Reason(String),
}

impl Queue {
    /// Open (creating if needed, mode 0600) and migrate.
    pub fn open(path: &Path) -> Result<Queue> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| QueueError::Io { path: dir.to_path_buf(), source })?;
        }
        create_private(path).map_err(|source| QueueError::Io { path: path.to_path_buf(), source })?;
        let conn = Connection::open(path).map_err(|source| QueueError::Sqlite { path: path.to_path_buf(), source })?;
        let mut queue = Queue { conn, path: path.to_path_buf() };
        queue.configure()?;
        let found = schema::migrate(&mut queue.conn).map_err(|source| queue.sqlite(source))?;
        if found > schema::VERSION {
            return Err(QueueError::TooNew { path: path.to_path_buf(), found, known: schema::VERSION });
        }
        Ok(queue)
    }

    /// Open the queue for the service, recovering from damage. A file SQLite cannot use (not a
    /// database, a damaged page, a broken schema, as `PRAGMA quick_check` or the open itself tells)
    /// is moved aside with its `-wal` and `-shm` files; a fresh queue takes its place, and every
    /// event that can still be read from the damaged copy is carried over (so delivered ids stay
    /// known and queued events are not lost). Export files not yet archived are simply ingested
    /// again. Other errors (permissions, I/O) are returned: moving a healthy queue aside would lose
    /// more than it saves.
    pub fn open_checked(path: &Path) -> Result<(Queue, Option<Recovery>)> {
        let damage = match Queue::open(path) {
            Ok(queue) => match queue.quick_check() {
                Ok(()) => {
                    queue.release_memory();
                    return Ok((queue, None));
                }
                Err(reason) => reason,
            },
            Err(QueueError::Sqlite { source, .. }) if is_damage(&source) => source.to_string(),
            Err(e) => return Err(e),
        };
        let stamp = jiff::Timestamp::now().as_second();
        let moved_to = path.with_file_name(format!(
            "{}.damaged-{stamp}",
            path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default()
        ));
        for suffix in ["", "-wal", "-shm"] {
            let mut from = path.as_os_str().to_owned();
            from.push(suffix);
            let mut to = moved_to.as_os_str().to_owned();
            to.push(suffix);
            if Path::new(&from).exists() {
                std::fs::rename(&from, &to).map_err(|source| QueueError::Io { path: PathBuf::from(&from), source })?;
            }
        }
        let mut queue = Queue::open(path)?;
        let salvaged = queue.salvage_from(&moved_to);
        let recovery = Recovery { moved_to, salvaged, reason: damage };
        queue.set_state(
            "recovered",
            Some(&format!(
                "the queue was damaged ({}) and was moved aside to {}; {} events were carried over; unarchived export files are ingested again",
                recovery.reason,
                recovery.moved_to.display(),
                recovery.salvaged
            )),
        )?;
        Ok((queue, Some(recovery)))
    }

    /// `PRAGMA quick_check` on a connection of its own with a small page cache, closed at once, so
    /// that reading every page once does not leave the service's connections with a full cache.
    fn quick_check(&self) -> std::result::Result<(), String> {
        let check =
            Connection::open_with_flags(&self.path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(|e| e.to_string())?;
        check.execute_batch("PRAGMA cache_size = 64;").map_err(|e| e.to_string())?;
        let mut stmt = check.prepare("PRAGMA quick_check").map_err(|e| e.to_string())?;
        let rows: Vec<String> =
            stmt.query_map([], |r| r.get::<_, String>(0)).and_then(|rows| rows.collect()).map_err(|e| e.to_string())?;
        match rows.as_slice() {
            [ok] if ok == "ok" => Ok(()),
            problems => {
                Err(format!("quick_check: {}", problems.iter().take(3).cloned().collect::<Vec<_>>().join("; ")))
            }
        }
    }

    /// Copy every readable event of a damaged database into this one, skipping over what cannot be
    /// read. Returns how many were carried over.
    fn salvage_from(&mut self, damaged: &Path) -> usize {
        let Ok(old) = Connection::open_with_flags(damaged, OpenFlags::SQLITE_OPEN_READ_ONLY) else { return 0 };
        let Ok(max_id) = old.query_row("SELECT MAX(id) FROM events", [], |r| r.get::<_, i64>(0)) else { return 0 };
        let mut failures = 0;
        let Ok(tx) = self.conn.transaction() else { return 0 };
        let mut carried = 0;
        let mut cursor = 0i64;
        while cursor < max_id {
            let chunk: rusqlite::Result<Vec<SalvagedRow>> = old
                .prepare(
                    "SELECT id, event_name, event_id, event_time, order_id, state, attempts, queued_at, sent_at,
                            dead_reason, dead_message, COALESCE((SELECT json FROM payloads p WHERE p.id = events.id), '')
                     FROM events WHERE id > ?1 ORDER BY id LIMIT 500",
                )
                .and_then(|mut stmt| {
                    stmt.query_map([cursor], |r| {
                        Ok(SalvagedRow {
                            id: r.get(0)?,
                            values: (
                                r.get(1)?,
                                r.get(2)?,
                                r.get(3)?,
                                r.get(4)?,
                                r.get(5)?,
                                r.get(6)?,
                                r.get(7)?,
                                r.get(8)?,
                                r.get(9)?,
                                r.get(10)?,
                                r.get(11)?,
                            ),
                        })
                    })?
                    .collect()
                });
            match chunk {
                Ok(rows) if rows.is_empty() => break,
                Ok(rows) => {
                    cursor = rows.last().map_or(cursor + 500, |r| r.id);
                    for row in rows {
                        let v = &row.values;
                        let inserted = tx.execute(
                            "INSERT OR IGNORE INTO events (event_name, event_id, event_time, order_id, state, attempts, queued_at,
                                sent_at, dead_reason, dead_message) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                            params![v.0, v.1, v.2, v.3, v.4, v.5, v.6, v.7, v.8, v.9],
                        );
                        if inserted.unwrap_or(0) == 1 {
                            carried += 1;
                            if !v.10.is_empty() {
                                let _ = tx.execute(
                                    "INSERT INTO payloads (id, json) VALUES (?1, ?2)",
                                    params![tx.last_insert_rowid(), v.10],
                                );
                            }
                        }
                    }
                }
                // A damaged stretch: step over it, but give up on a file that is damaged throughout.
                Err(_) => {
                    cursor += 500;
                    failures += 1;
                    if failures > 1000 {
                        break;
                    }
                }
            }
        }
        if tx.commit().is_err() {
            return 0;
        }
        carried
    }

    /// Open an existing queue for reading (status, watch, dead-letter list).
    pub fn open_existing(path: &Path) -> Result<Queue> {
        if !path.exists() {
            return Err(QueueError::Missing(path.to_path_buf()));
        }
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .map_err(|source| QueueError::Sqlite { path: path.to_path_buf(), source })?;
        let mut queue = Queue { conn, path: path.to_path_buf() };
        queue.configure()?;
        let found = schema::migrate(&mut queue.conn).map_err(|source| queue.sqlite(source))?;
        if found > schema::VERSION {
            return Err(QueueError::TooNew { path: path.to_path_buf(), found, known: schema::VERSION });
        }
        Ok(queue)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn configure(&mut self) -> Result<()> {
        self.conn
            .execute_batch(
                "PRAGMA auto_vacuum = INCREMENTAL;
                 PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = FULL;
                 PRAGMA foreign_keys = ON;
                 PRAGMA busy_timeout = 10000;
                 PRAGMA journal_size_limit = 67108864;
                 PRAGMA cache_size = -2048;",
            )
            .map_err(|e| self.sqlite(e))
    }

    fn sqlite(&self, source: rusqlite::Error) -> QueueError {
        QueueError::Sqlite { path: self.path.clone(), source }
    }

    /// Give the page cache back to the allocator (after big scans, when idle).
    pub fn release_memory(&self) {
        let _ = self.conn.execute_batch("PRAGMA shrink_memory;");
    }

    // ---- files -------------------------------------------------------------------------------

    /// The record of a file already ingested, by content hash.
    pub fn file_by_hash(&self, content_hash: &str) -> Result<Option<FileRecord>> {
        self.conn
            .query_row(
                &format!("SELECT {FILE_COLUMNS} FROM files WHERE content_hash = ?1"),
                [content_hash],
                file_record,
            )
            .optional()
            .map_err(|e| self.sqlite(e))
    }

    /// Start ingesting a file: everything added through the returned [`Ingest`] commits at once.
    pub fn begin_ingest(&mut self, content_hash: &str, path: &Path, source: &str, now: i64) -> Result<Ingest<'_>> {
        let path_text = path.display().to_string();
        let qpath = self.path.clone();
        let err = |source| QueueError::Sqlite { path: qpath.clone(), source };
        let tx = self.conn.transaction().map_err(err)?;
        tx.execute(
            "INSERT INTO files (content_hash, path, source, state, ingested_at) VALUES (?1, ?2, ?3, 'ingesting', ?4)",
            params![content_hash, path_text, source, now],
        )
        .map_err(err)?;
        let file_id = tx.last_insert_rowid();
        Ok(Ingest { tx, file_id, path: path_text, now, queue_path: qpath, counts: IngestCounts::default() })
    }

    /// The committed position of a file read in append mode, and the `files` row its events are
    /// recorded under.
    pub fn position(&self, source: &str, path: &Path) -> Result<Option<(Position, Option<i64>)>> {
        self.conn
            .query_row(
                "SELECT byte_offset, lines, fingerprint, inode, file_id FROM positions WHERE source = ?1 AND path = ?2",
                params![source, path.display().to_string()],
                |r| {
                    let position = Position {
                        offset: r.get::<_, i64>(0)? as u64,
                        lines: r.get::<_, i64>(1)? as u64,
                        fingerprint: r.get(2)?,
                        inode: r.get::<_, i64>(3)? as u64,
                    };
                    Ok((position, r.get(4)?))
                },
            )
            .optional()
            .map_err(|e| self.sqlite(e))
    }

    /// The positions of files read in append mode, most recently moved first.
    pub fn positions(&self, limit: usize) -> Result<Vec<PositionRecord>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT source, path, byte_offset, lines, fingerprint, inode, file_id, updated_at FROM positions
                 ORDER BY updated_at DESC, path LIMIT ?1",
            )
            .map_err(|e| self.sqlite(e))?;
        let rows = stmt
            .query_map([limit as i64], |r| {
                Ok(PositionRecord {
                    source: r.get(0)?,
                    path: r.get(1)?,
                    position: Position {
                        offset: r.get::<_, i64>(2)? as u64,
                        lines: r.get::<_, i64>(3)? as u64,
                        fingerprint: r.get(4)?,
                        inode: r.get::<_, i64>(5)? as u64,
                    },
                    file_id: r.get(6)?,
                    updated_at: r.get(7)?,
                })
            })
            .map_err(|e| self.sqlite(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.sqlite(e))
    }

    /// Start reading the next part of a file in append mode: everything added through the returned
    /// [`Ingest`] commits at once with the new position ([`Ingest::commit_at`]). The events are
    /// recorded under the `files` row `file_id` (the file read so far), or under a new one (state
    /// `append`, content hash `append:<id>`) when `None`: a file read from its start again.
    pub fn begin_append(&mut self, file_id: Option<i64>, path: &Path, source: &str, now: i64) -> Result<Ingest<'_>> {
        let path_text = path.display().to_string();
        let qpath = self.path.clone();
        let err = |source| QueueError::Sqlite { path: qpath.clone(), source };
        let tx = self.conn.transaction().map_err(err)?;
        let file_id = match file_id {
            Some(id) => id,
            None => {
                tx.execute(
                    "INSERT INTO files (content_hash, path, source, state, ingested_at)
                     VALUES ('append:' || (SELECT COALESCE(MAX(id), 0) + 1 FROM files), ?1, ?2, 'append', ?3)",
                    params![path_text, source, now],
                )
                .map_err(err)?;
                tx.last_insert_rowid()
            }
        };
        Ok(Ingest { tx, file_id, path: path_text, now, queue_path: qpath, counts: IngestCounts::default() })
    }

    pub fn mark_disposed(&self, file_id: i64, how: &str) -> Result<()> {
        self.conn
            .execute("UPDATE files SET disposed = ?2 WHERE id = ?1", params![file_id, how])
            .map(drop)
            .map_err(|e| self.sqlite(e))
    }

    /// Record a file that could not be read at all (kept for `status`; not a "done" record).
    pub fn record_unreadable(&self, path: &Path, source: &str, reason: &str, now: i64) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO rejects (file_id, path, line, field, reason, at) VALUES (NULL, ?1, 0, NULL, ?2, ?3)",
                params![path.display().to_string(), format!("file not readable ({source}): {reason}"), now],
            )
            .map(drop)
            .map_err(|e| self.sqlite(e))
    }

    /// [`Queue::record_unreadable`], unless the same reason is recorded for the path already (a
    /// file in append mode stays in place and is looked at again on every change).
    pub fn record_unreadable_once(&self, path: &Path, source: &str, reason: &str, now: i64) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO rejects (file_id, path, line, field, reason, at) SELECT NULL, ?1, 0, NULL, ?2, ?3
                 WHERE NOT EXISTS (SELECT 1 FROM rejects WHERE path = ?1 AND line = 0 AND reason = ?2)",
                params![path.display().to_string(), format!("file not readable ({source}): {reason}"), now],
            )
            .map(drop)
            .map_err(|e| self.sqlite(e))
    }

    /// A file that could not be opened or read (permissions, an I/O error) and stays where it is:
    /// recorded once per path and reason (it is tried again on every scan). True when newly recorded.
    pub fn record_blocked(&self, path: &Path, source: &str, reason: &str, now: i64) -> Result<bool> {
        self.conn
            .execute(
                "INSERT INTO rejects (file_id, path, line, field, reason, at) SELECT NULL, ?1, 0, 'file', ?2, ?3
                 WHERE NOT EXISTS (SELECT 1 FROM rejects WHERE path = ?1 AND line = 0 AND field = 'file' AND reason = ?2)",
                params![path.display().to_string(), format!("file not readable ({source}): {reason}"), now],
            )
            .map(|n| n > 0)
            .map_err(|e| self.sqlite(e))
    }

    /// The file at `path` was read after all: forget that it could not be. True when it had been
    /// recorded as blocked.
    pub fn clear_blocked(&self, path: &Path) -> Result<bool> {
        // Looked up first (an index read): a DELETE would be a write transaction, and an fsync, per file.
        let blocked: bool = self
            .conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM rejects WHERE path = ?1 AND line = 0 AND field = 'file' AND file_id IS NULL)",
            )
            .and_then(|mut s| s.query_row(params![path.display().to_string()], |r| r.get(0)))
            .map_err(|e| self.sqlite(e))?;
        if !blocked {
            return Ok(false);
        }
        self.conn
            .execute(
                "DELETE FROM rejects WHERE path = ?1 AND line = 0 AND field = 'file' AND file_id IS NULL",
                params![path.display().to_string()],
            )
            .map(|n| n > 0)
            .map_err(|e| self.sqlite(e))
    }

    pub fn recent_files(&self, limit: usize) -> Result<Vec<FileRecord>> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {FILE_COLUMNS} FROM files ORDER BY id DESC LIMIT ?1"))
            .map_err(|e| self.sqlite(e))?;
        let rows = stmt.query_map([limit as i64], file_record).map_err(|e| self.sqlite(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.sqlite(e))
    }

    // ---- sending -----------------------------------------------------------------------------

    /// Up to `limit` pending events, oldest queued first.
    pub fn pending_batch(&self, limit: usize) -> Result<Vec<Queued>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT e.id, e.event_id, e.event_time, p.json FROM events e JOIN payloads p ON p.id = e.id
                 WHERE e.state = 0 ORDER BY e.id LIMIT ?1",
            )
            .map_err(|e| self.sqlite(e))?;
        let rows = stmt
            .query_map([limit as i64], |r| {
                Ok(Queued { id: r.get(0)?, event_id: r.get(1)?, event_time: r.get(2)?, payload: r.get(3)? })
            })
            .map_err(|e| self.sqlite(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.sqlite(e))
    }

    pub fn pending_count(&self) -> Result<i64> {
        self.conn.query_row("SELECT COUNT(*) FROM events WHERE state = 0", [], |r| r.get(0)).map_err(|e| self.sqlite(e))
    }

    /// Bytes the database's pages in use hold (free pages not counted; the WAL is bounded
    /// separately by checkpoints and `journal_size_limit`).
    pub fn used_bytes(&self) -> u64 {
        let pages: i64 = self
            .conn
            .query_row(
                "SELECT (SELECT page_count FROM pragma_page_count()) - (SELECT freelist_count FROM pragma_freelist_count())",
                [],
                |r| r.get(0),
            )
            .unwrap_or(0);
        let page_size: i64 = self.conn.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap_or(4096);
        (pages.max(0) * page_size) as u64
    }

    /// Refuse to grow the database file past `bytes` (SQLite answers "database or disk is full",
    /// and the transaction that hit it rolls back).
    pub fn set_size_limit(&self, bytes: u64) -> Result<()> {
        let page_size: u64 = self.conn.query_row("PRAGMA page_size", [], |r| r.get(0)).map_err(|e| self.sqlite(e))?;
        let pages = (bytes / page_size.max(512)).max(1);
        self.conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(())).map_err(|e| self.sqlite(e))
    }

    /// Drop the JSON of events sent before `cutoff`: only their ids are still needed (to recognise
    /// re-exports). Returns how many.
    pub fn clear_sent_payloads(&self, cutoff: i64) -> Result<usize> {
        self.conn
            .execute(
                "DELETE FROM payloads WHERE id IN (SELECT id FROM events WHERE state = 1 AND sent_at < ?1)",
                [cutoff],
            )
            .map_err(|e| self.sqlite(e))
    }

    /// Return free pages to the file system and bound the WAL (after a backlog drained).
    pub fn give_back_space(&self) -> Result<()> {
        // `incremental_vacuum` frees one page per step: step it to the end.
        let mut stmt = self.conn.prepare("PRAGMA incremental_vacuum").map_err(|e| self.sqlite(e))?;
        let mut rows = stmt.query([]).map_err(|e| self.sqlite(e))?;
        while rows.next().map_err(|e| self.sqlite(e))?.is_some() {}
        drop(rows);
        self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).map_err(|e| self.sqlite(e))
    }

    pub fn has_pending(&self) -> Result<bool> {
        self.conn
            .query_row("SELECT EXISTS (SELECT 1 FROM events WHERE state = 0)", [], |r| r.get(0))
            .map_err(|e| self.sqlite(e))
    }

    /// Record one delivery attempt of `ids` in a single transaction: the events' new state, the
    /// send-log line and the agent-state keys for `status`.
    pub fn record_attempt(
        &mut self,
        ids: &[i64],
        disposition: Disposition<'_>,
        log: &SendLogEntry,
        state: &[(&str, Option<String>)],
    ) -> Result<()> {
        let qpath = self.path.clone();
        let err = |source| QueueError::Sqlite { path: qpath.clone(), source };
        let tx = self.conn.transaction().map_err(err)?;
        {
            let sql = match disposition {
                Disposition::Sent { .. } => {
                    "UPDATE events SET attempts = attempts + 1, state = 1, sent_at = ?2 WHERE id = ?1 AND state = 0"
                }
                Disposition::Dead { .. } => {
                    "UPDATE events SET attempts = attempts + 1, state = 2, dead_reason = ?2, dead_message = ?3 WHERE id = ?1 AND state = 0"
                }
                Disposition::StillPending => "UPDATE events SET attempts = attempts + 1 WHERE id = ?1",
            };
            let mut stmt = tx.prepare_cached(sql).map_err(err)?;
            for id in ids {
                match disposition {
                    Disposition::Sent { at } => stmt.execute(params![id, at]),
                    Disposition::Dead { reason, message } => stmt.execute(params![id, reason, message]),
                    Disposition::StillPending => stmt.execute(params![id]),
                }
                .map_err(err)?;
            }
            tx.execute(
                "INSERT INTO send_log (at, events, http_status, code, class, message, request_id, test_event_code)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    log.at,
                    log.events,
                    log.http_status,
                    log.code,
                    log.class,
                    log.message,
                    log.request_id,
                    log.test_event_code
                ],
            )
            .map_err(err)?;
            for (key, value) in state {
                match value {
                    Some(v) => tx.execute(
                        "INSERT INTO agent_state (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                        params![key, v],
                    ),
                    None => tx.execute("DELETE FROM agent_state WHERE key = ?1", [key]),
                }
                .map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// Count one more delivery attempt for these events.
    pub fn mark_attempted(&mut self, ids: &[i64]) -> Result<()> {
        self.update_each(ids, "UPDATE events SET attempts = attempts + 1 WHERE id = ?1", |_| 0)
    }

    pub fn mark_sent(&mut self, ids: &[i64], now: i64) -> Result<()> {
        self.update_each(ids, "UPDATE events SET state = 1, sent_at = ?2 WHERE id = ?1 AND state = 0", |_| now)
    }

    pub fn mark_dead(&mut self, ids: &[i64], reason: &str, message: &str) -> Result<()> {
        let qpath = self.path.clone();
        let err = |source| QueueError::Sqlite { path: qpath.clone(), source };
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE events SET state = 2, dead_reason = ?2, dead_message = ?3 WHERE id = ?1 AND state = 0",
                )
                .map_err(err)?;
            for id in ids {
                stmt.execute(params![id, reason, message]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    fn update_each(&mut self, ids: &[i64], sql: &str, extra: impl Fn(i64) -> i64) -> Result<()> {
        let qpath = self.path.clone();
        let err = |source| QueueError::Sqlite { path: qpath.clone(), source };
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut stmt = tx.prepare_cached(sql).map_err(err)?;
            let two = sql.contains("?2");
            for id in ids {
                if two {
                    stmt.execute(params![id, extra(*id)]).map_err(err)?;
                } else {
                    stmt.execute(params![id]).map_err(err)?;
                }
            }
        }
        tx.commit().map_err(err)
    }

    /// Dead-letter pending events older than `cutoff` (reason `expired`). Returns how many.
    pub fn expire_older_than(&self, cutoff: i64) -> Result<usize> {
        self.conn
            .execute(
                "UPDATE events SET state = 2, dead_reason = 'expired',
                   dead_message = 'older than the attribution window; never sent'
                 WHERE state = 0 AND event_time < ?1",
                [cutoff],
            )
            .map_err(|e| self.sqlite(e))
    }

    /// Forget sent events that can no longer be re-queued by a re-export (older than `cutoff`,
    /// which the caller sets beyond the attribution window), and old send-log rows.
    pub fn prune(&self, sent_cutoff: i64, log_keep: i64) -> Result<usize> {
        let n = self
            .conn
            .execute("DELETE FROM events WHERE state = 1 AND event_time < ?1 AND sent_at < ?1", [sent_cutoff])
            .map_err(|e| self.sqlite(e))?;
        self.conn
            .execute("DELETE FROM send_log WHERE id <= (SELECT MAX(id) FROM send_log) - ?1", [log_keep])
            .map_err(|e| self.sqlite(e))?;
        Ok(n)
    }

    pub fn log_send(&self, entry: &SendLogEntry) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO send_log (at, events, http_status, code, class, message, request_id, test_event_code)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    entry.at,
                    entry.events,
                    entry.http_status,
                    entry.code,
                    entry.class,
                    entry.message,
                    entry.request_id,
                    entry.test_event_code
                ],
            )
            .map(drop)
            .map_err(|e| self.sqlite(e))
    }

    pub fn send_log_after(&self, after_id: i64, limit: usize) -> Result<Vec<SendLogEntry>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, at, events, http_status, code, class, message, request_id, test_event_code
                 FROM send_log WHERE id > ?1 ORDER BY id LIMIT ?2",
            )
            .map_err(|e| self.sqlite(e))?;
        let rows = stmt
            .query_map(params![after_id, limit as i64], |r| {
                Ok(SendLogEntry {
                    id: r.get(0)?,
                    at: r.get(1)?,
                    events: r.get(2)?,
                    http_status: r.get(3)?,
                    code: r.get(4)?,
                    class: r.get(5)?,
                    message: r.get(6)?,
                    request_id: r.get(7)?,
                    test_event_code: r.get(8)?,
                })
            })
            .map_err(|e| self.sqlite(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.sqlite(e))
    }

    /// Events queued after `after_id` (any state), for `watch`.
    pub fn events_after(&self, after_id: i64, limit: usize) -> Result<Vec<TapEvent>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT e.id, e.state, f.path, COALESCE(p.json, '(sent; its JSON is no longer kept)') FROM events e
                 LEFT JOIN files f ON f.id = e.file_id LEFT JOIN payloads p ON p.id = e.id
                 WHERE e.id > ?1 ORDER BY e.id LIMIT ?2",
            )
            .map_err(|e| self.sqlite(e))?;
        let rows = stmt
            .query_map(params![after_id, limit as i64], |r| {
                Ok(TapEvent { id: r.get(0)?, state: r.get(1)?, file: r.get(2)?, payload: r.get(3)? })
            })
            .map_err(|e| self.sqlite(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.sqlite(e))
    }

    pub fn max_ids(&self) -> Result<(i64, i64)> {
        self.conn
            .query_row(
                "SELECT COALESCE((SELECT MAX(id) FROM events), 0), COALESCE((SELECT MAX(id) FROM send_log), 0)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| self.sqlite(e))
    }

    // ---- agent state (for status) ------------------------------------------------------------

    pub fn set_state(&self, key: &str, value: Option<&str>) -> Result<()> {
        let result = match value {
            Some(v) => self.conn.execute(
                "INSERT INTO agent_state (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, v],
            ),
            None => self.conn.execute("DELETE FROM agent_state WHERE key = ?1", [key]),
        };
        result.map(drop).map_err(|e| self.sqlite(e))
    }

    pub fn state(&self) -> Result<Vec<(String, String)>> {
        let mut stmt =
            self.conn.prepare_cached("SELECT key, value FROM agent_state ORDER BY key").map_err(|e| self.sqlite(e))?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(|e| self.sqlite(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.sqlite(e))
    }

    // ---- status and dead letters -------------------------------------------------------------

    pub fn counts(&self) -> Result<Counts> {
        let mut counts = Counts::default();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT state, COUNT(*) FROM events GROUP BY state")
            .map_err(|e| self.sqlite(e))?;
        let rows =
            stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))).map_err(|e| self.sqlite(e))?;
        for row in rows {
            let (state, n) = row.map_err(|e| self.sqlite(e))?;
            match state {
                PENDING => counts.pending = n,
                SENT => counts.sent = n,
                _ => counts.dead += n,
            }
        }
        (counts.oldest_pending_queued_at, counts.oldest_pending_event_time) = self
            .conn
            .query_row("SELECT queued_at, event_time FROM events WHERE state = 0 ORDER BY id LIMIT 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(|e| self.sqlite(e))?
            .map_or((None, None), |(a, b)| (Some(a), Some(b)));
        (counts.files, counts.rejects) = self
            .conn
            .query_row("SELECT (SELECT COUNT(*) FROM files), (SELECT COUNT(*) FROM rejects)", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(|e| self.sqlite(e))?;
        Ok(counts)
    }

    pub fn dead_events(&self, limit: usize) -> Result<Vec<DeadEvent>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, event_id, order_id, event_time, dead_reason, dead_message, attempts
                 FROM events WHERE state = 2 ORDER BY id LIMIT ?1",
            )
            .map_err(|e| self.sqlite(e))?;
        let rows = stmt
            .query_map([limit as i64], |r| {
                Ok(DeadEvent {
                    id: r.get(0)?,
                    event_id: r.get(1)?,
                    order_id: r.get(2)?,
                    event_time: r.get(3)?,
                    reason: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
                    message: r.get(5)?,
                    attempts: r.get(6)?,
                })
            })
            .map_err(|e| self.sqlite(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.sqlite(e))
    }

    pub fn recent_rejects(&self, limit: usize) -> Result<Vec<RejectRecord>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, path, line, field, reason, at FROM rejects ORDER BY id DESC LIMIT ?1")
            .map_err(|e| self.sqlite(e))?;
        let rows = stmt
            .query_map([limit as i64], |r| {
                Ok(RejectRecord {
                    id: r.get(0)?,
                    path: r.get(1)?,
                    line: r.get(2)?,
                    field: r.get(3)?,
                    reason: r.get(4)?,
                    at: r.get(5)?,
                })
            })
            .map_err(|e| self.sqlite(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.sqlite(e))
    }

    /// Put dead events back in the queue (attempts reset). Returns how many.
    pub fn requeue(&self, filter: &DeadFilter) -> Result<usize> {
        self.dead_update(
            "UPDATE events SET state = 0, attempts = 0, dead_reason = NULL, dead_message = NULL WHERE state = 2",
            filter,
        )
    }

    /// Delete dead events for good. Returns how many.
    pub fn purge(&self, filter: &DeadFilter) -> Result<usize> {
        self.dead_update("DELETE FROM events WHERE state = 2", filter)
    }

    fn dead_update(&self, base: &str, filter: &DeadFilter) -> Result<usize> {
        match filter {
            DeadFilter::All => self.conn.execute(base, []),
            DeadFilter::Reason(reason) => self.conn.execute(&format!("{base} AND dead_reason = ?1"), [reason]),
            DeadFilter::Ids(ids) => {
                let mut n = 0;
                for id in ids {
                    n += self.conn.execute(&format!("{base} AND id = ?1"), [id]).map_err(|e| self.sqlite(e))?;
                }
                Ok(n)
            }
        }
        .map_err(|e| self.sqlite(e))
    }
}

const FILE_COLUMNS: &str =
    "id, content_hash, path, source, state, events, duplicates, rejects, warnings, ingested_at, disposed, skipped";

fn file_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<FileRecord> {
    Ok(FileRecord {
        id: r.get(0)?,
        content_hash: r.get(1)?,
        path: r.get(2)?,
        source: r.get(3)?,
        state: r.get(4)?,
        events: r.get(5)?,
        duplicates: r.get(6)?,
        rejects: r.get(7)?,
        warnings: r.get(8)?,
        ingested_at: r.get(9)?,
        disposed: r.get(10)?,
        skipped: r.get(11)?,
    })
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct IngestCounts {
    pub events: i64,
    pub skipped: i64,
    pub duplicates: i64,
    pub rejects: i64,
    pub warnings: i64,
    pub dead: i64,
}

/// One file's ingest: a transaction. Dropped without [`Ingest::commit`], it rolls back.
pub struct Ingest<'q> {
    tx: Transaction<'q>,
    file_id: i64,
    path: String,
    now: i64,
    queue_path: PathBuf,
    counts: IngestCounts,
}

impl Ingest<'_> {
    pub fn file_id(&self) -> i64 {
        self.file_id
    }

    fn err(&self, source: rusqlite::Error) -> QueueError {
        QueueError::Sqlite { path: self.queue_path.clone(), source }
    }

    pub fn add_event(&mut self, e: &NewEvent<'_>) -> Result<Added> {
        let state = if e.dead_reason.is_some() { DEAD } else { PENDING };
        let inserted = {
            let mut stmt = self
                .tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO events (event_name, event_id, event_time, order_id, file_id, state, queued_at, dead_reason, dead_message)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )
                .map_err(|err| self.err(err))?;
            stmt.execute(params![
                e.event_name,
                e.event_id,
                e.event_time,
                e.order_id,
                self.file_id,
                state,
                self.now,
                e.dead_reason,
                e.dead_reason.map(|_| "not sent: outside the window TikTok accepts")
            ])
            .map_err(|err| self.err(err))?
        };
        if inserted == 1 {
            let id = self.tx.last_insert_rowid();
            self.tx
                .prepare_cached("INSERT INTO payloads (id, json) VALUES (?1, ?2)")
                .and_then(|mut stmt| stmt.execute(params![id, e.payload]))
                .map_err(|err| self.err(err))?;
            self.counts.events += 1;
            if state == DEAD {
                self.counts.dead += 1;
            }
            return Ok(Added::Queued);
        }
        let existing_file: Option<i64> = self
            .tx
            .prepare_cached("SELECT file_id FROM events WHERE event_name = ?1 AND event_id = ?2")
            .and_then(|mut s| s.query_row(params![e.event_name, e.event_id], |r| r.get(0)).optional())
            .map_err(|err| self.err(err))?
            .flatten();
        if existing_file == Some(self.file_id) {
            Ok(Added::RepeatedInFile)
        } else {
            self.counts.duplicates += 1;
            Ok(Added::Duplicate)
        }
    }

    pub fn add_reject(&mut self, line: u64, field: Option<&str>, reason: &str) -> Result<()> {
        self.counts.rejects += 1;
        let mut stmt = self
            .tx
            .prepare_cached(
                "INSERT INTO rejects (file_id, path, line, field, reason, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(|err| self.err(err))?;
        stmt.execute(params![self.file_id, self.path, line as i64, field, reason, self.now])
            .map(drop)
            .map_err(|err| self.err(err))
    }

    /// Count a transaction the reader decided not to send (refund, void, training...).
    pub fn add_skip(&mut self) {
        self.counts.skipped += 1;
    }

    pub fn add_warnings(&mut self, n: usize) {
        self.counts.warnings += n as i64;
    }

    pub fn counts(&self) -> IngestCounts {
        self.counts
    }

    /// Commit durably. After this returns the file may be archived or deleted.
    pub fn commit(self) -> Result<IngestCounts> {
        let c = self.counts;
        self.tx
            .execute(
                "UPDATE files SET state = 'ingested', events = ?2, duplicates = ?3, rejects = ?4, warnings = ?5, skipped = ?6 WHERE id = ?1",
                params![self.file_id, c.events, c.duplicates, c.rejects, c.warnings, c.skipped],
            )
            .map_err(|err| QueueError::Sqlite { path: self.queue_path.clone(), source: err })?;
        let path = self.queue_path.clone();
        self.tx.commit().map_err(|source| QueueError::Sqlite { path, source })?;
        Ok(c)
    }

    /// Commit durably, together with the new read position of this file of `source` (append
    /// mode): the position moves past exactly what this transaction recorded, or not at all.
    pub fn commit_at(self, source: &str, position: &Position) -> Result<IngestCounts> {
        let c = self.counts;
        let err = |source| QueueError::Sqlite { path: self.queue_path.clone(), source };
        self.tx
            .execute(
                "UPDATE files SET events = events + ?2, duplicates = duplicates + ?3, rejects = rejects + ?4,
                   warnings = warnings + ?5, skipped = skipped + ?6, ingested_at = ?7 WHERE id = ?1",
                params![self.file_id, c.events, c.duplicates, c.rejects, c.warnings, c.skipped, self.now],
            )
            .map_err(err)?;
        self.tx
            .execute(
                "INSERT INTO positions (source, path, byte_offset, lines, fingerprint, inode, file_id, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (source, path) DO UPDATE SET byte_offset = excluded.byte_offset, lines = excluded.lines,
                   fingerprint = excluded.fingerprint, inode = excluded.inode, file_id = excluded.file_id,
                   updated_at = excluded.updated_at",
                params![
                    source,
                    self.path,
                    position.offset as i64,
                    position.lines as i64,
                    position.fingerprint,
                    position.inode as i64,
                    self.file_id,
                    self.now
                ],
            )
            .map_err(err)?;
        let path = self.queue_path.clone();
        self.tx.commit().map_err(|source| QueueError::Sqlite { path, source })?;
        Ok(c)
    }
}

/// Create the database file with mode 0600 if it does not exist yet (SQLite gives its -wal and
/// -shm files the same mode).
///
/// Never open a file descriptor on an existing database: closing any descriptor of a file drops
/// every POSIX lock this process holds on it, including those of open SQLite connections, and
/// another process could then checkpoint and delete the WAL under them.
fn create_private(path: &Path) -> std::io::Result<()> {
    if path.exists() {
        return Ok(());
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests;
