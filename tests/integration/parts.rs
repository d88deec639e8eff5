//! A file bigger than the queue cap is ingested in parts: each part commits with the file's read
//! position, the WAL stays bounded by a part, the first events leave before the file is read to
//! its end, and a read stopped by SIGKILL resumes where its last part ended.

use crate::support::*;
use std::path::Path;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(240);

/// Orders in the big file: several parts, and more event JSON than the smallest queue cap holds.
const ORDERS: usize = 30_000;

fn small_queue() -> Opts {
    Opts { top: "max_queue_mb = 16".into(), ..Opts::default() }
}

/// Write the export next to the folder and move it in whole (the POS's atomic drop).
fn drop_big(agent: &Agent, name: &str, prefix: &str) {
    let staging = agent.dir.path().join(name);
    std::fs::write(&staging, csv_orders(prefix, ORDERS, 2)).unwrap();
    std::fs::rename(&staging, agent.inbox.join(name)).unwrap();
}

fn wal_size(queue: &Path) -> u64 {
    let mut wal = queue.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(wal).map_or(0, |m| m.len())
}

#[test]
fn a_file_bigger_than_the_queue_cap_is_delivered_in_parts_each_order_once_with_a_bounded_wal() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), small_queue());
    let mut daemon = agent.spawn_with_env(&[("OFFLINE_EVENTS_AGENT_LOG", "debug")]);
    drop_big(&agent, "big.csv", "B");
    let taken = Instant::now();
    let mut max_wal = 0;
    let mut first_event_while_reading = false;
    let done = wait_until(T, || {
        max_wal = max_wal.max(wal_size(&agent.queue));
        let sent = fake.unique_ids().len();
        first_event_while_reading |= sent > 0 && agent.inbox.join("big.csv").exists();
        sent >= ORDERS
    });
    assert!(
        done,
        "{} of {ORDERS} delivered after {:?}:\n{}",
        fake.unique_ids().len(),
        taken.elapsed(),
        daemon.log_text()
    );
    assert_eq!(fake.unique_ids(), ids("B", ORDERS));
    assert_eq!(fake.accepted_ids().len(), ORDERS, "an order was sent twice:\n{}", daemon.log_text());
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
    // Sending overlapped reading: events left while the file was still being read.
    assert!(first_event_while_reading, "nothing was sent before the whole file was read");
    // The WAL is bounded by a part (and the sender's writes beside it), not by the file's events
    // (in one transaction it grew past them).
    let event_bytes: usize = fake.accepted().iter().map(|e| e.to_string().len()).sum();
    assert!(max_wal < event_bytes as u64 * 3 / 4, "the WAL reached {max_wal} bytes for {event_bytes} bytes of events");
    assert!(
        wait_until(Duration::from_secs(30), || agent.inbox.join("archive/big.csv").exists()),
        "{}",
        daemon.log_text()
    );
    // The queue may fill between parts (the sender behind): the read then waits and goes on.
    let log = daemon.log_text();
    assert!(!log.contains("can never fit"), "{log}");
    let status = agent.status();
    assert_eq!(status["counts"]["rejects"], 0, "{status}");
    assert_eq!(status["counts"]["pending"], 0, "{status}");
    // Idle after a backlog, the sender checkpoints the WAL the backlog's partial checkpoints left.
    assert!(
        wait_until(Duration::from_secs(10), || daemon.log_text().contains("idle after a backlog: ")),
        "{}",
        daemon.log_text()
    );
    daemon.terminate();
}

#[test]
fn a_big_file_killed_mid_read_resumes_at_its_last_part_and_is_archived_once() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), small_queue());
    let mut daemon = agent.spawn();
    drop_big(&agent, "big.csv", "K");
    // Some parts are committed and sent, the file is not read to its end: kill.
    let midway = wait_until(T, || !fake.unique_ids().is_empty());
    assert!(midway, "{}", daemon.log_text());
    assert!(agent.inbox.join("big.csv").exists(), "the file was read whole before the kill:\n{}", daemon.log_text());
    daemon.kill();
    let before = fake.unique_ids().len();
    assert!(before < ORDERS, "everything was delivered before the kill");

    let mut daemon = agent.spawn();
    assert!(fake.wait_for_unique(ORDERS, T), "{} of {ORDERS}:\n{}", fake.unique_ids().len(), daemon.log_text());
    assert_eq!(fake.unique_ids(), ids("K", ORDERS));
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
    assert!(
        wait_until(Duration::from_secs(30), || agent.inbox.join("archive/big.csv").exists()),
        "{}",
        daemon.log_text()
    );
    let log = daemon.log_text();
    assert!(log.contains("reading on after the"), "the read did not resume at its position:\n{log}");
    // Archived once: one file in the archive, none left in the folder, one record of it.
    let archived: Vec<_> = std::fs::read_dir(agent.inbox.join("archive")).unwrap().collect();
    assert_eq!(archived.len(), 1, "{archived:?}");
    assert!(!agent.inbox.join("big.csv").exists());
    let status = agent.status();
    assert_eq!(status["counts"]["files"], 1, "{status}");
    assert_eq!(status["counts"]["rejects"], 0, "orders committed before the kill came back as repeats: {status}");
    assert_eq!(status["counts"]["pending"], 0, "{status}");
    daemon.terminate();
}
