//! The commands around the service: check-config, dry runs, send-test, dead letters, status.

use crate::support::*;

#[test]
fn check_config_prints_effective_settings_with_the_token_redacted() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    let out = agent.cmd_ok(&["check-config"]);
    assert!(out.contains("<redacted>") && out.trim_end().ends_with("ok"), "{out}");
    assert!(out.contains("  time_zone") && out.contains("= UTC\n") && out.contains("= s042\n"), "{out}");

    let inline = Agent::new(&fake.base_url(), Opts { top: format!("access_token = \"{TOKEN}\""), ..Opts::default() });
    let text = std::fs::read_to_string(&inline.config).unwrap();
    let text = text.lines().filter(|l| !l.starts_with("access_token_file")).collect::<Vec<_>>().join("\n");
    std::fs::write(&inline.config, text).unwrap();
    let out = inline.cmd_ok(&["check-config"]);
    assert!(out.contains("warning: the access token is written in the config file"), "{out}");
}

#[test]
fn a_bad_config_exits_78_naming_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "event_source_id = \"7181537436256731137\"\naccess_token_env = \"X\"\nqueue_path = \"q\"\n\n[[source]]\npath = \"in\"\nformat = \"native-csv\"\ntime_zone = \"Europe/Atlantis\"\ncurrency = \"XYZ\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin()).arg("--config").arg(&config).arg("check-config").output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 8: `source[0].time_zone`"), "{err}");
    assert!(err.contains("line 9: `source[0].currency`"), "{err}");

    std::fs::write(&config, "event_source_id = \"7181537436256731137\"\ncolour = 1\n").unwrap();
    let out = std::process::Command::new(bin()).arg("--config").arg(&config).arg("status").output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2: `colour`"));
}

#[test]
fn a_dry_run_prints_the_exact_requests_sends_nothing_and_leaves_files_alone() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    let t = now() - 60;
    agent.drop_file("d.csv", &format!("order_id,event_time,email,value\nD1,{t},{},1.00\n", RAW_EMAIL.trim()));
    let out = agent.cmd_ok(&["run", "--once", "--dry-run"]);
    let body: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(body["event_source"], "offline");
    assert_eq!(body["data"][0]["user"]["email"][0], EMAIL_HASH);
    assert!(fake.requests().is_empty());
    assert!(agent.inbox.join("d.csv").exists(), "a dry run never archives");
    assert!(!agent.queue.exists(), "a dry run never touches the real queue");
    // The real run afterwards still sends it.
    agent.cmd_ok(&["run", "--once"]);
    assert_eq!(fake.unique_ids().len(), 1);
}

#[test]
fn send_test_posts_one_test_purchase() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    let out = agent.cmd_ok(&["send-test", "--test-event-code", "TEST123"]);
    assert!(out.contains("delivered: open Events Manager"), "{out}");
    let r = &fake.requests()[0];
    assert_eq!(r.test_event_code.as_deref(), Some("TEST123"));
    assert_eq!(r.events, 1);
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
    fake.set_token("another");
    let out = agent.cmd(&["send-test", "--test-event-code", "TEST123"]);
    assert_eq!(out.status.code(), Some(75));
    // A sentence with TikTok's code and message and the fix, not Rust debug text.
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("not delivered: TikTok refused the access token") && text.contains("code 4"), "{text}");
    assert!(text.contains("fix:") && !text.contains("Auth {"), "{text}");
}

#[test]
fn dead_letters_can_be_requeued_and_purged() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    fake.reject_event_ids(&["s042:t1:Z1", "s042:t1:Z2"]);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    agent.drop_file("z.csv", &csv_orders("Z", 4, 1));
    agent.cmd_ok(&["run", "--once"]);
    assert_eq!(agent.counts(), (0, 2, 2));
    let list: serde_json::Value = serde_json::from_str(&agent.cmd_ok(&["dead-letter", "list", "--json"])).unwrap();
    let first = list["dead_events"][0]["id"].as_i64().unwrap().to_string();
    // A mistyped reason or an id that is no dead event is an error that changes nothing.
    let out = agent.cmd(&["dead-letter", "requeue", "--reason", "expird"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("expird") && stderr.contains("expired, future, invalid, too_large, pii_not_hashed"),
        "{stderr}"
    );
    let out = agent.cmd(&["dead-letter", "requeue", &first, "9999"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("no dead event with id 9999"), "{stderr}");
    assert_eq!(agent.counts(), (0, 2, 2));
    fake.reject_event_ids(&[]);
    assert!(agent.cmd_ok(&["dead-letter", "requeue", &first]).contains("requeued 1"));
    agent.cmd_ok(&["flush"]);
    assert_eq!(agent.counts(), (0, 3, 1));
    assert!(agent.cmd_ok(&["dead-letter", "purge", "--all"]).contains("purged 1"));
    assert_eq!(agent.counts(), (0, 3, 0));
    assert_eq!(fake.unique_ids().len(), 3);
}

#[test]
fn status_without_a_queue_says_so() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    let out = agent.cmd(&["status"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

#[test]
fn a_timeout_too_long_to_wait_is_refused_instead_of_overflowing() {
    let agent = Agent::new("http://127.0.0.1:9", Opts::default());
    for command in
        [&["flush", "--timeout-secs", "18446744073709551615"][..], &["run", "--once", "--timeout-secs", "31536001"]]
    {
        let out = agent.cmd(command);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command:?}: {stderr}");
        assert!(stderr.contains("--timeout-secs") && stderr.contains("must be at most 31536000"), "{stderr}");
    }
}

#[test]
fn output_into_a_closed_pipe_ends_quietly_instead_of_panicking() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    agent.drop_file("p.csv", &csv_orders("PIPE", 3, 1));
    agent.cmd_ok(&["run", "--once"]);
    for args in [
        &["check-config"][..],
        &["status"],
        &["status", "--json"],
        &["dead-letter", "list"],
        &["watch", "--history", "--exit-after-secs", "1"],
    ] {
        let mut child = std::process::Command::new(bin())
            .arg("--config")
            .arg(&agent.config)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away before anything is written, as `| head -0` would.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    }
}
