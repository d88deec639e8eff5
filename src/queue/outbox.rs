//! The outbox: pending batches, what one delivery attempt did to its events, expiry, pruning, and
//! the space sent events' JSON takes.

use super::cursor::{cursor, plan_sent, states, Sql};
use super::packed::Row;
use super::{agent, AgentState, DeadReason, Queue, QueueError, Result, SendLogEntry, WalDuty};
use rusqlite::{params, Transaction, TransactionBehavior};

/// A queued event as the sender sees it.
#[derive(Debug, Clone)]
pub struct Queued {
    pub id: i64,
    /// Where its event id is in its [`Batch`]'s ([`Batch::event_id`]).
    pub event_id: std::ops::Range<usize>,
    pub event_time: i64,
    /// Where its JSON is in its [`Batch`]'s (empty when it is not intact).
    pub payload: std::ops::Range<usize>,
    /// Whether the stored payload still is what was stored: it matches its checksum (or cannot be
    /// told: stored by an agent before checksums) and unpacks.
    pub intact: bool,
}

/// Pending events as one read found them: the events, and their JSON one after the other in one
/// buffer (a JSON allocated and freed per event cost the sender a tenth of its time in a backlog).
/// Read into again ([`Queue::read_pending_after`]), it keeps its room: the sender keeps one from
/// step to step while it has work.
#[derive(Debug, Default)]
pub struct Batch {
    pub events: Vec<Queued>,
    /// How many of `events`, the first ones, were read as pending by their row ([`PENDING_HELD`]:
    /// at or below the cursor); the others are queued above it.
    pub pending_by_row: usize,
    json: String,
    /// The events' ids one after the other, as `json` (a `String` per event was an allocation and
    /// a free each).
    ids: String,
    /// Room to unpack a payload in before it is appended to `json`.
    scratch: Vec<u8>,
}

impl Batch {
    /// The JSON of `event`, one of this batch's.
    pub fn payload(&self, event: &Queued) -> &str {
        &self.json[event.payload.clone()]
    }

    /// The event id of `event`, one of this batch's.
    pub fn event_id(&self, event: &Queued) -> &str {
        &self.ids[event.event_id.clone()]
    }
}

/// The batch read, in two (?1 the limit, ?2 the cutoff on `event_time`): first the events whose
/// row says they are pending (held back, put back in the queue; few, found by
/// `events_exceptions`, all at or below the cursor), then ([`PENDING_QUEUED`]) those queued above
/// the cursor, walked in id order from it. A batch reads its `LIMIT` rows and stops, in id order;
/// neither read sorts (a sort read every pending event for each batch: O(N) per batch, which once
/// took half the agent's CPU in a 200,000-event backlog). `LIMIT ?1 + 0`, not `LIMIT ?1`: SQLite's
/// planner reads a plain bound LIMIT's value, so binding another one made it prepare the statement
/// again before every batch (`StatementStatus::RePrepare`; ~150,000 instructions each time). The
/// plan does not depend on it (the id-order test).
pub(super) static PENDING_HELD: Sql = Sql::new(
    "SELECT e.id, e.event_id, e.event_time, p.json, p.checksum, e.order_id
     FROM events e JOIN payloads p ON p.id = e.id WHERE e.state = {pending} AND e.{listed} AND e.event_time >= ?2 ORDER BY e.id LIMIT ?1 + 0",
);
/// The second read of a batch: the events queued above the cursor, and above ?3 (the highest id
/// of the requests delivered and not recorded yet: `Sender`), see [`PENDING_HELD`].
pub(super) static PENDING_QUEUED: Sql = Sql::new(
    "SELECT e.id, e.event_id, e.event_time, p.json, p.checksum, e.order_id
     FROM events e JOIN payloads p ON p.id = e.id
     WHERE e.id > MAX({cursor}, ?3) AND e.state = {queued} AND e.event_time >= ?2 ORDER BY e.id LIMIT ?1 + 0",
);

/// Drop the JSON of the events sent before ?1: those whose row says so (by `events_exceptions`),
/// and those the cursor sent, walked from the lowest JSON still kept (the payloads of events
/// long sent are gone already).
pub(super) const CLEAR_SENT_PAYLOADS: [&str; 2] = [
    "DELETE FROM payloads WHERE id IN (SELECT id FROM events WHERE state = {sent} AND {listed} AND sent_at < ?1)",
    "DELETE FROM payloads WHERE id <= (SELECT IFNULL(MAX(upto), 0) FROM sent_runs WHERE at < ?1)
       AND (SELECT e.state FROM events e WHERE e.id = payloads.id) = {queued}",
];

/// Forget the events sent, and timed, before ?1, found as above.
pub(super) const PRUNE_SENT: [&str; 2] = [
    "DELETE FROM events WHERE state = {sent} AND {listed} AND event_time < ?1 AND sent_at < ?1",
    "DELETE FROM events WHERE id <= (SELECT IFNULL(MAX(upto), 0) FROM sent_runs WHERE at < ?1)
       AND state = {queued} AND event_time < ?1",
];

/// Forget the `sent_runs` rows that no queued event is under any longer (never the highest: the
/// cursor).
pub(super) const FORGET_RUNS: &str = "DELETE FROM sent_runs WHERE upto < {cursor}
       AND upto < IFNULL((SELECT MIN(id) FROM events WHERE state = {queued}), {cursor})";

/// How a log names an event: by its event id, or by its queue row when the id cannot be read (the
/// row damaged on disk).
pub fn event_named(event_id: &str, row: i64) -> String {
    match event_id {
        "" => format!("in queue row {row}"),
        id => id.to_string(),
    }
}

/// One row of [`PENDING_HELD`] or [`PENDING_QUEUED`] as a [`Queued`], its JSON appended to
/// `batch`'s (nothing appended when it is not intact).
fn read_queued(r: &rusqlite::Row<'_>, batch: &mut Batch) -> rusqlite::Result<Queued> {
    let id: i64 = r.get(0)?;
    let (json_start, id_start) = (batch.json.len(), batch.ids.len());
    // A row damaged on disk so that its event id, time or checksum is not of its type is not
    // intact, as a payload that fails its checksum: dead-lettered as `corrupt`, and the batch goes
    // on (an error here would stop every batch after it). Its event id is kept if it is text.
    let event_id = r.get_ref(1)?.as_str().ok();
    batch.ids.push_str(event_id.unwrap_or_default());
    let event_id_at = id_start..batch.ids.len();
    let (Some(event_id), Ok(event_time), Ok(checksum)) = (event_id, r.get::<_, i64>(2), r.get::<_, Option<i64>>(4))
    else {
        return Ok(Queued { id, event_id: event_id_at, event_time: 0, payload: json_start..json_start, intact: false });
    };
    // An order id that is not text makes a payload that refers to it fail its checksum.
    let row = Row { event_id, order_id: r.get_ref(5)?.as_str().unwrap_or_default(), event_time };
    let intact = super::packed::verified_into(r.get_ref(3)?, checksum, row, &mut batch.scratch, &mut batch.json);
    Ok(Queued { id, event_id: event_id_at, event_time, payload: json_start..batch.json.len(), intact })
}

/// A request TikTok took (or a dry run wrote): what [`Queue::record_delivered`] records.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub ids: Vec<i64>,
    pub log: SendLogEntry,
    /// TikTok confirmed it (not a dry run), with this request id.
    pub confirmed: Option<Option<String>>,
}

/// What a delivery attempt TikTok did not take does to its events.
#[derive(Debug, Clone, Copy)]
pub enum Disposition<'a> {
    Dead { reason: DeadReason, message: &'a str },
    StillPending,
}

impl Queue {
    /// Up to `limit` pending events, oldest queued first (tests; the sender reads into its own
    /// [`Batch`] with [`Queue::read_pending_after`]).
    #[cfg(test)]
    pub fn pending_batch(&self, limit: usize) -> Result<Batch> {
        let mut batch = Batch::default();
        self.read_pending(&mut batch, limit, i64::MIN)?;
        Ok(batch)
    }

    /// [`Queue::read_pending_after`] with no request waiting for its record.
    #[cfg(test)]
    pub fn read_pending(&self, batch: &mut Batch, limit: usize, cutoff: i64) -> Result<()> {
        self.read_pending_after(batch, limit, cutoff, 0)
    }

    /// Read into `batch` (what it held is dropped, its room kept) up to `limit` pending events
    /// whose `event_time` is at or after `cutoff`, oldest queued first (`i64::MIN`: all; a later
    /// cutoff while older ones are held, the clock that would expire them distrusted). Of the
    /// events queued above the cursor, only those above `after`: the requests delivered up to
    /// there wait for their record ([`Queue::record_delivered`]).
    pub fn read_pending_after(&self, batch: &mut Batch, limit: usize, cutoff: i64, after: i64) -> Result<()> {
        batch.events.clear();
        batch.json.clear();
        batch.ids.clear();
        self.read_rows(&PENDING_HELD, params![limit as i64, cutoff], batch)?;
        batch.pending_by_row = batch.events.len();
        let left = limit - batch.events.len();
        if left > 0 {
            self.read_rows(&PENDING_QUEUED, params![left as i64, cutoff, after], batch)?;
        }
        Ok(())
    }

    /// Append the rows `sql` reads with `params` to `batch`.
    fn read_rows(&self, sql: &Sql, params: &[&dyn rusqlite::ToSql], batch: &mut Batch) -> Result<()> {
        let mut stmt = self.conn.prepare_cached(sql.get()).map_err(|e| self.sqlite(e))?;
        let mut rows = stmt.query(params).map_err(|e| self.sqlite(e))?;
        while let Some(r) = rows.next().map_err(|e| self.sqlite(e))? {
            let queued = read_queued(r, batch).map_err(|e| self.sqlite(e))?;
            batch.events.push(queued);
        }
        Ok(())
    }

    pub fn pending_count(&self) -> Result<i64> {
        // Once a second for the service's STATUS line.
        static PENDING_COUNT: Sql = Sql::new(
            "SELECT (SELECT COUNT(*) FROM events WHERE state = {pending} AND {listed})
                  + (SELECT COUNT(*) FROM events WHERE id > {cursor} AND state = {queued})",
        );
        self.conn.query_row(PENDING_COUNT.get(), [], |r| r.get(0)).map_err(|e| self.sqlite(e))
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
    /// cap), or a quarter of that for the sender's connection ([`WalDuty`]): a small queue cap
    /// keeps a small WAL beside it.
    pub fn set_size_limit(&self, bytes: u64, duty: WalDuty) -> Result<()> {
        let page_size: u64 = self.conn.query_row("PRAGMA page_size", [], |r| r.get(0)).map_err(|e| self.sqlite(e))?;
        let pages = (bytes / page_size.max(512)).max(1);
        self.conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(())).map_err(|e| self.sqlite(e))?;
        let checkpoint_pages = super::ingest::checkpoint_pages(bytes, page_size, duty);
        self.conn
            .query_row(&format!("PRAGMA wal_autocheckpoint = {checkpoint_pages}"), [], |_| Ok(()))
            .map_err(|e| self.sqlite(e))
    }

    /// How often the cached statement `sql` was compiled again and run (for tests; taking it from
    /// the cache, or compiling it when it is not there, counts neither).
    #[cfg(test)]
    pub(crate) fn statement_counts(&self, sql: &str) -> (i32, i32) {
        let stmt = self.conn.prepare_cached(sql).unwrap();
        (stmt.get_status(rusqlite::StatementStatus::RePrepare), stmt.get_status(rusqlite::StatementStatus::Run))
    }

    /// A setting of this connection (`PRAGMA name`), for tests.
    #[cfg(test)]
    pub(crate) fn pragma(&self, name: &str) -> i64 {
        self.conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0)).unwrap()
    }

    /// Drop the JSON of events sent before `cutoff`: only their ids are still needed (to recognise
    /// re-exports). Returns how many.
    pub fn clear_sent_payloads(&self, cutoff: i64) -> Result<usize> {
        let mut n = 0;
        for sql in CLEAR_SENT_PAYLOADS {
            n += self.conn.execute(&states(sql), [cutoff]).map_err(|e| self.sqlite(e))?;
        }
        Ok(n)
    }

    /// Pages on the free list: the room of dropped rows, not given back to the file system yet
    /// (the queue's `auto_vacuum` is incremental: [`Queue::give_back_space`] empties the list).
    pub fn free_pages(&self) -> Result<i64> {
        self.conn.query_row("PRAGMA freelist_count", [], |r| r.get(0)).map_err(|e| self.sqlite(e))
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

    /// Copy the WAL into the database without waiting for anyone (`PASSIVE`): with no reader in
    /// it, the next commit starts the WAL over. Returns the WAL's frames and how many are copied.
    pub fn checkpoint(&self) -> Result<(i64, i64)> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get(1)?, r.get(2)?)))
            .map_err(|e| self.sqlite(e))
    }

    pub fn has_pending(&self) -> Result<bool> {
        static HAS_PENDING: Sql = Sql::new(
            "SELECT EXISTS (SELECT 1 FROM events WHERE state = {pending} AND {listed})
                 OR EXISTS (SELECT 1 FROM events WHERE id > {cursor} AND state = {queued})",
        );
        self.conn.query_row(HAS_PENDING.get(), [], |r| r.get(0)).map_err(|e| self.sqlite(e))
    }

    /// Record one delivery attempt of `ids` that TikTok did not take, in a single transaction: the
    /// events' new state, the send-log line and the agent state for `status`, as `change` leaves
    /// it. (A request TikTok took is recorded by [`Queue::record_delivered`].)
    pub fn record_attempt(
        &mut self,
        ids: &[i64],
        disposition: Disposition<'_>,
        log: &SendLogEntry,
        change: impl FnOnce(&mut AgentState),
    ) -> Result<()> {
        let marks = |tx: &Transaction<'_>| match disposition {
            Disposition::Dead { reason, message } => mark_dead(tx, ids, reason, message, 1),
            Disposition::StillPending => {
                let mut stmt = tx.prepare_cached("UPDATE events SET attempts = attempts + 1 WHERE id = ?1")?;
                ids.iter().try_for_each(|id| stmt.execute(params![id]).map(drop))
            }
        };
        self.record(true, marks, [log], change).map(drop)
    }

    /// Record requests TikTok took (`delivered`, in the order they were sent) in one transaction:
    /// their events sent, their send-log lines, and the agent state as `change` leaves it. With
    /// `wait` false nothing is waited for: `Ok(false)`, and nothing written, when another
    /// connection holds the write lock (an ingest writing a part); the caller sends on and records
    /// later, with the next requests.
    pub fn record_delivered(
        &mut self,
        delivered: &[Delivered],
        wait: bool,
        change: impl FnOnce(&mut AgentState),
    ) -> Result<bool> {
        let ids: Vec<i64> = delivered.iter().flat_map(|d| d.ids.iter().copied()).collect();
        let marks = |tx: &Transaction<'_>| match delivered.last() {
            Some(last) => mark_sent(tx, &ids, last.log.at),
            None => Ok(()),
        };
        self.record(wait, marks, delivered.iter().map(|d| &d.log), change)
    }

    /// One transaction recording delivery attempts: `marks` writes the events' states, then a
    /// send-log line for each of `logs` and the agent state as `change` leaves it. Without `wait`,
    /// `Ok(false)` and nothing written when another connection holds the write lock.
    fn record<'l>(
        &mut self,
        wait: bool,
        marks: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<()>,
        logs: impl IntoIterator<Item = &'l SendLogEntry>,
        change: impl FnOnce(&mut AgentState),
    ) -> Result<bool> {
        let qpath = self.path.clone();
        let err = |source| QueueError::Sqlite { path: qpath.clone(), source };
        // Immediate: the cursor is read before the first write, and must be the one written after.
        let begin = || Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate);
        let tx = match if wait { begin() } else { super::lock::without_waiting(begin) } {
            Ok(tx) => tx,
            Err(e) if !wait && super::lock::is_busy(&e) => return Ok(false),
            Err(e) => return Err(err(e)),
        };
        marks(&tx).map_err(err)?;
        for log in logs {
            super::report::insert_send_log(&tx, log).map_err(err)?;
        }
        agent::update(&tx, change).map_err(err)?;
        super::lock::commit(tx).map_err(err)?;
        Ok(true)
    }

    /// Mark events sent without an attempt record (tests set up states with it).
    #[cfg(test)]
    pub(crate) fn mark_sent(&mut self, ids: &[i64], now: i64) -> Result<()> {
        let qpath = self.path.clone();
        let err = |source| QueueError::Sqlite { path: qpath.clone(), source };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        mark_sent(&tx, ids, now).map_err(err)?;
        super::lock::commit(tx).map_err(err)
    }

    /// Dead-letter pending events without an attempt (expired before they were sent).
    pub fn mark_dead(&mut self, ids: &[i64], reason: DeadReason, message: &str) -> Result<()> {
        let qpath = self.path.clone();
        let err = |source| QueueError::Sqlite { path: qpath.clone(), source };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        mark_dead(&tx, ids, reason, message, 0).map_err(err)?;
        super::lock::commit(tx).map_err(err)
    }

    /// Dead-letter pending events older than `cutoff` (reason `expired`). Returns how many.
    pub fn expire_older_than(&self, cutoff: i64) -> Result<usize> {
        // Pending by its row (by `events_exceptions`), and queued above the cursor (walked from it).
        let mut n = 0;
        for pending in ["state = {pending} AND {listed}", "id > {cursor} AND state = {queued}"] {
            let sql = states(&format!(
                "UPDATE events SET state = {{dead}}, dead_reason = ?2, dead_message = ?3 WHERE {pending} AND event_time < ?1"
            ));
            n += self
                .conn
                .execute(&sql, params![cutoff, DeadReason::Expired, DeadReason::EXPIRED_MESSAGE])
                .map_err(|e| self.sqlite(e))?;
        }
        Ok(n)
    }

    /// Forget sent events that can no longer be re-queued by a re-export (older than `cutoff`,
    /// which the caller sets beyond the attribution window), and old send-log rows.
    pub fn prune(&self, sent_cutoff: i64, log_keep: i64) -> Result<usize> {
        let mut n = 0;
        for sql in PRUNE_SENT {
            n += self.conn.execute(&states(sql), [sent_cutoff]).map_err(|e| self.sqlite(e))?;
        }
        self.conn.execute(&states(FORGET_RUNS), []).map_err(|e| self.sqlite(e))?;
        self.conn
            .execute("DELETE FROM send_log WHERE id <= (SELECT MAX(id) FROM send_log) - ?1", [log_keep])
            .map_err(|e| self.sqlite(e))?;
        Ok(n)
    }
}

/// Record a delivered request of `ids` sent at `at` (`cursor.rs`): the events pending by their row
/// become sent; the cursor moves past the highest id delivered above it, once the queued events it
/// passes and the request did not deliver (held back) say they are pending.
fn mark_sent(tx: &Transaction<'_>, ids: &[i64], at: i64) -> rusqlite::Result<()> {
    static HELD_SENT: Sql = Sql::new(
        "UPDATE events SET attempts = attempts + 1, state = {sent}, sent_at = ?3
         WHERE state = {pending} AND {listed} AND id BETWEEN ?1 AND ?2",
    );
    static GAP: Sql = Sql::new("UPDATE events SET state = {pending} WHERE id BETWEEN ?1 AND ?2 AND state = {queued}");
    let plan = plan_sent(ids, cursor(tx)?);
    let mut held = tx.prepare_cached(HELD_SENT.get())?;
    // One statement per run of consecutive ids (a batch walks the queue in id order, so mostly
    // one run): each statement is ~1 µs of SQLite overhead beside the rows'.
    for (first, last) in plan.runs {
        held.execute(params![first, last, at])?;
    }
    let mut gap = tx.prepare_cached(GAP.get())?;
    for (first, last) in plan.gaps {
        gap.execute(params![first, last])?;
    }
    if let Some(upto) = plan.cursor {
        tx.prepare_cached("INSERT INTO sent_runs (upto, at) VALUES (?1, ?2)")?.execute(params![upto, at])?;
        tx.prepare_cached("UPDATE high_water SET sent_upto = MAX(sent_upto, ?1)")?.execute([upto])?;
    }
    Ok(())
}

/// Dead-letter those of `ids` that are pending (by their row, or queued above the cursor), adding
/// `attempts` (1 after the delivery attempt that refused them) to their attempt counts.
fn mark_dead(
    tx: &Transaction<'_>,
    ids: &[i64],
    reason: DeadReason,
    message: &str,
    attempts: i64,
) -> rusqlite::Result<()> {
    static MARK_DEAD: Sql = Sql::new(
        "UPDATE events SET attempts = attempts + ?5, state = {dead}, dead_reason = ?2, dead_message = ?3
         WHERE id = ?1 AND (state = {pending} OR (state = {queued} AND id > ?4))",
    );
    let mut stmt = tx.prepare_cached(MARK_DEAD.get())?;
    let cursor = cursor(tx)?;
    for id in ids {
        stmt.execute(params![id, reason, message, cursor, attempts])?;
    }
    Ok(())
}
