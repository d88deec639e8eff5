//! Outages, faults, bad tokens and crashes: nothing lost, nothing counted twice.

use crate::support::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

#[test]
fn an_outage_queues_events_and_recovery_delivers_them_all() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    fake.set_down(true);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    let mut daemon = agent.spawn();
    agent.drop_file("a.csv", &csv_orders("O", 30, 2));
    agent.drop_file("b.csv", &csv_orders("Q", 10, 1));
    assert!(
        wait_until(T, || agent.counts().0 == 40),
        "not queued: {}\n{}",
        agent.cmd_ok(&["status"]),
        daemon.log_text()
    );
    // The first failed try after the last file may not be recorded yet: wait for it.
    let retrying = || {
        let status = agent.cmd_ok(&["status"]);
        status.contains("RETRYING") && status.contains("40 queued")
    };
    assert!(wait_until(T, retrying), "{}", agent.cmd_ok(&["status"]));
    fake.set_down(false);
    assert!(fake.wait_for_unique(40, T), "not delivered after recovery:\n{}", daemon.log_text());
    let mut expected = ids("O", 30);
    expected.extend(ids("Q", 10));
    assert_eq!(fake.unique_ids(), expected);
    assert!(wait_until(T, || agent.counts() == (0, 40, 0)));
    let (status, took) = daemon.terminate();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(5), "stop took {took:?}");
}

#[test]
fn after_a_refused_connection_the_backlog_drains_without_waiting_out_a_long_backoff() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let port = fake.port();
    drop(fake); // connection refused from now on
                // Backoffs drawn from up to 10 minutes (full jitter: 97.5 % of them are longer than the 15 s
                // allowed below), so quick delivery needs the reachability probe. A short draw delivers through
                // the ordinary retry, which is why the probe's log line is not asserted.
    let agent = Agent::new(
        &format!("http://127.0.0.1:{port}"),
        Opts { sender: "backoff_base_ms = 600000\nbackoff_max_secs = 600".into(), ..Opts::default() },
    );
    let daemon = agent.spawn();
    agent.drop_file("a.csv", &csv_orders("D", 5, 1));
    assert!(wait_until(T, || daemon.log_text().contains("delivery failed")), "{}", daemon.log_text());
    let fake = FakeTikTok::start_on(TOKEN, SOURCE_ID, port);
    assert!(
        fake.wait_for_unique(5, Duration::from_secs(15)),
        "backlog not drained soon after recovery:\n{}",
        daemon.log_text()
    );
}

#[test]
fn throttling_server_errors_gateway_pages_resets_and_hangs_are_retried() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    fake.push_fault(Fault::Code(40100, "Too many requests. Please retry in some time.".into()));
    fake.push_fault(Fault::Code(50002, "server error".into()));
    fake.push_fault(Fault::Html502);
    fake.push_fault(Fault::Reset);
    fake.push_fault(Fault::Http(503, String::new()));
    fake.push_fault(Fault::HttpRetryAfter(429, 1));
    fake.push_fault(Fault::Hang(Duration::from_secs(8)));
    let agent = Agent::new(&fake.base_url(), Opts { sender: "request_timeout_secs = 2".into(), ..Opts::default() });
    agent.drop_file("f.csv", &csv_orders("F", 12, 1));
    let out = agent.cmd(&["flush", "--timeout-secs", "1"]);
    assert_eq!(out.status.code(), Some(0), "nothing was queued yet, so flush is a no-op");
    let out = agent.cmd(&["run", "--once", "--timeout-secs", "60"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(fake.unique_ids(), ids("F", 12));
    assert!(fake.requests().len() >= 8);
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
    let log = agent.cmd_ok(&["watch", "--history", "--exit-after-secs", "0"]);
    for class in ["retry", "delivered"] {
        assert!(log.contains(class), "{log}");
    }
}

#[test]
fn a_bad_token_pauses_sending_keeps_everything_queued_and_a_fixed_token_resumes() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    agent.set_token("tok-WRONG-000");
    let daemon = agent.spawn();
    agent.drop_file("a.csv", &csv_orders("K", 8, 1));
    assert!(wait_until(T, || agent.counts().0 == 8 && agent.status()["paused"].is_string()), "{}", daemon.log_text());
    let status = agent.cmd_ok(&["status"]);
    assert!(status.contains("PAUSED") && status.contains("8 queued"), "{status}");
    assert_eq!(agent.counts(), (8, 0, 0));
    assert!(fake.unique_ids().is_empty());
    agent.set_token(TOKEN);
    assert!(fake.wait_for_unique(8, T), "{}", daemon.log_text());
    assert!(wait_until(T, || agent.status()["paused"].is_null()));
    assert!(wait_until(T, || daemon.log_text().contains("sending resumed")), "{}", daemon.log_text());
}

#[test]
fn a_world_readable_token_file_is_refused() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    set_mode(&agent.token_file, 0o644);
    let out = agent.cmd(&["check-config"]);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("readable by every user"));
}

#[test]
fn flush_fails_loudly_when_tiktok_cannot_be_reached() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    fake.set_down(true);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    agent.drop_file("a.csv", &csv_orders("U", 3, 1));
    agent.cmd_ok(&["import", agent.inbox.join("a.csv").to_str().unwrap()]);
    let out = agent.cmd(&["flush", "--timeout-secs", "2"]);
    assert_eq!(out.status.code(), Some(75));
    assert!(String::from_utf8_lossy(&out.stderr).contains("events remain queued"));
    assert_eq!(agent.counts(), (3, 0, 0));
    fake.set_down(false);
    agent.cmd_ok(&["flush"]);
    assert_eq!(fake.unique_ids(), ids("U", 3));
}

/// Kill the agent with SIGKILL at random moments of ingest and delivery, restart it, and check that
/// every event arrives, and that any event delivered twice carries the same event_id.
fn crash_loop(rounds: usize, orders: usize, delay_ms: u64) {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    fake.set_response_delay(Duration::from_millis(delay_ms));
    let agent = Agent::new(&fake.base_url(), Opts { sender: "batch_size = 50".into(), ..Opts::default() });
    agent.drop_file("big-1.csv", &csv_orders("X", orders, 3));
    agent.drop_file("big-2.csv", &csv_orders("Y", orders / 2, 1));
    let mut expected = ids("X", orders);
    expected.extend(ids("Y", orders / 2));
    let mut seed = 0x9e3779b97f4a7c15u64 ^ now() as u64;
    for _ in 0..rounds {
        let mut daemon = agent.spawn();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(200 + seed % 1500));
        daemon.kill();
        if fake.unique_ids().len() == expected.len() {
            break;
        }
    }
    let daemon = agent.spawn();
    assert!(fake.wait_for_unique(expected.len(), Duration::from_secs(90)), "not all delivered:\n{}", daemon.log_text());
    assert_eq!(fake.unique_ids(), expected);
    // Every delivery, duplicates included, carried an id from the expected set.
    assert!(fake.accepted_ids().iter().all(|id| expected.contains(id)));
    assert!(wait_until(T, || agent.counts() == (0, expected.len() as i64, 0)));
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

#[test]
fn sigkill_during_ingest_and_sending_loses_nothing() {
    let rounds = std::env::var("CRASH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(4);
    crash_loop(rounds, 3000, 40);
}

#[test]
fn a_source_folder_that_vanishes_and_comes_back_is_picked_up_again() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    let daemon = agent.spawn();
    agent.drop_file("a.csv", &csv_orders("M", 2, 1));
    assert!(fake.wait_for_unique(2, T), "{}", daemon.log_text());
    let away = agent.dir.path().join("unmounted");
    std::fs::rename(&agent.inbox, &away).unwrap();
    assert!(wait_until(T, || daemon.log_text().contains("cannot list")), "{}", daemon.log_text());
    std::fs::rename(&away, &agent.inbox).unwrap();
    assert!(wait_until(T, || daemon.log_text().contains("is back")), "{}", daemon.log_text());
    agent.drop_file("b.csv", &csv_orders("W", 2, 1));
    assert!(fake.wait_for_unique(4, T), "a file in the remounted folder was not picked up:\n{}", daemon.log_text());
}
