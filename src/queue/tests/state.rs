//! Event states, the file, openers, the agent state, reports, query plans and the WAL.

use super::*;

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
    let delivered = Delivered { ids: ids[..1].to_vec(), log: log(SendClass::Delivered), confirmed: None };
    q.record_delivered(&[delivered], true, |s| {
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
    let keys: Vec<(String, String)> = pairs(&q, "SELECT key, value FROM agent_state ORDER BY key");
    let want =
        [("last_error", "http 503"), ("last_error_at", "50"), ("last_request_id", "r1"), ("last_success_at", "70")];
    assert_eq!(keys, want.map(|(k, v)| (k.to_string(), v.to_string())));
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

/// The WAL is checkpointed at an eighth of the queue cap (64 MiB at most): a 16 MB queue keeps a
/// WAL of about 2 MB beside it, not the 64 MiB a big queue may use. The sender's connection
/// checkpoints at a quarter of that, 4 MiB at least, the bound at most.
#[test]
fn the_wal_checkpoint_follows_the_queue_cap() {
    let (_dir, q) = temp_queue();
    assert_eq!(q.pragma("wal_autocheckpoint"), 16384, "no cap: 64 MiB of 4 KiB pages");
    let cases = [
        (16_000_000u64, WalDuty::AtBound, 488),
        (16_000_000, WalDuty::Early, 488),
        (100_000_000, WalDuty::AtBound, 3051),
        (100_000_000, WalDuty::Early, 1024),
        (10_000_000_000, WalDuty::AtBound, 16384),
        (10_000_000_000, WalDuty::Early, 4096),
        (1_000_000, WalDuty::AtBound, 100),
        (1_000_000, WalDuty::Early, 100),
    ];
    for (cap, duty, pages) in cases {
        q.set_size_limit(cap, duty).unwrap();
        assert_eq!(q.pragma("wal_autocheckpoint"), pages, "cap {cap}, {duty:?}");
    }
}

/// SQLite's plan for `sql` (its state codes written in, its parameters NULL), one line per step.
fn query_plan(q: &Queue, sql: &str) -> Vec<String> {
    let mut stmt = q.conn.prepare(&format!("EXPLAIN QUERY PLAN {}", crate::queue::cursor::states(sql))).unwrap();
    let nulls = vec![rusqlite::types::Null; stmt.parameter_count()];
    stmt.query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

#[test]
fn a_batch_is_read_in_id_order_without_sorting_the_whole_backlog() {
    let (_dir, q) = temp_queue();
    let held = query_plan(&q, crate::queue::outbox::PENDING_HELD.get());
    assert!(held.iter().any(|l| l.contains("USING INDEX events_exceptions (state=?")), "{held:?}");
    let queued = query_plan(&q, crate::queue::outbox::PENDING_QUEUED.get());
    assert!(queued.iter().any(|l| l.contains("SEARCH e USING INTEGER PRIMARY KEY (rowid>?)")), "{queued:?}");
    for plan in [held, queued] {
        assert!(!plan.iter().any(|l| l.contains("TEMP B-TREE")), "{plan:?}");
    }
}

#[test]
fn maintenance_finds_sent_events_without_reading_the_whole_queue() {
    let (_dir, q) = temp_queue();
    let outbox = crate::queue::outbox::CLEAR_SENT_PAYLOADS
        .iter()
        .chain(&crate::queue::outbox::PRUNE_SENT)
        .chain([&crate::queue::outbox::FORGET_RUNS]);
    for sql in outbox {
        let plan = query_plan(&q, sql);
        assert!(!plan.iter().any(|l| l.starts_with("SCAN")), "{sql}: {plan:?}");
    }
    // By their row: through the index of the states other than queued.
    for sql in [crate::queue::outbox::CLEAR_SENT_PAYLOADS[0], crate::queue::outbox::PRUNE_SENT[0]] {
        let plan = query_plan(&q, sql);
        assert!(plan.iter().any(|l| l.contains("events_exceptions (state=?")), "{sql}: {plan:?}");
    }
}

#[test]
fn a_checkpoint_copies_the_whole_wal_when_no_one_reads_it() {
    let (_dir, mut q) = temp_queue();
    let mut ingest = q.begin_ingest("h", Path::new("a"), "s", 1).unwrap();
    for i in 0..100 {
        ingest.add_event(&event(&format!("e{i}"), 10)).unwrap();
    }
    ingest.commit().unwrap();
    let (frames, copied) = q.checkpoint().unwrap();
    assert!(frames > 0, "the ingest's pages are in the WAL");
    assert_eq!(copied, frames);
}

#[test]
fn the_wal_is_emptied_past_an_eighth_of_the_cap_or_64_mib() {
    let mib = 1024 * 1024;
    let cases = [(16 * mib, 2 * mib), (512 * mib, 64 * mib), (2048 * mib, 64 * mib), (u64::MAX, 64 * mib)];
    for (cap, bound) in cases {
        assert_eq!(crate::queue::ingest::wal_bound(cap), bound, "cap {cap}");
    }
}
