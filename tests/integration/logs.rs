//! Logs fit the tools people use: JSON lines for log shippers, and a debug log that says what the
//! agent is doing (scans, files, batches, waits), without PII (the `Daemon`'s checks).

use crate::support::fake_tiktok::FakeTikTok;
use crate::support::*;
use std::time::Duration;

/// Run the service until `n` events are delivered, stop it and return its log.
fn service_log(fake: &FakeTikTok, agent: &Agent, env: &[(&str, &str)], n: usize) -> String {
    let mut daemon = agent.spawn_with_env(env);
    agent.drop_file("a.csv", &csv_orders("L", n, 2));
    assert!(fake.wait_for_unique(n, Duration::from_secs(30)), "{}", daemon.log_text());
    assert!(wait_until(Duration::from_secs(30), || daemon.log_text().contains("delivered")));
    let (status, _) = daemon.terminate();
    assert!(status.success(), "{}", daemon.log_text());
    daemon.log_text()
}

#[test]
fn log_format_json_writes_one_json_object_per_line() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts { top: "log_format = \"json\"".into(), ..Opts::default() });
    let log = service_log(&fake, &agent, &[], 3);
    let lines: Vec<serde_json::Value> =
        log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    assert!(lines.iter().all(|l| l["time"].is_string() && l["level"].is_string() && l["fields"].is_object()));
    assert!(lines.iter().any(|l| l["level"] == "info" && l["message"].as_str().unwrap().starts_with("delivered 3")));
    // The environment wins over the config, and check-config shows the setting.
    let out = agent.cmd_env(&["check-config"], &[("OFFLINE_EVENTS_AGENT_LOG_FORMAT", "xml")]);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("OFFLINE_EVENTS_AGENT_LOG_FORMAT: `xml`"));
    let shown = agent.cmd_ok(&["check-config"]);
    assert!(shown.lines().any(|l| l.starts_with("log_format") && l.ends_with("json")), "{shown}");
}

#[test]
fn the_environment_turns_json_logs_on_over_a_text_config() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    let log = service_log(&fake, &agent, &[("OFFLINE_EVENTS_AGENT_LOG_FORMAT", "json")], 2);
    assert!(log.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()), "{log}");
}

#[test]
fn debug_says_what_the_agent_is_doing() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    std::fs::write(agent.inbox.join("report.pdf"), "not an export\n").unwrap();
    let log = service_log(&fake, &agent, &[("OFFLINE_EVENTS_AGENT_LOG", "debug")], 3);
    let has = |needle: &str| log.lines().any(|l| l.contains(needle));
    assert!(has("source till: scanned "), "no scan line:\n{log}");
    assert!(has("report.pdf: not a candidate"), "no line for the file not taken:\n{log}");
    assert!(has("a.csv: seen (") || has("a.csv: listed"), "no line for the file seen:\n{log}");
    assert!(has("sending a batch of 3 events ("), "no batch line:\n{log}");
    assert!(has("nothing to send; waiting for new events"), "no wait line:\n{log}");
}

#[test]
fn under_journald_every_line_carries_its_priority_in_text_and_in_json() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    let journal = ("JOURNAL_STREAM", "8:12345");
    let text = service_log(&fake, &agent, &[journal], 2);
    assert!(text.lines().all(|l| l.starts_with("<6>") || l.starts_with("<4>") || l.starts_with("<3>")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("<6>delivered 2 events")), "{text}");
    // A bad config at start is an error line for `journalctl -p err`.
    std::fs::write(&agent.config, "event_source_id = 5\n").unwrap();
    let out = agent.cmd_env(&["check-config"], &[journal]);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).lines().all(|l| l.starts_with("<3>")));

    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts { top: "log_format = \"json\"".into(), ..Opts::default() });
    let json = service_log(&fake, &agent, &[journal], 2);
    for line in json.lines() {
        let (prefix, object) = line.split_at(3);
        assert!(["<6>", "<4>", "<3>"].contains(&prefix), "{line}");
        let value: serde_json::Value = serde_json::from_str(object).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(value["level"] == "info", prefix == "<6>", "{line}");
    }
}
