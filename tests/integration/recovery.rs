//! Recovery without waiting (issue 10): a change another process makes to the queue wakes the
//! running service's sender (`dead-letter requeue`), a fixed token file is used at once although
//! `auth_retry_secs` is long, and delivery resumes soon after a run of server errors. Each test
//! prints its figure (`cargo test --test integration recovery:: -- --nocapture`); the deadlines are
//! generous, far below what the service would take without the change (the 10-minute maintenance,
//! a 5-minute `auth_retry_secs`).

use crate::support::*;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

#[test]
fn a_dead_letter_requeue_while_the_service_runs_is_sent_within_seconds() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    fake.reject_event_ids(&["s042:t1:Q2"]);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    let daemon = agent.spawn();
    agent.drop_file("q.csv", &csv_orders("Q", 5, 1));
    assert!(wait_until(T, || agent.counts() == (0, 4, 1)), "{}\n{}", agent.cmd_ok(&["status"]), daemon.log_text());
    // The sender is idle now (nothing pending, no new file): only the requeue can wake it.
    fake.reject_event_ids(&[]);
    let started = Instant::now();
    assert_eq!(agent.cmd_ok(&["dead-letter", "requeue", "--all"]).trim(), "requeued 1 events");
    assert!(fake.wait_for_unique(5, Duration::from_secs(10)), "the requeued event waited:\n{}", daemon.log_text());
    eprintln!("figure: dead-letter requeue to delivery {} ms", started.elapsed().as_millis());
    assert!(wait_until(T, || agent.counts() == (0, 5, 0)));
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

#[test]
fn a_fixed_token_file_is_used_at_once_and_status_says_when_the_next_try_is() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts { sender: "auth_retry_secs = 300".into(), ..Opts::default() });
    agent.set_token("tok-revoked-0000");
    let daemon = agent.spawn();
    agent.drop_file("k.csv", &csv_orders("K", 4, 1));
    // `status` fails until the service has created the queue.
    let paused =
        || agent.status_if_any().is_some_and(|s| s["paused"].as_str().is_some_and(|p| p.contains("access token")));
    assert!(wait_until(T, paused), "{}\n{}", agent.cmd_ok(&["status"]), daemon.log_text());
    let status = agent.status();
    let next = status["next_retry_at"].as_i64().expect("next_retry_at is set while paused");
    assert!((now() + 200..=now() + 301).contains(&next), "next retry at {next}, now {}", now());
    assert_eq!(agent.counts(), (4, 0, 0));

    let started = Instant::now();
    agent.set_token(TOKEN);
    assert!(fake.wait_for_unique(4, Duration::from_secs(10)), "the fixed token waited:\n{}", daemon.log_text());
    eprintln!("figure: token fix to delivery {} ms", started.elapsed().as_millis());
    assert!(daemon.log_text().contains("the access token file changed; trying again now"), "{}", daemon.log_text());
    assert!(wait_until(T, || agent.status()["paused"].is_null() && agent.status()["next_retry_at"].is_null()));
}

#[test]
fn delivery_resumes_within_the_backoff_after_a_streak_of_server_errors() {
    // The default backoff (1 s base, 60 s cap): four 500s in a row, then the fake recovers.
    let sender = "backoff_base_ms = 1000\nbackoff_max_secs = 60\nrecovery_jitter_secs = 0";
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    const STREAK: usize = 4;
    for _ in 0..STREAK {
        fake.push_fault(Fault::Http(500, r#"{"code":50000,"message":"internal error"}"#.into()));
    }
    let agent = Agent::new(&fake.base_url(), Opts { sender: sender.into(), ..Opts::default() });
    let daemon = agent.spawn();
    agent.drop_file("f.csv", &csv_orders("F", 3, 1));
    assert!(wait_until(T, || fake.requests().len() >= STREAK), "{:?}\n{}", fake.requests(), daemon.log_text());
    let recovered = Instant::now();
    // The last wait is at most 2^(STREAK-1) s with full jitter (60 s once the streak is long).
    assert!(fake.wait_for_unique(3, Duration::from_secs(20)), "{:?}\n{}", fake.requests(), daemon.log_text());
    eprintln!("figure: {STREAK} server errors, recovery to delivery {} ms", recovered.elapsed().as_millis());
    assert_eq!(fake.requests().iter().filter(|r| r.status == 500).count(), STREAK);
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}
