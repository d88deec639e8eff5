//! Dead letters and rejected rows: listed, requeued, purged.

use super::{DeadReason, EventState, Queue, Result};
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

impl Queue {
    pub fn dead_events(&self, limit: usize) -> Result<Vec<DeadEvent>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, event_id, order_id, event_time, dead_reason, dead_message, attempts
                 FROM events WHERE state = ?2 ORDER BY id LIMIT ?1",
            )
            .map_err(|e| self.sqlite(e))?;
        let rows = stmt
            .query_map(params![limit as i64, EventState::Dead], |r| {
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
        let base = format!(
            "UPDATE events SET state = {}, attempts = 0, dead_reason = NULL, dead_message = NULL WHERE state = {}",
            EventState::Pending.code(),
            EventState::Dead.code()
        );
        self.dead_update(&base, filter)
    }

    /// Put back in the queue the events dead-lettered as expired whose `event_time` is at or after
    /// `cutoff` (the start of the attribution window on a clock TikTok agrees with): they were
    /// expired on a wrong clock. Returns how many.
    pub fn requeue_wrongly_expired(&self, cutoff: i64) -> Result<usize> {
        self.conn
            .execute(
                "UPDATE events SET state = ?1, attempts = 0, dead_reason = NULL, dead_message = NULL
                 WHERE state = ?2 AND dead_reason = ?3 AND event_time >= ?4",
                rusqlite::params![EventState::Pending, EventState::Dead, DeadReason::Expired, cutoff],
            )
            .map_err(|e| self.sqlite(e))
    }

    /// Delete dead events for good. Returns how many.
    pub fn purge(&self, filter: &DeadFilter) -> Result<usize> {
        self.dead_update(&format!("DELETE FROM events WHERE state = {}", EventState::Dead.code()), filter)
    }

    /// Those of `ids` that name no dead event (a typo, or already requeued or purged).
    pub fn not_dead(&self, ids: &[i64]) -> Result<Vec<i64>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT 1 FROM events WHERE id = ?1 AND state = ?2")
            .map_err(|e| self.sqlite(e))?;
        let mut missing = Vec::new();
        for &id in ids {
            if !stmt.exists(rusqlite::params![id, EventState::Dead.code()]).map_err(|e| self.sqlite(e))? {
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
