//! Test mode never uses up real sales (issue 10): a test session (`test_event_code` in the config,
//! or `run --test-event-code`) sends from a queue of its own, never moves an export file, its done
//! marker or its companion, and says loudly that it is a test session; a normal run afterwards
//! sends the same orders for real and archives the file.

use crate::support::*;
use std::collections::BTreeSet;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);
const CODE: &str = "TEST51210";

/// The event ids the fake received in requests with `code` as their `test_event_code` (None: real).
fn received(fake: &FakeTikTok, code: Option<&str>) -> BTreeSet<String> {
    let requests = fake.requests().into_iter().filter(|r| r.status == 200 && r.test_event_code.as_deref() == code);
    requests.flat_map(|r| r.event_ids).collect()
}

#[test]
fn a_test_session_then_a_normal_run_sends_the_orders_twice_and_only_the_normal_run_archives() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let mut agent =
        Agent::new(&fake.base_url(), Opts { top: format!("test_event_code = \"{CODE}\""), ..Opts::default() });
    let file = agent.drop_file("sales.csv", &csv_orders("M", 5, 2));

    let mut daemon = agent.spawn();
    assert!(
        wait_until(T, || received(&fake, Some(CODE)) == ids("M", 5)),
        "{:?}\n{}",
        fake.requests(),
        daemon.log_text()
    );
    let log = daemon.log_text();
    assert!(log.contains("WARN") && log.contains("TEST SESSION (test_event_code TEST51210)"), "{log}");
    assert!(log.contains("never counts in reporting") && log.contains("started: TEST SESSION, 1 source(s)"), "{log}");
    assert!(log.contains("queue.test.sqlite"), "{log}");
    // `watch --test` follows the test queue: the events captured and the answer, with the code.
    let watched = agent.cmd_ok(&["watch", "--test", "--history", "--exit-after-secs", "1"]);
    assert!(watched.contains("captured") && watched.contains("s042:t1:M4"), "{watched}");
    assert!(watched.contains(&format!("[test_event_code {CODE}]")), "{watched}");
    // Delivered, so committed: a file to be moved would have been moved right after the commit.
    assert!(file.exists() && !agent.inbox.join("archive").exists(), "a test session moved the export");
    daemon.terminate();
    assert!(!agent.queue.exists(), "the real queue was used by the test session");

    // The normal run: the same orders again, for real, and now the file is archived.
    agent.set_opts(Opts::default());
    let out = agent.cmd(&["run", "--once", "--timeout-secs", "30"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(received(&fake, None), ids("M", 5), "{:?}", fake.requests());
    assert_eq!(received(&fake, Some(CODE)), ids("M", 5));
    assert!(!file.exists() && agent.inbox.join("archive/sales.csv").exists());
    assert_eq!(agent.counts(), (0, 5, 0));
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

#[test]
fn run_once_with_a_test_event_code_leaves_the_file_and_its_done_marker_and_the_real_queue_alone() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts { source: "done_marker = \"{stem}.ok\"".into(), ..Opts::default() });
    let file = agent.drop_file("day.csv", &csv_orders("D", 3, 1));
    let marker = agent.drop_file("day.ok", "");
    let out = agent.cmd(&["run", "--once", "--test-event-code", CODE, "--timeout-secs", "30"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(received(&fake, Some(CODE)), ids("D", 3), "{:?}", fake.requests());
    assert!(received(&fake, None).is_empty());
    assert!(file.exists() && marker.exists(), "a test run moved the export or its marker");
    assert!(!agent.queue.exists(), "the real queue was used by the test run");

    // Twice is fine for a test session: its own queue knows the file, nothing is sent again.
    let out = agent.cmd(&["run", "--once", "--test-event-code", CODE, "--timeout-secs", "30"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(fake.requests().len(), 1);

    let out = agent.cmd(&["run", "--once", "--timeout-secs", "30"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(received(&fake, None), ids("D", 3));
    assert!(!file.exists() && !marker.exists(), "the normal run takes the file and its marker");
}
