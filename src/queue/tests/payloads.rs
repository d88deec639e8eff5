//! Stored payloads: checksums, damage and its rebuild, older formats, and the sender's batch.

use super::*;

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
    // The damage reached the row's time and order id too.
    q.conn.execute("UPDATE events SET event_time = 3, order_id = 'x2' WHERE id = ?1", [corrupt[0].id]).unwrap();
    assert!(q.restore_payload(corrupt[0].id, &rebuilt).unwrap());
    let batch = q.pending_batch(10).unwrap();
    assert!(batch.events.iter().all(|e| e.intact));
    assert_eq!(batch.payload(&batch.events[1]), crate::tiktok::wire::event_json(&rebuilt));
    assert_eq!(batch.events[1].event_time, 10, "the rebuilt event's time, which expiry reads");
    let order_id: String =
        q.conn.query_row("SELECT order_id FROM events WHERE id = ?1", [corrupt[0].id], |r| r.get(0)).unwrap();
    assert_eq!(order_id, "e2");
    assert_eq!(q.counts().unwrap().pending, 2);
    assert!(q.corrupt_to_rebuild(10).unwrap().is_empty());
    // Given up on: stays dead, no longer offered for a rebuild.
    q.mark_dead(&[batch.events[0].id], DeadReason::Corrupt, DeadReason::CORRUPT_MESSAGE).unwrap();
    q.give_up_rebuild(&[batch.events[0].id]).unwrap();
    assert!(q.corrupt_to_rebuild(10).unwrap().is_empty());
    assert_eq!(q.counts().unwrap().dead, 1);
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
/// values in `events` is caught as damage to the payload is (not sent), a payload that refers
/// to its row (version 2 or 3) without its checksum is not sent, and a payload packed by the agent before references (version
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
    // A payload that refers to its row is always stored with its checksum: one without is damaged.
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
            rusqlite::params![id, blob, crate::queue::packed::checksum(blob)],
        )
        .unwrap();
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

/// A row damaged on disk so that a value the sender reads is not of its type (a time that is
/// text, an event id that is a BLOB, a checksum that is text) is not intact: the batch is still
/// read, its event id kept when it is text; the queue's counts and the dead-letter list still read
/// (the oldest pending time not known), and each is offered for a rebuild.
#[test]
fn a_row_whose_values_are_not_of_their_type_is_not_intact_and_the_batch_goes_on() {
    let (_dir, mut q) = temp_queue();
    let mut ingest = q.begin_ingest("h1", Path::new("/pos/a.csv"), "till", 100).unwrap();
    for id in ["e1", "e2", "e3", "e4"] {
        let payload = format!("{{\"event_id\":\"{id}\"}}");
        ingest.add_event(&NewEvent { payload: Payload::Json(&payload), ..event(id, 10) }).unwrap();
    }
    ingest.commit().unwrap();
    let ids: Vec<i64> = q.pending_batch(10).unwrap().events.iter().map(|e| e.id).collect();
    q.conn.execute("UPDATE events SET event_time = 'ten' WHERE id = ?1", [ids[0]]).unwrap();
    q.conn.execute("UPDATE events SET event_id = X'00FF' WHERE id = ?1", [ids[1]]).unwrap();
    q.conn.execute("UPDATE payloads SET checksum = 'x' WHERE id = ?1", [ids[2]]).unwrap();
    let batch = q.pending_batch(10).unwrap();
    let seen: Vec<(bool, &str, &str)> =
        batch.events.iter().map(|e| (e.intact, batch.event_id(e), batch.payload(e))).collect();
    assert_eq!(seen, [(false, "e1", ""), (false, "", ""), (false, "e3", ""), (true, "e4", "{\"event_id\":\"e4\"}")]);
    let counts = q.counts().unwrap();
    assert_eq!((counts.pending, counts.oldest_pending_event_time), (4, None), "the oldest is the damaged one");
    q.mark_dead(&ids[..3], DeadReason::Corrupt, DeadReason::CORRUPT_MESSAGE).unwrap();
    let dead: Vec<(String, i64)> = q.dead_events(10).unwrap().into_iter().map(|d| (d.event_id, d.event_time)).collect();
    assert_eq!(dead, [("e1".into(), 0), ("".into(), 10), ("e3".into(), 10)]);
    let corrupt = q.corrupt_to_rebuild(10).unwrap();
    let offered: Vec<(i64, &str)> = corrupt.iter().map(|c| (c.id, c.event_id.as_str())).collect();
    assert_eq!(offered, [(ids[0], "e1"), (ids[1], ""), (ids[2], "e3")]);
}
