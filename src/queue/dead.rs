//! Dead letters and rejected rows: listed, requeued, purged; the files behind rejected rows found
//! again and their old reads superseded, so that a file read under a wrong config can be read again.

use super::cursor::states;
use super::{DeadReason, FileState, Queue, Result};
use rusqlite::params;
use serde::Serialize;

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

/// Which dead events a `dead-letter` command acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadFilter {
    All,
    Ids(Vec<i64>),
    Reason(DeadReason),
}

/// An ingested file some rows of which were rejected or whose events were dead on arrival (outside
/// the window: a wrong `time_zone` does that), and where its content may be now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectedFile {
    pub file_id: i64,
    pub content_hash: String,
    pub source: String,
    /// Where it was read.
    pub path: String,
    /// Where it was archived since, newest first (the `archived` table, by content).
    pub archived: Vec<String>,
    pub rejects: i64,
    pub dead_on_arrival: i64,
}

/// What superseding an old read of a file removed: its rejected rows (the new read records its
/// own) and its dead events (never delivered: the new read queues them again, built with the
/// current config).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Superseded {
    pub rejects: usize,
    pub dead: usize,
}

impl Queue {
    /// The ingested files with rejected rows or events dead on arrival, oldest first; only those
    /// read from `path` (or archived as `path`) when given. Found from the rejected rows and the
    /// dead events (by the state index), not by looking at every file's events.
    pub fn rejected_files(&self, path: Option<&str>) -> Result<Vec<RejectedFile>> {
        let mut stmt = self
            .conn
            .prepare_cached(&states(
                "WITH r AS (SELECT file_id, COUNT(*) AS n FROM rejects WHERE file_id IS NOT NULL GROUP BY file_id),
                      d AS (SELECT file_id, COUNT(*) AS n FROM events
                            WHERE state = {dead} AND {listed} AND dead_message = ?3 AND file_id IS NOT NULL GROUP BY file_id),
                      both AS (SELECT file_id FROM r UNION SELECT file_id FROM d)
                 SELECT f.id, f.content_hash, f.source, f.path, COALESCE(r.n, 0), COALESCE(d.n, 0)
                 FROM both JOIN files f ON f.id = both.file_id
                 LEFT JOIN r ON r.file_id = f.id LEFT JOIN d ON d.file_id = f.id
                 WHERE f.state = ?1 AND (?2 IS NULL OR f.path = ?2
                       OR EXISTS (SELECT 1 FROM rejects x WHERE x.file_id = f.id AND x.path = ?2)
                       OR EXISTS (SELECT 1 FROM archived a WHERE a.content_hash = f.content_hash AND a.path = ?2))
                 ORDER BY f.id",
            ))
            .map_err(|e| self.sqlite(e))?;
        let files = stmt
            .query_map(params![FileState::Ingested, path, DeadReason::ON_ARRIVAL_MESSAGE], |r| {
                Ok(RejectedFile {
                    file_id: r.get(0)?,
                    content_hash: r.get(1)?,
                    source: r.get(2)?,
                    path: r.get(3)?,
                    archived: Vec::new(),
                    rejects: r.get(4)?,
                    dead_on_arrival: r.get(5)?,
                })
            })
            .map_err(|e| self.sqlite(e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.sqlite(e))?;
        let mut archived = self
            .conn
            .prepare_cached("SELECT path FROM archived WHERE content_hash = ?1 ORDER BY recorded_at DESC, path")
            .map_err(|e| self.sqlite(e))?;
        files
            .into_iter()
            .map(|mut f| {
                f.archived = archived
                    .query_map([&f.content_hash], |r| r.get(0))
                    .and_then(|rows| rows.collect::<rusqlite::Result<_>>())
                    .map_err(|e| self.sqlite(e))?;
                Ok(f)
            })
            .collect()
    }

    /// What reading a file again (`import --force`) will replace of its old read (`files` row
    /// `file_id`): its rejected rows and its dead events. Read only: the replacement happens in the
    /// new read's own transaction ([`supersede`]).
    pub fn superseded_counts(&self, file_id: i64) -> Result<Superseded> {
        self.conn
            .query_row(
                &states(
                    "SELECT (SELECT COUNT(*) FROM rejects WHERE file_id = ?1),
                            (SELECT COUNT(*) FROM events WHERE file_id = ?1 AND state = {dead} AND {listed})",
                ),
                params![file_id],
                |r| Ok(Superseded { rejects: r.get::<_, i64>(0)? as usize, dead: r.get::<_, i64>(1)? as usize }),
            )
            .map_err(|e| self.sqlite(e))
    }

    pub fn dead_events(&self, limit: usize) -> Result<Vec<DeadEvent>> {
        let mut stmt = self
            .conn
            .prepare_cached(&states(
                "SELECT id, event_id, order_id, event_time, dead_reason, dead_message, attempts
                 FROM events WHERE state = {dead} AND {listed} ORDER BY id LIMIT ?1",
            ))
            .map_err(|e| self.sqlite(e))?;
        let rows = stmt
            .query_map(params![limit as i64], |r| {
                // A row damaged on disk (dead-lettered as corrupt for it) is listed with what of it
                // can be read.
                Ok(DeadEvent {
                    id: r.get(0)?,
                    event_id: super::text_or_empty(r, 1)?,
                    order_id: super::text_or_empty(r, 2)?,
                    event_time: r.get(3).unwrap_or_default(),
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
        let base = states(
            "UPDATE events SET state = {requeued}, attempts = 0, dead_reason = NULL, dead_message = NULL
             WHERE state = {dead} AND {listed}",
        );
        self.dead_update(&base, filter)
    }

    /// Put back in the queue the events dead-lettered as expired whose `event_time` is at or after
    /// `cutoff` (the start of the attribution window on a clock TikTok agrees with): they were
    /// expired on a wrong clock. Returns how many.
    pub fn requeue_wrongly_expired(&self, cutoff: i64) -> Result<usize> {
        self.conn
            .execute(
                &states(
                    "UPDATE events SET state = {requeued}, attempts = 0, dead_reason = NULL, dead_message = NULL
                     WHERE state = {dead} AND {listed} AND dead_reason = ?1 AND event_time >= ?2",
                ),
                rusqlite::params![DeadReason::Expired, cutoff],
            )
            .map_err(|e| self.sqlite(e))
    }

    /// Delete dead events for good. Returns how many.
    pub fn purge(&self, filter: &DeadFilter) -> Result<usize> {
        self.dead_update(&states("DELETE FROM events WHERE state = {dead} AND {listed}"), filter)
    }

    /// Those of `ids` that name no dead event (a typo, or already requeued or purged).
    pub fn not_dead(&self, ids: &[i64]) -> Result<Vec<i64>> {
        let mut stmt = self
            .conn
            .prepare_cached(&states("SELECT 1 FROM events WHERE id = ?1 AND state = {dead}"))
            .map_err(|e| self.sqlite(e))?;
        let mut missing = Vec::new();
        for &id in ids {
            if !stmt.exists([id]).map_err(|e| self.sqlite(e))? {
                missing.push(id);
            }
        }
        Ok(missing)
    }

    fn dead_update(&self, base: &str, filter: &DeadFilter) -> Result<usize> {
        match filter {
            DeadFilter::All => self.conn.execute(base, []),
            DeadFilter::Reason(reason) => self.conn.execute(&format!("{base} AND dead_reason = ?1"), [reason.as_str()]),
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

/// In the transaction of a file's new read (`import --force`): its old read (`files` row
/// `file_id`) no longer names its content (`reread:<id>` instead of the hash, so the new read is a
/// new file), and what the new read records again goes: the old read's rejected rows and dead
/// events with their payloads. Its queued and sent events stay; the new read counts them as
/// duplicates (same event ids). Committed with the new read's first part, or not at all.
pub(super) fn supersede(tx: &rusqlite::Connection, file_id: i64) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM rejects WHERE file_id = ?1", [file_id])?;
    // Not left to the cascade: foreign keys are not enforced inside an ingest (`ingest.rs`).
    tx.execute(
        &states("DELETE FROM payloads WHERE id IN (SELECT id FROM events WHERE file_id = ?1 AND state = {dead} AND {listed})"),
        [file_id],
    )?;
    let dead =
        tx.execute(&states("DELETE FROM events WHERE file_id = ?1 AND state = {dead} AND {listed}"), [file_id])?;
    tx.execute(
        "UPDATE files SET content_hash = 'reread:' || id, rejects = 0, events = MAX(events - ?2, 0) WHERE id = ?1",
        params![file_id, dead as i64],
    )?;
    Ok(())
}
