//! `watch`: a first line that says it waits, local times with their offset, dead events with their
//! reason, the identifiers a file's read dropped, and `send-test`'s requests beside the sender's.

use crate::support::fake_tiktok::FakeTikTok;
use crate::support::*;

#[test]
fn watch_shows_local_times_dead_reasons_dropped_identifiers_and_send_tests() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    let (fresh, old) = (now() - 60, now() - 40 * 86_400);
    agent.drop_file(
        "w.csv",
        &format!("order_id,event_time,email,value\nW1,{fresh},not-an-email,9.99\nW2,{fresh},a@example.com,5.00\nOLD,{old},b@example.com,1.00\n"),
    );
    agent.cmd_ok(&["run", "--once"]);
    let sent = agent.cmd(&["send-test", "--test-event-code", "TEST7788"]);
    assert!(sent.status.success(), "{}", String::from_utf8_lossy(&sent.stderr));

    let out = agent.cmd_env(&["watch", "--history", "--exit-after-secs", "0"], &[("TZ", "Asia/Kolkata")]);
    assert!(out.status.success());
    let watch = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = watch.lines().collect();
    assert_eq!(lines[0], "waiting for events… (Ctrl-C to stop)");
    let captured: Vec<&str> = lines.iter().copied().filter(|l| l.contains(" captured #")).collect();
    assert_eq!(captured.len(), 3, "{watch}");
    // Local times in the zone TZ names, with its offset.
    assert!(captured.iter().all(|l| l.get(19..27) == Some(" +05:30 ")), "{watch}");
    let line = |id: &str| *captured.iter().find(|l| l.contains(&format!("s042:t1:{id}\""))).unwrap();
    assert!(line("OLD").contains("[dead: expired: "), "{watch}");
    assert!(line("W1").contains("customer: none"), "{watch}");
    assert!(line("W2").contains("[sent]") && line("W2").contains("customer: email"), "{watch}");
    assert!(watch.contains("its file's read dropped 1 identifiers"), "{watch}");
    assert_eq!(watch.matches("dropped 1 identifiers").count(), 1, "said once per file: {watch}");
    // Requests: the sender's and send-test's, which carries its code.
    assert!(watch.contains("delivered 2 events -> http 200"), "{watch}");
    let test = lines.iter().find(|l| l.contains("[test_event_code TEST7788]")).unwrap_or_else(|| panic!("{watch}"));
    assert!(test.contains(" +05:30 delivered 1 events -> http 200"), "{test}");
}

#[test]
fn send_test_before_the_agent_ever_ran_creates_no_queue() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    let out = agent.cmd(&["send-test", "--test-event-code", "TEST1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!agent.queue.exists());
}
