//! Files in, exact events out.

use crate::support::*;
use serde_json::json;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

#[test]
fn dropped_files_become_exact_events_at_tiktok() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    let mut daemon = agent.spawn();
    let t = now() - 600;
    let csv = format!(
        "order_id,event_time,event,email,phone,external_id,content_id,content_name,price,quantity\n\
         000123,{t},sale,{RAW_EMAIL},{RAW_PHONE},,1077218,socks,8.00,2\n\
         000123,{t},sale,,,,1197218,dress,30.00,1\n\
         000124,{t2},CompletePayment,,,user_123,2210001,hat,19.99,1\n",
        t2 = t + 60
    );
    agent.drop_file("sales.csv", &csv);
    assert!(fake.wait_for_unique(2, T), "events not delivered:\n{}", daemon.log_text());
    let accepted = fake.accepted();
    let first = accepted.iter().find(|e| e["event_id"] == "s042:t1:000123").unwrap();
    assert_eq!(
        first,
        &json!({"event":"Purchase","event_time":t,"event_id":"s042:t1:000123",
            "user":{"email":[EMAIL_HASH],"phone":[PHONE_HASH]},
            "properties":{"contents":[{"content_id":"1077218","content_name":"socks","price":8.0,"quantity":2},
                                      {"content_id":"1197218","content_name":"dress","price":30.0,"quantity":1}],
              "content_type":"product","currency":"USD","value":46.0,"order_id":"000123","shop_id":"s042","num_items":3}})
    );
    let second = accepted.iter().find(|e| e["event_id"] == "s042:t1:000124").unwrap();
    assert_eq!(second["user"], json!({"external_id":[EXTERNAL_HASH]}));
    assert_eq!(second["properties"]["value"], json!(19.99));
    assert_eq!(fake.violations(), Vec::<String>::new());

    // The file is archived after its commit, and no raw PII was written anywhere.
    assert!(wait_until(T, || agent.inbox.join("archive/sales.csv").exists()));
    assert!(!agent.inbox.join("sales.csv").exists());
    wait_until(T, || agent.counts() == (0, 2, 0));
    daemon.terminate();
    let on_disk = all_file_text(&agent.dir.path().join("state"));
    assert!(!on_disk.to_lowercase().contains("alice_abc"), "raw email in the queue files");
    assert!(!on_disk.contains("2133734253"), "raw phone in the queue files");
    // The search does find what is there: the hashed e-mail, stored packed (its 32 bytes, not hex).
    let hash: Vec<u8> = (0..32).map(|i| u8::from_str_radix(&EMAIL_HASH[2 * i..2 * i + 2], 16).unwrap()).collect();
    assert!(all_file_bytes(&agent.dir.path().join("state")).windows(32).any(|w| w == hash));
}

#[test]
fn jsonl_orders_are_delivered() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts { source: "format = \"jsonl\"".into(), ..Opts::default() });
    let t = now() - 300;
    let line = format!(
        r#"{{"order_id":"J1","event_time":{t},"email":["{}"],"phone":"(213) 373-4253","currency":"EUR","items":[{{"content_id":"A","price":"2.50","quantity":4}}]}}"#,
        RAW_EMAIL.trim()
    );
    agent.drop_file("orders.jsonl", &format!("{line}\n"));
    let out = agent.cmd_ok(&["run", "--once"]);
    assert!(out.is_empty(), "run --once prints nothing but logs: {out}");
    let e = &fake.accepted()[0];
    assert_eq!(e["event_id"], "s042:t1:J1");
    assert_eq!(e["user"]["phone"], json!([PHONE_HASH]));
    assert_eq!(e["properties"]["currency"], "EUR");
    assert_eq!(e["properties"]["value"], json!(10.0));
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

#[test]
fn a_malformed_row_is_reported_with_file_and_line_and_the_rest_is_delivered() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    let t = now() - 100;
    let csv = format!(
        "order_id,event_time,content_id,price,quantity\nA1,{t},X,1.00,1\nA2,{t},Y,abc,1\nA3,yesterday,Z,2.00,1\nA4,{t},W,3.00,1,extra\nA5,{t},V,4.00,1\n"
    );
    agent.drop_file("day.csv", &csv);
    let run = agent.cmd(&["run", "--once"]);
    assert!(run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("day.csv:3: field `price`"), "{stderr}");
    assert!(stderr.contains("day.csv:4: field `event_time`"), "{stderr}");
    assert!(stderr.contains("day.csv:5:"), "{stderr}");
    assert_eq!(fake.unique_ids(), ["s042:t1:A1", "s042:t1:A5"].iter().map(|s| s.to_string()).collect());
    let list = agent.cmd_ok(&["dead-letter", "list"]);
    assert!(list.contains("day.csv:3: field `price`: order `A2` not taken: not an amount"), "{list}");
    assert!(list.contains("rejected rows: 3"), "{list}");
    let status = agent.status();
    assert_eq!(status["counts"]["rejects"], 3);
}

#[test]
fn a_re_export_and_a_copy_under_another_name_are_not_sent_twice() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts { source: "after_ingest = \"keep\"".into(), ..Opts::default() });
    let csv = csv_orders("R", 5, 2);
    agent.drop_file("a.csv", &csv);
    agent.cmd_ok(&["run", "--once"]);
    // Same content under a new name, and an overlapping re-export with one new order.
    agent.drop_file("copy.csv", &csv);
    let mut more = csv_orders("R", 6, 2);
    more.push('\n');
    agent.drop_file("reexport.csv", &more);
    agent.cmd_ok(&["run", "--once"]);
    assert_eq!(fake.accepted_ids().len(), 6, "{:?}", fake.accepted_ids());
    assert_eq!(fake.unique_ids(), ids("R", 6));
    let files = agent.status()["recent_files"].as_array().unwrap().len();
    assert_eq!(files, 2, "the copy is recognised by content, not ingested again");
}

#[test]
fn an_event_tiktok_refuses_is_dead_lettered_and_the_rest_of_its_batch_delivered() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    fake.reject_event_ids(&["s042:t1:P7"]);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    agent.drop_file("p.csv", &csv_orders("P", 20, 1));
    let out = agent.cmd(&["run", "--once"]);
    assert!(out.status.success());
    let mut expected = ids("P", 20);
    expected.remove("s042:t1:P7");
    assert_eq!(fake.unique_ids(), expected);
    assert_eq!(agent.counts(), (0, 19, 1));
    let list = agent.cmd_ok(&["dead-letter", "list"]);
    assert!(list.contains("s042:t1:P7"), "{list}");
    assert!(list.contains("[invalid]"), "{list}");
    assert!(list.contains("content_id: Not a valid string"), "{list}");
}

#[test]
fn events_older_than_the_window_are_never_sent() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    let old = now() - 40 * 86_400;
    let fresh = now() - 60;
    agent.drop_file("mix.csv", &format!("order_id,event_time,value\nOLD,{old},5.00\nNEW,{fresh},6.00\n"));
    agent.cmd_ok(&["run", "--once"]);
    assert_eq!(fake.unique_ids(), ["s042:t1:NEW".to_string()].into_iter().collect());
    let list = agent.cmd_ok(&["dead-letter", "list"]);
    assert!(list.contains("s042:t1:OLD") && list.contains("[expired]"), "{list}");
    assert!(fake.requests().iter().all(|r| !r.event_ids.contains(&"s042:t1:OLD".to_string())));
}

#[test]
fn a_test_event_code_makes_live_events_test_events_and_watch_shows_the_flow() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts { top: "test_event_code = \"TEST4242\"".into(), ..Opts::default() });
    let t = now() - 30;
    agent.drop_file("w.csv", &format!("order_id,event_time,email,value\nW1,{t},{},9.99\n", RAW_EMAIL.trim()));
    agent.cmd_ok(&["run", "--once"]);
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].test_event_code.as_deref(), Some("TEST4242"));
    let watch = agent.cmd_ok(&["watch", "--history", "--exit-after-secs", "0"]);
    assert!(watch.contains("captured") && watch.contains("s042:t1:W1") && watch.contains(EMAIL_HASH), "{watch}");
    assert!(watch.contains("delivered 1 events -> http 200 code 0"), "{watch}");
    assert!(watch.contains("test_event_code TEST4242"), "{watch}");
}

#[test]
fn a_file_that_cannot_be_archived_stays_and_is_archived_once_possible() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let blocker_dir = tempfile::tempdir().unwrap();
    let blocker = blocker_dir.path().join("not-a-folder");
    std::fs::write(&blocker, "a file where the archive folder should be").unwrap();
    let archive = blocker.join("archive");
    let agent = Agent::new(
        &fake.base_url(),
        Opts { source: format!("archive_dir = \"{}\"", archive.display()), ..Opts::default() },
    );
    let daemon = agent.spawn();
    agent.drop_file("a.csv", &csv_orders("V", 3, 1));
    assert!(fake.wait_for_unique(3, T), "{}", daemon.log_text());
    assert!(wait_until(T, || daemon.log_text().contains("is tried again")), "{}", daemon.log_text());
    assert!(agent.inbox.join("a.csv").exists());
    std::fs::remove_file(&blocker).unwrap();
    assert!(wait_until(T, || archive.join("a.csv").exists()), "{}", daemon.log_text());
    assert!(!agent.inbox.join("a.csv").exists());
    assert_eq!(fake.accepted_ids().len(), 3, "nothing was queued or sent twice");
}

#[test]
fn without_consent_identifiers_are_removed_or_the_sale_is_not_sent() {
    let t = now() - 60;
    let email = RAW_EMAIL.trim();
    let csv = format!(
        "order_id,event_time,email,value,consent\nC1,{t},{email},1.00,yes\nC2,{t},{email},2.00,no\nC3,{t},{email},3.00,\nC4,{t},,4.00,no\n"
    );
    for (policy, expected) in [("strip", vec!["C1", "C2", "C3", "C4"]), ("skip", vec!["C1", "C4"])] {
        let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
        let agent = Agent::new(&fake.base_url(), Opts { source: format!("consent = \"{policy}\""), ..Opts::default() });
        agent.drop_file("consent.csv", &csv);
        agent.cmd_ok(&["run", "--once"]);
        let got: std::collections::BTreeSet<String> = fake.unique_ids();
        let want = expected.iter().map(|id| format!("s042:t1:{id}")).collect();
        assert_eq!(got, want, "policy {policy}");
        for e in fake.accepted() {
            let has_user = e.get("user").is_some();
            assert_eq!(has_user, e["event_id"] == "s042:t1:C1", "policy {policy}: {e}");
        }
    }
}

#[test]
fn preview_shows_events_skips_and_rejects_without_queueing() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = shopify_agent(&fake);
    let sample = SHOPIFY_SAMPLE;
    let out = agent.cmd_ok(&["preview", "--json", sample]);
    assert!(out.contains("5 events, 2 skipped, 0 rejected"), "{out}");
    assert!(out.contains("skipped order `#1004`"), "{out}");
    assert!(out.contains("\"event_id\":\"s042:t1:%231001\""), "{out}");
    assert!(!agent.queue.exists(), "preview never touches the queue");
    assert!(fake.requests().is_empty());
}

#[test]
fn any_csv_export_can_be_described_in_config() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let source = r#"decimal_separator = ","
time_formats = ["%d.%m.%Y %H:%M"]
[source.columns]
order_id = "Bon-Nr"
event_time = "Datum"
content_id = "Artikel"
price = "Einzelpreis"
quantity = "Menge"
email = "E-Mail"
"#;
    let agent = Agent::new(&fake.base_url(), Opts { source: source.into(), ..Opts::default() });
    let when = jiff::Timestamp::from_second(now() - 7200).unwrap().to_zoned(jiff::tz::TimeZone::UTC);
    let date = when.strftime("%d.%m.%Y %H:%M").to_string();
    let csv = format!(
        "Bon-Nr;Datum;Artikel;Einzelpreis;Menge;E-Mail;Kassierer\n\
         4711;{date};Kaffee;\"1.234,50\";2;{};Jana\n\
         4711;{date};Kuchen;2,90;1;;Jana\n",
        RAW_EMAIL.trim()
    );
    agent.drop_file("kasse.csv", &csv);
    agent.cmd_ok(&["run", "--once"]);
    let e = &fake.accepted()[0];
    assert_eq!(e["event_id"], "s042:t1:4711");
    assert_eq!(e["event_time"], when.timestamp().as_second() / 60 * 60);
    assert_eq!(e["properties"]["value"], serde_json::json!(2471.9));
    assert_eq!(e["properties"]["contents"][0]["price"], serde_json::json!(1234.5));
    assert_eq!(e["user"]["email"][0], EMAIL_HASH);
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

#[test]
fn with_a_done_marker_a_file_is_taken_only_once_its_marker_exists() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts { source: "done_marker = \"{stem}.ok\"".into(), ..Opts::default() });
    // `run --once` leaves an unmarked file alone.
    agent.drop_file("early.csv", &csv_orders("E", 2, 1));
    agent.cmd_ok(&["run", "--once"]);
    assert!(fake.accepted().is_empty() && agent.inbox.join("early.csv").exists());
    std::fs::write(agent.inbox.join("early.ok"), "").unwrap();
    agent.cmd_ok(&["run", "--once"]);
    assert_eq!(fake.unique_ids(), ids("E", 2));
    assert!(agent.inbox.join("archive/early.csv").exists());
    assert!(!agent.inbox.join("early.ok").exists(), "the marker goes with its file");

    // The daemon: a file that settled long ago is still not complete without its marker.
    let daemon = agent.spawn();
    agent.drop_file("late.csv", &csv_orders("L", 3, 1));
    std::thread::sleep(Duration::from_secs(5)); // more than twice the settle time
    assert_eq!(fake.unique_ids().len(), 2, "taken before its marker: {}", daemon.log_text());
    std::fs::write(agent.inbox.join("late.ok"), "").unwrap();
    assert!(fake.wait_for_unique(5, T), "{}", daemon.log_text());
    assert!(wait_until(T, || !agent.inbox.join("late.ok").exists() && agent.inbox.join("archive/late.csv").exists()));
}

#[test]
fn any_json_export_can_be_described_in_config() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let source = r#"format = "json"
[source.columns]
records = "data.receipts"
order_id = "number"
event_time = "closed_at"
email = "customer.contact.email"
items = "lines"
content_id = "article.sku"
content_name = "article.name"
price = "unit_price"
quantity = "qty"
"#;
    let agent = Agent::new(&fake.base_url(), Opts { source: source.into(), ..Opts::default() });
    let t = now() - 900;
    let doc = json!({
        "export": {"till": 3, "version": "2.1"},
        "data": {"receipts": [
            {"number": "R-100", "closed_at": t, "customer": {"contact": {"email": RAW_EMAIL.trim()}, "name": "Alice"},
             "lines": [{"article": {"sku": "SOCK", "name": "socks"}, "unit_price": "8.00", "qty": 2},
                       {"article": {"sku": "HAT", "name": "hat"}, "unit_price": 19.99, "qty": 1}]},
            {"number": "R-101", "closed_at": "yesterday-ish", "lines": []},
            {"number": "R-102", "closed_at": t + 60, "lines": [{"article": {"sku": "PIN"}, "unit_price": 5, "qty": 1}]}
        ]}
    });
    agent.drop_file("export.json", &serde_json::to_string_pretty(&doc).unwrap());
    agent.cmd_ok(&["run", "--once"]);
    assert_eq!(fake.unique_ids(), ["s042:t1:R-100", "s042:t1:R-102"].map(String::from).into_iter().collect());
    let e = fake.accepted().into_iter().find(|e| e["event_id"] == "s042:t1:R-100").unwrap();
    assert_eq!(e["event_time"], t);
    assert_eq!(e["user"]["email"], json!([EMAIL_HASH]));
    assert_eq!(e["properties"]["value"], json!(35.99));
    assert_eq!(e["properties"]["contents"][1]["content_id"], "HAT");
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
    // The bad receipt is recorded with the line it starts on in the pretty-printed file.
    let listed = agent.cmd_ok(&["dead-letter", "list"]);
    let pretty = serde_json::to_string_pretty(&doc).unwrap();
    let starts = pretty.lines().position(|l| l.contains("yesterday-ish")).unwrap(); // 0-based: the `{` above
    assert!(
        listed.contains(&format!("export.json:{starts}")) && listed.contains("closed_at"),
        "the export's name for the field: {listed}"
    );
}

#[test]
fn a_split_export_waits_for_its_companion_and_is_archived_with_it() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts { source: "format = \"toast\"".into(), ..Opts::default() });
    let daemon = agent.spawn();
    let when = jiff::Timestamp::from_second(now() - 1800).unwrap().to_zoned(jiff::tz::TimeZone::UTC);
    let date = when.strftime("%m/%d/%y %I:%M %p").to_string();
    agent.drop_file(
        "ItemSelectionDetails.csv",
        &format!(
            "Order Id,Order #,Order Date,Check Id,Item Id,Menu Item,Net Price,Qty,Tax,Void?\n\
             T1,1,{date},C1,I1,Burger,18.00,1.0,1.26,false\n"
        ),
    );
    // The POS is still writing CheckDetails (rows keep coming for 3 s): the export is not taken.
    let checks = agent.inbox.join("CheckDetails.csv");
    let mut text = String::from("Check Id,Customer Email\n");
    for i in 0..10 {
        text.push_str(&format!("C{},c{i}@example.com\n", i + 2));
        std::fs::write(&checks, &text).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(fake.unique_ids().is_empty(), "taken while its companion was written:\n{}", daemon.log_text());
    text.push_str(&format!("C1,{}\n", RAW_EMAIL.trim()));
    std::fs::write(&checks, &text).unwrap();
    assert!(fake.wait_for_unique(1, T), "{}", daemon.log_text());
    assert_eq!(fake.accepted()[0]["user"]["email"], json!([EMAIL_HASH]), "joined with the finished companion");
    assert!(
        wait_until(T, || agent.inbox.join("archive/CheckDetails.csv").exists() && !checks.exists()),
        "the companion is archived with its file:\n{}",
        daemon.log_text()
    );
    assert!(agent.inbox.join("archive/ItemSelectionDetails.csv").exists());
}

#[test]
fn a_relative_config_path_still_sees_new_files_at_once_not_only_on_a_rescan() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    // Rescans an hour apart: only the watcher can see the file in time.
    let agent = Agent::new(&fake.base_url(), Opts::default());
    let text = std::fs::read_to_string(&agent.config).unwrap().replace("rescan_secs = 1", "rescan_secs = 3600");
    std::fs::write(&agent.config, text).unwrap();
    let mut daemon = agent.spawn_relative();
    assert!(wait_until(T, || daemon.log_text().contains("started")), "{}", daemon.log_text());
    std::thread::sleep(std::time::Duration::from_millis(300));
    agent.drop_file("late.csv", &csv_orders("REL", 2, 1));
    assert!(fake.wait_for_unique(2, std::time::Duration::from_secs(10)), "not picked up:\n{}", daemon.log_text());
    daemon.terminate();
}
