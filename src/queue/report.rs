//! What `status`, `watch` and the supervisor read: counts, the send log, new events, agent state.

use super::cursor::{effective_state, states};
use super::{EventState, Queue, Result, SendClass};
use crate::event::screen::Coverage;
use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use std::collections::BTreeMap;

/// An event as `watch` shows it.
#[derive(Debug, Clone)]
pub struct TapEvent {
    pub id: i64,
    pub state: EventState,
    pub file: Option<String>,
    pub payload: String,
    /// When it was queued.
    pub queued_at: i64,
    /// Why it is dead (`expired`...) and the message with it.
    pub dead_reason: Option<String>,
    pub dead_message: Option<String>,
    /// Identifiers its file's read dropped (not valid: an e-mail without `@`, a phone that does
    /// not parse), over the whole file: the queue does not record them per event.
    pub file_dropped: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SendLogEntry {
    pub id: i64,
    pub at: i64,
    pub events: i64,
    pub http_status: Option<i64>,
    pub code: Option<i64>,
    pub class: SendClass,
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

/// Events by state (of one file, of one source).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StateCounts {
    pub queued: i64,
    pub sent: i64,
    pub dead: i64,
}

impl StateCounts {
    fn add(&mut self, state: i64, n: i64) {
        match EventState::from_code(state) {
            Some(EventState::Pending) => self.queued += n,
            Some(EventState::Sent) => self.sent += n,
            Some(EventState::Dead) | None => self.dead += n,
        }
    }
}

/// What the queue knows of one source's files (the `files` rows under its name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceTotals {
    pub files: i64,
    /// Files ingested (or, in append mode, read further) at or after the `since` asked for.
    pub files_since: i64,
    pub last_file_at: Option<i64>,
    pub rejects: i64,
    pub skipped: i64,
    /// The events queued from its files, by match key.
    pub coverage: Coverage,
}

/// `watch`'s read of the send log. `LIMIT ?2 + 0`, not `LIMIT ?2`: SQLite's planner reads a plain
/// bound limit, so binding one expires the statement and it is prepared again at every call
/// (`events_after`'s read does the same).
pub(super) const SEND_LOG_AFTER: &str =
    "SELECT id, at, events, http_status, code, class, message, request_id, test_event_code
     FROM send_log WHERE id > ?1 ORDER BY id LIMIT ?2 + 0";

impl Queue {
    /// The paths a source's files were read from, each with when it was last read: tells a file
    /// still in its folder after being read (`after_ingest = "keep"`, a dry run, a test session)
    /// from one waiting to be read.
    pub fn read_paths(&self, source: &str) -> Result<std::collections::HashMap<String, i64>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT path, MAX(ingested_at) FROM files WHERE source = ?1 GROUP BY path")
            .map_err(|e| self.sqlite(e))?;
        let rows = stmt.query_map([source], |r| Ok((r.get(0)?, r.get(1)?))).map_err(|e| self.sqlite(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.sqlite(e))
    }

    /// Each source's file totals, by source name; `since` (Unix seconds) bounds `files_since`.
    pub fn source_totals(&self, since: i64) -> Result<BTreeMap<String, SourceTotals>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT source, COUNT(*), COALESCE(SUM(ingested_at >= ?1), 0), MAX(ingested_at), SUM(rejects),
                   SUM(skipped), SUM(keys_email), SUM(keys_phone), SUM(keys_external_id), SUM(keys_none)
                 FROM files GROUP BY source",
            )
            .map_err(|e| self.sqlite(e))?;
        let rows = stmt
            .query_map([since], |r| {
                let n = |i: usize| r.get::<_, i64>(i).map(|n| n.max(0) as u64);
                Ok((
                    r.get::<_, String>(0)?,
                    SourceTotals {
                        files: r.get(1)?,
                        files_since: r.get(2)?,
                        last_file_at: r.get(3)?,
                        rejects: r.get(4)?,
                        skipped: r.get(5)?,
                        coverage: Coverage { email: n(6)?, phone: n(7)?, external_id_only: n(8)?, none: n(9)? },
                    },
                ))
            })
            .map_err(|e| self.sqlite(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.sqlite(e))
    }

    /// Events by state for each source (by the file they came from; one pass over the events).
    pub fn events_by_source(&self) -> Result<BTreeMap<String, StateCounts>> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT f.source, {}, COUNT(*) FROM events e JOIN files f ON f.id = e.file_id GROUP BY 1, 2",
                effective_state("e")
            ))
            .map_err(|e| self.sqlite(e))?;
        let mut out: BTreeMap<String, StateCounts> = BTreeMap::new();
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)))
            .map_err(|e| self.sqlite(e))?;
        for row in rows {
            let (source, state, n) = row.map_err(|e| self.sqlite(e))?;
            out.entry(source).or_default().add(state, n);
        }
        Ok(out)
    }

    /// Events by state for each of the `limit` most recent files (as [`Queue::recent_files`]), by
    /// file id.
    pub fn events_of_recent_files(&self, limit: usize) -> Result<BTreeMap<i64, StateCounts>> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT e.file_id, {}, COUNT(*) FROM events e
                 WHERE e.file_id IN (SELECT id FROM files ORDER BY id DESC LIMIT ?1) GROUP BY 1, 2",
                effective_state("e")
            ))
            .map_err(|e| self.sqlite(e))?;
        let mut out: BTreeMap<i64, StateCounts> = BTreeMap::new();
        let rows = stmt
            .query_map([limit as i64], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)))
            .map_err(|e| self.sqlite(e))?;
        for row in rows {
            let (file, state, n) = row.map_err(|e| self.sqlite(e))?;
            out.entry(file).or_default().add(state, n);
        }
        Ok(out)
    }

    /// Dead events counted by reason (from the index on state, without loading them).
    pub fn dead_by_reason(&self) -> Result<BTreeMap<String, i64>> {
        let mut stmt = self
            .conn
            .prepare_cached(&states(
                "SELECT COALESCE(dead_reason, ''), COUNT(*) FROM events WHERE state = {dead} AND {listed} GROUP BY 1",
            ))
            .map_err(|e| self.sqlite(e))?;
        let rows =
            stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))).map_err(|e| self.sqlite(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.sqlite(e))
    }

    /// Requests logged after `after_id`, for `watch` (which asks 4 times a second).
    pub fn send_log_after(&self, after_id: i64, limit: usize) -> Result<Vec<SendLogEntry>> {
        let mut stmt = self.conn.prepare_cached(SEND_LOG_AFTER).map_err(|e| self.sqlite(e))?;
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
            .prepare_cached(&format!(
                "SELECT e.id, {}, f.path, p.json,
                        e.queued_at, e.dead_reason, e.dead_message, COALESCE(f.warnings, 0),
                        e.event_id, e.order_id, e.event_time FROM events e
                 LEFT JOIN files f ON f.id = e.file_id LEFT JOIN payloads p ON p.id = e.id
                 WHERE e.id > ?1 ORDER BY e.id LIMIT ?2 + 0",
                effective_state("e")
            ))
            .map_err(|e| self.sqlite(e))?;
        let rows = stmt
            .query_map(params![after_id, limit as i64], |r| {
                Ok(TapEvent {
                    id: r.get(0)?,
                    // Any other value was shown as dead before the states had a type; it still is.
                    state: EventState::from_code(r.get(1)?).unwrap_or(EventState::Dead),
                    file: r.get(2)?,
                    payload: match r.get::<_, Option<super::packed::Stored>>(3)? {
                        Some(stored) => {
                            let (event_id, order_id): (String, String) = (r.get(8)?, r.get(9)?);
                            let row =
                                super::packed::Row { event_id: &event_id, order_id: &order_id, event_time: r.get(10)? };
                            stored.into_json(row).unwrap_or_else(|e| format!("({e})"))
                        }
                        None => "(sent; its JSON is no longer kept)".to_owned(),
                    },
                    queued_at: r.get(4)?,
                    dead_reason: r.get(5)?,
                    dead_message: r.get(6)?,
                    file_dropped: r.get(7)?,
                })
            })
            .map_err(|e| self.sqlite(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.sqlite(e))
    }

    /// Record a request sent outside the queue (`send-test`) in the send log.
    pub fn log_request(&self, entry: &SendLogEntry) -> Result<()> {
        insert_send_log(&self.conn, entry).map_err(|e| self.sqlite(e))
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

    // ---- status and dead letters -------------------------------------------------------------

    pub fn counts(&self) -> Result<Counts> {
        let mut counts = Counts::default();
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {}, COUNT(*) FROM events e GROUP BY 1", effective_state("e")))
            .map_err(|e| self.sqlite(e))?;
        let rows =
            stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))).map_err(|e| self.sqlite(e))?;
        for row in rows {
            let (state, n) = row.map_err(|e| self.sqlite(e))?;
            match EventState::from_code(state) {
                Some(EventState::Pending) => counts.pending = n,
                Some(EventState::Sent) => counts.sent = n,
                Some(EventState::Dead) | None => counts.dead += n,
            }
        }
        (counts.oldest_pending_queued_at, counts.oldest_pending_event_time) = self
            .conn
            .query_row(
                &states(
                    "SELECT queued_at, event_time FROM (
                       SELECT * FROM (SELECT id, queued_at, event_time FROM events WHERE state = {pending} AND {listed} ORDER BY id LIMIT 1)
                       UNION ALL
                       SELECT * FROM (SELECT id, queued_at, event_time FROM events WHERE id > {cursor} AND state = {queued} ORDER BY id LIMIT 1)
                     ) ORDER BY id LIMIT 1",
                ),
                [],
                // Not an integer when the row is damaged on disk: not known, rather than no status.
                |r| Ok((r.get(0).ok(), r.get(1).ok())),
            )
            .optional()
            .map_err(|e| self.sqlite(e))?
            .unwrap_or_default();
        (counts.files, counts.rejects) = self
            .conn
            .query_row("SELECT (SELECT COUNT(*) FROM files), (SELECT COUNT(*) FROM rejects)", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(|e| self.sqlite(e))?;
        Ok(counts)
    }
}

/// One line of the send log, on `conn` (a connection or a transaction): a request's answer.
pub(super) fn insert_send_log(conn: &rusqlite::Connection, entry: &SendLogEntry) -> rusqlite::Result<()> {
    conn.execute(
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
}
