//! Clock jumps: nothing expires on a wall clock TikTok's `Date` disagrees with, `status` says the
//! clock is wrong, and once it is right the held events go out (those expired on arrival meanwhile
//! too); on a right clock, events older than the window still expire. The agent's clock is moved
//! with the debug builds' `OFFLINE_EVENTS_AGENT_CLOCK_OFFSET_SECS`; the fake's `Date` stays true.

use crate::support::fake_tiktok::http_date;
use crate::support::*;

const OFFSET: &str = "OFFLINE_EVENTS_AGENT_CLOCK_OFFSET_SECS";
const DAY: i64 = 86_400;

/// Native CSV with `orders` one-line orders `{prefix}{n}`, `age` seconds old (on the true clock).
fn orders_aged(prefix: &str, orders: usize, age: i64) -> String {
    let mut out = String::from("order_id,event_time,email,content_id,content_name,price,quantity\n");
    for o in 0..orders {
        out.push_str(&format!("{prefix}{o},{},c{o}@example.com,SKU-1,item,9.50,1\n", now() - age - o as i64));
    }
    out
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_fake_dates_its_answers_like_http_does() {
    assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
    assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
}

#[test]
fn a_clock_30_days_ahead_expires_nothing_and_the_events_go_out_once_it_is_right() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    fake.set_down(true);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    agent.drop_file("a.csv", &csv_orders("J", 5, 1));
    // Queued on a right clock while TikTok cannot be reached.
    let out = agent.cmd(&["run", "--once", "--timeout-secs", "1"]);
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    assert_eq!(agent.counts(), (5, 0, 0));

    // The wall clock jumps 30 days ahead; TikTok answers again, with the true time.
    fake.set_down(false);
    let ahead = (30 * DAY).to_string();
    agent.drop_file("b.csv", &csv_orders("K", 3, 1));
    let out = agent.cmd_env(&["run", "--once", "--timeout-secs", "5"], &[(OFFSET, &ahead)]);
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(75), "held events are undelivered: {log}");
    assert!(log.contains("clock is wrong by ~30 days (ahead of tiktok's)"), "{log}");
    assert_eq!(log.matches("clock is wrong by").count(), 2, "once in the log, once in the summary: {log}");
    assert!(fake.unique_ids().is_empty(), "nothing that looks expired is sent");
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
    // Nothing queued expired; what was read on the wrong clock was dead on arrival (intake's check).
    assert_eq!(agent.counts(), (5, 0, 3));
    let status = agent.cmd_ok(&["status"]);
    assert!(status.contains("CLOCK WRONG:     clock is wrong by ~30 days"), "{status}");
    assert!(agent.status()["clock_wrong"].as_str().is_some_and(|t| t.contains("~30 days")));
    let list = agent.cmd_ok(&["dead-letter", "list"]);
    assert!(!list.contains(":J"), "no queued event expired: {list}");
    // A file read while the clock is known to be wrong is queued, not dead on arrival.
    let c = agent.drop_file("c.csv", &csv_orders("L", 2, 1));
    let out = agent.cmd_env(&["import", c.to_str().unwrap()], &[(OFFSET, &ahead)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(agent.counts(), (7, 0, 3));

    // The clock is right again: the held events go out, and those expired while it was wrong too.
    let out = agent.cmd(&["run", "--once", "--timeout-secs", "10"]);
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("the clock is right again") && log.contains("3 events dead-lettered as expired"), "{log}");
    let mut expected = ids("J", 5);
    expected.extend(ids("K", 3));
    expected.extend(ids("L", 2));
    assert_eq!(fake.unique_ids(), expected);
    assert_eq!(agent.counts(), (0, 10, 0));
    let status = agent.cmd_ok(&["status"]);
    assert!(!status.contains("CLOCK WRONG"), "{status}");
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

#[test]
fn on_a_right_clock_events_older_than_the_window_still_expire() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    fake.set_down(true);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    // Read on a clock 31 days behind, the orders look an hour old: queued, not expired.
    agent.drop_file("old.csv", &orders_aged("OLD", 4, 31 * DAY + 3600));
    let behind = (-31 * DAY).to_string();
    let out = agent.cmd_env(&["run", "--once", "--timeout-secs", "1"], &[(OFFSET, &behind)]);
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    assert_eq!(agent.counts(), (4, 0, 0));

    // On the right clock they are 31 days old: TikTok's Date agrees with the clock, so they expire.
    fake.set_down(false);
    let out = agent.cmd(&["run", "--once", "--timeout-secs", "10"]);
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert!(!log.contains("clock is wrong"), "{log}");
    assert_eq!(agent.counts(), (0, 0, 4));
    assert!(fake.unique_ids().is_empty(), "an expired event is never sent");
    let posts = fake.requests().iter().filter(|r| r.status != 405 && r.status != 0).count();
    assert_eq!(posts, 0, "the time was asked, nothing posted: {:?}", fake.requests());
    let list = agent.cmd_ok(&["dead-letter", "list"]);
    assert_eq!(list.matches("[expired]").count(), 4, "{list}");
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

/// Native CSV of one-line orders `{prefix}{n}` whose price is `n + 1` and whose product name is `n`
/// characters long (payloads of varied sizes), the even ones `old` seconds old and the odd ones an
/// hour old: each event's JSON tells which order it was built from.
fn orders_mixed(prefix: &str, orders: usize, old: i64) -> String {
    let mut out = String::from("order_id,event_time,email,content_id,content_name,price,quantity\n");
    for o in 0..orders {
        let age = if o % 2 == 0 { old } else { 3600 };
        let name = "n".repeat(1 + o % 200);
        out.push_str(&format!("{prefix}{o},{},c{o}@example.com,SKU-{o},{name},{}.00,1\n", now() - age, o + 1));
    }
    out
}

/// Every accepted event's JSON is its own order's (the value and the product name follow the order
/// number in its event id): no payload of one event went out under another's id.
fn assert_payloads_match_ids(fake: &FakeTikTok, prefix: &str) {
    let accepted = fake.accepted();
    assert!(!accepted.is_empty());
    for e in accepted {
        let id = e["event_id"].as_str().unwrap();
        let o: usize = id.rsplit_once(prefix).unwrap().1.parse().unwrap();
        assert_eq!(e["properties"]["value"], serde_json::json!((o + 1) as f64), "{e}");
        assert_eq!(e["properties"]["contents"][0]["content_name"], serde_json::json!("n".repeat(1 + o % 200)), "{e}");
    }
}

/// A batch whose events alternate between ones that look expired on a clock TikTok's disagrees with
/// and ones inside the window: the sender reads the batch again without the old-looking ones (into
/// the same buffers) and sends only the others, each with its own JSON, in small batches across
/// many rounds; once the clock is right the held ones go out too, each once.
#[test]
fn a_mixed_batch_on_a_wrong_clock_sends_the_events_inside_the_window_with_their_own_json() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    fake.set_down(true);
    let opts = Opts { sender: "batch_size = 7".into(), ..Opts::default() };
    let agent = Agent::new(&fake.base_url(), opts);
    // Queued on the right clock: the even orders 20 days old, the odd ones an hour.
    agent.drop_file("mixed.csv", &orders_mixed("M", 60, 20 * DAY));
    let out = agent.cmd(&["run", "--once", "--timeout-secs", "1"]);
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    assert_eq!(agent.counts(), (60, 0, 0));

    // 10 days ahead, the even ones look 30 days old (past the 28-day window): held, not expired.
    fake.set_down(false);
    let ahead = (10 * DAY).to_string();
    let out = agent.cmd_env(&["run", "--once", "--timeout-secs", "5"], &[(OFFSET, &ahead)]);
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(75), "the held events are undelivered: {log}");
    let odd: std::collections::BTreeSet<String> = (1..60).step_by(2).map(|o| format!("s042:t1:M{o}")).collect();
    assert_eq!(fake.unique_ids(), odd, "{log}");
    assert_eq!(fake.accepted_ids().len(), 30, "each once");
    assert_payloads_match_ids(&fake, ":M");
    assert_eq!(agent.counts(), (30, 30, 0), "held, not expired");

    // The clock is right: the held ones are 20 days old, inside the window, and go out.
    let out = agent.cmd(&["run", "--once", "--timeout-secs", "10"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fake.unique_ids(), ids("M", 60));
    assert_eq!(fake.accepted_ids().len(), 60, "each once");
    assert_payloads_match_ids(&fake, ":M");
    assert_eq!(agent.counts(), (0, 60, 0));
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}
