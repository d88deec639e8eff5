//! The outbox: pending batches, what one delivery attempt did to its events, expiry, pruning, and
//! the space sent events' JSON takes.

use super::packed::Row;
use super::{agent, AgentState, DeadReason, EventState, Queue, QueueError, Result, SendLogEntry};
use rusqlite::params;

/// A queued event as the sender sees it.
#[derive(Debug, Clone)]
pub struct Queued {
    pub id: i64,
    pub event_id: String,
    pub event_time: i64,
    /// Where its JSON is in its [`Batch`]'s (empty when it is not intact).
    pub payload: std::ops::Range<usize>,
    /// Whether the stored payload still is what was stored: it matches its checksum (or cannot be
    /// told: stored by an agent before checksums) and unpacks.
    pub intact: bool,
}

/// Pending events as one read found them: the events, and their JSON one after the other in one
/// buffer (a JSON allocated and freed per event cost the sender a tenth of its time in a backlog).
/// Read into again ([`Queue::read_pending`]), it keeps its room: the sender keeps one from step to
/// step while it has work.
#[derive(Debug, Default)]
pub struct Batch {
    pub events: Vec<Queued>,
    json: String,
    /// Room to unpack a payload in before it is appended to `json`.
    scratch: Vec<u8>,
}

impl Batch {
    /// The JSON of `event`, one of this batch's.
    pub fn payload(&self, event: &Queued) -> &str {
        &self.json[event.payload.clone()]
    }
}

/// The batch read. Walked in id order on `events_by_state` (state, id), so a batch reads its
/// `LIMIT` rows and stops: left to itself the planner took the (state, event_time) index of
/// schemas before v6 for the `event_time` bound and then sorted, reading every pending event and
/// its JSON for each batch (O(N) per batch: half the agent's CPU in a 200,000-event backlog).
pub(super) const PENDING_BATCH: &str =
    "SELECT e.id, e.event_id, e.event_time, p.json, p.checksum, e.order_id FROM events e INDEXED BY events_by_state
     JOIN payloads p ON p.id = e.id WHERE e.state = ?2 AND e.event_time >= ?3 ORDER BY e.id LIMIT ?1";

/// Drop the JSON of the events sent before ?1 (?2: the sent state). With no index by send time
/// (schema v9) the sent events are found through `events_by_state`: those of the retention only.
pub(super) const CLEAR_SENT_PAYLOADS: &str =
    "DELETE FROM payloads WHERE id IN (SELECT id FROM events WHERE state = ?2 AND sent_at < ?1)";

/// Forget the events sent, and timed, before ?1 (?2: the sent state), found as above.
pub(super) const PRUNE_SENT: &str = "DELETE FROM events WHERE state = ?2 AND event_time < ?1 AND sent_at < ?1";

/// One row of [`PENDING_BATCH`] as a [`Queued`], its JSON appended to `batch`'s (nothing appended
/// when it is not intact).
fn read_queued(r: &rusqlite::Row<'_>, batch: &mut Batch) -> rusqlite::Result<Queued> {
    let (event_id, event_time): (String, i64) = (r.get(1)?, r.get(2)?);
    // An order id that is not text (damaged) makes a payload that refers to it fail its checksum;
    // the batch goes on.
    let row = Row { event_id: &event_id, order_id: r.get_ref(5)?.as_str().unwrap_or_default(), event_time };
    let start = batch.json.len();
    let intact = super::packed::verified_into(r.get_ref(3)?, r.get(4)?, row, &mut batch.scratch, &mut batch.json);
    Ok(Queued { id: r.get(0)?, event_id, event_time, payload: start..batch.json.len(), intact })
}

/// `ids` as runs of consecutive ids, `(first, last)` inclusive, in ascending order: every id of a
/// run is one of `ids`, so `id BETWEEN first AND last` touches exactly them. Pure.
fn id_runs(ids: &[i64]) -> Vec<(i64, i64)> {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut runs: Vec<(i64, i64)> = Vec::new();
    for id in sorted {
        match runs.last_mut() {
            Some((_, last)) if last.checked_add(1) == Some(id) => *last = id,
            _ => runs.push((id, id)),
        }
    }
    runs
}

/// What one delivery attempt did to its events.
#[derive(Debug, Clone, Copy)]
pub enum Disposition<'a> {
    Sent { at: i64 },
    Dead { reason: DeadReason, message: &'a str },
    StillPending,
}

impl Queue {
    /// Up to `limit` pending events, oldest queued first (tests; the sender reads into its own
    /// [`Batch`] with [`Queue::read_pending`]).
    #[cfg(test)]
    pub fn pending_batch(&self, limit: usize) -> Result<Batch> {
        let mut batch = Batch::default();
        self.read_pending(&mut batch, limit, i64::MIN)?;
        Ok(batch)
    }

    /// Read into `batch` (what it held is dropped, its room kept) up to `limit` pending events
    /// whose `event_time` is at or after `cutoff`, oldest queued first (`i64::MIN`: all; a later
    /// cutoff while older ones are held, the clock that would expire them distrusted).
    pub fn read_pending(&self, batch: &mut Batch, limit: usize, cutoff: i64) -> Result<()> {
        batch.events.clear();
        batch.json.clear();
        let mut stmt = self.conn.prepare_cached(PENDING_BATCH).map_err(|e| self.sqlite(e))?;
        let mut rows = stmt.query(params![limit as i64, EventState::Pending, cutoff]).map_err(|e| self.sqlite(e))?;
        while let Some(r) = rows.next().map_err(|e| self.sqlite(e))? {
            let queued = read_queued(r, batch).map_err(|e| self.sqlite(e))?;
            batch.events.push(queued);
        }
        Ok(())
    }

    pub fn pending_count(&self) -> Result<i64> {
        self.conn
            .query_row("SELECT COUNT(*) FROM events WHERE state = ?1", [EventState::Pending], |r| r.get(0))
            .map_err(|e| self.sqlite(e))
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
    /// and the transaction that hit it rolls back), and checkpoint the WAL once it holds an eighth
    /// of that ([`super::ingest::wal_bound`]; 64 MiB at most, as `open` sets for a queue without a
    /// cap): a small queue cap keeps a small WAL beside it.
    pub fn set_size_limit(&self, bytes: u64) -> Result<()> {
        let page_size: u64 = self.conn.query_row("PRAGMA page_size", [], |r| r.get(0)).map_err(|e| self.sqlite(e))?;
        let pages = (bytes / page_size.max(512)).max(1);
        self.conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(())).map_err(|e| self.sqlite(e))?;
        let checkpoint_pages = (super::ingest::wal_bound(bytes) / page_size.max(512)).max(100);
        self.conn
            .query_row(&format!("PRAGMA wal_autocheckpoint = {checkpoint_pages}"), [], |_| Ok(()))
            .map_err(|e| self.sqlite(e))
    }

    /// The WAL size (in pages) past which this connection's commits checkpoint it.
    #[cfg(test)]
    pub(crate) fn wal_autocheckpoint(&self) -> i64 {
        self.conn.query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0)).unwrap()
    }

    /// Drop the JSON of events sent before `cutoff`: only their ids are still needed (to recognise
    /// re-exports). Returns how many.
    pub fn clear_sent_payloads(&self, cutoff: i64) -> Result<usize> {
        self.conn.execute(CLEAR_SENT_PAYLOADS, params![cutoff, EventState::Sent]).map_err(|e| self.sqlite(e))
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
            .query_row("SELECT EXISTS (SELECT 1 FROM events WHERE state = ?1)", [EventState::Pending], |r| r.get(0))
            .map_err(|e| self.sqlite(e))
    }

    /// Record one delivery attempt of `ids` in a single transaction: the events' new state, the
    /// send-log line and the agent state for `status`, as `change` leaves it.
    pub fn record_attempt(
        &mut self,
        ids: &[i64],
        disposition: Disposition<'_>,
        log: &SendLogEntry,
        change: impl FnOnce(&mut AgentState),
    ) -> Result<()> {
        let qpath = self.path.clone();
        let err = |source| QueueError::Sqlite { path: qpath.clone(), source };
        let tx = self.conn.transaction().map_err(err)?;
        {
            match disposition {
                // One statement per run of consecutive ids (a batch walks the queue in id order, so
                // mostly one run): each statement is ~1 µs of SQLite overhead beside the row's.
                Disposition::Sent { at } => {
                    let mut stmt = tx
                        .prepare_cached(
                            "UPDATE events SET attempts = attempts + 1, state = ?4, sent_at = ?3
                             WHERE id BETWEEN ?1 AND ?2 AND state = ?5",
                        )
                        .map_err(err)?;
                    for (first, last) in id_runs(ids) {
                        stmt.execute(params![first, last, at, EventState::Sent, EventState::Pending]).map_err(err)?;
                    }
                }
                Disposition::Dead { reason, message } => {
                    let mut stmt = tx
                        .prepare_cached(
                            "UPDATE events SET attempts = attempts + 1, state = ?4, dead_reason = ?2, dead_message = ?3 WHERE id = ?1 AND state = ?5",
                        )
                        .map_err(err)?;
                    for id in ids {
                        stmt.execute(params![id, reason, message, EventState::Dead, EventState::Pending])
                            .map_err(err)?;
                    }
                }
                Disposition::StillPending => {
                    let mut stmt =
                        tx.prepare_cached("UPDATE events SET attempts = attempts + 1 WHERE id = ?1").map_err(err)?;
                    for id in ids {
                        stmt.execute(params![id]).map_err(err)?;
                    }
                }
            }
            super::report::insert_send_log(&tx, log).map_err(err)?;
            agent::update(&tx, change).map_err(err)?;
        }
        super::lock::commit(tx).map_err(err)
    }

    /// Mark events sent without an attempt record (tests set up states with it).
    #[cfg(test)]
    pub(crate) fn mark_sent(&mut self, ids: &[i64], now: i64) -> Result<()> {
        for id in ids {
            self.conn
                .execute(
                    "UPDATE events SET state = ?3, sent_at = ?2 WHERE id = ?1 AND state = ?4",
                    params![id, now, EventState::Sent, EventState::Pending],
                )
                .map_err(|e| self.sqlite(e))?;
        }
        Ok(())
    }

    /// Dead-letter pending events without an attempt (expired before they were sent).
    pub fn mark_dead(&mut self, ids: &[i64], reason: DeadReason, message: &str) -> Result<()> {
        let qpath = self.path.clone();
        let err = |source| QueueError::Sqlite { path: qpath.clone(), source };
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE events SET state = ?4, dead_reason = ?2, dead_message = ?3 WHERE id = ?1 AND state = ?5",
                )
                .map_err(err)?;
            for id in ids {
                stmt.execute(params![id, reason, message, EventState::Dead, EventState::Pending]).map_err(err)?;
            }
        }
        super::lock::commit(tx).map_err(err)
    }

    /// Dead-letter pending events older than `cutoff` (reason `expired`). Returns how many.
    pub fn expire_older_than(&self, cutoff: i64) -> Result<usize> {
        self.conn
            .execute(
                "UPDATE events SET state = ?2, dead_reason = ?3, dead_message = ?4 WHERE state = ?5 AND event_time < ?1",
                params![
                    cutoff,
                    EventState::Dead,
                    DeadReason::Expired,
                    DeadReason::EXPIRED_MESSAGE,
                    EventState::Pending
                ],
            )
            .map_err(|e| self.sqlite(e))
    }

    /// Forget sent events that can no longer be re-queued by a re-export (older than `cutoff`,
    /// which the caller sets beyond the attribution window), and old send-log rows.
    pub fn prune(&self, sent_cutoff: i64, log_keep: i64) -> Result<usize> {
        let n = self.conn.execute(PRUNE_SENT, params![sent_cutoff, EventState::Sent]).map_err(|e| self.sqlite(e))?;
        self.conn
            .execute("DELETE FROM send_log WHERE id <= (SELECT MAX(id) FROM send_log) - ?1", [log_keep])
            .map_err(|e| self.sqlite(e))?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::id_runs;

    #[test]
    fn ids_make_runs_of_consecutive_ids() {
        type Case = (&'static str, &'static [i64], &'static [(i64, i64)]);
        let cases: [Case; 6] = [
            ("none", &[], &[]),
            ("one", &[7], &[(7, 7)]),
            ("a batch in id order", &[1, 2, 3, 4], &[(1, 4)]),
            ("a gap (an event held or dead between)", &[1, 2, 5, 6], &[(1, 2), (5, 6)]),
            ("a split part, out of order, repeated", &[9, 3, 4, 9, 8], &[(3, 4), (8, 9)]),
            ("the largest id", &[i64::MAX - 1, i64::MAX], &[(i64::MAX - 1, i64::MAX)]),
        ];
        for (what, ids, want) in cases {
            assert_eq!(id_runs(ids), want, "{what}");
        }
    }
}
