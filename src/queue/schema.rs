//! Schema and migrations, keyed on `PRAGMA user_version`.

use rusqlite::Connection;

pub const VERSION: i64 = 11;

const V1: &str = "
CREATE TABLE files (
    id INTEGER PRIMARY KEY,
    content_hash TEXT NOT NULL UNIQUE,
    path TEXT NOT NULL,
    source TEXT NOT NULL,
    state TEXT NOT NULL,
    events INTEGER NOT NULL DEFAULT 0,
    duplicates INTEGER NOT NULL DEFAULT 0,
    rejects INTEGER NOT NULL DEFAULT 0,
    warnings INTEGER NOT NULL DEFAULT 0,
    skipped INTEGER NOT NULL DEFAULT 0,
    ingested_at INTEGER NOT NULL,
    disposed TEXT
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    event_name TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_time INTEGER NOT NULL,
    order_id TEXT NOT NULL,
    file_id INTEGER REFERENCES files(id) ON DELETE SET NULL,
    state INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    queued_at INTEGER NOT NULL,
    sent_at INTEGER,
    dead_reason TEXT,
    dead_message TEXT,
    UNIQUE (event_name, event_id)
);
CREATE INDEX events_by_state ON events (state, id);
CREATE INDEX events_by_state_time ON events (state, event_time);
CREATE INDEX events_sent_at ON events (sent_at) WHERE state = 1;
-- The wire JSON of each event, apart from the small rows above: dropped once the event is sent,
-- which frees whole pages (a re-export still finds the event id in `events`).
CREATE TABLE payloads (id INTEGER PRIMARY KEY REFERENCES events(id) ON DELETE CASCADE, json TEXT NOT NULL);
CREATE TABLE rejects (
    id INTEGER PRIMARY KEY,
    file_id INTEGER REFERENCES files(id) ON DELETE SET NULL,
    path TEXT NOT NULL,
    line INTEGER NOT NULL,
    field TEXT,
    reason TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE TABLE send_log (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    events INTEGER NOT NULL,
    http_status INTEGER,
    code INTEGER,
    class TEXT NOT NULL,
    message TEXT NOT NULL,
    request_id TEXT,
    test_event_code TEXT
);
CREATE TABLE agent_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
";

/// Append mode: how far each growing file has been turned into events. A row changes only in the
/// transaction that commits the events, rejects and skips read from the part it moves past.
const V2: &str = "
CREATE TABLE positions (
    source TEXT NOT NULL,
    path TEXT NOT NULL,
    -- Bytes from the start of the file that have been turned into events.
    byte_offset INTEGER NOT NULL,
    -- Physical lines (LF) before byte_offset.
    lines INTEGER NOT NULL,
    -- SHA-256 (hex) of the first min(byte_offset, 4096) bytes: tells a replaced file.
    fingerprint TEXT NOT NULL,
    inode INTEGER NOT NULL,
    -- The `files` row this file's events are recorded under (a new one after a restart).
    file_id INTEGER REFERENCES files(id) ON DELETE SET NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (source, path)
);
";

/// Files that could not be read at all are recorded and looked up by path (line 0).
const V3: &str = "CREATE INDEX rejects_whole_files ON rejects (path) WHERE line = 0;";

/// Redo (issue 9): a checksum with each payload, verified before it is sent (NULL: stored by an
/// older agent, not verified); the archived files the queue knows, so that reconciling the archive
/// with the queue hashes only files it has not seen as they are; damaged payloads found by id.
const V4_REDO: &str = "
ALTER TABLE payloads ADD COLUMN checksum INTEGER;
CREATE TABLE archived (
    path TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    size INTEGER NOT NULL,
    -- Modification time in nanoseconds since the epoch.
    mtime_ns INTEGER NOT NULL,
    content_hash TEXT NOT NULL,
    recorded_at INTEGER NOT NULL
);
CREATE INDEX archived_by_hash ON archived (content_hash);
CREATE INDEX events_corrupt ON events (id) WHERE dead_reason = 'corrupt';
";

/// Parts: a whole file too big for one transaction is committed in parts, each with its `positions`
/// row; `taken` counts the things its reader found (orders, rejected rows, skipped sales) before
/// the position, so a resumed read skips exactly those (0 for append mode, which seeks instead).
const V5_PARTS: &str = "ALTER TABLE positions ADD COLUMN taken INTEGER NOT NULL DEFAULT 0;";

/// Match keys (issue 10): each file's queued events counted by the best key TikTok can match them
/// by (`event::screen::MatchKey`), for coverage per source in `status` and the metrics.
const V6_MATCH_KEYS: &str = "
ALTER TABLE files ADD COLUMN keys_email INTEGER NOT NULL DEFAULT 0;
ALTER TABLE files ADD COLUMN keys_phone INTEGER NOT NULL DEFAULT 0;
ALTER TABLE files ADD COLUMN keys_external_id INTEGER NOT NULL DEFAULT 0;
ALTER TABLE files ADD COLUMN keys_none INTEGER NOT NULL DEFAULT 0;
";

/// Backlog speed (issue 12): no index on (state, event_time). Every event wrote it at ingest and
/// rewrote it (a delete and an insert) when it was sent, for two maintenance queries that run at
/// most every 10 minutes (expiry, prune) and find their rows through `events_by_state` and
/// `events_sent_at` instead; the sender's batches walk `events_by_state`.
const V7_BACKLOG: &str = "DROP INDEX IF EXISTS events_by_state_time;";

/// Backlog speed (issue 12): `events_by_state` ordered with the highest state first (dead, sent,
/// pending). Ascending, a queued event's entry (0, id) went in the middle of the index, at the end
/// of the pending entries and before every sent one, so a backlog's ingest split full index pages
/// over and over (SQLite's `balance_nonroot`: half of the cost of an insert); now it is appended at
/// the end. And marking sent deletes (0, id) and inserts (1, id) at the same place, where pending
/// meets sent: the page that loses the one gains the other.
/// Version 8 is also the first whose payloads may be packed BLOBs (`packed.rs`), which an older
/// agent cannot read: it refuses a queue of a newer schema instead ([`QueueError::TooNew`]). A new
/// packing format version must come with a schema version too.
///
/// [`QueueError::TooNew`]: super::QueueError::TooNew
const V8_STATE_ORDER: &str = "
DROP INDEX IF EXISTS events_by_state;
CREATE INDEX events_by_state ON events (state DESC, id);
";

/// Backlog speed (issue 12): no index of sent events by send time. Marking an event sent inserted
/// its entry (bytes written: the entry in the WAL and again at the checkpoint; CPU: a B-tree
/// insert), for the two maintenance queries that run at most every 10 minutes (dropping sent
/// events' JSON after an hour, forgetting them after the retention): they walk the sent events
/// through `events_by_state` instead, which holds the sent events of the retention (tens of
/// thousands on a busy till) until they are forgotten.
/// Version 9 is also the first whose payloads may be packed in version 2 (references to the row's
/// event id, order id and event time: `packed.rs`), which an agent of schema 8 cannot read.
const V9_NO_SENT_AT_INDEX: &str = "DROP INDEX IF EXISTS events_sent_at;";

/// Backlog speed (issue 12): the sent cursor (`cursor.rs`). An event queued by an ingest keeps
/// `state` 0 (queued) when it is sent: it is sent when its id is at or below the cursor, the
/// highest `upto` of `sent_runs`. A delivered request adds one `sent_runs` row instead of
/// rewriting a thousand event rows and their index entries, and the ingest writes no state index
/// entry: the other states (1 sent, 2 dead, 3 pending: written when an event is refused, held back,
/// put back in the queue...) are in `events_exceptions`. `high_water` keeps, in one row, the
/// cursor again (what a salvage of a damaged queue reads if `sent_runs` is unreadable) and the
/// highest id ever queued (an id is never used twice, even once its event is deleted: see
/// `cursor::next_id`). The events pending at the migration keep
/// their state 0 under a cursor of 0: still pending. An agent of schema 9 reads state 0 as pending
/// and would send again what this one sent: it refuses this schema ([`QueueError::TooNew`]).
///
/// [`QueueError::TooNew`]: super::QueueError::TooNew
const V10_SENT_CURSOR: &str = "
CREATE TABLE sent_runs (upto INTEGER PRIMARY KEY, at INTEGER NOT NULL);
CREATE TABLE high_water (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    sent_upto INTEGER NOT NULL DEFAULT 0,
    last_event_id INTEGER NOT NULL DEFAULT 0
);
INSERT INTO high_water (id, last_event_id) SELECT 1, IFNULL(MAX(id), 0) FROM events;
DROP INDEX IF EXISTS events_by_state;
CREATE INDEX events_exceptions ON events (state, id) WHERE state <> 0;
";

/// Backlog speed (issue 12): payloads packed in version 3 (`packed.rs`), whose checksum is XXH3
/// rather than SHA-256. No table changes; the version tells an agent of schema 10, which would
/// find every new payload damaged, to refuse the queue ([`QueueError::TooNew`]).
///
/// [`QueueError::TooNew`]: super::QueueError::TooNew
const V11_XXH3_CHECKSUMS: &str = "";

/// Bring the schema up to [`VERSION`]; returns the version found before (so the caller can refuse
/// a database from a newer agent).
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<i64> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found >= VERSION {
        return Ok(found);
    }
    // Another process (the service and a `status` started at the same moment) may be migrating
    // too: take the write lock first, then look again.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let found: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found >= VERSION {
        return Ok(found);
    }
    if found < 1 {
        tx.execute_batch(V1)?;
    }
    if found < 2 {
        tx.execute_batch(V2)?;
    }
    if found < 3 {
        tx.execute_batch(V3)?;
    }
    if found < 4 {
        tx.execute_batch(V4_REDO)?;
    }
    if found < 5 {
        tx.execute_batch(V5_PARTS)?;
    }
    if found < 6 {
        tx.execute_batch(V6_MATCH_KEYS)?;
    }
    if found < 7 {
        tx.execute_batch(V7_BACKLOG)?;
    }
    if found < 8 {
        tx.execute_batch(V8_STATE_ORDER)?;
    }
    if found < 9 {
        tx.execute_batch(V9_NO_SENT_AT_INDEX)?;
    }
    if found < 10 {
        tx.execute_batch(V10_SENT_CURSOR)?;
    }
    if found < 11 {
        tx.execute_batch(V11_XXH3_CHECKSUMS)?;
    }
    tx.execute_batch(&format!("PRAGMA user_version = {VERSION};"))?;
    super::lock::commit(tx)?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objects(conn: &Connection) -> Vec<String> {
        let mut stmt =
            conn.prepare("SELECT name || ': ' || COALESCE(sql, '') FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name").unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().collect::<rusqlite::Result<_>>().unwrap()
    }

    #[test]
    fn every_older_schema_migrates_to_the_same_current_one() {
        let mut fresh = Connection::open_in_memory().unwrap();
        assert_eq!(migrate(&mut fresh).unwrap(), 0);
        let want = objects(&fresh);
        assert!(want.iter().any(|o| o.starts_with("rejects_whole_files: ")), "{want:?}");
        assert!(want.iter().any(|o| o.ends_with("ON events (state, id) WHERE state <> 0")), "{want:?}");
        assert!(!want.iter().any(|o| o.starts_with("events_by_state")), "{want:?}");
        // Databases left by earlier agents: the schema at each version, with a row to keep.
        assert!(!want.iter().any(|o| o.starts_with("events_sent_at")), "{want:?}");
        let all = [
            V1,
            V2,
            V3,
            V4_REDO,
            V5_PARTS,
            V6_MATCH_KEYS,
            V7_BACKLOG,
            V8_STATE_ORDER,
            V9_NO_SENT_AT_INDEX,
            V10_SENT_CURSOR,
        ];
        for version in 1..VERSION {
            let steps = &all[..version as usize];
            let mut old = Connection::open_in_memory().unwrap();
            for step in steps {
                old.execute_batch(step).unwrap();
            }
            old.execute_batch(&format!("PRAGMA user_version = {version};")).unwrap();
            old.execute("INSERT INTO rejects (path, line, reason, at) VALUES ('/pos/a.csv', 0, 'x', 1)", []).unwrap();
            assert_eq!(migrate(&mut old).unwrap(), version);
            assert_eq!(objects(&old), want, "from version {version}");
            let kept: i64 = old.query_row("SELECT COUNT(*) FROM rejects", [], |r| r.get(0)).unwrap();
            assert_eq!(kept, 1);
            assert_eq!(migrate(&mut old).unwrap(), VERSION, "a second open changes nothing");
        }
    }

    #[test]
    fn the_events_of_a_schema_9_queue_keep_their_states_under_the_sent_cursor() {
        let mut old = Connection::open_in_memory().unwrap();
        for step in [V1, V2, V3, V4_REDO, V5_PARTS, V6_MATCH_KEYS, V7_BACKLOG, V8_STATE_ORDER, V9_NO_SENT_AT_INDEX] {
            old.execute_batch(step).unwrap();
        }
        old.execute_batch("PRAGMA user_version = 9;").unwrap();
        // Schema 9 stored pending as 0, sent as 1, dead as 2.
        for (id, state) in [(1, 1), (2, 0), (3, 2), (4, 0), (5, 1)] {
            old.execute(
                "INSERT INTO events (id, event_name, event_id, event_time, order_id, state, queued_at)
                 VALUES (?1, 'Purchase', ?1, 1, ?1, ?2, 1)",
                [id, state],
            )
            .unwrap();
        }
        assert_eq!(migrate(&mut old).unwrap(), 9);
        let sql = format!("SELECT {} FROM events e ORDER BY id", super::super::cursor::effective_state("e"));
        let states: Vec<i64> =
            old.prepare(&sql).unwrap().query_map([], |r| r.get(0)).unwrap().collect::<rusqlite::Result<_>>().unwrap();
        use super::super::EventState::{Dead, Pending, Sent};
        assert_eq!(states, [Sent, Pending, Dead, Pending, Sent].map(|s| s.code()));
    }
}
