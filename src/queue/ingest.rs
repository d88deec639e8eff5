//! Ingest: one file's events, rejected rows and "done" record in one transaction ([`Ingest`]), or
//! in parts each committed with the file's read position ([`Ingest::commit_part`]: a whole file too
//! big for one transaction; [`Ingest::commit_at`]: the parts of an append-mode file). The records
//! of files read are in `files.rs`.

use super::packed::Row;
#[cfg(test)]
use super::packed::Stored;
use super::{DeadReason, EventState, FileState, Position, Queue, QueueError, Result};
use crate::event::screen::MatchKey;
use crate::event::Event;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::Serialize;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// An event ready to be queued.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub event_name: &'static str,
    pub event_id: &'a str,
    pub event_time: i64,
    pub order_id: &'a str,
    pub payload: Payload<'a>,
    /// `Some(reason)` queues it directly as dead (e.g. `expired`).
    pub dead_reason: Option<DeadReason>,
    /// The line it was read from (a repeat of an order earlier in the file is rejected there).
    pub line: u64,
    /// The best key TikTok can match it by, counted per file once it is queued.
    pub key: MatchKey,
}

/// What an event sends: the event its wire JSON is written from (packed straight from it,
/// `packed::pack_event`, without building the JSON).
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    /// Tests: JSON text, packed as it is.
    #[cfg(test)]
    Json(&'a str),
    Event(&'a Event),
}

/// What a read found and an ingest has not written yet: events (packed and checksummed), rejected
/// rows, counts of skipped sales and warnings. Written in order when their part commits (or once
/// [`UNWRITTEN_BYTES`] pile up), so the queue's write lock is held for the writes, not while the
/// file is read and its events are built: the sender marks batches sent meanwhile. The held texts
/// and payloads share two buffers, kept with their room from part to part: no allocation per event.
///
/// Filled without the queue (no SQLite: packing and checksums only), a `Held` can be built on one
/// thread while an [`Ingest`] writes the one before on another ([`Ingest::write`]).
#[derive(Debug, Default)]
pub struct Held {
    items: Vec<HeldItem>,
    /// The held events' ids and order ids, the rejected rows' fields and reasons, one after the other.
    texts: String,
    /// The stored payloads of the held events, one after the other.
    payloads: Vec<u8>,
    skipped: i64,
    warnings: i64,
    /// Events held since the last rejected row: the run [`Ingest::write`] ends with.
    trailing: usize,
}

/// Held texts and payloads are ranges of the [`Held`]'s buffers.
#[derive(Debug)]
enum HeldItem {
    Event(HeldEvent),
    Reject { line: u64, field: Option<Range<usize>>, reason: Range<usize> },
}

#[derive(Debug)]
struct HeldEvent {
    event_name: &'static str,
    event_id: Range<usize>,
    order_id: Range<usize>,
    event_time: i64,
    payload: Range<usize>,
    /// Packed (a BLOB), else JSON text (tests).
    blob: bool,
    checksum: i64,
    dead_reason: Option<DeadReason>,
    line: u64,
    key: MatchKey,
}

impl Held {
    /// Hold an event: its payload packed and checksummed now, outside the write lock.
    pub fn add_event(&mut self, e: &NewEvent<'_>) {
        let row = Row { event_id: e.event_id, order_id: e.order_id, event_time: e.event_time };
        let event_id = push_text(&mut self.texts, e.event_id);
        let order_id = push_text(&mut self.texts, e.order_id);
        let start = self.payloads.len();
        let blob = match e.payload {
            #[cfg(test)]
            Payload::Json(json) => {
                let stored = Stored::of(json, row);
                self.payloads.extend_from_slice(stored.bytes());
                matches!(stored, Stored::Packed(_))
            }
            Payload::Event(event) => {
                super::packed::pack_event_into(event, row, &mut self.payloads);
                true
            }
        };
        let payload = start..self.payloads.len();
        let checksum = super::packed::checksum_of(&self.payloads[payload.clone()], blob, row);
        self.items.push(HeldItem::Event(HeldEvent {
            event_name: e.event_name,
            event_id,
            order_id,
            event_time: e.event_time,
            payload,
            blob,
            checksum,
            dead_reason: e.dead_reason,
            line: e.line,
            key: e.key,
        }));
        self.trailing += 1;
    }

    pub fn add_reject(&mut self, line: u64, field: Option<&str>, reason: &str) {
        let field = field.map(|f| push_text(&mut self.texts, f));
        let reason = push_text(&mut self.texts, reason);
        self.items.push(HeldItem::Reject { line, field, reason });
        self.trailing = 0;
    }

    /// Count a transaction the reader decided not to send.
    pub fn add_skip(&mut self) {
        self.skipped += 1;
    }

    pub fn add_warnings(&mut self, n: usize) {
        self.warnings += n as i64;
    }

    /// Whether it holds so much that it is to be written before its part ends.
    fn is_big(&self) -> bool {
        self.bytes() >= UNWRITTEN_BYTES
    }

    /// About how many bytes it holds: its texts and payloads, and what an item costs besides.
    pub fn bytes(&self) -> usize {
        self.texts.len() + self.payloads.len() + 96 * self.items.len()
    }

    fn is_empty(&self) -> bool {
        self.items.is_empty() && self.skipped == 0 && self.warnings == 0
    }

    /// Empty, keeping its room.
    fn clear(&mut self) {
        self.items.clear();
        self.texts.clear();
        self.payloads.clear();
        (self.skipped, self.warnings, self.trailing) = (0, 0, 0);
    }

    /// Whether its events end with whole runs of [`RUN`]: written now, none goes one by one.
    pub fn ends_whole_runs(&self) -> bool {
        self.trailing % RUN == 0
    }
}

/// The payload of `e` as it is stored: packed (a BLOB), else JSON text (tests).
fn stored<'h>(held: &'h Held, e: &HeldEvent) -> ToSqlOutput<'h> {
    let bytes = &held.payloads[e.payload.clone()];
    ToSqlOutput::Borrowed(if e.blob { ValueRef::Blob(bytes) } else { ValueRef::Text(bytes) })
}

/// Append `s` to `texts`; returns where it is.
fn push_text(texts: &mut String, s: &str) -> Range<usize> {
    let start = texts.len();
    texts.push_str(s);
    start..texts.len()
}

/// Foreign keys unenforced on an ingest's connection for as long as the ingest lasts, enforced
/// again when it ends (committed or not). Enforcing them made SQLite look up each queued event's
/// `files` row and each payload's event, and open a cursor for each lookup: about a tenth of
/// the cost of queueing an event (1M rows in the `sqlite3` CLI: 2.45-2.50 s of CPU with them,
/// 2.12 s without). An ingest writes both by construction: an event under the `files` row it
/// wrote or was given, its payload under the id the event's INSERT just returned; and the one
/// DELETE an ingest runs (`dead::supersede`) deletes the payloads itself rather than by cascade.
/// The other connections keep them enforced. Declared after the transaction in [`Ingest`], so
/// that it is dropped after it: the pragma is a no-op inside a transaction.
///
/// A connection that only ingests (`queue::Role::Ingest` and `Redo`) leaves them unenforced for
/// good, and `restore` is false: the pragma expires every statement prepared on the connection,
/// so setting it twice around each ingest made SQLite compile each of them again after every file
/// (2,495 compilations for 500 one-sale files: 16% of their instructions).
struct UnenforcedKeys<'c> {
    conn: &'c Connection,
    /// Enforce them again when the ingest ends.
    restore: bool,
}

/// An ingest's transaction on `conn`, begun once its foreign keys are unenforced (the pragma is a
/// no-op inside a transaction), with the guard that ends it and enforces them again if they were.
fn begin(conn: &Connection) -> rusqlite::Result<(Transaction<'_>, UnenforcedKeys<'_>)> {
    let enforced: bool = conn.prepare_cached("PRAGMA foreign_keys")?.query_row([], |r| r.get(0))?;
    if enforced {
        conn.execute_batch("PRAGMA foreign_keys = OFF;")?;
    }
    let keys = UnenforcedKeys { conn, restore: enforced };
    Ok((conn.unchecked_transaction()?, keys))
}

impl Drop for UnenforcedKeys<'_> {
    fn drop(&mut self) {
        // The transaction has ended (committed, or rolled back when dropped) unless its rollback
        // failed: end it here, or the pragma would do nothing and the connection stay unenforced.
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK;");
        }
        // A rolled-back ingest let the write lock go too (a committed one has said so already).
        super::lock::released();
        if self.restore {
            if let Err(e) = self.conn.execute_batch("PRAGMA foreign_keys = ON;") {
                tracing::warn!("queue: foreign keys not enforced again after an ingest: {e}");
            }
        }
    }
}

/// The statements that queue events, prepared once for a write of held rows: one event and its
/// payload, and [`RUN`] events and their payloads at once.
struct Inserts<'c> {
    event: rusqlite::CachedStatement<'c>,
    payload: rusqlite::CachedStatement<'c>,
    events: rusqlite::CachedStatement<'c>,
    payloads: rusqlite::CachedStatement<'c>,
}

/// Events queued by one execution of a statement. SQLite opens a statement's cursors (the events
/// table, its unique index, the payloads table) at each execution and seeks each row's place from
/// the root: in one statement for many rows, each next row of a backlog goes where the one before
/// ended (ids and event ids ascending), and the statement's set-up and ending are paid once. The
/// SQLite side of queueing an event, in a test of 20,000 rows: half the instructions at 40 rows a
/// statement, the unique index's seeks a sixth (BENCHMARKS.md).
///
/// Both statements ignore a conflict (`OR IGNORE`) rather than abort on it: a statement of many
/// rows that may abort midway keeps a journal of its own (SQLite's statement journal: the pages
/// it changes copied first, into memory allocated and freed at each execution, which glibc maps
/// and unmaps at the service's `MALLOC_MMAP_THRESHOLD_`). A payload row that was there already
/// under a new event's id (a stray: ids are never used twice) is replaced one by one.
pub(super) const RUN: usize = 64;

/// The parameters of one event in an events statement ([`events_sql`]), after the three all
/// share: `?1` the file's row, `?2` the time, `?3` the first id.
const EVENT_PARAMS: usize = 7;

/// `INSERT OR IGNORE` of `n` events, the `k`th with the id `?3 + k`. `sent_at` means something
/// only for an event whose row says it is sent (state 1: sent after it was held back or put back
/// in the queue; the cursor's sends are timed by `sent_runs`); it starts as the queue time, an
/// integer of the size the send time will have, so that such a mark rewrites the row in place.
fn events_sql(n: usize) -> String {
    let rows: Vec<String> = (0..n)
        .map(|k| {
            let p = 4 + EVENT_PARAMS * k;
            let [name, id, time, order, state, reason, message] = std::array::from_fn(|i| p + i);
            format!("(?3 + {k}, ?{name}, ?{id}, ?{time}, ?{order}, ?1, ?{state}, ?2, ?2, ?{reason}, ?{message})")
        })
        .collect();
    format!(
        "INSERT OR IGNORE INTO events (id, event_name, event_id, event_time, order_id, file_id, state, queued_at, sent_at, dead_reason, dead_message) VALUES {}",
        rows.join(", ")
    )
}

/// `INSERT OR {conflict}` of `n` payloads, the `k`th under the id `?1 + k`.
fn payloads_sql(conflict: &str, n: usize) -> String {
    let rows: Vec<String> = (0..n).map(|k| format!("(?1 + {k}, ?{}, ?{})", 2 + 2 * k, 3 + 2 * k)).collect();
    format!("INSERT OR {conflict} INTO payloads (id, json, checksum) VALUES {}", rows.join(", "))
}

/// [`Inserts`]' statements, written once: one event, its payload (replacing a stray), [`RUN`]
/// events, their payloads.
static INSERTS_SQL: std::sync::LazyLock<[String; 4]> = std::sync::LazyLock::new(|| {
    [events_sql(1), payloads_sql("REPLACE", 1), events_sql(RUN), payloads_sql("IGNORE", RUN)]
});

impl<'c> Inserts<'c> {
    fn prepare(conn: &'c Connection) -> rusqlite::Result<Inserts<'c>> {
        let [event, payload, events, payloads] = &*INSERTS_SQL;
        Ok(Inserts {
            event: conn.prepare_cached(event)?,
            payload: conn.prepare_cached(payload)?,
            events: conn.prepare_cached(events)?,
            payloads: conn.prepare_cached(payloads)?,
        })
    }
}

/// Bind `run`'s events, ids from `first`, to `stmt` ([`events_sql`] of `run.len()`). An event dead
/// on arrival is queued dead, with its reason and message.
fn bind_events(
    stmt: &mut rusqlite::Statement<'_>,
    (file_id, now, first): (i64, i64, i64),
    held: &Held,
    run: &[&HeldEvent],
) -> rusqlite::Result<()> {
    stmt.raw_bind_parameter(1, file_id)?;
    stmt.raw_bind_parameter(2, now)?;
    stmt.raw_bind_parameter(3, first)?;
    for (k, e) in run.iter().enumerate() {
        let p = 4 + EVENT_PARAMS * k;
        let state = if e.dead_reason.is_some() { EventState::Dead.code() } else { super::cursor::QUEUED };
        stmt.raw_bind_parameter(p, e.event_name)?;
        stmt.raw_bind_parameter(p + 1, &held.texts[e.event_id.clone()])?;
        stmt.raw_bind_parameter(p + 2, e.event_time)?;
        stmt.raw_bind_parameter(p + 3, &held.texts[e.order_id.clone()])?;
        stmt.raw_bind_parameter(p + 4, state)?;
        stmt.raw_bind_parameter(p + 5, e.dead_reason)?;
        stmt.raw_bind_parameter(p + 6, e.dead_reason.map(|_| DeadReason::ON_ARRIVAL_MESSAGE))?;
    }
    Ok(())
}

/// Bind `run`'s payloads, ids from `first`, to `stmt` ([`payloads_sql`] of `run.len()`).
fn bind_payloads(
    stmt: &mut rusqlite::Statement<'_>,
    first: i64,
    held: &Held,
    run: &[&HeldEvent],
) -> rusqlite::Result<()> {
    stmt.raw_bind_parameter(1, first)?;
    for (k, e) in run.iter().enumerate() {
        stmt.raw_bind_parameter(2 + 2 * k, stored(held, e))?;
        stmt.raw_bind_parameter(3 + 2 * k, e.checksum)?;
    }
    Ok(())
}

/// Execute `stmt` once bound by `bind`; the rows it changed.
fn execute_bound(
    stmt: &mut rusqlite::Statement<'_>,
    bind: impl FnOnce(&mut rusqlite::Statement<'_>) -> rusqlite::Result<()>,
) -> rusqlite::Result<usize> {
    bind(stmt)?;
    stmt.raw_execute()
}

/// An ingest's `files` row: to be written with its first rows, or written (its id).
#[derive(Debug)]
enum FileRow {
    New(NewFile),
    Written(i64),
}

/// The `files` row of a file read for the first time (or again, replacing the read `supersede`),
/// written with the first rows of its ingest.
#[derive(Debug)]
struct NewFile {
    supersede: Option<i64>,
    content_hash: String,
    source: String,
}

/// Bytes of unwritten events and rows past which they are written before their part commits (a
/// part is at most [`crate::intake`]'s 2 MiB of file; an append-mode read may be longer).
pub const UNWRITTEN_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Added {
    Queued,
    /// The same event was queued before, from another file (a re-export).
    Duplicate,
    /// The same event id appeared earlier in this very file (rows of one order not consecutive).
    RepeatedInFile,
}

impl Queue {
    /// Start ingesting a file: everything added through the returned [`Ingest`] commits at once.
    pub fn begin_ingest(&mut self, content_hash: &str, path: &Path, source: &str, now: i64) -> Result<Ingest<'_>> {
        self.begin_reread(None, content_hash, path, source, now)
    }

    /// [`Queue::begin_ingest`], and with `supersede` the old read of the same content (`import
    /// --force`) is replaced in the same transaction ([`super::dead::supersede`]).
    pub fn begin_reread(
        &mut self,
        supersede: Option<i64>,
        content_hash: &str,
        path: &Path,
        source: &str,
        now: i64,
    ) -> Result<Ingest<'_>> {
        let path_text = path.display().to_string();
        let qpath = self.path.clone();
        let err = |source| QueueError::Sqlite { path: qpath.clone(), source };
        let conn: &Connection = &self.conn;
        // Nothing is written yet (the transaction takes the write lock at its first write): the
        // file's row, and the replacement of an earlier read, are written with its first rows.
        let tx = begin(conn).map_err(err)?;
        let file =
            FileRow::New(NewFile { supersede, content_hash: content_hash.to_owned(), source: source.to_owned() });
        Ok(Ingest::new(conn, tx, file, path_text, now, qpath))
    }

    /// Go on ingesting a whole file some parts of which are committed (`files` row `file_id`, state
    /// `ingesting`), as [`Queue::begin_ingest`] does for a new one.
    pub fn resume_ingest(&mut self, file_id: i64, path: &Path, now: i64) -> Result<Ingest<'_>> {
        let qpath = self.path.clone();
        let conn: &Connection = &self.conn;
        let tx = begin(conn).map_err(|source| QueueError::Sqlite { path: qpath.clone(), source })?;
        Ok(Ingest::new(conn, tx, FileRow::Written(file_id), path.display().to_string(), now, qpath))
    }

    /// Start reading the next part of a file in append mode: everything added through the returned
    /// [`Ingest`] commits at once with the new position ([`Ingest::commit_at`]). The events are
    /// recorded under the `files` row `file_id` (the file read so far), or under a new one (state
    /// `append`, content hash `append:<id>`) when `None`: a file read from its start again.
    pub fn begin_append(&mut self, file_id: Option<i64>, path: &Path, source: &str, now: i64) -> Result<Ingest<'_>> {
        let path_text = path.display().to_string();
        let qpath = self.path.clone();
        let err = |source| QueueError::Sqlite { path: qpath.clone(), source };
        let conn: &Connection = &self.conn;
        let (tx, keys) = begin(conn).map_err(err)?;
        let file_id = match file_id {
            Some(id) => id,
            None => {
                tx.execute(
                    "INSERT INTO files (content_hash, path, source, state, ingested_at)
                     VALUES ('append:' || (SELECT COALESCE(MAX(id), 0) + 1 FROM files), ?1, ?2, ?3, ?4)",
                    params![path_text, source, FileState::Append, now],
                )
                .map_err(err)?;
                tx.last_insert_rowid()
            }
        };
        Ok(Ingest::new(conn, (tx, keys), FileRow::Written(file_id), path_text, now, qpath))
    }
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

/// One file's ingest: a transaction (one per part, see [`Ingest::commit_part`]). Dropped without
/// [`Ingest::commit`], it rolls back what was added since the last committed part.
pub struct Ingest<'q> {
    conn: &'q Connection,
    /// The open transaction; `None` only inside [`Ingest::commit_part`].
    tx: Option<Transaction<'q>>,
    file: FileRow,
    path: String,
    now: i64,
    queue_path: PathBuf,
    /// Added since the last committed part.
    counts: IngestCounts,
    /// Committed in earlier parts of this ingest.
    committed: IngestCounts,
    /// Events queued since the last committed part, by match key.
    keys: [i64; 4],
    /// Read, not yet written (see [`Held`]).
    held: Held,
    /// The file's path as logs show it.
    shown: String,
    /// The id the next event queued in the open transaction takes (`cursor::next_id`), once the
    /// transaction holds the write lock.
    next_id: Option<i64>,
    /// Last: dropped after `tx`.
    _keys: UnenforcedKeys<'q>,
}

impl<'q> Ingest<'q> {
    fn new(
        conn: &'q Connection,
        (tx, keys): (Transaction<'q>, UnenforcedKeys<'q>),
        file: FileRow,
        path: String,
        now: i64,
        queue_path: PathBuf,
    ) -> Ingest<'q> {
        let counts = IngestCounts::default();
        Ingest {
            conn,
            tx: Some(tx),
            file,
            now,
            queue_path,
            counts,
            committed: counts,
            keys: Default::default(),
            held: Held::default(),
            shown: crate::source::shown(Path::new(&path)),
            next_id: None,
            path,
            _keys: keys,
        }
    }

    /// This file's events in the open transaction (tests of when held rows are written).
    #[cfg(test)]
    pub(crate) fn written_events(&self) -> i64 {
        self.written_in("events")
    }

    /// This file's rejected rows in the open transaction (as [`Ingest::written_events`]).
    #[cfg(test)]
    pub(crate) fn written_rejects(&self) -> i64 {
        self.written_in("rejects")
    }

    /// Whether this ingest's connection enforces foreign keys (tests of [`UnenforcedKeys`]).
    #[cfg(test)]
    pub(crate) fn enforces_foreign_keys(&self) -> bool {
        self.tx().query_row("PRAGMA foreign_keys", [], |r| r.get(0)).unwrap()
    }

    #[cfg(test)]
    fn written_in(&self, table: &str) -> i64 {
        let file_id = self.written_file_id().unwrap_or(0);
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE file_id = ?1");
        self.tx().query_row(&sql, [file_id], |r| r.get(0)).unwrap()
    }

    fn tx(&self) -> &Transaction<'q> {
        self.tx.as_ref().expect("an ingest always has its transaction open")
    }

    /// The file's `files` row id, writing the row (and taking the write lock) if it is not yet.
    pub fn file_id(&mut self) -> Result<i64> {
        let f = match &self.file {
            FileRow::Written(id) => return Ok(*id),
            FileRow::New(f) => f,
        };
        if let Some(old) = f.supersede {
            super::dead::supersede(self.tx(), old).map_err(|err| self.err(err))?;
        }
        super::execute_cached(
            self.tx(),
            "INSERT INTO files (content_hash, path, source, state, ingested_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![f.content_hash, self.path, f.source, FileState::Ingesting, self.now],
        )
        .map_err(|err| self.err(err))?;
        let id = self.tx().last_insert_rowid();
        self.file = FileRow::Written(id);
        Ok(id)
    }

    /// The `files` row id once the rows are written (every write starts with [`Ingest::file_id`]).
    fn row_id(&self) -> i64 {
        self.written_file_id().expect("the files row is written before any row that refers to it")
    }

    /// The file's `files` row id if its row is written (in this or an earlier transaction).
    pub fn written_file_id(&self) -> Option<i64> {
        match self.file {
            FileRow::Written(id) => Some(id),
            FileRow::New(_) => None,
        }
    }

    fn err(&self, source: rusqlite::Error) -> QueueError {
        QueueError::Sqlite { path: self.queue_path.clone(), source }
    }

    /// Queue an event (written when its part commits; a repeat of an order read earlier in this
    /// file becomes a rejected row then, a re-export of one queued before is counted as such).
    pub fn add_event(&mut self, e: &NewEvent<'_>) -> Result<()> {
        self.held.add_event(e);
        self.write_if_big()
    }

    /// Record a rejected row (written when its part commits, after what was read before it).
    pub fn add_reject(&mut self, line: u64, field: Option<&str>, reason: &str) -> Result<()> {
        self.held.add_reject(line, field, reason);
        self.write_if_big()
    }

    /// Count a transaction the reader decided not to send (refund, void, training...).
    pub fn add_skip(&mut self) {
        self.held.add_skip();
    }

    pub fn add_warnings(&mut self, n: usize) {
        self.held.add_warnings(n);
    }

    fn write_if_big(&mut self) -> Result<()> {
        if self.held.is_big() {
            self.write_unwritten()?;
        }
        Ok(())
    }

    /// Write what `held` holds (built apart from this ingest, on another thread, say) in the open
    /// transaction, after what this ingest holds itself; emptied, `held` keeps its room.
    pub fn write(&mut self, held: &mut Held) -> Result<()> {
        // Its own is empty when all is read apart (each write would prepare the inserts twice).
        let own = if self.held.is_empty() { Ok(()) } else { self.write_unwritten() };
        let written = own.and_then(|()| self.write_held(held));
        held.clear();
        written
    }

    /// Write what this ingest holds, in order, in the open transaction (the file's row first, if
    /// it is not yet); emptied, the buffers keep their room for the next part.
    fn write_unwritten(&mut self) -> Result<()> {
        // Taken out for the writes, which borrow the ingest mutably, and put back.
        let mut held = std::mem::take(&mut self.held);
        let written = self.write_held(&held);
        held.clear();
        self.held = held;
        written
    }

    fn write_held(&mut self, held: &Held) -> Result<()> {
        let file_id = self.file_id()?;
        self.counts.skipped += held.skipped;
        self.counts.warnings += held.warnings;
        if self.next_id.is_none() {
            // Write first (a no-op but for the time): the read of the next id must be made with
            // the write lock held.
            super::execute_cached(
                self.tx(),
                "UPDATE files SET ingested_at = ?2 WHERE id = ?1",
                params![file_id, self.now],
            )
            .and_then(|_| super::cursor::next_id(self.tx()))
            .map(|id| self.next_id = Some(id))
            .map_err(|err| self.err(err))?;
        }
        // Looked up in the statement cache once per write, not once per event.
        let mut inserts = Inserts::prepare(self.conn).map_err(|err| self.err(err))?;
        // Events in a row, written [`RUN`] at a time; the rest of a run one by one, and everything
        // after a run with a duplicate: a re-export of a day's sales so far (a duplicate in every
        // run) costs what it did one by one.
        let mut run: Vec<&HeldEvent> = Vec::with_capacity(RUN);
        let mut duplicates = false;
        for item in &held.items {
            match item {
                HeldItem::Event(e) if duplicates => self.insert_one_by_one(&mut inserts, file_id, held, &[e])?,
                HeldItem::Event(e) => {
                    run.push(e);
                    if run.len() == RUN {
                        duplicates = !self.insert_run(&mut inserts, file_id, held, &run)?;
                        run.clear();
                    }
                }
                HeldItem::Reject { line, field, reason } => {
                    self.insert_one_by_one(&mut inserts, file_id, held, &run)?;
                    run.clear();
                    let field = field.clone().map(|f| &held.texts[f]);
                    self.insert_reject(*line, field, &held.texts[reason.clone()])?
                }
            }
        }
        self.insert_one_by_one(&mut inserts, file_id, held, &run)
    }

    fn insert_one_by_one(
        &mut self,
        inserts: &mut Inserts<'q>,
        file_id: i64,
        held: &Held,
        run: &[&HeldEvent],
    ) -> Result<()> {
        for e in run {
            let added = self.insert_event(inserts, file_id, held, e)?;
            self.count_added(added, &held.texts[e.order_id.clone()], e)?;
        }
        Ok(())
    }

    /// Queue [`RUN`] events with one statement, and their payloads with another. If one of them
    /// is not new (a duplicate of an earlier export, or of an order earlier in the file), the
    /// statement queued the others: they are deleted again and the run is queued one by one,
    /// which tells each duplicate apart, with the same ids. Whether all were new.
    fn insert_run(&mut self, inserts: &mut Inserts<'q>, file_id: i64, held: &Held, run: &[&HeldEvent]) -> Result<bool> {
        debug_assert_eq!(run.len(), RUN);
        let first = self.next_id.expect("the next id is read before the first insert of a transaction");
        let shared = (file_id, self.now, first);
        let inserted =
            execute_bound(&mut inserts.events, |s| bind_events(s, shared, held, run)).map_err(|err| self.err(err))?;
        if inserted != run.len() {
            if inserted > 0 {
                let last = first + run.len() as i64 - 1;
                self.tx()
                    .execute("DELETE FROM events WHERE id BETWEEN ?1 AND ?2", [first, last])
                    .map_err(|err| self.err(err))?;
            }
            return self.insert_one_by_one(inserts, file_id, held, run).map(|()| false);
        }
        let payloads = execute_bound(&mut inserts.payloads, |s| bind_payloads(s, first, held, run));
        if payloads.map_err(|err| self.err(err))? != run.len() {
            tracing::warn!("queue: stray payload rows under the ids of new events were replaced");
            for (k, e) in run.iter().enumerate() {
                let id = first + k as i64;
                execute_bound(&mut inserts.payload, |s| bind_payloads(s, id, held, &[e]))
                    .map_err(|err| self.err(err))?;
            }
        }
        self.next_id = Some(first + run.len() as i64);
        for e in run {
            self.queued(e);
        }
        Ok(true)
    }

    /// Count a queued event.
    fn queued(&mut self, e: &HeldEvent) {
        self.counts.events += 1;
        if e.dead_reason.is_some() {
            self.counts.dead += 1;
        }
        self.count_match_key(e.key);
    }

    /// Count what writing `e` did; a repeat of an order earlier in this file becomes a rejected row.
    fn count_added(&mut self, added: Added, order_id: &str, e: &HeldEvent) -> Result<()> {
        match added {
            Added::Queued => self.queued(e),
            Added::Duplicate => self.counts.duplicates += 1,
            Added::RepeatedInFile => {
                let reason = format!(
                    "order `{order_id}` appears again after other orders; its rows must be consecutive, so this part was not taken"
                );
                tracing::warn!("{}:{}: field `order_id`: {reason}", self.shown, e.line);
                self.insert_reject(e.line, Some("order_id"), &reason)?;
            }
        }
        Ok(())
    }

    fn insert_event(&mut self, inserts: &mut Inserts<'q>, file_id: i64, held: &Held, e: &HeldEvent) -> Result<Added> {
        let (event_name, event_id) = (e.event_name, &held.texts[e.event_id.clone()]);
        let id = self.next_id.expect("the next id is read before the first insert of a transaction");
        let inserted = execute_bound(&mut inserts.event, |s| bind_events(s, (file_id, self.now, id), held, &[e]))
            .map_err(|err| self.err(err))?;
        if inserted == 1 {
            self.next_id = Some(id + 1);
            execute_bound(&mut inserts.payload, |s| bind_payloads(s, id, held, &[e])).map_err(|err| self.err(err))?;
            return Ok(Added::Queued);
        }
        let existing_file: Option<i64> = self
            .tx()
            .prepare_cached("SELECT file_id FROM events WHERE event_name = ?1 AND event_id = ?2")
            .and_then(|mut s| s.query_row(params![event_name, event_id], |r| r.get(0)).optional())
            .map_err(|err| self.err(err))?
            .flatten();
        if existing_file == Some(file_id) {
            Ok(Added::RepeatedInFile)
        } else {
            Ok(Added::Duplicate)
        }
    }

    fn insert_reject(&mut self, line: u64, field: Option<&str>, reason: &str) -> Result<()> {
        self.counts.rejects += 1;
        let mut stmt = self
            .tx()
            .prepare_cached(
                "INSERT INTO rejects (file_id, path, line, field, reason, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(|err| self.err(err))?;
        stmt.execute(params![self.row_id(), self.path, line as i64, field, reason, self.now])
            .map(drop)
            .map_err(|err| self.err(err))
    }

    /// Count a queued event by the best key TikTok can match it by (stored with the file's counts).
    fn count_match_key(&mut self, key: MatchKey) {
        let i = match key {
            MatchKey::Email => 0,
            MatchKey::Phone => 1,
            MatchKey::ExternalIdOnly => 2,
            MatchKey::None => 3,
        };
        self.keys[i] += 1;
    }

    /// Whether nothing was added since the last committed part.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty() && self.counts == IngestCounts::default()
    }

    /// Commit durably: the file is ingested whole. After this returns the file may be archived or
    /// deleted. Returns what this ingest added, over all its parts.
    pub fn commit(mut self) -> Result<IngestCounts> {
        self.add_counts()?;
        let (file_id, state) = (self.row_id(), FileState::Ingested);
        let tx = self.tx();
        super::execute_cached(tx, "UPDATE files SET state = ?2 WHERE id = ?1", params![file_id, state])
            .and_then(|_| super::execute_cached(tx, "DELETE FROM positions WHERE file_id = ?1", [file_id]))
            .map_err(|err| self.err(err))?;
        self.finish()
    }

    /// Commit durably, together with the new read position of this file of `source` (append
    /// mode): the position moves past exactly what this transaction recorded, or not at all.
    pub fn commit_at(mut self, source: &str, position: &Position) -> Result<IngestCounts> {
        self.add_counts()?;
        self.record_position(source, position, 0)?;
        self.finish()
    }

    /// Commit what was added so far as one part of a whole file of `source`, with the position the
    /// next part starts at and `taken`, how many things the reader found before it: a read resumed
    /// after a crash or a full queue skips exactly those ([`Queue::part_position`]). The file stays
    /// `ingesting` (not done: it is not to be archived) and this ingest goes on in a new
    /// transaction.
    pub fn commit_part(&mut self, source: &str, position: &Position, taken: u64) -> Result<IngestCounts> {
        self.add_counts()?;
        self.record_position(source, position, taken)?;
        let part = self.counts;
        let tx = self.tx.take().expect("an ingest always has its transaction open");
        super::lock::commit(tx).map_err(|err| self.err(err))?;
        // SQLite's automatic checkpoint (PASSIVE, after a commit leaves the WAL past
        // `wal_autocheckpoint` pages) copies parts into the database without waiting for anyone,
        // and the WAL starts over at the next write once all of it is copied and no reader is in
        // it. With the sender reading all the time that start-over can be missed again and again:
        // once the WAL file passes [`wal_bound`], a TRUNCATE checkpoint (which waits for the
        // readers) empties it. Not after every part: that waited for the sender's reads each
        // time. Best effort: a busy checkpoint leaves it to the next part. While events are being
        // sent, the sender's commits checkpoint first, at a quarter of the bound ([`WalDuty`]), so
        // this one is for an ingest with nothing sent beside it.
        let wal_len = std::fs::metadata(wal_path(&self.queue_path)).map_or(0, |m| m.len());
        let cap = self
            .conn
            .query_row("SELECT (SELECT max_page_count FROM pragma_max_page_count()) * (SELECT page_size FROM pragma_page_size())", [], |r| r.get::<_, i64>(0))
            .unwrap_or(i64::MAX);
        if wal_len > wal_bound(cap.max(0) as u64) {
            let _ = self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        }
        self.committed = self.committed.plus(part);
        self.counts = IngestCounts::default();
        self.tx = Some(self.conn.unchecked_transaction().map_err(|err| self.err(err))?);
        self.next_id = None;
        Ok(part)
    }

    /// Write what is unwritten, and add this transaction's counts to the file's record.
    fn add_counts(&mut self) -> Result<()> {
        self.write_unwritten()?;
        if let Some(next) = self.next_id {
            super::execute_cached(
                self.tx(),
                "UPDATE high_water SET last_event_id = MAX(last_event_id, ?1)",
                [next - 1],
            )
            .map_err(|err| self.err(err))?;
        }
        let c = self.counts;
        let [email, phone, external_id, none] = std::mem::take(&mut self.keys);
        super::execute_cached(
            self.tx(),
            "UPDATE files SET events = events + ?2, duplicates = duplicates + ?3, rejects = rejects + ?4,
               warnings = warnings + ?5, skipped = skipped + ?6, ingested_at = ?7, keys_email = keys_email + ?8,
               keys_phone = keys_phone + ?9, keys_external_id = keys_external_id + ?10, keys_none = keys_none + ?11
             WHERE id = ?1",
            params![
                self.row_id(),
                c.events,
                c.duplicates,
                c.rejects,
                c.warnings,
                c.skipped,
                self.now,
                email,
                phone,
                external_id,
                none
            ],
        )
        .map(drop)
        .map_err(|err| self.err(err))
    }

    /// Write the file's read position in this transaction (nothing else writes `positions`).
    fn record_position(&self, source: &str, position: &Position, taken: u64) -> Result<()> {
        self.tx()
            .execute(
                "INSERT INTO positions (source, path, byte_offset, lines, fingerprint, inode, file_id, updated_at, taken)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (source, path) DO UPDATE SET byte_offset = excluded.byte_offset, lines = excluded.lines,
                   fingerprint = excluded.fingerprint, inode = excluded.inode, file_id = excluded.file_id,
                   updated_at = excluded.updated_at, taken = excluded.taken",
                params![
                    source,
                    self.path,
                    position.offset as i64,
                    position.lines as i64,
                    position.fingerprint,
                    position.inode as i64,
                    self.row_id(),
                    self.now,
                    taken as i64
                ],
            )
            .map(drop)
            .map_err(|err| self.err(err))
    }

    /// Commit the open transaction; returns everything this ingest added.
    fn finish(mut self) -> Result<IngestCounts> {
        let total = self.committed.plus(self.counts);
        let tx = self.tx.take().expect("an ingest always has its transaction open");
        super::lock::commit(tx).map_err(|err| self.err(err))?;
        Ok(total)
    }
}

impl IngestCounts {
    /// Both counts together.
    pub fn plus(self, o: IngestCounts) -> IngestCounts {
        IngestCounts {
            events: self.events + o.events,
            skipped: self.skipped + o.skipped,
            duplicates: self.duplicates + o.duplicates,
            rejects: self.rejects + o.rejects,
            warnings: self.warnings + o.warnings,
            dead: self.dead + o.dead,
        }
    }
}

/// The WAL file size past which a part's commit empties it: an eighth of the queue cap
/// (`cap_bytes`), at most 64 MiB (`journal_size_limit`). Pure.
pub(super) fn wal_bound(cap_bytes: u64) -> u64 {
    (cap_bytes / 8).min(64 * 1024 * 1024)
}

/// The WAL size, in pages of `page_size` bytes, past which a commit of a connection with `duty`
/// checkpoints it (SQLite's automatic `PASSIVE` checkpoint; at least 100 pages). Pure.
pub(super) fn checkpoint_pages(cap_bytes: u64, page_size: u64, duty: WalDuty) -> u64 {
    let bound = wal_bound(cap_bytes);
    let bytes = match duty {
        WalDuty::AtBound => bound,
        WalDuty::Early => (bound / 4).max(EARLY_CHECKPOINT_MIN).min(bound),
    };
    (bytes / page_size.max(512)).max(100)
}

/// The sender's checkpoints copy at least this much WAL: each one copies the pages the sales since
/// the last one touched and `fsync`s the database, and a trickle of sales (~73 KB of WAL each)
/// would pay that every few sales under a small queue cap's bound (2 MB at 16 MB).
const EARLY_CHECKPOINT_MIN: u64 = 4 * 1024 * 1024;

/// Which connection's commits copy the WAL into the database in the service.
///
/// In a backlog the ingest's writer is the narrowest step: its thread runs throughout while the
/// readers wait for it. When its commits did the checkpoints, it spent ~10% of its time copying
/// the WAL (perf), and past [`wal_bound`] a part's TRUNCATE checkpoint copied the rest and waited
/// for the sender's reads (3 times per 1M events, 60–190 ms each). The sender's commits (its
/// deliveries, between batches) now checkpoint at a quarter of the bound (4 MiB at least, the
/// bound at most): the copies run on its thread, and the WAL, all of it copied each time, starts
/// over before it reaches the bound. The ingest's own checkpoints are the fallback, for when
/// nothing is being sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalDuty {
    /// At the bound: the ingest's connection (and any other).
    AtBound,
    /// At a quarter of the bound: the sender's connection.
    Early,
}

/// The WAL file beside the queue file `queue`.
fn wal_path(queue: &Path) -> PathBuf {
    let mut wal = queue.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}
