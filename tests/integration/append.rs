//! Append mode: one growing day file, written while the agent runs. Complete orders only, never
//! split, never sent twice; truncation, replacement and rotation noticed; the last order taken
//! once the file is idle.

use crate::support::*;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

const HEADER: &str = "order_id,event_time,content_id,content_name,price,quantity\n";

fn append_opts(idle_secs: u64) -> Opts {
    Opts { source: format!("append = true\nappend_idle_secs = {idle_secs}"), ..Opts::default() }
}

/// The two rows (two line items) of order `id`, with a recent time.
fn order(id: &str) -> [String; 2] {
    let t = now() - 600;
    [format!("{id},{t},SKU-1,socks,8.00,2\n"), format!("{id},{t},SKU-2,dress,30.00,1\n")]
}

fn orders(ids: &[&str]) -> String {
    ids.iter().flat_map(|id| order(id)).collect()
}

fn append(path: &Path, text: &str) {
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

fn event_ids(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|id| format!("s042:t1:{id}")).collect()
}

/// Every event TikTok accepted has both of its order's items: no order was split.
fn assert_whole(fake: &FakeTikTok) {
    for event in fake.accepted() {
        let items = event["properties"]["contents"].as_array().map_or(0, Vec::len);
        assert_eq!(items, 2, "an order arrived split: {event}");
    }
}

#[test]
fn a_day_file_written_in_appends_is_delivered_order_by_order_once_and_whole() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), append_opts(6));
    let mut daemon = agent.spawn();
    let day = agent.inbox.join("day.csv");
    append(&day, &format!("{HEADER}{}", orders(&["O0", "O1", "O2"])));
    // O2 is the last order so far: it may still grow, so it waits.
    assert!(fake.wait_for_unique(2, T), "{}", daemon.log_text());
    assert_eq!(fake.unique_ids(), event_ids(&["O0", "O1"]));

    // Two more orders, the second cut in the middle of its second row.
    let [o4_first, o4_second] = order("O4");
    append(&day, &format!("{}{o4_first}{}", orders(&["O3"]), &o4_second[..12]));
    assert!(fake.wait_for_unique(4, T), "{}", daemon.log_text());
    assert_eq!(fake.unique_ids(), event_ids(&["O0", "O1", "O2", "O3"]));

    // The rest of O4's row and the first row of O5, then O5's second row in a write of its own.
    let [o5_first, o5_second] = order("O5");
    append(&day, &format!("{}{o5_first}", &o4_second[12..]));
    assert!(fake.wait_for_unique(5, T), "{}", daemon.log_text());
    append(&day, &o5_second);
    // O5 is taken once the file has been idle for 6 s.
    assert!(fake.wait_for_unique(6, T), "the last order was not taken when the file went idle:\n{}", daemon.log_text());

    assert_eq!(fake.unique_ids(), event_ids(&["O0", "O1", "O2", "O3", "O4", "O5"]));
    assert_eq!(fake.accepted_ids().len(), 6, "an order was sent twice: {:?}", fake.accepted_ids());
    assert_whole(&fake);
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
    assert_eq!(agent.status()["counts"]["rejects"], 0, "the half-written row was rejected:\n{}", daemon.log_text());

    // The file stays where the POS writes it, and status shows how far it was read.
    assert!(day.exists() && !agent.inbox.join("archive").exists());
    let status = agent.cmd_ok(&["status"]);
    let size = std::fs::metadata(&day).unwrap().len();
    assert!(status.contains("append files:"), "{status}");
    assert!(status.contains(&format!("day.csv [till] read to byte {size} of {size}, 13 lines")), "{status}");
    daemon.terminate();
}

#[test]
fn sigkill_between_appends_loses_nothing_and_sends_nothing_twice() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), append_opts(3));
    let day = agent.inbox.join("day.csv");
    append(&day, HEADER);
    let mut expected = Vec::new();
    let mut seed = 0x9e3779b97f4a7c15u64 ^ now() as u64;
    let mut straddling: Option<String> = None;
    for round in 0..5 {
        let mut daemon = agent.spawn();
        // The second row of the order begun in the last round, ten orders, and the first row of
        // the next one.
        let mut text = straddling.take().unwrap_or_default();
        for n in 0..10 {
            let id = format!("K{round}-{n}");
            text.push_str(&orders(&[&id]));
            expected.push(id);
        }
        let next = format!("K{round}-next");
        let [first, second] = order(&next);
        text.push_str(&first);
        expected.push(next);
        straddling = Some(second);
        // Part of it now, the rest a moment later, while the agent reads and sends.
        let cut = text.len() / 2;
        append(&day, &text[..cut]);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(100 + seed % 900));
        append(&day, &text[cut..]);
        std::thread::sleep(Duration::from_millis(200 + seed % 1300));
        daemon.kill();
    }
    append(&day, &straddling.take().unwrap());
    let daemon = agent.spawn();
    let expected: BTreeSet<String> = expected.iter().map(|id| format!("s042:t1:{id}")).collect();
    assert!(
        fake.wait_for_unique(expected.len(), Duration::from_secs(60)),
        "not all delivered ({} of {}):\n{}",
        fake.unique_ids().len(),
        expected.len(),
        daemon.log_text()
    );
    assert_eq!(fake.unique_ids(), expected);
    // A batch in flight at a kill may be sent again, always with the same ids.
    assert!(fake.accepted_ids().iter().all(|id| expected.contains(id)));
    assert_whole(&fake);
    assert!(wait_until(T, || agent.counts() == (0, expected.len() as i64, 0)), "{:?}", agent.counts());
    assert_eq!(agent.status()["counts"]["rejects"], 0, "{}", daemon.log_text());
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

#[test]
fn a_truncated_day_file_is_read_again_and_only_its_new_orders_are_sent() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), append_opts(2));
    let daemon = agent.spawn();
    let day = agent.inbox.join("day.csv");
    append(&day, &format!("{HEADER}{}", orders(&["T0", "T1", "T2", "T3"])));
    assert!(fake.wait_for_unique(4, T), "{}", daemon.log_text());
    // Truncated in place and written again, shorter: one old order, one new.
    std::fs::write(&day, format!("{HEADER}{}", orders(&["T0", "N0"]))).unwrap();
    assert!(fake.wait_for_unique(5, T), "{}", daemon.log_text());
    assert!(wait_until(T, || daemon.log_text().contains("day.csv: truncated")), "{}", daemon.log_text());
    assert_eq!(fake.unique_ids(), event_ids(&["T0", "T1", "T2", "T3", "N0"]));
    assert_eq!(fake.accepted_ids().len(), 5, "re-sent: {:?}", fake.accepted_ids());
    assert_whole(&fake);
}

#[test]
fn a_day_file_replaced_by_the_next_one_is_read_from_its_start() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), append_opts(2));
    let daemon = agent.spawn();
    let day = agent.inbox.join("day.csv");
    append(&day, &format!("{HEADER}{}", orders(&["R0", "R1"])));
    assert!(fake.wait_for_unique(2, T), "{}", daemon.log_text());
    // The next day's file moved over it (another inode), longer than what was read.
    let next = agent.dir.path().join("next.csv");
    std::fs::write(&next, format!("{HEADER}{}", orders(&["S0", "S1", "S2", "S3"]))).unwrap();
    std::fs::rename(&next, &day).unwrap();
    assert!(fake.wait_for_unique(6, T), "{}", daemon.log_text());
    assert!(wait_until(T, || daemon.log_text().contains("another file now has this name")), "{}", daemon.log_text());
    // Then overwritten in place (same inode) with other content, longer again.
    std::fs::write(&day, format!("{HEADER}{}", orders(&["U0", "R1", "S0", "S1", "S2"]))).unwrap();
    assert!(fake.wait_for_unique(7, T), "{}", daemon.log_text());
    assert!(wait_until(T, || daemon.log_text().contains("rewritten in place")), "{}", daemon.log_text());
    assert_eq!(fake.unique_ids(), event_ids(&["R0", "R1", "S0", "S1", "S2", "S3", "U0"]));
    assert_eq!(fake.accepted_ids().len(), 7, "re-sent: {:?}", fake.accepted_ids());
    assert_whole(&fake);
}

#[test]
fn a_rotated_day_file_is_finished_and_the_new_one_read_from_its_start() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), append_opts(2));
    let daemon = agent.spawn();
    let day = agent.inbox.join("day.csv");
    // A3's second row is not written yet when the file is rotated.
    let [a3_first, _] = order("A3");
    append(&day, &format!("{HEADER}{}{a3_first}", orders(&["A0", "A1", "A2"])));
    assert!(fake.wait_for_unique(3, T), "{}", daemon.log_text());
    std::fs::rename(&day, agent.inbox.join("day-1.csv")).unwrap();
    append(&day, &format!("{HEADER}{}", orders(&["B0", "B1"])));
    assert!(fake.wait_for_unique(6, T), "{}", daemon.log_text());
    assert!(wait_until(T, || daemon.log_text().contains("another file now has this name")), "{}", daemon.log_text());
    let mut expected = event_ids(&["A0", "A1", "A2", "A3", "B0", "B1"]);
    assert_eq!(fake.unique_ids(), expected);
    assert_eq!(fake.accepted_ids().len(), 6, "re-sent: {:?}", fake.accepted_ids());
    // The rotated file's last order had only one row: it is sent as the file has it.
    let a3 = fake.accepted().into_iter().find(|e| e["event_id"] == "s042:t1:A3").unwrap();
    assert_eq!(a3["properties"]["contents"].as_array().unwrap().len(), 1);
    expected.remove("s042:t1:A3");
    assert!(fake
        .accepted()
        .iter()
        .filter(|e| expected.contains(e["event_id"].as_str().unwrap()))
        .all(|e| { e["properties"]["contents"].as_array().unwrap().len() == 2 }));
}

#[test]
fn the_last_order_of_a_file_that_stops_growing_is_sent_once_it_is_idle() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), append_opts(2));
    let daemon = agent.spawn();
    let day = agent.inbox.join("day.csv");
    append(&day, &format!("{HEADER}{}", orders(&["I0", "I1"])));
    assert!(fake.wait_for_unique(1, T), "{}", daemon.log_text());
    let written = std::time::Instant::now();
    assert!(fake.wait_for_unique(2, T), "the last order was never taken:\n{}", daemon.log_text());
    assert!(written.elapsed() < Duration::from_secs(15), "taken only after {:?}", written.elapsed());
    assert_eq!(fake.unique_ids(), event_ids(&["I0", "I1"]));
    assert_whole(&fake);
}

#[test]
fn a_rejected_row_in_an_appended_part_names_its_line_in_the_file() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), append_opts(2));
    let daemon = agent.spawn();
    let day = agent.inbox.join("day.csv");
    append(&day, &format!("{HEADER}{}", orders(&["L0", "L1", "L2"])));
    assert!(fake.wait_for_unique(2, T), "{}", daemon.log_text());
    // Line 8 (after the header and three orders of two rows) has a price that is not an amount.
    append(&day, &format!("L3,{},SKU-9,hat,abc,1\n{}", now() - 60, orders(&["L4"])));
    assert!(fake.wait_for_unique(4, T), "{}", daemon.log_text());
    assert!(wait_until(T, || agent.status()["counts"]["rejects"] == 1), "{}", daemon.log_text());
    let list = agent.cmd_ok(&["dead-letter", "list"]);
    assert!(list.contains("day.csv:8: field `price`: order `L3` not taken: not an amount"), "{list}");
    assert!(daemon.log_text().contains("day.csv:8: field `price`"), "{}", daemon.log_text());
    assert_eq!(fake.unique_ids(), event_ids(&["L0", "L1", "L2", "L4"]));
}

#[test]
fn a_file_written_without_a_pause_is_read_while_it_grows() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), append_opts(60));
    let daemon = agent.spawn();
    let day = agent.inbox.join("day.csv");
    append(&day, HEADER);
    // A busy till: a sale every 250 ms, never a pause as long as settle_secs (1 s).
    let ids: Vec<String> = (0..20).map(|n| format!("B{n}")).collect();
    for id in &ids {
        append(&day, &orders(&[id]));
        std::thread::sleep(Duration::from_millis(250));
    }
    let delivered = fake.unique_ids().len();
    assert!(delivered >= 5, "only {delivered} orders delivered while the file kept growing:\n{}", daemon.log_text());
    // All but the last, which waits for the file to be idle (60 s here).
    assert!(fake.wait_for_unique(19, T), "{}", daemon.log_text());
    assert_whole(&fake);
}
