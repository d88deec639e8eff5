//! Refusals that are about the request, not an event (issue 10): a refusal naming no event, a
//! whole batch refused alike, and an unknown code all pause with everything kept queued (`run
//! --once` exits 75, `status` says PAUSED); only refusals that single out events dead-letter them.

use crate::support::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);
const WRONG_SET: &str = "Invalid value for event_source_id: not a valid string.";

/// `run --once`: its exit code and stderr.
fn run_once(agent: &Agent) -> (Option<i32>, String) {
    let out = agent.cmd(&["run", "--once", "--timeout-secs", "30"]);
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Status must say PAUSED with `what`, never `ok`.
fn assert_paused(agent: &Agent, what: &str) {
    let status = agent.cmd_ok(&["status"]);
    // Long lines wrap at 100 columns: look for `what` across the wraps.
    let flat = status.split_whitespace().collect::<Vec<_>>().join(" ");
    let what_flat = what.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(status.contains("state:           PAUSED") && flat.contains(&what_flat), "{status}");
    assert!(!status.contains("state:           ok"), "{status}");
    assert!(agent.status()["paused"].as_str().is_some_and(|p| p.contains(what)), "{status}");
}

#[test]
fn a_refusal_naming_no_event_pauses_dead_letters_nothing_and_resumes_once_fixed() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    fake.refuse_requests(Some((40002, WRONG_SET)));
    let agent = Agent::new(&fake.base_url(), Opts::default());
    agent.drop_file("w.csv", &csv_orders("W", 20, 1));
    let (code, stderr) = run_once(&agent);
    assert_eq!(code, Some(75), "{stderr}");
    assert!(stderr.contains("not an event") && stderr.contains("check event_source_id"), "{stderr}");
    assert_eq!(agent.counts(), (20, 0, 0), "everything stays queued, nothing dead-lettered");
    assert_eq!(fake.requests().len(), 1, "one request, no split: {:?}", fake.requests());
    assert_paused(&agent, WRONG_SET);

    // The service retries on auth_retry_secs and resumes once the request is right.
    let daemon = agent.spawn();
    assert!(wait_until(T, || daemon.log_text().contains(WRONG_SET)), "{}", daemon.log_text());
    fake.refuse_requests(None);
    assert!(fake.wait_for_unique(20, T), "not delivered once fixed:\n{}", daemon.log_text());
    assert!(wait_until(T, || agent.counts() == (0, 20, 0) && agent.status()["paused"].is_null()));
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

#[test]
fn a_batch_refused_event_by_event_alike_is_systemic_paused_and_put_back() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let all: Vec<String> = ids("S", 6).into_iter().collect();
    fake.reject_event_ids(&all.iter().map(String::as_str).collect::<Vec<_>>());
    let agent = Agent::new(&fake.base_url(), Opts::default());
    agent.drop_file("s.csv", &csv_orders("S", 6, 1));
    let (code, stderr) = run_once(&agent);
    assert_eq!(code, Some(75), "{stderr}");
    assert_eq!(agent.counts(), (6, 0, 0), "put back, not dead-lettered");
    assert!(agent.cmd_ok(&["dead-letter", "list"]).lines().all(|l| !l.contains("s042:t1:S")));
    assert_paused(&agent, "every one of the 6 events of a batch");
    assert_paused(&agent, "content_id: Not a valid string");
    assert!(fake.requests().len() <= 12, "bisection is bounded: {}", fake.requests().len());

    // Refusals that single out some events dead-letter those only.
    fake.reject_event_ids(&["s042:t1:S2", "s042:t1:S5"]);
    let (code, stderr) = run_once(&agent);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(agent.counts(), (0, 4, 2));
    assert!(agent.status()["paused"].is_null(), "{}", agent.cmd_ok(&["status"]));
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

#[test]
fn an_unknown_code_is_isolated_after_a_few_tries_and_never_blocks_the_rest() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    fake.unknown_code_for(47777, &["s042:t1:U3"]);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    agent.drop_file("u.csv", &csv_orders("U", 8, 1));
    let (code, stderr) = run_once(&agent);
    assert_eq!(code, Some(75), "{stderr}");
    let mut rest = ids("U", 8);
    rest.remove("s042:t1:U3");
    assert_eq!(fake.unique_ids(), rest, "the other events are delivered");
    assert_eq!(agent.counts(), (1, 7, 0), "the one event stays queued, not dead-lettered");
    let whole = fake.requests().iter().filter(|r| r.events == 8 && r.code == Some(47777)).count();
    assert_eq!(whole, 3, "the whole batch is tried a few times, then split: {:?}", fake.requests());
    assert_paused(&agent, "47777");
    assert_paused(&agent, "one event alone");

    fake.unknown_code_for(47777, &[]);
    let (code, stderr) = run_once(&agent);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(fake.unique_ids(), ids("U", 8));
    assert!(agent.status()["paused"].is_null());
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}
