//! An ingest's transaction: what it commits together, parts, rereads, rows written early, the
//! write lock and the foreign keys it does not enforce.

use super::*;

#[test]
fn an_ingest_commits_events_rejects_and_the_file_record_together() {
    let (_dir, mut q) = temp_queue();
    let mut ingest = q.begin_ingest("h1", Path::new("/pos/a.csv"), "till", 100).unwrap();
    ingest.add_event(&event("e1", 10)).unwrap();
    ingest.add_event(&event("e2", 11)).unwrap();
    // A repeat of an order earlier in the same file is a rejected row.
    ingest.add_event(&NewEvent { line: 5, ..event("e1", 10) }).unwrap();
    ingest.add_reject(7, Some("price"), "not an amount").unwrap();
    let counts = ingest.commit().unwrap();
    assert_eq!((counts.events, counts.rejects, counts.duplicates), (2, 2, 0));
    let file = q.file_by_hash("h1").unwrap().unwrap();
    assert_eq!((file.state.as_str(), file.events), ("ingested", 2));
    assert_eq!(q.counts().unwrap().pending, 2);
    // Written in the order they were read (the newest first here).
    let lines: Vec<i64> = q.recent_rejects(10).unwrap().iter().map(|r| r.line).collect();
    assert_eq!(lines, [7, 5]);
}

#[test]
fn an_ingest_dropped_without_commit_leaves_nothing() {
    let (_dir, mut q) = temp_queue();
    {
        let mut ingest = q.begin_ingest("h1", Path::new("/pos/a.csv"), "till", 100).unwrap();
        ingest.add_event(&event("e1", 10)).unwrap();
    }
    assert!(q.file_by_hash("h1").unwrap().is_none());
    assert_eq!(q.counts().unwrap().pending, 0);
}

#[test]
fn a_re_export_is_not_queued_twice() {
    let (_dir, mut q) = temp_queue();
    let mut a = q.begin_ingest("h1", Path::new("a"), "s", 1).unwrap();
    a.add_event(&event("e1", 10)).unwrap();
    a.commit().unwrap();
    let mut b = q.begin_ingest("h2", Path::new("b"), "s", 2).unwrap();
    b.add_event(&event("e1", 10)).unwrap();
    b.add_event(&event("e3", 10)).unwrap();
    let counts = b.commit().unwrap();
    assert_eq!((counts.events, counts.duplicates, counts.rejects), (1, 1, 0));
    assert_eq!(q.counts().unwrap().pending, 2);
}

#[test]
fn an_append_part_commits_with_its_position_or_not_at_all() {
    let (_dir, mut q) = temp_queue();
    let path = Path::new("/pos/day.csv");
    let at = |offset| Position { offset, lines: offset / 10, fingerprint: format!("f{offset}"), inode: 7 };
    {
        let mut ingest = q.begin_append(None, path, "till", 100).unwrap();
        ingest.add_event(&event("e1", 10)).unwrap();
    }
    assert!(q.position("till", path).unwrap().is_none(), "rolled back: no position");
    assert_eq!(q.counts().unwrap().pending, 0);
    assert_eq!(q.counts().unwrap().files, 0, "nor a file record");

    let mut ingest = q.begin_append(None, path, "till", 100).unwrap();
    ingest.add_event(&event("e1", 10)).unwrap();
    ingest.commit_at("till", &at(120)).unwrap();
    let (position, file_id) = q.position("till", path).unwrap().unwrap();
    assert_eq!(position, at(120));

    // The next part of the same file: its record adds up, and an order seen before is a repeat.
    let mut ingest = q.begin_append(file_id, path, "till", 101).unwrap();
    ingest.add_event(&event("e2", 11)).unwrap();
    ingest.add_event(&event("e1", 10)).unwrap();
    let counts = ingest.commit_at("till", &at(300)).unwrap();
    assert_eq!((counts.events, counts.rejects), (1, 1), "e1 repeats an order of this file");
    assert_eq!(q.position("till", path).unwrap().unwrap(), (at(300), file_id));
    let file = &q.recent_files(10).unwrap()[0];
    assert_eq!((file.state.as_str(), file.events, file.content_hash.starts_with("append:")), ("append", 2, true));

    // Read again from the start (truncated): a new record, and what was queued is a duplicate.
    let mut ingest = q.begin_append(None, path, "till", 102).unwrap();
    ingest.add_event(&event("e1", 10)).unwrap();
    assert_eq!(ingest.commit_at("till", &at(40)).unwrap().duplicates, 1);
    let (position, new_id) = q.position("till", path).unwrap().unwrap();
    assert_eq!(position, at(40));
    assert_ne!(new_id, file_id);
    assert_eq!(q.positions(10).unwrap().len(), 1);
    assert_eq!(q.counts().unwrap().pending, 2);
}

#[test]
fn a_reread_replaces_the_earlier_read_only_when_it_commits() {
    let (_dir, mut q) = temp_queue();
    let mut first = q.begin_ingest("h1", Path::new("/pos/a.csv"), "till", 100).unwrap();
    first.add_reject(2, Some("price"), "not an amount").unwrap();
    first.commit().unwrap();
    let old = q.file_by_hash("h1").unwrap().unwrap().id;
    assert_eq!((q.superseded_counts(old).unwrap().rejects, q.recent_rejects(10).unwrap().len()), (1, 1));

    // A new read that does not commit (dropped: the file changed, a crash) leaves the earlier one.
    let mut again = q.begin_reread(Some(old), "h1", Path::new("/pos/a.csv"), "till", 200).unwrap();
    again.add_event(&event("e1", 10)).unwrap();
    drop(again);
    assert_eq!(q.file_by_hash("h1").unwrap().map(|r| r.id), Some(old), "still the earlier read");
    assert_eq!(q.recent_rejects(10).unwrap().len(), 1, "its rejected row is kept");

    // One that commits replaces it in the same transaction.
    let mut again = q.begin_reread(Some(old), "h1", Path::new("/pos/a.csv"), "till", 300).unwrap();
    again.add_event(&event("e1", 10)).unwrap();
    again.commit().unwrap();
    assert_ne!(q.file_by_hash("h1").unwrap().map(|r| r.id), Some(old), "the content now names the new read");
    assert!(q.recent_rejects(10).unwrap().is_empty(), "the earlier read's rejected row went with it");
    assert_eq!(q.counts().unwrap().pending, 1);
}

/// Rows held in memory are written early once they pass 1 MiB (in the open transaction): a repeat
/// of an order written that way is still a rejected row, and a re-export still a duplicate.
#[test]
fn rows_written_early_still_find_repeats_and_duplicates() {
    let (_dir, mut q) = temp_queue();
    let mut a = q.begin_ingest("h1", Path::new("/pos/a.csv"), "till", 100).unwrap();
    a.add_event(&event("old", 10)).unwrap();
    a.commit().unwrap();
    let big = format!(r#"{{"description":"{}"}}"#, "x".repeat(400_000));
    let mut b = q.begin_ingest("h2", Path::new("/pos/b.csv"), "till", 200).unwrap();
    for id in ["e1", "e2", "e3"] {
        b.add_event(&NewEvent { payload: Payload::Json(&big), ..event(id, 10) }).unwrap();
    }
    // Past 1 MiB: written already, before the commit.
    assert_eq!(b.written_events(), 3);
    b.add_event(&NewEvent { line: 9, ..event("e1", 10) }).unwrap();
    b.add_event(&event("old", 10)).unwrap();
    let counts = b.commit().unwrap();
    assert_eq!((counts.events, counts.rejects, counts.duplicates), (3, 1, 1));
    assert_eq!(q.recent_rejects(10).unwrap()[0].line, 9);
}

/// Rejected rows count towards the 1 MiB too: long reasons are written early like big events.
#[test]
fn rejected_rows_with_long_reasons_are_written_early_too() {
    let (_dir, mut q) = temp_queue();
    let reason = "y".repeat(400_000);
    let mut ingest = q.begin_ingest("h1", Path::new("/pos/a.csv"), "till", 100).unwrap();
    ingest.add_reject(2, Some("price"), &reason).unwrap();
    ingest.add_reject(3, None, &reason).unwrap();
    assert_eq!(ingest.written_rejects(), 0, "under 1 MiB: held");
    ingest.add_reject(4, Some("price"), &reason).unwrap();
    assert_eq!(ingest.written_rejects(), 3);
    assert_eq!(ingest.commit().unwrap().rejects, 3);
    let rejects = q.recent_rejects(10).unwrap();
    let mut seen: Vec<(i64, Option<&str>, usize)> =
        rejects.iter().map(|r| (r.line, r.field.as_deref(), r.reason.len())).collect();
    seen.sort();
    assert_eq!(seen, [(2, Some("price"), 400_000), (3, None, 400_000), (4, Some("price"), 400_000)]);
}

/// A new file's ingest writes nothing, and so takes no write lock, until its first rows are
/// written: another connection commits meanwhile without waiting.
#[test]
fn a_new_ingest_takes_the_write_lock_only_when_it_writes() {
    let (dir, mut q) = temp_queue();
    let other = Queue::open(&dir.path().join("q.sqlite")).unwrap();
    let mut ingest = q.begin_ingest("h1", Path::new("/pos/a.csv"), "till", 100).unwrap();
    ingest.add_event(&event("e1", 10)).unwrap();
    assert_eq!(ingest.written_file_id(), None);
    other.update_agent_state(|s| s.paused = Some("x".into())).unwrap();
    let file_id = ingest.file_id().unwrap();
    assert!(file_id > 0);
    ingest.commit().unwrap();
    assert_eq!(q.file_by_hash("h1").unwrap().unwrap().id, file_id);
    assert_eq!(q.counts().unwrap().pending, 1);
}

/// An ingest holds its unwritten events' texts and payloads in two buffers that it empties and
/// refills from write to write (past 1 MiB, at each part): every event still gets its own ids,
/// payload and checksum, across writes inside a part, parts, and payloads of different sizes and
/// kinds (packed, and JSON text the packing cannot carry).
#[test]
fn held_events_keep_their_own_texts_and_payloads_across_writes_and_parts() {
    let (_dir, mut q) = temp_queue();
    let json = |i: usize| {
        let id = format!("e{i}");
        match i % 3 {
            // A raw control character: not packable, stored as TEXT.
            0 => format!("{{\"event_id\":\"{id}\",\"note\":\"a\u{1}b\"}}"),
            1 => format!(r#"{{"event":"Purchase","event_time":10,"event_id":"{id}","properties":{{}}}}"#),
            _ => format!(r#"{{"event_id":"{id}","pad":"{}"}}"#, "x".repeat(i % 1997)),
        }
    };
    let at = |offset| Position { offset, lines: offset, fingerprint: format!("f{offset}"), inode: 7 };
    // About 2.5 MiB of payloads in two parts: written mid-part at least once in each.
    let n = 5_000;
    let mut ingest = q.begin_ingest("h1", Path::new("/pos/a.csv"), "till", 100).unwrap();
    for i in 0..n {
        let (id, payload) = (format!("e{i}"), json(i));
        ingest.add_event(&NewEvent { payload: Payload::Json(&payload), ..event(&id, 10) }).unwrap();
        if i == n / 2 {
            ingest.commit_part("till", &at(i as u64), i as u64 + 1).unwrap();
        }
    }
    assert_eq!(ingest.commit().unwrap().events, n as i64);
    let text: i64 =
        q.conn.query_row("SELECT COUNT(*) FROM payloads WHERE typeof(json) = 'text'", [], |r| r.get(0)).unwrap();
    assert_eq!(text, (0..n).filter(|i| i % 3 == 0).count() as i64, "the unpackable ones are stored as TEXT");
    let batch = q.pending_batch(n).unwrap();
    assert_eq!(batch.events.len(), n);
    for (i, e) in batch.events.iter().enumerate() {
        assert_eq!((batch.event_id(e), e.intact), (format!("e{i}").as_str(), true));
        assert_eq!(batch.payload(e), json(i), "event {i}");
    }
}

/// A whole file's first part may hold nothing but skipped sales (refunds, voids): it commits
/// like any part, the file's record written with it and counting them.
#[test]
fn a_first_part_of_only_skipped_sales_commits_with_its_file_record() {
    let (_dir, mut q) = temp_queue();
    let at = |offset| Position { offset, lines: offset, fingerprint: format!("f{offset}"), inode: 7 };
    let mut ingest = q.begin_ingest("h1", Path::new("/pos/refunds.csv"), "till", 100).unwrap();
    for _ in 0..3 {
        ingest.add_skip();
    }
    let part = ingest.commit_part("till", &at(30), 3).unwrap();
    assert_eq!((part.events, part.skipped), (0, 3));
    ingest.add_event(&event("e1", 10)).unwrap();
    let total = ingest.commit().unwrap();
    assert_eq!((total.events, total.skipped), (1, 3));
    let skipped: i64 = q.conn.query_row("SELECT skipped FROM files", [], |r| r.get(0)).unwrap();
    assert_eq!(skipped, 3);
}

/// Foreign keys are not enforced inside an ingest (`ingest.rs`, `UnenforcedKeys`): what it writes
/// must hold them all the same, a reread's deletions included, and the connection enforces them
/// again once the ingest ends, committed or dropped.
#[test]
fn an_ingest_keeps_the_foreign_keys_it_does_not_enforce() {
    keeps_the_foreign_keys(None);
}

/// The same on a connection that only ingests (the service's, `run --once`, `import`): foreign keys
/// off for good, and the ingests keep them all the same.
#[test]
fn an_ingesting_connection_keeps_the_foreign_keys_it_never_enforces() {
    keeps_the_foreign_keys(Some(crate::queue::Role::Ingest));
}

/// Ingests on a connection set up for `role` (none: a plain connection, which enforces foreign keys
/// but while an ingest lasts): a commit, a dropped and a committed reread, parts, an append-mode
/// part leave no violation and no orphaned payload, and the connection as it was.
fn keeps_the_foreign_keys(role: Option<crate::queue::Role>) {
    let (_dir, mut q) = temp_queue();
    if let Some(role) = role {
        role.configure(&q, 1 << 30).unwrap();
    }
    let keys = i64::from(role.is_none_or(|r| r.enforces_foreign_keys()));
    let enforced = |q: &Queue| q.conn.query_row("PRAGMA foreign_keys", [], |r| r.get::<_, i64>(0)).unwrap();
    let violations = |q: &Queue| {
        let mut stmt = q.conn.prepare("PRAGMA foreign_key_check").unwrap();
        stmt.query_map([], |r| r.get::<_, String>(0)).unwrap().count()
    };
    let payloads = |q: &Queue| q.conn.query_row("SELECT COUNT(*) FROM payloads", [], |r| r.get::<_, i64>(0)).unwrap();
    let mut first = q.begin_ingest("h1", Path::new("/pos/a.csv"), "till", 100).unwrap();
    assert!(!first.enforces_foreign_keys(), "not enforced while the ingest lasts");
    first.add_event(&event("e1", 10)).unwrap();
    first.add_event(&NewEvent { dead_reason: Some(DeadReason::Invalid), ..event("e2", 10) }).unwrap();
    first.add_event(&NewEvent { dead_reason: Some(DeadReason::Invalid), ..event("e3", 10) }).unwrap();
    first.commit().unwrap();
    assert_eq!((enforced(&q), violations(&q), payloads(&q)), (keys, 0, 3));
    let old = q.file_by_hash("h1").unwrap().unwrap().id;

    let mut dropped = q.begin_reread(Some(old), "h1", Path::new("/pos/a.csv"), "till", 200).unwrap();
    dropped.add_event(&event("e4", 10)).unwrap();
    drop(dropped);
    assert_eq!((enforced(&q), violations(&q), payloads(&q)), (keys, 0, 3), "a dropped ingest changes nothing");
    assert!(q.conn.is_autocommit(), "no transaction left open");

    // The reread deletes the dead events e2 and e3, and their payloads with them.
    let mut again = q.begin_reread(Some(old), "h1", Path::new("/pos/a.csv"), "till", 300).unwrap();
    again.add_event(&event("e1", 10)).unwrap();
    again.add_event(&event("e5", 10)).unwrap();
    again.commit().unwrap();
    assert_eq!((enforced(&q), violations(&q), payloads(&q)), (keys, 0, 2));
    let orphans: i64 = q
        .conn
        .query_row("SELECT COUNT(*) FROM payloads WHERE id NOT IN (SELECT id FROM events)", [], |r| r.get(0))
        .unwrap();
    assert_eq!(orphans, 0);

    // A whole file in parts, committed or dropped after a committed part; an append-mode part.
    let at = |offset| Position { offset, lines: offset, fingerprint: format!("f{offset}"), inode: 7 };
    for commit in [true, false] {
        let hash = format!("parts-{commit}");
        let mut parts = q.begin_ingest(&hash, Path::new("/pos/b.csv"), "till", 400).unwrap();
        parts.add_event(&event(&format!("{hash}-1"), 10)).unwrap();
        parts.commit_part("till", &at(10), 1).unwrap();
        assert!(!parts.enforces_foreign_keys(), "still not enforced in the next part");
        parts.add_event(&event(&format!("{hash}-2"), 10)).unwrap();
        if commit {
            parts.commit().unwrap();
        } else {
            drop(parts);
        }
        assert_eq!((enforced(&q), violations(&q)), (keys, 0), "parts, committed: {commit}");
    }
    let mut append = q.begin_append(None, Path::new("/pos/day.csv"), "till", 500).unwrap();
    append.add_event(&event("a1", 10)).unwrap();
    append.commit_at("till", &at(20)).unwrap();
    assert_eq!((enforced(&q), violations(&q)), (keys, 0), "an append-mode part");
}

/// Events are written `RUN` at a time (`queue::ingest`): a run holding an event dead on arrival,
/// cut by a rejected row, holding a repeat of an order earlier in the same run, or re-exports of
/// an earlier file's events (some or all) is queued as one by one: the same counts, rejected rows
/// and rows, ids in the file's order without a gap, each payload under its event.
#[test]
fn events_written_in_runs_are_queued_as_one_by_one() {
    use crate::queue::ingest::RUN;
    let (_dir, mut q) = temp_queue();
    let n = 4 * RUN + 7;
    let (dead, reject, repeat, repeated) = (1, RUN + 10, 2 * RUN + 2, 2 * RUN - 8);
    let ids: Vec<String> = (0..n).map(|i| format!("e{i}")).collect();
    let payloads: Vec<String> = (0..n).map(|i| format!(r#"{{"event_id":"e{i}"}}"#)).collect();
    let mut b = q.begin_ingest("h1", Path::new("/pos/b.csv"), "till", 200).unwrap();
    for i in 0..n {
        let line = i as u64;
        let e = NewEvent { line, payload: Payload::Json(&payloads[i]), ..event(&ids[i], 10 + i as i64) };
        match i {
            _ if i == dead => b.add_event(&NewEvent { dead_reason: Some(DeadReason::Invalid), ..e }),
            _ if i == reject => b.add_reject(line, Some("price"), "not an amount"),
            _ if i == repeat => b.add_event(&NewEvent { line, ..event(&ids[repeated], 10 + repeated as i64) }),
            _ => b.add_event(&e),
        }
        .unwrap();
    }
    let counts = b.commit().unwrap();
    assert_eq!((counts.events, counts.dead, counts.duplicates, counts.rejects), (n as i64 - 2, 1, 0, 2));
    // Every row as one by one writes it, in the file's order from id 1.
    let mut stmt = q
        .conn
        .prepare("SELECT id, event_id, order_id, event_time, state, queued_at, dead_reason, dead_message FROM events ORDER BY id")
        .unwrap();
    type Row = (i64, String, String, i64, i64, i64, Option<String>, Option<String>);
    let rows: Vec<Row> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    drop(stmt);
    let queued: Vec<usize> = (0..n).filter(|&i| i != reject && i != repeat).collect();
    let want: Vec<Row> = queued
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            let (state, reason, message) = if i == dead {
                (2, Some("invalid".to_string()), Some(DeadReason::ON_ARRIVAL_MESSAGE.to_string()))
            } else {
                (0, None, None)
            };
            (k as i64 + 1, ids[i].clone(), ids[i].clone(), 10 + i as i64, state, 200, reason, message)
        })
        .collect();
    assert_eq!(rows, want);
    let batch = q.pending_batch(n).unwrap();
    let sent: Vec<(&str, &str)> = batch.events.iter().map(|e| (batch.event_id(e), batch.payload(e))).collect();
    let want: Vec<(&str, &str)> =
        queued.iter().filter(|&&i| i != dead).map(|&i| (ids[i].as_str(), payloads[i].as_str())).collect();
    assert_eq!(sent, want);
    let mut lines: Vec<i64> = q.recent_rejects(10).unwrap().iter().map(|r| r.line).collect();
    lines.sort();
    assert_eq!(lines, [reject as i64, repeat as i64]);

    // A re-export: a run of new events and old ones, then a run of old ones only, then new ones.
    let new: Vec<String> = (0..2 * RUN).map(|i| format!("x{i}")).collect();
    let file: Vec<&str> = new[..RUN / 2]
        .iter()
        .chain(&ids[RUN + RUN / 2..2 * RUN])
        .chain(&ids[2 * RUN + 10..3 * RUN + 10])
        .chain(&new[RUN / 2..])
        .map(String::as_str)
        .collect();
    let mut c = q.begin_ingest("h2", Path::new("/pos/c.csv"), "till", 300).unwrap();
    for id in &file {
        c.add_event(&event(id, 10)).unwrap();
    }
    let counts = c.commit().unwrap();
    assert_eq!((counts.events, counts.duplicates, counts.rejects), (2 * RUN as i64, RUN as i64 + RUN as i64 / 2, 0));
    let c_ids: Vec<(i64, String)> = pairs(&q, "SELECT id, event_id FROM events WHERE queued_at = 300 ORDER BY id");
    let first = n as i64 - 1;
    assert_eq!(c_ids, new.iter().enumerate().map(|(k, id)| (first + k as i64, id.clone())).collect::<Vec<_>>());
}

/// A payload row left under an id no event has had yet (a stray: ids are never used twice, so it
/// belongs to nothing) does not stop an ingest: the new event's payload replaces it, in a run of
/// events (`RUN`, `queue::ingest`) and one by one.
#[test]
fn a_stray_payload_under_a_new_events_id_is_replaced() {
    use crate::queue::ingest::RUN;
    let (_dir, mut q) = temp_queue();
    // The ids start at 1: a stray in the first run, and one among the events after it.
    let strays = format!("(3, 'stray'), ({}, 'stray')", RUN + 2);
    q.conn
        .execute_batch(&format!(
            "PRAGMA foreign_keys = OFF; INSERT INTO payloads (id, json) VALUES {strays}; PRAGMA foreign_keys = ON;"
        ))
        .unwrap();
    let n = RUN + 5;
    let ids: Vec<String> = (0..n).map(|i| format!("e{i}")).collect();
    let payloads: Vec<String> = (0..n).map(|i| format!(r#"{{"event_id":"e{i}"}}"#)).collect();
    let mut ingest = q.begin_ingest("h1", Path::new("/pos/a.csv"), "till", 100).unwrap();
    for i in 0..n {
        ingest.add_event(&NewEvent { payload: Payload::Json(&payloads[i]), ..event(&ids[i], 10) }).unwrap();
    }
    assert_eq!(ingest.commit().unwrap().events, n as i64);
    let batch = q.pending_batch(n).unwrap();
    let got: Vec<(i64, &str, &str)> =
        batch.events.iter().map(|e| (e.id, batch.event_id(e), batch.payload(e))).collect();
    let want: Vec<(i64, &str, &str)> = (0..n).map(|i| (i as i64 + 1, ids[i].as_str(), payloads[i].as_str())).collect();
    assert_eq!(got, want);
}

/// A reader hands its `Held` over when its events end with whole runs (`RUN`, `queue::ingest`),
/// so that none of them is written one by one: the trailing run restarts after a rejected row.
#[test]
fn a_held_part_tells_whether_its_events_end_with_whole_runs() {
    use crate::queue::ingest::RUN;
    let mut held = Held::default();
    assert!(held.ends_whole_runs());
    for i in 0..2 * RUN {
        held.add_event(&event("e", i as i64));
        assert_eq!(held.ends_whole_runs(), (i + 1) % RUN == 0, "after {} events", i + 1);
    }
    held.add_event(&event("e", 0));
    assert!(!held.ends_whole_runs());
    held.add_reject(3, None, "bad");
    assert!(held.ends_whole_runs(), "a rejected row ends the run");
    held.add_event(&event("e", 0));
    assert!(!held.ends_whole_runs());
}
