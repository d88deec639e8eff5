//! Opening the queue: create (mode 0600), configure the connection, migrate; and, for the service,
//! a damaged file moved aside and what can still be read of it salvaged into a fresh one.

use super::lock::{wait_for_lock, LOCK_POLL, LOCK_WAIT};
use super::{schema, Queue, QueueError, Result};
use rusqlite::{params, Connection, OpenFlags};
use std::path::{Path, PathBuf};

/// What [`Queue::open_checked`] did about a damaged queue.
#[derive(Debug, Clone)]
pub struct Recovery {
    pub moved_to: PathBuf,
    pub salvaged: usize,
    pub reason: String,
}

/// One event read back from a damaged queue, with its JSON (empty when it was no longer kept).
struct SalvagedRow {
    id: i64,
    event_name: String,
    event_id: String,
    event_time: i64,
    order_id: String,
    state: i64,
    attempts: i64,
    queued_at: i64,
    sent_at: Option<i64>,
    dead_reason: Option<String>,
    dead_message: Option<String>,
    payload: Option<super::packed::Stored>,
    checksum: Option<i64>,
}

/// The events `sql` (one of [`Queue::salvage_from`]'s reads) finds with `arg`.
fn read_rows(old: &Connection, sql: &str, arg: i64) -> rusqlite::Result<Vec<SalvagedRow>> {
    // Cached: a damaged stretch is read one row at a time, 500 reads of the same statement.
    let mut stmt = old.prepare_cached(sql)?;
    let rows = stmt.query_map([arg], |r| {
        Ok(SalvagedRow {
            id: r.get(0)?,
            event_name: r.get(1)?,
            event_id: r.get(2)?,
            event_time: r.get(3)?,
            order_id: r.get(4)?,
            state: r.get(5)?,
            attempts: r.get(6)?,
            queued_at: r.get(7)?,
            sent_at: r.get(8)?,
            dead_reason: r.get(9)?,
            dead_message: r.get(10)?,
            payload: r.get(11)?,
            checksum: r.get(12)?,
        })
    })?;
    rows.collect()
}

fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase))
}

/// Statements each connection keeps compiled ([`Queue::configure`]).
const STATEMENT_CACHE: usize = 40;

impl Queue {
    /// Open (creating if needed, mode 0600) and migrate.
    pub fn open(path: &Path) -> Result<Queue> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| QueueError::Io { path: dir.to_path_buf(), source })?;
        }
        create_private(path).map_err(|source| QueueError::Io { path: path.to_path_buf(), source })?;
        let conn = Connection::open(path).map_err(|source| QueueError::Sqlite { path: path.to_path_buf(), source })?;
        Queue::ready(conn, path)
    }

    /// Configure a new connection and bring the schema up to date (refusing a newer one).
    fn ready(conn: Connection, path: &Path) -> Result<Queue> {
        let mut queue = Queue { conn, path: path.to_path_buf() };
        // Two connections setting up a new file at once (the service and a `status`) can each hold
        // what the other needs (switching to WAL wants the file alone); SQLite then answers "busy"
        // at once instead of calling the busy handler. The set-up is idempotent: try again.
        let started = std::time::Instant::now();
        let found = loop {
            let attempt = queue
                .configure()
                .and_then(|()| schema::migrate(&mut queue.conn).map_err(|source| queue.sqlite(source)));
            match attempt {
                Err(e) if e.is_busy() && started.elapsed() < LOCK_WAIT => std::thread::sleep(LOCK_POLL * 10),
                other => break other?,
            }
        };
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
        Queue::open_recovering(path, true)
    }

    /// [`Queue::open_checked`], with the full `quick_check` only when `full`: without it, only a
    /// file that SQLite refuses to open is recovered (the service checks the rest after READY,
    /// before its loops start).
    pub fn open_recovering(path: &Path, full: bool) -> Result<(Queue, Option<Recovery>)> {
        let damage = match Queue::open(path) {
            Ok(queue) if !full => return Ok((queue, None)),
            Ok(queue) => match Queue::quick_check(&queue.path) {
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
        let note = format!(
            "the queue was damaged ({}) and was moved aside to {}; {} events were carried over; unarchived export files are ingested again, archived ones re-ingested from the archive",
            recovery.reason,
            recovery.moved_to.display(),
            recovery.salvaged
        );
        queue.update_agent_state(|s| s.recovered = Some(note))?;
        Ok((queue, Some(recovery)))
    }

    /// `PRAGMA quick_check` of the queue file at `path` on a connection of its own with a small
    /// page cache, closed at once, so that reading every page once does not leave the service's
    /// connections with a full cache. The service runs it after READY, before its loops touch the
    /// queue; damage it finds is recovered by [`Queue::open_checked`].
    pub fn quick_check(path: &Path) -> std::result::Result<(), String> {
        let check = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(|e| e.to_string())?;
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
    /// read: a damaged stretch of 500 ids is read again one row at a time, so one bad page loses
    /// only the rows on it. Payload checksums come along (a payload damaged on disk is caught
    /// before it is sent). Returns how many were carried over. Files are not: the archive is
    /// reconciled with the fresh queue after it (`intake::redo`).
    pub(super) fn salvage_from(&mut self, damaged: &Path) -> usize {
        let Ok(old) = Connection::open_with_flags(damaged, OpenFlags::SQLITE_OPEN_READ_ONLY) else { return 0 };
        // The highest id, or (its page unreadable) an upper bound past any the agent could have used.
        let max_id = old
            .query_row("SELECT MAX(id) FROM events", [], |r| r.get::<_, Option<i64>>(0))
            .unwrap_or(Some(i64::MAX / 2));
        let Some(max_id) = max_id else { return 0 };
        let checksum = if old.prepare("SELECT checksum FROM payloads LIMIT 0").is_ok() {
            "(SELECT checksum FROM payloads p WHERE p.id = events.id)"
        } else {
            "NULL"
        };
        // Schema 10: a queued event at or below the sent cursor was sent (`cursor.rs`); it is
        // carried over as sent, its send time taken as its queue time (its JSON is dropped and it
        // is forgotten that much sooner). The cursor is kept twice, in `sent_runs` and in
        // `high_water`: the higher of the two that can be read. No cursor (an older schema), or
        // neither readable: 0, and those events are sent again rather than lost (TikTok drops a
        // repeated event id within 48 hours).
        let read = |sql: &str| old.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap_or(0);
        let old_cursor =
            read(&format!("SELECT {}", super::cursor::CURSOR)).max(read("SELECT sent_upto FROM high_water"));
        let sent = format!("state = {} AND id <= {old_cursor}", super::cursor::QUEUED);
        // Pending by its row (3) is pending under the fresh queue's cursor of 0 as queued (0): an
        // event pending by its row stays at or below the cursor (`cursor.rs`).
        let state = super::cursor::states(&format!(
            "CASE WHEN {sent} THEN {{sent}} WHEN state = {{pending}} THEN {{queued}} ELSE state END"
        ));
        let sent_at = format!("CASE WHEN {sent} THEN COALESCE(sent_at, queued_at) ELSE sent_at END");
        let columns = format!(
            "SELECT id, event_name, event_id, event_time, order_id, {state}, attempts, queued_at, {sent_at},
                    dead_reason, dead_message, (SELECT json FROM payloads p WHERE p.id = events.id), {checksum}
             FROM events"
        );
        let chunk_sql = format!("{columns} WHERE id > ?1 ORDER BY id LIMIT 500");
        let row_sql = format!("{columns} WHERE id = ?1");
        // A schema SQLite cannot read (or without these columns) fails every read before its
        // first row: nothing to carry over. Reading on would fail 1000 stretches of 500 rows one
        // by one, re-reading the schema each time: ~14 s before the service could start.
        if old.prepare_cached(&row_sql).is_err() {
            return 0;
        }
        let mut failures = 0;
        let Ok(tx) = self.conn.transaction() else { return 0 };
        let mut carried = 0;
        let mut cursor = 0i64;
        while cursor < max_id {
            let rows = match read_rows(&old, &chunk_sql, cursor) {
                Ok(rows) if rows.is_empty() => break,
                Ok(rows) => {
                    cursor = rows.last().map_or(cursor + 500, |r| r.id);
                    rows
                }
                // A damaged stretch: read it row by row, but give up on a file damaged throughout.
                Err(_) => {
                    failures += 1;
                    if failures > 1000 {
                        break;
                    }
                    let rows: Vec<SalvagedRow> = (cursor + 1..=cursor + 500)
                        .filter_map(|id| read_rows(&old, &row_sql, id).ok())
                        .flatten()
                        .collect();
                    cursor += 500;
                    rows
                }
            };
            for v in rows {
                let inserted = tx.execute(
                    "INSERT OR IGNORE INTO events (event_name, event_id, event_time, order_id, state, attempts, queued_at,
                        sent_at, dead_reason, dead_message) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    params![
                        v.event_name,
                        v.event_id,
                        v.event_time,
                        v.order_id,
                        v.state,
                        v.attempts,
                        v.queued_at,
                        v.sent_at,
                        v.dead_reason,
                        v.dead_message
                    ],
                );
                if inserted.unwrap_or(0) == 1 {
                    carried += 1;
                    if let Some(payload) = &v.payload {
                        let _ = tx.execute(
                            "INSERT INTO payloads (id, json, checksum) VALUES (?1, ?2, ?3)",
                            params![tx.last_insert_rowid(), payload, v.checksum],
                        );
                    }
                }
            }
        }
        // The ids the fresh queue gave them are queued ids too (`cursor::next_id`).
        let high = tx.execute(
            "UPDATE high_water SET last_event_id = MAX(last_event_id, (SELECT IFNULL(MAX(id), 0) FROM events))",
            [],
        );
        if high.is_err() || super::lock::commit(tx).is_err() {
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
        Queue::ready(conn, path)
    }

    /// `wal_autocheckpoint = 16384` pages (64 MiB, as `journal_size_limit`): in a backlog an event's
    /// pages are written when it is queued and again when it is marked sent; within one WAL cycle
    /// the checkpoint copies such a page to the database once instead of twice (bytes written for a
    /// 200,000-event backlog: 2.45x the JSON sent at SQLite's default of 1000 pages, 1.92x at 16384).
    /// The WAL is still emptied past [`super::ingest`]'s bound (an eighth of the queue cap, at most
    /// 64 MiB) and by the maintenance pass; after a power cut SQLite reads at most that much WAL
    /// once when the queue is opened.
    fn configure(&mut self) -> Result<()> {
        // First, so that even switching to WAL waits for another connection instead of failing.
        self.conn.busy_handler(Some(wait_for_lock)).map_err(|e| self.sqlite(e))?;
        // rusqlite keeps 16 statements by default: fewer than the service's ingest connection uses
        // for a file with a rejected row and a re-exported order, so that every such file compiled
        // ~15 statements afresh (gdb on a running service). A kept statement is a few KB.
        self.conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        self.conn
            .execute_batch(
                "PRAGMA auto_vacuum = INCREMENTAL;
                 PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = FULL;
                 PRAGMA foreign_keys = ON;
                 PRAGMA journal_size_limit = 67108864;
                 PRAGMA cache_size = -2048;
                 PRAGMA wal_autocheckpoint = 16384;",
            )
            .map_err(|e| self.sqlite(e))
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
