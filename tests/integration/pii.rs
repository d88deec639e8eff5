//! Raw customer data never leaves the till: a headerless export, a headerless later part of an
//! export, and rejected rows with e-mail addresses and phone numbers in the wrong cells are described
//! by line, column and shape, never quoted, in the log, `.reason`, queue, status, dead-letter list,
//! preview and watch. (Every `Agent` also scans the files the agent wrote when it is dropped.)

use crate::support::*;
use serde_json::Value;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn run_once(agent: &Agent) -> String {
    let out = agent.cmd(&["run", "--once", "--timeout-secs", "20"]);
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every command that shows what the queue holds, leak-checked by `cmd`.
fn show_everything(agent: &Agent) -> String {
    let mut all = String::new();
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["dead-letter", "list"],
        &["dead-letter", "list", "--json"],
        &["watch", "--history", "--exit-after-secs", "1"],
    ] {
        let out = agent.cmd(args);
        all.push_str(&String::from_utf8_lossy(&out.stdout));
        all.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    all
}

/// Data rows of native CSV with raw e-mails and phones, no header.
fn data_rows(prefix: &str) -> String {
    let t = now() - 600;
    format!(
        "{prefix}1,{t},{RAW_EMAIL},{RAW_PHONE},SKU-1,socks,8.00,2\n\
         {prefix}2,{t},ava.thornton@example.com,+1 415-555-0142,SKU-2,dress,30.00,1\n"
    )
}

const HEADER: &str = "order_id,event_time,email,phone,content_id,content_name,price,quantity\n";

fn reason_of(agent: &Agent, name: &str) -> String {
    std::fs::read_to_string(agent.inbox.join("quarantine").join(format!("{name}.reason"))).unwrap_or_default()
}

#[test]
fn a_headerless_export_is_quarantined_describing_its_first_line_never_quoting_it() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    agent.drop_file("headerless.csv", &data_rows("H"));
    let log = run_once(&agent);
    assert_no_leak(&log);

    let reason = reason_of(&agent, "headerless.csv");
    assert!(agent.inbox.join("quarantine/headerless.csv").exists(), "{log}");
    for words in [
        "missing required columns `order_id`, `event_time`",
        "the first line is a data row of 8 fields, not a header",
        "field 3 looks like an e-mail address",
        "field 4 looks like a phone number",
        "a file without a header, or a later part of an export?",
    ] {
        assert!(reason.contains(words), "`{words}` not in {reason}");
    }
    assert_no_leak(&reason);
    let shown = show_everything(&agent);
    assert!(shown.contains("headerless.csv"), "{shown}");
    assert!(fake.requests().is_empty());
}

#[test]
fn a_later_headerless_part_of_an_archived_export_is_quarantined_without_quoting() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    let mut daemon = agent.spawn();
    agent.drop_file("day.csv", &format!("{HEADER}{}", data_rows("A")));
    assert!(fake.wait_for_unique(2, T), "{}", daemon.log_text());
    assert!(wait_until(T, || agent.inbox.join("archive/day.csv").exists()), "{}", daemon.log_text());

    // The POS goes on writing to its day file after the agent archived it: a new file, no header.
    agent.drop_file("day.csv", &data_rows("B"));
    assert!(wait_until(T, || !reason_of(&agent, "day.csv").is_empty()), "{}", daemon.log_text());
    let reason = reason_of(&agent, "day.csv");
    assert!(reason.contains("a later part of an export?"), "{reason}");
    assert!(reason.contains("field 3 looks like an e-mail address"), "{reason}");
    show_everything(&agent);
    daemon.terminate();
    assert!(daemon.log_text().contains("the first line is a data row"), "{}", daemon.log_text());
    assert_eq!(fake.unique_ids().len(), 2);
}

#[test]
fn rejected_rows_name_line_column_and_shape_never_the_cell() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    let t = now() - 600;
    let email = RAW_EMAIL.trim();
    let text = format!(
        "{HEADER}\
         G1,{t},{email},{RAW_PHONE},SKU-1,socks,8.00,2\n\
         R1,{t},,,SKU-1,socks,{RAW_PHONE},1\n\
         R2,{t},,,SKU-1,socks,\"{RAW_EMAIL}\",1\n\
         R3,{email},,,SKU-1,socks,8.00,1\n\
         R4,{t},,,SKU-1,socks,8.00,(213) 373-4253\n\
         R5,{t},{RAW_PHONE},{email},SKU-1,socks,8.00,1\n"
    );
    // `preview` first: what it prints is leak-checked too.
    let staged = agent.dir.path().join("staged.csv");
    std::fs::write(&staged, &text).unwrap();
    let preview = agent.cmd(&["preview", staged.to_str().unwrap()]);
    let preview = String::from_utf8_lossy(&preview.stdout).into_owned();
    assert!(preview.contains("looks like a phone number"), "{preview}");

    agent.drop_file("orders.csv", &text);
    let log = run_once(&agent);
    assert_no_leak(&log);
    assert!(fake.wait_for_unique(2, T), "{log}");

    let list: Value = serde_json::from_str(&agent.cmd_ok(&["dead-letter", "list", "--json"])).unwrap();
    let rejects = list["rejected_rows"].as_array().cloned().unwrap_or_default();
    let find = |line: u64| {
        rejects.iter().find(|r| r["line"].as_u64() == Some(line)).map(|r| r.to_string()).unwrap_or_default()
    };
    for (line, words) in
        [(3, "looks like a phone number"), (4, "looks like an e-mail address"), (5, "event_time"), (6, "quantity")]
    {
        assert!(find(line).contains(words), "line {line}: `{words}` not in {}", find(line));
    }
    show_everything(&agent);
}

#[test]
fn a_phone_in_a_shopify_price_is_rejected_without_quoting_it() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = shopify_agent(&fake);
    let sample = SHOPIFY_SAMPLE;
    let text = std::fs::read_to_string(sample).unwrap().replacen(",8.00,", &format!(",{RAW_PHONE},"), 1);
    let staged = agent.dir.path().join("shopify-staged.csv");
    std::fs::write(&staged, &text).unwrap();
    let preview = agent.cmd_ok(&["preview", staged.to_str().unwrap()]);
    assert!(preview.contains("not an amount (the cell looks like a phone number)"), "{preview}");

    agent.drop_file("orders_export.csv", &text);
    assert_no_leak(&run_once(&agent));
    let list = agent.cmd_ok(&["dead-letter", "list", "--json"]);
    assert!(list.contains("looks like a phone number"), "{list}");
    show_everything(&agent);
}

#[test]
fn the_disk_scan_finds_raw_values_in_what_the_agent_wrote_and_only_there() {
    for (text, hit) in [
        ("reason: alice_abc@GMAIL.com", true),
        ("x c17@example.com y", true),
        ("Kasse@Harbor-Kaffee.Example.com", true),
        ("tel (213) 373-4253", true),
        ("+14155550142", true),
        ("848a771458438fc2ec420560d769fb9b9b86851ee338ec56517baabd79d3bb4f", false),
        ("field 3 looks like an e-mail address", false),
        ("mailto:@example.com", false),
    ] {
        assert_eq!(raw_pii_in(text.as_bytes()).is_some(), hit, "{text}");
    }
    let agent = Agent::new("http://127.0.0.1:9", Opts::default());
    let written = |name: &str| {
        let path = agent.dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, RAW_PHONE).unwrap();
    };
    for name in ["state/queue.sqlite-wal", "inbox/quarantine/x.csv.reason", "daemon-1.log", "metrics.prom"] {
        written(name);
    }
    written("inbox/archive/x.csv");
    written("staged.csv");
    let queue_dir = agent.queue.parent().unwrap().to_path_buf();
    let mut found: Vec<String> = agent_written_files(agent.dir.path(), &queue_dir)
        .into_iter()
        .map(|(p, _)| p.strip_prefix(agent.dir.path()).unwrap().display().to_string())
        .collect();
    found.sort();
    assert_eq!(found, ["daemon-1.log", "inbox/quarantine/x.csv.reason", "metrics.prom", "state/queue.sqlite-wal"]);
    // The store is cleaned before `Drop` scans it.
    std::fs::remove_dir_all(agent.dir.path().join("state")).unwrap();
    for name in ["inbox/quarantine/x.csv.reason", "daemon-1.log", "metrics.prom"] {
        std::fs::remove_file(agent.dir.path().join(name)).unwrap();
    }
}
