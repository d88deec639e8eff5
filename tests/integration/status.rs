//! `status` through the real binary: the service's heartbeat, a missing folder, a failed reload, a
//! silent source, an invalid config, per-file counts, match keys, and the metrics.

use crate::support::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn status_text(agent: &Agent, env: &[(&str, &str)]) -> String {
    let out = agent.cmd_env(&["status"], &[&[("TZ", "Europe/Berlin")], env].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for line in text.lines() {
        assert!(line.chars().count() <= 100, "longer than 100 columns: {line}");
    }
    text
}

#[test]
fn a_running_service_is_ok_and_a_stopped_or_killed_one_is_not_running() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    agent.drop_file("a.csv", &csv_orders("H", 3, 1));
    agent.cmd_ok(&["import", agent.inbox.join("a.csv").to_str().unwrap()]);
    assert!(status_text(&agent, &[]).starts_with("state:           not running (never run)\n"));

    let mut daemon = agent.spawn();
    assert!(fake.wait_for_unique(3, T), "{}", daemon.log_text());
    let ok = || status_text(&agent, &[]).starts_with("state:           ok\n");
    assert!(wait_until(T, ok), "{}\n{}", status_text(&agent, &[]), daemon.log_text());
    let text = status_text(&agent, &[]);
    assert!(text.contains("+01:00"), "local times with their offset: {text}");
    daemon.terminate();
    let text = status_text(&agent, &[]);
    assert!(text.starts_with("state:           not running (last seen "), "{text}");
    assert!(text.contains("the service stopped at"), "{text}");

    // Killed: the heartbeat goes stale (seen five minutes later through the debug clock offset).
    let mut daemon = agent.spawn();
    assert!(wait_until(T, ok), "{}", daemon.log_text());
    daemon.kill();
    let later = status_text(&agent, &[("OFFLINE_EVENTS_AGENT_CLOCK_OFFSET_SECS", "300")]);
    assert!(later.starts_with("state:           not running (last seen "), "{later}");
    assert!(later.contains("min ago)") && later.contains("killed or crashed?"), "{later}");
    let json = agent.cmd_env(&["status", "--json"], &[("OFFLINE_EVENTS_AGENT_CLOCK_OFFSET_SECS", "300")]);
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!((&json["state"], &json["service"]["running"]), (&"not_ok".into(), &"stale".into()), "{json}");
}

#[test]
fn a_missing_source_folder_is_not_ok_with_the_line_to_fix() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    let daemon = agent.spawn();
    let ok = || String::from_utf8_lossy(&agent.cmd(&["status"]).stdout).starts_with("state:           ok");
    assert!(wait_until(T, ok), "{}", daemon.log_text());
    std::fs::remove_dir(&agent.inbox).unwrap();
    let text = status_text(&agent, &[]);
    assert!(text.starts_with("state:           NOT OK: source `till`: folder"), "{text}");
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let line =
        std::fs::read_to_string(&agent.config).unwrap().lines().position(|l| l.starts_with("path =")).unwrap() + 1;
    let fix = format!(
        "does not exist: its sales are not taken; create it or fix `path` in {}:{line}",
        agent.config.display()
    );
    assert!(flat.contains(&fix), "{text}");
    std::fs::write(&agent.inbox, "not a folder").unwrap();
    assert!(status_text(&agent, &[]).contains("is not a folder"));
}

#[test]
fn a_failed_reload_is_shown_until_a_good_one() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let mut agent = Agent::new(&fake.base_url(), Opts::default());
    let daemon = agent.spawn();
    let ok = || String::from_utf8_lossy(&agent.cmd(&["status"]).stdout).starts_with("state:           ok");
    assert!(wait_until(T, ok), "{}", daemon.log_text());
    let good = std::fs::read_to_string(&agent.config).unwrap();
    std::fs::write(&agent.config, format!("colour = 1\n{good}")).unwrap();
    daemon.signal("HUP");
    let failed = || agent.status()["reload_failed"].is_string();
    assert!(wait_until(T, failed), "{}", daemon.log_text());
    // The config is invalid now, so status reads the queue without it and says so too.
    std::fs::write(&agent.config, &good).unwrap();
    let text = status_text(&agent, &[]);
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(flat.contains("RELOAD FAILED: config reload failed at"), "{text}");
    assert!(flat.contains("line 1: `colour`"), "{text}");
    assert!(flat.contains(&format!("the service runs the previous config; fix {} and reload", agent.config.display())));
    assert!(text.starts_with("state:           NOT OK: config reload failed"), "{text}");
    agent.set_opts(Opts::default());
    daemon.signal("HUP");
    assert!(wait_until(T, || agent.status()["reload_failed"].is_null()), "{}", daemon.log_text());
    assert!(status_text(&agent, &[]).starts_with("state:           ok"));
}

#[test]
fn status_with_an_invalid_config_reports_from_the_queue_and_says_the_config_is_invalid() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    agent.drop_file("a.csv", &csv_orders("I", 2, 1));
    agent.cmd_ok(&["run", "--once"]);
    let good = std::fs::read_to_string(&agent.config).unwrap();
    std::fs::write(&agent.config, format!("{good}\ncolour = 1\n")).unwrap();
    let out = agent.cmd(&["status"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.starts_with("state:           NOT OK: ") && stdout.contains("is invalid"), "{stdout}");
    assert!(stdout.contains("0 queued, 2 sent, 0 dead"), "{stdout}");
    assert!(stderr.contains("`colour`"), "{stderr}");
    // --queue names the queue; without one there is nothing to report on.
    let elsewhere = agent.dir.path().join("none.sqlite");
    let out = agent.cmd(&["status", "--queue", elsewhere.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    std::fs::write(&agent.config, &good).unwrap();
    let json = agent.cmd_ok(&["status", "--json", "--queue", agent.queue.to_str().unwrap()]);
    assert!(json.contains("\"config_error\": null"), "{json}");
}

#[test]
fn recent_files_count_their_events_by_state_and_sources_their_match_keys() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent =
        Agent::new(&fake.base_url(), Opts { source: "expect_files_within = \"26h\"".into(), ..Opts::default() });
    let old = now() - 40 * 86_400;
    // Two sales expired on arrival, one with only a customer id, one with nothing.
    agent.drop_file(
        "old.csv",
        &format!("order_id,event_time,external_id,value\nX1,{old},cust-1,1.00\nX2,{old},,2.00\n"),
    );
    agent.cmd_ok(&["run", "--once"]);
    let text = status_text(&agent, &[]);
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(flat.contains("old.csv [till]: 0 queued, 0 sent, 2 dead"), "{text}");
    assert!(
        flat.contains("most sales of till carry no e-mail or phone: TikTok matches offline events by e-mail or phone"),
        "{text}"
    );
    assert!(flat.contains("DEAD LETTERS: 2 expired"), "{text}");
    assert!(!text.contains("waiting in"), "{text}");
    let json = agent.status();
    assert_eq!(json["sources"][0]["match_keys"]["external_id_only"], 1, "{json}");
    assert_eq!(json["sources"][0]["match_keys"]["none"], 1, "{json}");
    assert_eq!(json["recent_files"][0]["now"]["dead"], 2, "{json}");

    // Two days later the source has been silent for longer than expect_files_within.
    let later = status_text(&agent, &[("OFFLINE_EVENTS_AGENT_CLOCK_OFFSET_SECS", "172800")]);
    let flat = later.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(flat.contains("SILENT SOURCE: source `till`: no new file for 2d"), "{later}");
    assert!(flat.contains("expect_files_within = \"26h\""), "{later}");
}

#[test]
fn the_metrics_carry_state_heartbeat_silence_and_match_keys() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("agent.prom");
    let agent = Agent::new(
        &fake.base_url(),
        Opts {
            top: format!("metrics_textfile = \"{}\"", metrics.display()),
            source: "expect_files_within = \"1m\"".into(),
            ..Opts::default()
        },
    );
    agent.drop_file("a.csv", &csv_orders("M", 4, 1));
    agent.cmd_ok(&["import", agent.inbox.join("a.csv").to_str().unwrap()]);
    // The service runs ten minutes "later": the source has been silent for longer than a minute.
    let daemon = agent.spawn_with_env(&[("OFFLINE_EVENTS_AGENT_CLOCK_OFFSET_SECS", "600")]);
    let text = || std::fs::read_to_string(&metrics).unwrap_or_default();
    let lines = [
        "offline_events_agent_source_silent{source=\"till\"} 1",
        "offline_events_agent_match_keys{source=\"till\",key=\"email\"} 4",
        // Not ok: the service's clock, ten minutes ahead, disagrees with TikTok's.
        "offline_events_agent_state 2",
    ];
    let written = || lines.iter().all(|l| text().lines().any(|x| x == *l));
    assert!(
        wait_until(Duration::from_secs(60), written),
        "{}\n{}\n{}",
        text().lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join("\n"),
        daemon.log_text(),
        agent.cmd_ok(&["status"])
    );
    assert!(text().contains("offline_events_agent_heartbeat_age_seconds "), "{}", text());
}

#[test]
fn a_file_kept_after_reading_is_not_waiting_and_a_new_one_is() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts { source: "after_ingest = \"keep\"".into(), ..Opts::default() });
    let t = now() - 3600;
    agent.drop_file("day1.csv", &format!("order_id,event_time,email,value\nK1,{t},k1@example.com,1.00\n"));
    agent.cmd_ok(&["run", "--once"]);
    assert_eq!(fake.accepted_ids().len(), 1);
    assert_eq!(agent.status()["sources"][0]["waiting"], 0, "day1.csv was read and kept: not waiting");
    assert!(!status_text(&agent, &[]).contains("waiting in its folder"));

    agent.drop_file("day2.csv", &format!("order_id,event_time,email,value\nK2,{t},k2@example.com,1.00\n"));
    assert_eq!(agent.status()["sources"][0]["waiting"], 1, "day2.csv is new");
    assert!(status_text(&agent, &[]).contains("1 file(s) waiting in its folder"));
}
