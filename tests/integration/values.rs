//! What is sent (#10): negative order values rejected, zero-value purchases by `zero_value`, sales
//! without e-mail or phone by `require_match_key`, and `preview`'s match-key coverage.

use crate::support::*;
use serde_json::json;
use std::collections::BTreeSet;

const HEADER: &str = "order_id,event_time,email,phone,external_id,value,content_id,price,quantity";

/// One order row of [`HEADER`].
fn row(id: &str, t: i64, email: &str, phone: &str, external_id: &str, value: &str) -> String {
    format!("{id},{t},{email},{phone},{external_id},{value},X,5.00,1\n")
}

fn sent_ids(fake: &FakeTikTok) -> BTreeSet<String> {
    fake.accepted().iter().map(|e| e["event_id"].as_str().unwrap().to_string()).collect()
}

fn ids(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|id| format!("s042:t1:{id}")).collect()
}

/// `status --json`: the skipped sales of the most recent file.
fn skipped(agent: &Agent) -> i64 {
    agent.status()["recent_files"][0]["skipped"].as_i64().unwrap()
}

#[test]
fn a_negative_value_is_a_rejected_row_naming_file_line_and_field() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    let t = now() - 300;
    let csv =
        format!("{HEADER}\n{}{}", row("P1", t, RAW_EMAIL, "", "", "12.50"), row("R1", t, RAW_EMAIL, "", "", "-5.00"));
    agent.drop_file("day.csv", &csv);
    let run = agent.cmd(&["run", "--once"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(sent_ids(&fake), ids(&["P1"]));
    let log = String::from_utf8_lossy(&run.stderr);
    assert!(log.contains("day.csv:3: field `value`: order `R1` not taken: negative (-5.00)"), "{log}");
    let list = agent.cmd_ok(&["dead-letter", "list"]);
    assert!(list.contains("rejected rows: 1") && list.contains("day.csv:3: field `value`"), "{list}");
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

#[test]
fn a_zero_value_purchase_is_skipped_by_default_and_sent_with_send() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let mut agent = Agent::new(&fake.base_url(), Opts::default());
    let t = now() - 300;
    let csv =
        format!("{HEADER}\n{}{}", row("P1", t, RAW_EMAIL, "", "", "12.50"), row("Z1", t, RAW_EMAIL, "", "", "0.00"));
    agent.drop_file("day.csv", &csv);
    let run = agent.cmd(&["run", "--once"]);
    assert!(run.status.success());
    assert_eq!(sent_ids(&fake), ids(&["P1"]));
    let log = String::from_utf8_lossy(&run.stderr);
    assert!(log.contains("day.csv:3: order `Z1` not sent: its value is 0 (zero_value = \"skip\")"), "{log}");
    assert_eq!(skipped(&agent), 1);
    let preview = agent.cmd_ok(&["preview", agent.inbox.join("archive/day.csv").to_str().unwrap()]);
    assert!(preview.contains("1 events, 1 skipped, 0 rejected"), "{preview}");

    agent.set_opts(Opts { source: "zero_value = \"send\"".into(), ..Opts::default() });
    agent.drop_file("next.csv", &csv.replace("P1", "P2").replace("Z1", "Z2"));
    agent.cmd_ok(&["run", "--once"]);
    assert_eq!(sent_ids(&fake), ids(&["P1", "P2", "Z2"]));
    let zero = fake.accepted().into_iter().find(|e| e["event_id"] == "s042:t1:Z2").unwrap();
    assert_eq!(zero["properties"]["value"], json!(0.0));
    assert_eq!(skipped(&agent), 0);

    agent.set_opts(Opts { source: "zero_value = \"maybe\"".into(), ..Opts::default() });
    let out = agent.cmd(&["check-config"]);
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`source[0].zero_value`") && err.contains("not one of skip, send"), "{err}");
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

/// Five sales: one with e-mail, one with phone, two with a customer id only, one with nothing.
fn mostly_unmatchable(t: i64) -> String {
    format!(
        "{HEADER}\n{}{}{}{}{}",
        row("E1", t, RAW_EMAIL, "", "", "10"),
        row("F1", t, "", RAW_PHONE, "", "10"),
        row("C1", t, "", "", "cust-1", "10"),
        row("C2", t, "", "", "cust-2", "10"),
        row("N1", t, "", "", "", "10"),
    )
}

#[test]
fn preview_counts_sales_by_match_key_and_hints_when_most_cannot_match() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    let t = now() - 300;
    let weak = agent.dir.path().join("weak.csv");
    std::fs::write(&weak, mostly_unmatchable(t)).unwrap();
    let out = agent.cmd_ok(&["preview", "--source", "till", weak.to_str().unwrap()]);
    assert!(out.contains("weak.csv: match keys: 1 e-mail, 1 phone only, 2 external_id only, 1 none"), "{out}");
    assert!(out.contains("weak.csv: hint: 3 of 5 sales have no e-mail or phone"), "{out}");

    let good = agent.dir.path().join("good.csv");
    let csv = format!("{HEADER}\n{}{}", row("E1", t, RAW_EMAIL, "", "", "10"), row("N1", t, "", "", "", "10"));
    std::fs::write(&good, csv).unwrap();
    let out = agent.cmd_ok(&["preview", "--source", "till", good.to_str().unwrap()]);
    assert!(out.contains("good.csv: match keys: 1 e-mail, 0 phone only, 0 external_id only, 1 none"), "{out}");
    assert!(!out.contains("hint:"), "{out}");
    assert!(!agent.queue.exists(), "preview never touches the queue");
}

#[test]
fn require_match_key_skips_sales_without_email_or_phone_and_counts_them() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts { source: "require_match_key = true".into(), ..Opts::default() });
    let t = now() - 300;
    agent.drop_file("day.csv", &mostly_unmatchable(t));
    let run = agent.cmd(&["run", "--once"]);
    assert!(run.status.success());
    assert_eq!(sent_ids(&fake), ids(&["E1", "F1"]));
    // An external_id is still sent beside a phone or e-mail; it is never the reason to send.
    let log = String::from_utf8_lossy(&run.stderr);
    for id in ["C1", "C2", "N1"] {
        assert!(
            log.contains(&format!(
                "order `{id}` not sent: no e-mail or phone to match it by (require_match_key = true)"
            )),
            "{id}: {log}"
        );
    }
    assert_eq!(skipped(&agent), 3);
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}
