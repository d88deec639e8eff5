use super::*;

fn temp_queue() -> (tempdir::Dir, Queue) {
    let dir = tempdir::Dir::new();
    let q = Queue::open(&dir.path().join("q.sqlite")).unwrap();
    (dir, q)
}

/// A throwaway directory removed on drop (no extra crate for one helper).
mod tempdir {
    pub struct Dir(std::path::PathBuf);
    impl Dir {
        pub fn new() -> Dir {
            let p = std::env::temp_dir().join(format!("oea-q-{}-{}", std::process::id(), fastrand::u64(..)));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
        pub fn path(&self) -> &std::path::Path {
            &self.0
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn event<'a>(id: &'a str, time: i64) -> NewEvent<'a> {
    NewEvent {
        event_name: "Purchase",
        event_id: id,
        event_time: time,
        order_id: id,
        payload: Payload::Json("{}"),
        dead_reason: None,
        line: 0,
        key: crate::event::screen::MatchKey::None,
    }
}

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
fn states_expiry_requeue_and_purge() {
    let (_dir, mut q) = temp_queue();
    let mut ingest = q.begin_ingest("h", Path::new("a"), "s", 1).unwrap();
    for (i, t) in [100, 200, 300, 400].iter().enumerate() {
        let id = format!("e{i}");
        ingest.add_event(&event(&id, *t)).unwrap();
    }
    ingest.commit().unwrap();
    let batch = q.pending_batch(10).unwrap();
    assert_eq!(batch.events.iter().map(|e| e.event_time).collect::<Vec<_>>(), vec![100, 200, 300, 400]);
    assert_eq!(q.expire_older_than(150).unwrap(), 1);
    q.mark_sent(&[batch.events[1].id], 5).unwrap();
    q.mark_dead(&[batch.events[2].id], DeadReason::Invalid, "data.0: bad").unwrap();
    let c = q.counts().unwrap();
    assert_eq!((c.pending, c.sent, c.dead), (1, 1, 2));
    let dead = q.dead_events(10).unwrap();
    assert_eq!(dead.iter().map(|d| d.reason.as_str()).collect::<Vec<_>>(), vec!["expired", "invalid"]);
    assert_eq!(
        q.not_dead(&[batch.events[0].id, batch.events[2].id, batch.events[3].id, 9999]).unwrap(),
        vec![batch.events[3].id, 9999]
    );
    assert_eq!(q.requeue(&DeadFilter::Reason(DeadReason::Invalid)).unwrap(), 1);
    assert_eq!(q.purge(&DeadFilter::All).unwrap(), 1);
    let c = q.counts().unwrap();
    assert_eq!((c.pending, c.sent, c.dead), (2, 1, 0));
}

#[cfg(unix)]
#[test]
fn the_queue_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, _q) = temp_queue();
    let mode = std::fs::metadata(dir.path().join("q.sqlite")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn reopening_keeps_everything() {
    let dir = tempdir::Dir::new();
    let path = dir.path().join("q.sqlite");
    {
        let mut q = Queue::open(&path).unwrap();
        let mut ingest = q.begin_ingest("h", Path::new("a"), "s", 1).unwrap();
        ingest.add_event(&event("e1", 1)).unwrap();
        ingest.commit().unwrap();
    }
    let q = Queue::open_existing(&path).unwrap();
    assert_eq!(q.counts().unwrap().pending, 1);
    assert!(matches!(Queue::open_existing(&dir.path().join("nope")), Err(QueueError::Missing(_))));
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
fn two_openers_racing_on_a_new_queue_both_succeed() {
    for _ in 0..20 {
        let dir = tempdir::Dir::new();
        let path = dir.path().join("q.sqlite");
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let p = path.clone();
                std::thread::spawn(move || Queue::open(&p).map(drop))
            })
            .collect();
        for h in handles {
            h.join().unwrap().unwrap();
        }
    }
}

#[test]
fn agent_state_reads_what_the_typed_writers_wrote() {
    let (_dir, mut q) = temp_queue();
    assert_eq!(q.agent_state().unwrap(), AgentState::default());
    let mut ingest = q.begin_ingest("h", Path::new("a"), "s", 1).unwrap();
    ingest.add_event(&event("e1", 10)).unwrap();
    ingest.add_event(&event("e2", 10)).unwrap();
    ingest.commit().unwrap();
    let ids: Vec<i64> = q.pending_batch(10).unwrap().events.iter().map(|e| e.id).collect();
    q.update_agent_state(|s| s.ingest_held = Some("queue full".into())).unwrap();
    let log = |class| SendLogEntry {
        id: 0,
        at: 50,
        events: 1,
        http_status: Some(503),
        code: None,
        class,
        message: "http 503".into(),
        request_id: None,
        test_event_code: None,
    };
    q.record_attempt(&ids[..1], Disposition::StillPending, &log(SendClass::Retry), |s| {
        s.last_error = Some("http 503".into());
        s.last_error_at = Some(50);
        s.next_retry_at = Some(60);
        s.consecutive_failures = Some(1);
    })
    .unwrap();
    let state = q.agent_state().unwrap();
    assert_eq!(
        state,
        AgentState {
            last_error: Some("http 503".into()),
            last_error_at: Some(50),
            next_retry_at: Some(60),
            consecutive_failures: Some(1),
            ingest_held: Some("queue full".into()),
            ..AgentState::default()
        }
    );
    q.record_attempt(&ids[..1], Disposition::Sent { at: 70 }, &log(SendClass::Delivered), |s| {
        s.last_success_at = Some(70);
        s.last_request_id = Some("r1".into());
        s.next_retry_at = None;
        s.consecutive_failures = None;
    })
    .unwrap();
    q.record_attempt(
        &ids[1..],
        Disposition::Dead { reason: DeadReason::TooLarge, message: "tiktok code 40061: too large" },
        &log(SendClass::Rejected(DeadReason::TooLarge)),
        |_| {},
    )
    .unwrap();
    q.update_agent_state(|s| s.ingest_held = None).unwrap();
    let state = q.agent_state().unwrap();
    assert_eq!(
        state,
        AgentState {
            last_error: Some("http 503".into()),
            last_error_at: Some(50),
            last_success_at: Some(70),
            last_request_id: Some("r1".into()),
            ..AgentState::default()
        }
    );
    let c = q.counts().unwrap();
    assert_eq!((c.pending, c.sent, c.dead), (0, 1, 1));
    assert_eq!(q.dead_events(10).unwrap()[0].reason, "too_large");
    let classes: Vec<SendClass> = q.send_log_after(0, 10).unwrap().iter().map(|l| l.class).collect();
    assert_eq!(classes, [SendClass::Retry, SendClass::Delivered, SendClass::Rejected(DeadReason::TooLarge)]);
    // Stored as before the types: the same keys and text.
    let keys: Vec<(String, String)> = q
        .conn
        .prepare("SELECT key, value FROM agent_state ORDER BY key")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    let want =
        [("last_error", "http 503"), ("last_error_at", "50"), ("last_request_id", "r1"), ("last_success_at", "70")];
    assert_eq!(keys, want.map(|(k, v)| (k.to_string(), v.to_string())));
}

#[test]
fn a_payload_that_fails_its_checksum_is_found_and_restored_from_a_rebuilt_json() {
    let (_dir, mut q) = temp_queue();
    let mut ingest = q.begin_ingest("h1", Path::new("/pos/a.csv"), "till", 100).unwrap();
    for id in ["e1", "e2"] {
        let payload = format!("{{\"event_id\":\"{id}\"}}");
        ingest.add_event(&NewEvent { payload: Payload::Json(&payload), ..event(id, 10) }).unwrap();
    }
    let file_id = ingest.file_id().unwrap();
    ingest.commit().unwrap();
    q.remember_archived_file("/pos/archive/a.csv", "till", 10, 5, file_id, 100).unwrap();
    assert!(q.archive_known("/pos/archive/a.csv", 10, 5).unwrap());
    assert!(!q.archive_known("/pos/archive/a.csv", 11, 5).unwrap(), "another size is another file");
    let batch = q.pending_batch(10).unwrap();
    assert!(batch.events.iter().all(|e| e.intact));
    q.damage_payload(batch.events[1].id, "{\"event_id\":\"f2\"}").unwrap();
    let batch = q.pending_batch(10).unwrap();
    assert_eq!(batch.events.iter().map(|e| e.intact).collect::<Vec<_>>(), [true, false]);
    q.mark_dead(&[batch.events[1].id], DeadReason::Corrupt, DeadReason::CORRUPT_MESSAGE).unwrap();
    let corrupt = q.corrupt_to_rebuild(10).unwrap();
    assert_eq!(corrupt.len(), 1);
    assert_eq!(corrupt[0].archived, Some(("/pos/archive/a.csv".into(), "till".into())));
    assert_eq!(corrupt[0].content_hash.as_deref(), Some("h1"));
    // Read again from the archived file: the event, packed against the row as it is (its event id
    // here is not the row's, so it is written out).
    let rebuilt = crate::event::Event {
        event: "Purchase",
        event_time: 10,
        event_id: crate::event::id::EventId::derive("s042", "t1", "e2"),
        user: crate::event::User::default(),
        contents: vec![],
        currency: crate::event::money::Currency::parse("USD").unwrap(),
        value: rust_decimal::Decimal::ONE,
        order_id: "e2".into(),
        shop_id: "s042".into(),
        description: None,
    };
    assert!(q.restore_payload(corrupt[0].id, &rebuilt).unwrap());
    let batch = q.pending_batch(10).unwrap();
    assert!(batch.events.iter().all(|e| e.intact));
    assert_eq!(batch.payload(&batch.events[1]), crate::tiktok::wire::event_json(&rebuilt));
    assert_eq!(q.counts().unwrap().pending, 2);
    assert!(q.corrupt_to_rebuild(10).unwrap().is_empty());
    // Given up on: stays dead, no longer offered for a rebuild.
    q.mark_dead(&[batch.events[0].id], DeadReason::Corrupt, DeadReason::CORRUPT_MESSAGE).unwrap();
    q.give_up_rebuild(&[batch.events[0].id]).unwrap();
    assert!(q.corrupt_to_rebuild(10).unwrap().is_empty());
    assert_eq!(q.counts().unwrap().dead, 1);
}

#[test]
fn source_totals_count_files_keys_and_events_by_state() {
    use crate::event::screen::MatchKey;
    let (_dir, mut q) = temp_queue();
    let mut a = q.begin_ingest("h1", Path::new("/pos/a.csv"), "till", 100).unwrap();
    for (id, key) in [("e1", MatchKey::Email), ("e2", MatchKey::None), ("e3", MatchKey::ExternalIdOnly)] {
        a.add_event(&NewEvent { key, ..event(id, 10) }).unwrap();
    }
    a.add_reject(3, None, "bad").unwrap();
    a.commit().unwrap();
    let mut b = q.begin_ingest("h2", Path::new("/pos/b.csv"), "web", 200).unwrap();
    b.add_event(&NewEvent { dead_reason: Some(DeadReason::Expired), key: MatchKey::Phone, ..event("e4", 10) }).unwrap();
    b.commit().unwrap();

    let totals = q.source_totals(150).unwrap();
    let till = &totals["till"];
    assert_eq!((till.files, till.files_since, till.last_file_at, till.rejects), (1, 0, Some(100), 1));
    assert_eq!((till.coverage.email, till.coverage.external_id_only, till.coverage.none), (1, 1, 1));
    assert_eq!((totals["web"].files_since, totals["web"].coverage.phone), (1, 1));
    let by_source = q.events_by_source().unwrap();
    assert_eq!(by_source["till"], StateCounts { queued: 3, sent: 0, dead: 0 });
    assert_eq!(by_source["web"], StateCounts { queued: 0, sent: 0, dead: 1 });
    let files = q.recent_files(10).unwrap();
    let by_file = q.events_of_recent_files(10).unwrap();
    assert_eq!(by_file[&files[0].id], StateCounts { queued: 0, sent: 0, dead: 1 }, "b.csv: its one event died");
    assert_eq!(q.dead_by_reason().unwrap().into_iter().collect::<Vec<_>>(), [("expired".to_string(), 1)]);
}

#[test]
fn data_version_changes_for_another_connections_commit_only() {
    let (dir, sender) = temp_queue();
    let cli = Queue::open(&dir.path().join("q.sqlite")).unwrap();
    let before = sender.data_version().unwrap();
    sender.update_agent_state(|s| s.last_error = Some("own write".into())).unwrap();
    assert_eq!(sender.data_version().unwrap(), before, "its own commit does not wake the sender");
    cli.update_agent_state(|s| s.last_error = Some("another process".into())).unwrap();
    assert_ne!(sender.data_version().unwrap(), before, "another connection's commit does");
}

/// SQLite's plan for `sql` with `params`, one line per step.
fn query_plan(q: &Queue, sql: &str, params: impl rusqlite::Params) -> Vec<String> {
    q.conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .unwrap()
        .query_map(params, |r| r.get::<_, String>(3))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

#[test]
fn a_batch_is_read_in_id_order_without_sorting_the_whole_backlog() {
    let (_dir, q) = temp_queue();
    let plan = query_plan(&q, super::outbox::PENDING_BATCH, rusqlite::params![1000, EventState::Pending, i64::MIN]);
    assert!(plan.iter().any(|l| l.contains("events_by_state (state=?)")), "{plan:?}");
    assert!(!plan.iter().any(|l| l.contains("TEMP B-TREE")), "{plan:?}");
}

#[test]
fn maintenance_finds_sent_events_by_state_without_reading_the_whole_queue() {
    let (_dir, q) = temp_queue();
    for sql in [super::outbox::CLEAR_SENT_PAYLOADS, super::outbox::PRUNE_SENT] {
        let plan = query_plan(&q, sql, rusqlite::params![0, EventState::Sent]);
        assert!(plan.iter().any(|l| l.contains("events_by_state (state=?)")), "{sql}: {plan:?}");
        assert!(!plan.iter().any(|l| l.starts_with("SCAN events")), "{sql}: {plan:?}");
    }
}

#[test]
fn the_wal_is_emptied_past_an_eighth_of_the_cap_or_64_mib() {
    let mib = 1024 * 1024;
    let cases = [(16 * mib, 2 * mib), (512 * mib, 64 * mib), (2048 * mib, 64 * mib), (u64::MAX, 64 * mib)];
    for (cap, bound) in cases {
        assert_eq!(super::ingest::wal_bound(cap), bound, "cap {cap}");
    }
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

/// Payloads are stored packed (a BLOB); a queue written by an agent before that holds them as JSON
/// text with the checksum of that text, or with none (before checksums): both are still sent as
/// they are, and damage to the text is still caught.
#[test]
fn payloads_stored_as_json_text_by_older_agents_are_still_read() {
    let (_dir, mut q) = temp_queue();
    let mut ingest = q.begin_ingest("h1", Path::new("/pos/a.csv"), "till", 100).unwrap();
    let json = |id: &str| format!(r#"{{"event":"Purchase","event_time":10,"event_id":"{id}","properties":{{}}}}"#);
    for id in ["new", "old", "oldest", "damaged"] {
        ingest.add_event(&NewEvent { payload: Payload::Json(&json(id)), ..event(id, 10) }).unwrap();
    }
    ingest.commit().unwrap();
    let stored: Vec<(String, bool)> = {
        let mut stmt = q.conn.prepare("SELECT typeof(json), checksum IS NOT NULL FROM payloads ORDER BY id").unwrap();
        stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    };
    assert!(stored.iter().all(|s| s == &("blob".to_string(), true)), "{stored:?}");
    // As an older agent stored them: the text and the first 8 bytes of its SHA-256, or no checksum.
    let old_sum = |text: &str| {
        use sha2::{Digest, Sha256};
        i64::from_be_bytes(Sha256::digest(text.as_bytes())[..8].try_into().unwrap())
    };
    let set = |id: i64, text: &str, sum: Option<i64>| {
        q.conn
            .execute("UPDATE payloads SET json = ?2, checksum = ?3 WHERE id = ?1", rusqlite::params![id, text, sum])
            .unwrap();
    };
    set(2, &json("old"), Some(old_sum(&json("old"))));
    set(3, &json("oldest"), None);
    set(4, &json("dAmaged"), Some(old_sum(&json("damaged"))));
    let batch = q.pending_batch(10).unwrap();
    let seen: Vec<(bool, &str)> = batch.events.iter().map(|e| (e.intact, batch.payload(e))).collect();
    assert_eq!(
        seen,
        [(true, json("new").as_str()), (true, json("old").as_str()), (true, json("oldest").as_str()), (false, "")]
    );
}

/// A packed payload refers to its row for the event id, order id and event time: damage to those
/// values in `events` is caught as damage to the payload is (not sent), a version 2 payload
/// without its checksum is not sent, and a payload packed by the agent before references (version
/// 1, its checksum over its bytes only) is still sent.
#[test]
fn damage_to_the_row_values_a_payload_refers_to_is_caught() {
    let (_dir, mut q) = temp_queue();
    let mut ingest = q.begin_ingest("h1", Path::new("/pos/a.csv"), "till", 100).unwrap();
    let json = |id: &str| {
        format!(
            r#"{{"event":"Purchase","event_time":10,"event_id":"{id}","properties":{{"value":1.0,"order_id":"{id}"}}}}"#
        )
    };
    for id in ["kept", "order", "time", "v1", "nullsum"] {
        ingest.add_event(&NewEvent { payload: Payload::Json(&json(id)), ..event(id, 10) }).unwrap();
    }
    ingest.commit().unwrap();
    let blob: Vec<u8> = q.conn.query_row("SELECT json FROM payloads WHERE id = 1", [], |r| r.get(0)).unwrap();
    assert!(blob.len() < json("kept").len() - "kept".len() * 2, "the ids are not repeated: {blob:?}");
    q.conn.execute("UPDATE events SET order_id = 'other' WHERE id = 2", []).unwrap();
    q.conn.execute("UPDATE events SET event_time = 11 WHERE id = 3", []).unwrap();
    // Version 1: the JSON's skeleton as pieces, its ids as text.
    let v1 = [
        &[1u8, 0x02 + 1][..],
        br#"Purchase","event_time":10,"event_id":"v1","properties":{"value":1.0,"order_id":"v1"}}"#,
    ]
    .concat();
    store_blob(&q, 4, &v1);
    // A version 2 payload is always stored with its checksum: one without is damaged.
    q.conn.execute("UPDATE payloads SET checksum = NULL WHERE id = 5", []).unwrap();
    let batch = q.pending_batch(10).unwrap();
    let seen: Vec<(bool, &str)> = batch.events.iter().map(|e| (e.intact, batch.payload(e))).collect();
    assert_eq!(
        seen,
        [(true, json("kept").as_str()), (false, ""), (false, ""), (true, json("v1").as_str()), (false, "")]
    );
}

/// Store `blob` as event `id`'s payload with the checksum of its bytes alone (as for version 1 and
/// for bytes of no known format).
fn store_blob(q: &Queue, id: i64, blob: &[u8]) {
    q.conn
        .execute(
            "UPDATE payloads SET json = ?2, checksum = ?3 WHERE id = ?1",
            rusqlite::params![id, blob, super::packed::checksum(blob)],
        )
        .unwrap();
}

/// The WAL is checkpointed at an eighth of the queue cap (64 MiB at most): a 16 MB queue keeps a
/// WAL of about 2 MB beside it, not the 64 MiB a big queue may use.
#[test]
fn the_wal_checkpoint_follows_the_queue_cap() {
    let (_dir, q) = temp_queue();
    assert_eq!(q.wal_autocheckpoint(), 16384, "no cap: 64 MiB of 4 KiB pages");
    for (cap, pages) in [(16_000_000u64, 488), (10_000_000_000, 16384), (1_000_000, 100)] {
        q.set_size_limit(cap).unwrap();
        assert_eq!(q.wal_autocheckpoint(), pages, "cap {cap}");
    }
}

/// A packed payload whose checksum matches but which does not unpack (written by a newer format,
/// or damaged before its checksum was taken) is not sent either.
#[test]
fn a_blob_that_matches_its_checksum_but_does_not_unpack_is_not_intact() {
    let (_dir, mut q) = temp_queue();
    let mut ingest = q.begin_ingest("h1", Path::new("/pos/a.csv"), "till", 100).unwrap();
    ingest.add_event(&NewEvent { payload: Payload::Json(r#"{"event_id":"e1"}"#), ..event("e1", 10) }).unwrap();
    ingest.commit().unwrap();
    store_blob(&q, 1, &[9u8, b'{', b'}']);
    let batch = q.pending_batch(10).unwrap();
    assert_eq!(batch.events.iter().map(|e| (e.intact, batch.payload(e))).collect::<Vec<_>>(), [(false, "")]);
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
        assert_eq!((e.event_id.as_str(), e.intact), (format!("e{i}").as_str(), true));
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
    let (_dir, mut q) = temp_queue();
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
    assert_eq!((enforced(&q), violations(&q), payloads(&q)), (1, 0, 3));
    let old = q.file_by_hash("h1").unwrap().unwrap().id;

    let mut dropped = q.begin_reread(Some(old), "h1", Path::new("/pos/a.csv"), "till", 200).unwrap();
    dropped.add_event(&event("e4", 10)).unwrap();
    drop(dropped);
    assert_eq!((enforced(&q), violations(&q), payloads(&q)), (1, 0, 3), "a dropped ingest changes nothing");

    // The reread deletes the dead events e2 and e3, and their payloads with them.
    let mut again = q.begin_reread(Some(old), "h1", Path::new("/pos/a.csv"), "till", 300).unwrap();
    again.add_event(&event("e1", 10)).unwrap();
    again.add_event(&event("e5", 10)).unwrap();
    again.commit().unwrap();
    assert_eq!((enforced(&q), violations(&q), payloads(&q)), (1, 0, 2));
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
        assert_eq!((enforced(&q), violations(&q)), (1, 0), "parts, committed: {commit}");
    }
    let mut append = q.begin_append(None, Path::new("/pos/day.csv"), "till", 500).unwrap();
    append.add_event(&event("a1", 10)).unwrap();
    append.commit_at("till", &at(20)).unwrap();
    assert_eq!((enforced(&q), violations(&q)), (1, 0), "an append-mode part");
}

/// The sender reads batch after batch into the same `Batch`: what it reads is what a fresh read
/// finds, the first read's events and JSON gone, a damaged payload's range empty.
#[test]
fn a_batch_read_into_again_holds_only_the_new_read() {
    let (_dir, mut q) = temp_queue();
    let big = |i: usize| format!(r#"{{"event_id":"b{i}","pad":"{}"}}"#, "x".repeat(3000 + i));
    let mut ingest = q.begin_ingest("h1", Path::new("/pos/a.csv"), "till", 100).unwrap();
    for i in 0..5 {
        let (id, json) = (format!("b{i}"), big(i));
        ingest.add_event(&NewEvent { payload: Payload::Json(&json), ..event(&id, 10) }).unwrap();
    }
    ingest.commit().unwrap();
    let mut batch = Batch::default();
    q.read_pending(&mut batch, 10, i64::MIN).unwrap();
    assert_eq!(batch.events.len(), 5);
    let first: Vec<i64> = batch.events.iter().map(|e| e.id).collect();
    q.mark_sent(&first, 200).unwrap();

    let mut ingest = q.begin_ingest("h2", Path::new("/pos/b.csv"), "till", 300).unwrap();
    for id in ["s1", "s2", "s3"] {
        let json = format!(r#"{{"event_id":"{id}"}}"#);
        ingest.add_event(&NewEvent { payload: Payload::Json(&json), ..event(id, 10) }).unwrap();
    }
    ingest.commit().unwrap();
    let damaged = q.pending_batch(10).unwrap().events[1].id;
    q.damage_payload(damaged, "{\"event_id\":\"other\"}").unwrap();

    q.read_pending(&mut batch, 10, i64::MIN).unwrap();
    let fresh = q.pending_batch(10).unwrap();
    let seen = |b: &Batch| b.events.iter().map(|e| (e.id, e.intact, b.payload(e).to_string())).collect::<Vec<_>>();
    assert_eq!(seen(&batch), seen(&fresh));
    assert_eq!(
        seen(&batch).iter().map(|(_, intact, json)| (*intact, json.as_str())).collect::<Vec<_>>(),
        [(true, r#"{"event_id":"s1"}"#), (false, ""), (true, r#"{"event_id":"s3"}"#)]
    );
}
