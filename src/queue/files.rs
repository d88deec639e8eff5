//! File records: what the queue knows of each export file read (by content hash), the read
//! positions of files read in parts or in append mode, and files that could not be read.

use super::{FileState, Queue, QueueError, Result};
use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Clone, Serialize)]
pub struct FileRecord {
    pub id: i64,
    pub content_hash: String,
    pub path: String,
    pub source: String,
    pub state: FileState,
    pub events: i64,
    pub duplicates: i64,
    pub rejects: i64,
    pub warnings: i64,
    pub ingested_at: i64,
    pub disposed: Option<String>,
    pub skipped: i64,
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

impl Queue {
    /// The record of a file already ingested, by content hash.
    pub fn file_by_hash(&self, content_hash: &str) -> Result<Option<FileRecord>> {
        self.conn
            .prepare_cached(&format!("SELECT {FILE_COLUMNS} FROM files WHERE content_hash = ?1"))
            .and_then(|mut s| s.query_row([content_hash], file_record).optional())
            .map_err(|e| self.sqlite(e))
    }

    /// Where the read of a whole file committed in parts stopped (the `files` row `file_id`), and
    /// how many things its reader had found before it (see [`Ingest::commit_part`]).
    pub fn part_position(&self, file_id: i64) -> Result<Option<(Position, u64)>> {
        self.conn
            .query_row(
                "SELECT byte_offset, lines, fingerprint, inode, taken FROM positions WHERE file_id = ?1",
                [file_id],
                |r| Ok((position_at(r, 0)?, r.get::<_, i64>(4)? as u64)),
            )
            .optional()
            .map_err(|e| self.sqlite(e))
    }

    /// A whole file changed after some of its parts were committed: its record no longer names
    /// content (`changed:<id>` instead of the hash, its position gone), so the file is read again
    /// from its start as a new file; the events of the parts stay queued, and the new read counts
    /// them as duplicates.
    pub fn abandon_parts(&mut self, file_id: i64) -> Result<()> {
        let qpath = self.path.clone();
        let err = |source| QueueError::Sqlite { path: qpath.clone(), source };
        let tx = self.conn.transaction().map_err(err)?;
        tx.execute("UPDATE files SET content_hash = 'changed:' || id WHERE id = ?1", [file_id]).map_err(err)?;
        tx.execute("DELETE FROM positions WHERE file_id = ?1", [file_id]).map_err(err)?;
        super::lock::commit(tx).map_err(err)
    }

    /// The committed position of a file read in append mode, and the `files` row its events are
    /// recorded under.
    pub fn position(&self, source: &str, path: &Path) -> Result<Option<(Position, Option<i64>)>> {
        self.conn
            .query_row(
                "SELECT byte_offset, lines, fingerprint, inode, file_id FROM positions WHERE source = ?1 AND path = ?2",
                params![source, path.display().to_string()],
                |r| Ok((position_at(r, 0)?, r.get(4)?)),
            )
            .optional()
            .map_err(|e| self.sqlite(e))
    }

    /// The positions of files read in append mode, most recently moved first (not those of whole
    /// files being read in parts).
    pub fn positions(&self, limit: usize) -> Result<Vec<PositionRecord>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT source, path, byte_offset, lines, fingerprint, inode, file_id, updated_at FROM positions
                 WHERE file_id IS NULL OR file_id NOT IN (SELECT id FROM files WHERE state = ?2)
                 ORDER BY updated_at DESC, path LIMIT ?1",
            )
            .map_err(|e| self.sqlite(e))?;
        let rows = stmt
            .query_map(params![limit as i64, FileState::Ingesting], |r| {
                Ok(PositionRecord {
                    source: r.get(0)?,
                    path: r.get(1)?,
                    position: position_at(r, 2)?,
                    file_id: r.get(6)?,
                    updated_at: r.get(7)?,
                })
            })
            .map_err(|e| self.sqlite(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.sqlite(e))
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

/// A `positions` row's `byte_offset, lines, fingerprint, inode`, selected from column `first` on.
fn position_at(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Position> {
    Ok(Position {
        offset: r.get::<_, i64>(first)? as u64,
        lines: r.get::<_, i64>(first + 1)? as u64,
        fingerprint: r.get(first + 2)?,
        inode: r.get::<_, i64>(first + 3)? as u64,
    })
}
