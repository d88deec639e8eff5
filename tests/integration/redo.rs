//! The archive is the redo log (issue 9): events a damaged WAL dropped after their files were
//! archived are ingested again from the archive; a payload damaged on disk is never sent as is
//! (rebuilt from the archive, or dead-lettered as `corrupt`); old archived files are pruned.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

const T: Duration = Duration::from_secs(30);

fn archive(agent: &Agent) -> PathBuf {
    agent.inbox.join("archive")
}

fn archived_count(agent: &Agent) -> usize {
    std::fs::read_dir(archive(agent)).map(|d| d.count()).unwrap_or(0)
}

/// Replace the first occurrence of `from` in the file at `path` by `to` (same length), in place.
fn patch(path: &Path, from: &[u8], to: &[u8]) -> bool {
    assert_eq!(from.len(), to.len());
    let mut bytes = std::fs::read(path).unwrap();
    let Some(at) = bytes.windows(from.len()).position(|w| w == from) else { return false };
    bytes[at..at + to.len()].copy_from_slice(to);
    std::fs::write(path, bytes).unwrap();
    true
}

fn wal(agent: &Agent) -> PathBuf {
    let mut p = agent.queue.clone().into_os_string();
    p.push("-wal");
    PathBuf::from(p)
}

#[test]
fn events_a_damaged_wal_dropped_after_archiving_are_ingested_again_from_the_archive_and_delivered() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    fake.set_down(true);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    let mut daemon = agent.spawn();
    agent.drop_file("a.csv", &csv_orders("W", 100, 1));
    agent.drop_file("b.csv", &csv_orders("X", 100, 2));
    agent.drop_file("c.csv", &csv_orders("Y", 100, 1));
    assert!(
        wait_until(T, || agent.counts().0 == 300 && archived_count(&agent) == 3),
        "not queued and archived: {}\n{}",
        agent.cmd_ok(&["status"]),
        daemon.log_text()
    );
    daemon.kill();
    // Flip a byte in the first frame of the WAL: SQLite's replay stops at the first frame whose
    // checksum fails, so every commit after it vanishes without a message.
    let wal = wal(&agent);
    let mut bytes = std::fs::read(&wal).expect("the commits are still in the WAL after a SIGKILL");
    assert!(bytes.len() > 32 + 24 + 200, "WAL too short: {}", bytes.len());
    bytes[32 + 24 + 200] ^= 0xff;
    std::fs::write(&wal, bytes).unwrap();
    let _ = std::fs::remove_file(agent.queue.with_extension("sqlite-shm"));
    assert_ne!(agent.counts().0, 300, "the damage did not drop any committed events");

    fake.set_down(false);
    let daemon = agent.spawn();
    assert!(fake.wait_for_unique(300, T), "not delivered after the restart:\n{}", daemon.log_text());
    let mut expected = ids("W", 100);
    expected.extend(ids("X", 100));
    expected.extend(ids("Y", 100));
    assert_eq!(fake.unique_ids(), expected);
    let log = daemon.log_text();
    assert!(log.contains("re-ingested from the archive"), "{log}");
    assert!(log.contains("re-ingested 3 archived files"), "{log}");
    assert_eq!(archived_count(&agent), 3, "the archived files stay where they are");
    let status = agent.cmd_ok(&["status"]);
    assert!(status.contains("re-ingested 3 archived files"), "{status}");
    assert!(wait_until(T, || agent.counts() == (0, 300, 0)), "{:?}", agent.counts());
}

#[test]
fn a_restart_with_nothing_lost_reingests_nothing() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    let mut daemon = agent.spawn();
    agent.drop_file("a.csv", &csv_orders("N", 20, 1));
    assert!(fake.wait_for_unique(20, T), "{}", daemon.log_text());
    assert!(wait_until(T, || archived_count(&agent) == 1));
    daemon.terminate();
    let mut daemon = agent.spawn();
    agent.drop_file("b.csv", &csv_orders("M", 5, 1));
    assert!(fake.wait_for_unique(25, T), "{}", daemon.log_text());
    daemon.terminate();
    let log = daemon.log_text();
    assert!(!log.contains("re-ingested"), "{log}");
    assert_eq!(agent.counts(), (0, 25, 0));
}

/// Queue `orders` orders of prefix `C` with TikTok down, stop cleanly (the WAL checkpointed into
/// the database file), then change one byte of one stored payload in the file: the e-mail hash of
/// order C2.
fn queue_then_damage_a_payload(agent: &Agent, fake: &FakeTikTok) {
    use sha2::{Digest, Sha256};
    fake.set_down(true);
    let mut daemon = agent.spawn();
    agent.drop_file("c.csv", &csv_orders("C", 5, 1));
    assert!(wait_until(T, || agent.counts().0 == 5), "{}", daemon.log_text());
    daemon.terminate();
    // Payloads are stored packed: `","user":{"email":["` is the byte 0x06 there, and a hash 0x01
    // and its 32 bytes.
    let hash = Sha256::digest(b"c2@example.com");
    let stored = [&[0x06, 0x01][..], &hash[..8]].concat();
    let mut damaged = stored.clone();
    damaged[2] ^= 0x01;
    assert!(patch(&agent.queue, &stored, &damaged), "the payload of C2 is not in the database file");
    let check = agent.cmd_ok(&["status"]);
    assert!(!check.contains("RECOVERED"), "quick_check does not see damage in a payload: {check}");
    fake.set_down(false);
}

#[test]
fn a_payload_damaged_on_disk_is_not_sent_but_rebuilt_from_the_archive() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    queue_then_damage_a_payload(&agent, &fake);
    let daemon = agent.spawn();
    assert!(fake.wait_for_unique(5, T), "{}", daemon.log_text());
    assert_eq!(fake.unique_ids(), ids("C", 5), "the damaged JSON was never sent");
    let log = daemon.log_text();
    assert!(log.contains("checksum mismatch"), "{log}");
    assert!(log.contains("rebuilt from"), "{log}");
    assert!(wait_until(T, || agent.counts() == (0, 5, 0)), "{:?}", agent.counts());
}

#[test]
fn a_payload_damaged_on_disk_without_an_archived_copy_is_dead_lettered_as_corrupt() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts { source: "after_ingest = \"delete\"".into(), ..Opts::default() });
    queue_then_damage_a_payload(&agent, &fake);
    let daemon = agent.spawn();
    assert!(fake.wait_for_unique(4, T), "{}", daemon.log_text());
    assert!(wait_until(T, || agent.counts() == (0, 4, 1)), "{:?}\n{}", agent.counts(), daemon.log_text());
    assert!(!fake.unique_ids().iter().any(|id| id.ends_with(":C2")), "the damaged JSON was sent");
    let dead = agent.cmd_ok(&["dead-letter", "list"]);
    assert!(dead.contains("corrupt") && dead.contains("C2"), "{dead}");
    assert!(wait_until(T, || daemon.log_text().contains("no archived copy")), "{}", daemon.log_text());
}

#[test]
fn archived_files_older_than_archive_keep_days_are_pruned() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts { source: "archive_keep_days = 1".into(), ..Opts::default() });
    std::fs::create_dir_all(archive(&agent)).unwrap();
    let old = archive(&agent).join("old.csv");
    std::fs::write(&old, csv_orders("P", 3, 1)).unwrap();
    let two_days_ago = SystemTime::now() - Duration::from_secs(2 * 86_400);
    std::fs::File::options().write(true).open(&old).unwrap().set_modified(two_days_ago).unwrap();
    let mut daemon = agent.spawn();
    agent.drop_file("new.csv", &csv_orders("R", 3, 1));
    assert!(wait_until(T, || !old.exists()), "not pruned:\n{}", daemon.log_text());
    assert!(fake.wait_for_unique(3, T), "{}", daemon.log_text());
    assert!(wait_until(T, || archive(&agent).join("new.csv").exists()));
    daemon.terminate();
    let log = daemon.log_text();
    assert!(log.contains("removed 1 archived files older than 1 days"), "{log}");
    assert_eq!(fake.unique_ids(), ids("R", 3), "a pruned file is not re-ingested");
}

/// A damaged queue moved aside at start, with more archived sales than the queue's cap holds:
/// the reconcile re-ingests what fits, stops at the file that does not, says so in `status`
/// (INGEST HELD) while TikTok is down, and takes the rest once sending has made room. Every
/// archived sale is delivered.
#[test]
fn a_reconcile_that_meets_a_full_queue_waits_for_room_and_then_takes_the_rest() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    fake.set_down(true);
    let mut agent = Agent::new(&fake.base_url(), Opts::default());
    let mut daemon = agent.spawn();
    // Six line items an order: one file fits in 16 MB, two do not (as in the service test of a
    // full queue).
    agent.drop_file("a.csv", &csv_orders("A", 32_000, 6));
    agent.drop_file("b.csv", &csv_orders("B", 32_000, 6));
    assert!(
        wait_until(Duration::from_secs(90), || agent.counts().0 == 64_000 && archived_count(&agent) == 2),
        "not queued and archived: {}\n{}",
        agent.cmd_ok(&["status"]),
        daemon.log_text()
    );
    daemon.terminate();
    // A garbage header: the queue is moved aside at the next start, and its events are gone.
    overwrite(&agent.queue, 0, &[0xA5; 100]);

    agent.set_opts(Opts { top: "max_queue_mb = 16".into(), ..Opts::default() });
    let daemon = agent.spawn();
    // `status` fails until the service has moved the damaged queue aside.
    let reconcile_held = || agent.status_if_any().is_some_and(|s| s["reconcile_held"].is_string());
    assert!(
        wait_until(Duration::from_secs(90), reconcile_held),
        "{}\n{}",
        agent.cmd_ok(&["status"]),
        daemon.log_text()
    );
    let status = agent.status();
    let held = status["reconcile_held"].as_str().unwrap();
    assert!(held.contains("b.csv") && held.contains("queue is full"), "{held}");
    let text = agent.cmd_ok(&["status"]);
    assert!(text.contains("INGEST HELD"), "{text}");
    let (pending, _, _) = agent.counts();
    assert!((32_000..64_000).contains(&pending), "the first file re-ingested, not the second whole: {pending}");
    assert_eq!(archived_count(&agent), 2, "the archived files stay where they are");

    fake.set_down(false);
    let mut expected = ids("A", 32_000);
    expected.extend(ids("B", 32_000));
    assert!(fake.wait_for_unique(expected.len(), Duration::from_secs(180)), "{}", daemon.log_text());
    assert_eq!(fake.unique_ids(), expected);
    assert!(wait_until(T, || agent.status()["reconcile_held"].is_null()), "{}", agent.cmd_ok(&["status"]));
    let log = daemon.log_text();
    assert!(log.contains("wait for room in the queue to be re-ingested"), "{log}");
    assert!(log.contains("the archive is reconciled with the queue"), "{log}");
    // Each file counted whole: the second file's parts from before the stop with the rest.
    let recovered = agent.status()["recovered"].as_str().unwrap_or_default().to_string();
    assert_eq!(recovered.matches("(32000 events queued again)").count(), 2, "{recovered}");
    // Warned once; the tries after it say so at debug level only, with "(still)".
    let warned = log.lines().filter(|l| l.contains("wait for room in the queue") && !l.contains("(still)")).count();
    assert_eq!(warned, 1, "said once: {log}");
}
