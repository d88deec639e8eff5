//! The sent cursor (`cursor.rs`) through the queue's own calls: what a delivered request writes,
//! what it holds back, what the maintenance forgets, what a new event's id is after that.

use super::*;
use rusqlite::StatementStatus;

fn log() -> SendLogEntry {
    SendLogEntry {
        id: 0,
        at: 50,
        events: 1,
        http_status: Some(200),
        code: Some(0),
        class: SendClass::Delivered,
        message: "ok".into(),
        request_id: None,
        test_event_code: None,
    }
}

/// Record a request of `ids` TikTok took at `at`, as the sender does.
fn deliver(q: &mut Queue, ids: &[i64], at: i64) {
    let delivered = Delivered { ids: ids.to_vec(), log: SendLogEntry { at, ..log() }, confirmed: None };
    assert!(q.record_delivered(&[delivered], true, |_| {}).unwrap());
}

fn queue_events(q: &mut Queue, hash: &str, events: &[(&str, i64)]) -> Vec<i64> {
    let mut ingest = q.begin_ingest(hash, Path::new("a.csv"), "till", 1).unwrap();
    for (id, time) in events {
        ingest.add_event(&event(id, *time)).unwrap();
    }
    ingest.commit().unwrap();
    let ids = q.conn.prepare("SELECT id FROM events ORDER BY id").unwrap();
    let all: Vec<i64> = { ids }.query_map([], |r| r.get(0)).unwrap().collect::<rusqlite::Result<_>>().unwrap();
    all[all.len() - events.len()..].to_vec()
}

/// `(id, state as stored)` of every event, in id order.
fn stored_states(q: &Queue) -> Vec<(i64, i64)> {
    let mut stmt = q.conn.prepare("SELECT id, state FROM events ORDER BY id").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().collect::<rusqlite::Result<_>>().unwrap()
}

fn cursor_of(q: &Queue) -> i64 {
    crate::queue::cursor::cursor(&q.conn).unwrap()
}

fn counts(q: &Queue) -> (i64, i64, i64) {
    let c = q.counts().unwrap();
    assert_eq!(q.pending_count().unwrap(), c.pending, "pending_count and counts agree");
    assert_eq!(q.has_pending().unwrap(), c.pending > 0);
    (c.pending, c.sent, c.dead)
}

/// A queue with `events` queued and then `prepare`d (given the queue and the events' ids), salvaged
/// into a fresh one as a damaged queue would be: the fresh queue (and its directory) and how many
/// events the salvage carried over.
fn salvaged(events: &[(&str, i64)], prepare: impl FnOnce(&mut Queue, &[i64])) -> (tempdir::Dir, Queue, usize) {
    let dir = tempdir::Dir::new();
    let old_path = dir.path().join("old.sqlite");
    {
        let mut old = Queue::open(&old_path).unwrap();
        let ids = queue_events(&mut old, "h", events);
        prepare(&mut old, &ids);
    }
    let mut fresh = Queue::open(&dir.path().join("new.sqlite")).unwrap();
    let carried = fresh.salvage_from(&old_path);
    (dir, fresh, carried)
}

/// The next event queued in `q` takes an id above `top`.
fn assert_next_id_above(q: &mut Queue, top: i64) {
    let new = queue_events(q, "next", &[("next", 100)]);
    assert!(new[0] > top, "{new:?} after {top}");
}

#[test]
fn a_delivered_request_moves_the_cursor_and_writes_the_held_back_events_it_passes() {
    let (_dir, mut q) = temp_queue();
    let ids = queue_events(&mut q, "h", &[("e1", 100), ("e2", 100), ("e3", 10), ("e4", 100), ("e5", 100)]);
    // A clock distrusted: e3 looks expired and is held back; the batch skips it.
    let mut batch = Batch::default();
    q.read_pending(&mut batch, 3, 50).unwrap();
    let read: Vec<i64> = batch.events.iter().map(|e| e.id).collect();
    assert_eq!(read, [ids[0], ids[1], ids[3]]);
    deliver(&mut q, &read, 60);
    assert_eq!(cursor_of(&q), ids[3]);
    // The delivered rows are not rewritten; the one passed over says it is pending.
    let pending = EventState::Pending.code();
    assert_eq!(stored_states(&q), [(ids[0], 0), (ids[1], 0), (ids[2], pending), (ids[3], 0), (ids[4], 0)]);
    assert_eq!(counts(&q), (2, 3, 0));
    // Once the clock is trusted again, the held-back event goes out with the rest, in id order.
    q.read_pending(&mut batch, 10, i64::MIN).unwrap();
    let read: Vec<i64> = batch.events.iter().map(|e| e.id).collect();
    assert_eq!(read, [ids[2], ids[4]]);
    assert_eq!(batch.pending_by_row, 1, "the held-back event was read as pending by its row");
    deliver(&mut q, &read, 70);
    assert_eq!(cursor_of(&q), ids[4]);
    assert_eq!(counts(&q), (0, 5, 0));
    let sent_at: i64 = q.conn.query_row("SELECT sent_at FROM events WHERE id = ?1", [ids[2]], |r| r.get(0)).unwrap();
    assert_eq!(sent_at, 70);
    // A sent event is not dead-lettered, expired or sent again.
    q.mark_dead(&[ids[0], ids[2]], DeadReason::Invalid, "x").unwrap();
    assert_eq!(q.expire_older_than(1_000).unwrap(), 0);
    assert_eq!(counts(&q), (0, 5, 0));
    q.read_pending(&mut batch, 10, i64::MIN).unwrap();
    assert!(batch.events.is_empty());
}

#[test]
fn refused_and_retried_events_are_written_and_the_cursor_stays() {
    let (_dir, mut q) = temp_queue();
    let ids = queue_events(&mut q, "h", &[("e1", 100), ("e2", 100), ("e3", 100)]);
    let retry = SendLogEntry { class: SendClass::Retry, ..log() };
    q.record_attempt(&ids, Disposition::StillPending, &retry, |_| {}).unwrap();
    assert_eq!(cursor_of(&q), 0);
    let refused = Disposition::Dead { reason: DeadReason::Invalid, message: "data.1: bad" };
    q.record_attempt(&ids[1..2], refused, &log(), |_| {}).unwrap();
    assert_eq!(counts(&q), (2, 0, 1));
    // The rest delivered: the cursor passes the dead one, which stays dead.
    deliver(&mut q, &[ids[0], ids[2]], 60);
    assert_eq!(counts(&q), (0, 2, 1));
    let attempts: Vec<i64> = ids
        .iter()
        .map(|id| q.conn.query_row("SELECT attempts FROM events WHERE id = ?1", [id], |r| r.get(0)).unwrap())
        .collect();
    assert_eq!(attempts, [1, 2, 1], "each attempt counted; a send by the cursor writes no row");
    // Put back in the queue below the cursor: pending by its row, and sent again.
    assert_eq!(q.requeue(&DeadFilter::All).unwrap(), 1);
    assert_eq!(counts(&q), (1, 2, 0));
    let batch = q.pending_batch(10).unwrap();
    assert_eq!(batch.events.iter().map(|e| e.id).collect::<Vec<_>>(), [ids[1]]);
    deliver(&mut q, &[ids[1]], 70);
    assert_eq!(counts(&q), (0, 3, 0));
    assert_eq!(cursor_of(&q), ids[2], "the cursor never moves down");
}

#[test]
fn an_event_queued_after_every_sent_one_was_forgotten_is_pending() {
    let (_dir, mut q) = temp_queue();
    let ids = queue_events(&mut q, "h1", &[("e1", 100), ("e2", 100)]);
    deliver(&mut q, &ids, 60);
    // Their JSON dropped, then the events forgotten: the table is empty, the cursor stays.
    assert_eq!(q.clear_sent_payloads(61).unwrap(), 2);
    assert_eq!(q.prune(1_000, 10).unwrap(), 2);
    assert!(stored_states(&q).is_empty());
    assert_eq!(cursor_of(&q), ids[1]);
    // SQLite alone would give the next event id 1, at or below the cursor: sent, never sent.
    assert_next_id_above(&mut q, ids[1]);
    assert_eq!(counts(&q), (1, 0, 0));
    assert_eq!(q.pending_batch(10).unwrap().events.len(), 1);
}

#[test]
fn maintenance_drops_and_forgets_what_the_cursor_sent_by_its_send_time() {
    let (_dir, mut q) = temp_queue();
    let ids = queue_events(&mut q, "h", &[("e1", 100), ("e2", 100), ("e3", 100), ("e4", 100)]);
    deliver(&mut q, &ids[..1], 60);
    deliver(&mut q, &ids[1..3], 80);
    let payloads = |q: &Queue| -> i64 { q.conn.query_row("SELECT COUNT(*) FROM payloads", [], |r| r.get(0)).unwrap() };
    assert_eq!(q.clear_sent_payloads(70).unwrap(), 1, "sent at 60");
    assert_eq!(payloads(&q), 3);
    assert_eq!(q.clear_sent_payloads(70).unwrap(), 0, "not again");
    assert_eq!(q.clear_sent_payloads(90).unwrap(), 2, "sent at 80");
    // Forgotten only once timed and sent before the cutoff; the pending one stays.
    assert_eq!(q.prune(70, 10).unwrap(), 0, "timed after the cutoff");
    assert_eq!(q.prune(101, 10).unwrap(), 3);
    assert_eq!(stored_states(&q), [(ids[3], 0)]);
    assert_eq!(counts(&q), (1, 0, 0));
    let runs: Vec<i64> = {
        let mut stmt = q.conn.prepare("SELECT upto FROM sent_runs ORDER BY upto").unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().collect::<rusqlite::Result<_>>().unwrap()
    };
    assert_eq!(runs, [ids[2]], "only the cursor's row is left");
}

#[test]
fn a_salvaged_queue_keeps_what_the_cursor_sent_as_sent() {
    let events = [("e1", 100), ("e2", 100), ("e3", 10), ("e4", 100)];
    let (_dir, mut fresh, carried) = salvaged(&events, |old, ids| {
        let mut batch = Batch::default();
        old.read_pending(&mut batch, 2, 50).unwrap();
        let read: Vec<i64> = batch.events.iter().map(|e| e.id).collect();
        assert_eq!(read, [ids[0], ids[1]]);
        deliver(old, &read, 60);
        old.mark_dead(&[ids[3]], DeadReason::Invalid, "x").unwrap();
        assert_eq!(counts(old), (1, 2, 1));
    });
    assert_eq!(carried, 4);
    assert_eq!(counts(&fresh), (1, 2, 1));
    let batch = fresh.pending_batch(10).unwrap();
    assert_eq!(batch.events.iter().map(|e| batch.event_id(e)).collect::<Vec<_>>(), ["e3"]);
    // Carried over as sent, timed by their queue time (a NULL send time would never be cleaned).
    let sent_at: Vec<Option<i64>> = {
        let mut stmt = fresh.conn.prepare("SELECT sent_at FROM events WHERE state = 1 ORDER BY id").unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().collect::<rusqlite::Result<_>>().unwrap()
    };
    assert_eq!(sent_at, [Some(1), Some(1)]);
    // The salvaged ids count as queued: the highest, deleted, is not given again.
    let top: i64 = fresh.conn.query_row("SELECT MAX(id) FROM events", [], |r| r.get(0)).unwrap();
    fresh.conn.execute("DELETE FROM events WHERE id = ?1", [top]).unwrap();
    assert_next_id_above(&mut fresh, top);
}

#[test]
fn a_salvage_without_a_readable_cursor_keeps_pending_events_below_the_new_one() {
    let (_dir, fresh, carried) = salvaged(&[("e1", 10), ("e2", 100), ("e3", 100)], |old, ids| {
        let mut batch = Batch::default();
        old.read_pending(&mut batch, 1, 50).unwrap();
        assert_eq!(batch.events[0].id, ids[1]);
        // e1 held back and passed: pending by its row; then neither cursor copy readable.
        deliver(old, &[ids[1]], 60);
        old.conn.execute_batch("DROP TABLE sent_runs; DROP TABLE high_water;").unwrap();
    });
    assert_eq!(carried, 3);
    // Sent again rather than lost; none pending by its row above the fresh cursor.
    assert_eq!(counts(&fresh), (3, 0, 0));
    assert!(stored_states(&fresh).iter().all(|&(_, state)| state == crate::queue::cursor::QUEUED));
}

#[test]
fn an_event_put_back_above_the_cursor_is_queued_and_below_it_pending_by_its_row() {
    let (_dir, mut q) = temp_queue();
    let mut ingest = q.begin_ingest("h", Path::new("a.csv"), "till", 1).unwrap();
    for (id, dead) in [("e1", true), ("e2", false), ("e3", true), ("e4", false)] {
        let dead_reason = dead.then_some(DeadReason::Expired);
        ingest.add_event(&NewEvent { dead_reason, ..event(id, 100) }).unwrap();
    }
    ingest.commit().unwrap();
    let ids: Vec<i64> = stored_states(&q).iter().map(|(id, _)| *id).collect();
    deliver(&mut q, &[ids[1]], 60);
    assert_eq!(cursor_of(&q), ids[1]);
    assert_eq!(q.requeue(&DeadFilter::All).unwrap(), 2);
    let (pending, queued) = (EventState::Pending.code(), crate::queue::cursor::QUEUED);
    assert_eq!(stored_states(&q), [(ids[0], pending), (ids[1], queued), (ids[2], queued), (ids[3], queued)]);
    // A batch in id order: the one below the cursor, then those above it; a delivery of it moves
    // the cursor past queued events only.
    let batch = q.pending_batch(10).unwrap();
    assert_eq!(batch.events.iter().map(|e| e.id).collect::<Vec<_>>(), [ids[0], ids[2], ids[3]]);
    deliver(&mut q, &[ids[0], ids[2]], 70);
    assert_eq!(cursor_of(&q), ids[2]);
    assert_eq!(counts(&q), (1, 3, 0));
}

#[test]
fn an_id_is_never_used_twice_even_once_its_event_is_deleted() {
    let (_dir, mut q) = temp_queue();
    let mut ingest = q.begin_ingest("h1", Path::new("a.csv"), "till", 1).unwrap();
    ingest.add_event(&event("e1", 100)).unwrap();
    ingest.add_event(&NewEvent { dead_reason: Some(DeadReason::Expired), ..event("e2", 100) }).unwrap();
    ingest.commit().unwrap();
    let top = stored_states(&q)[1].0;
    assert_eq!(q.purge(&DeadFilter::All).unwrap(), 1);
    assert_next_id_above(&mut q, top);
}

#[test]
fn a_salvage_reads_the_cursor_kept_twice_when_one_copy_is_lost() {
    let (_dir, fresh, carried) = salvaged(&[("e1", 100), ("e2", 100), ("e3", 100)], |old, ids| {
        deliver(old, &ids[..2], 60);
        // The page of `sent_runs` lost: the table unreadable.
        old.conn.execute_batch("DROP TABLE sent_runs;").unwrap();
    });
    assert_eq!(carried, 3);
    assert_eq!(counts(&fresh), (1, 2, 0));
}

/// The sender's requests while an ingest holds the write lock: a record that does not wait writes
/// nothing, the next read starts above the requests not recorded, and once the lock is free one
/// record moves the cursor past them all, with a send-log line each.
#[test]
fn requests_not_recorded_are_read_past_and_recorded_together_once_the_lock_is_free() {
    let (dir, mut q) = temp_queue();
    let ids = queue_events(&mut q, "d", &[("a", 100), ("b", 100), ("c", 100), ("d", 100), ("e", 100)]);
    let other = Queue::open(&dir.path().join("q.sqlite")).unwrap();
    let writing = rusqlite::Transaction::new_unchecked(&other.conn, rusqlite::TransactionBehavior::Immediate).unwrap();
    writing.execute("INSERT INTO agent_state (key, value) VALUES ('x', '1')", []).unwrap();
    let delivered = |batch: &Batch, request: &str| Delivered {
        ids: batch.events.iter().map(|e| e.id).collect(),
        log: SendLogEntry { request_id: Some(request.into()), ..log() },
        confirmed: Some(Some(request.into())),
    };
    let mut batch = Batch::default();
    q.read_pending_after(&mut batch, 2, i64::MIN, 0).unwrap();
    assert_eq!((batch.events.len(), batch.pending_by_row), (2, 0));
    let first = delivered(&batch, "r1");
    let started = std::time::Instant::now();
    assert!(!q.record_delivered(std::slice::from_ref(&first), false, |_| panic!("nothing is written")).unwrap());
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "it waited for the lock");
    assert_eq!((cursor_of(&q), counts(&q)), (0, (5, 0, 0)));
    q.read_pending_after(&mut batch, 2, i64::MIN, ids[1]).unwrap();
    assert_eq!(batch.events.iter().map(|e| e.id).collect::<Vec<_>>(), ids[2..4]);
    let second = delivered(&batch, "r2");
    drop(writing);
    let recorded = q.record_delivered(&[first, second], false, |s| s.last_request_id = Some("r2".into())).unwrap();
    assert!(recorded);
    assert_eq!((cursor_of(&q), counts(&q)), (ids[3], (1, 4, 0)));
    let lines: Vec<String> = q
        .conn
        .prepare("SELECT request_id FROM send_log ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(lines, ["r1", "r2"]);
    assert_eq!(q.agent_state().unwrap().last_request_id.as_deref(), Some("r2"));
    q.read_pending_after(&mut batch, 10, i64::MIN, 0).unwrap();
    assert_eq!(batch.events.iter().map(|e| e.id).collect::<Vec<_>>(), ids[4..]);
}

/// A batch read binds a new limit and cutoff each time; SQLite must not prepare its statements
/// again for that (a plain `LIMIT ?1` made it do so before every batch).
#[test]
fn batch_reads_are_not_prepared_again_for_each_batch() {
    let (_dir, mut q) = temp_queue();
    let ids = queue_events(&mut q, "r", &[("e1", 100), ("e2", 100), ("e3", 10), ("e4", 100)]);
    let mut batch = Batch::default();
    q.read_pending(&mut batch, 1, 50).unwrap();
    deliver(&mut q, &[ids[0]], 60);
    for (limit, cutoff, after) in [(2, 50, 0), (3, i64::MIN, 0), (1, 0, ids[1]), (5, 20, 0)] {
        q.read_pending_after(&mut batch, limit, cutoff, after).unwrap();
        assert!(!batch.events.is_empty(), "limit {limit}, cutoff {cutoff}, after {after}");
    }
    for sql in [crate::queue::outbox::PENDING_HELD.get(), crate::queue::outbox::PENDING_QUEUED.get()] {
        let stmt = q.conn.prepare_cached(sql).unwrap();
        assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0, "{sql}");
    }
}

/// `watch` reads the send log 4 times a second, each time after the last id it showed: the read
/// is not prepared again for the new bounds.
#[test]
fn the_tap_s_send_log_read_is_not_prepared_again_at_each_poll() {
    let (_dir, q) = temp_queue();
    for at in [10, 20, 30] {
        q.log_request(&SendLogEntry { at, ..log() }).unwrap();
    }
    for (after, limit, expected) in [(0, 500, 3), (1, 1, 1), (2, 500, 1), (3, 7, 0)] {
        assert_eq!(q.send_log_after(after, limit).unwrap().len(), expected, "after {after}, limit {limit}");
    }
    let stmt = q.conn.prepare_cached(crate::queue::report::SEND_LOG_AFTER).unwrap();
    assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0);
}

/// A damaged queue whose schema SQLite cannot read has nothing to carry over, and the fresh queue
/// works. (That the salvage now says so at once, where it tried 500,000 reads one by one first,
/// 22.7 s in a debug build, is not asserted: no timing in tests.)
#[test]
fn a_salvage_of_a_queue_with_an_unreadable_schema_carries_nothing() {
    let dir = tempdir::Dir::new();
    let damaged = dir.path().join("damaged.sqlite");
    {
        let old = rusqlite::Connection::open(&damaged).unwrap();
        old.execute_batch(
            "CREATE TABLE events (id INTEGER PRIMARY KEY, x);
             PRAGMA writable_schema = ON;
             UPDATE sqlite_master SET sql = 'CREATE TABLE events (id INTEGER PRIMARY KEY, x' WHERE name = 'events';",
        )
        .unwrap();
    }
    let mut fresh = Queue::open(&dir.path().join("new.sqlite")).unwrap();
    assert_eq!(fresh.salvage_from(&damaged), 0);
    let ids = queue_events(&mut fresh, "f", &[("after", 100)]);
    assert_eq!(ids.len(), 1, "the fresh queue takes events");
}

/// A connection set up to ingest compiles the statements of a file's ingest once, however many
/// files it takes, each with a rejected row and a re-export of an order queued before (the
/// statements of the usual day-so-far re-export): turning foreign keys off and on around each
/// ingest (as on any other connection) expired every statement prepared on it, and a statement
/// cache smaller than what one file uses pushed some out, to be compiled afresh for the next.
#[test]
fn an_ingesting_connection_compiles_a_file_s_statements_once_over_many_files() {
    let (_dir, mut q) = temp_queue();
    crate::queue::Role::Ingest.configure(&q, 1 << 30).unwrap();
    let files = 4;
    for file in 0..files {
        let mut ingest = q.begin_ingest(&format!("h{file}"), Path::new("a.csv"), "till", 1).unwrap();
        ingest.add_event(&event(&format!("f{file}a"), 100)).unwrap();
        ingest.add_reject(2, Some("price"), "not an amount").unwrap();
        ingest.add_event(&event("f0a", 100)).unwrap();
        ingest.commit().unwrap();
    }
    for sql in [
        "UPDATE high_water SET last_event_id = MAX(last_event_id, ?1)",
        "UPDATE files SET state = ?2 WHERE id = ?1",
        "DELETE FROM positions WHERE file_id = ?1",
    ] {
        let stmt = q.conn.prepare_cached(sql).unwrap();
        // Compiled again, it would have started counting again.
        let status = (stmt.get_status(StatementStatus::RePrepare), stmt.get_status(StatementStatus::Run));
        assert_eq!(status, (0, files), "{sql}");
    }
}
