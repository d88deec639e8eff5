//! Fixing a config mistake does not lose the sales: a file read under a wrong config is read again
//! with the fixed one (`import --force`, `dead-letter reread`); orders queued or sent before are
//! recognised by their event ids and not queued again.

use crate::support::fake_tiktok::FakeTikTok;
use crate::support::*;

/// Three orders whose price is in `Betrag`; `Steuer` holds the tax rate, not an amount.
fn export(prefix: &str) -> String {
    let t = now() - 3600;
    let mut out = String::from("order_id,event_time,email,content_id,content_name,Betrag,Steuer,quantity\n");
    for o in 0..3 {
        out.push_str(&format!("{prefix}{o},{},c{o}@example.com,SKU-{o},item,{o}2.50,19%,1\n", t - o));
    }
    out
}

/// A store whose source maps `price` to `column`.
fn agent_mapping(fake: &FakeTikTok, column: &str) -> Agent {
    Agent::new(&fake.base_url(), mapping(column))
}

fn mapping(column: &str) -> Opts {
    Opts { source: format!("columns = {{ price = \"{column}\" }}"), ..Opts::default() }
}

fn rejected_rows(agent: &Agent) -> usize {
    let list: serde_json::Value = serde_json::from_str(&agent.cmd_ok(&["dead-letter", "list", "--json"])).unwrap();
    list["rejected_rows"].as_array().unwrap().len()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn import_force_reads_a_file_again_with_the_fixed_config_and_queues_nothing_twice() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let mut agent = agent_mapping(&fake, "Steuer");
    let file = agent.dir.path().join("day.csv");
    std::fs::write(&file, export("F")).unwrap();
    let file = file.to_str().unwrap();

    // The wrong mapping rejects every row.
    let out = agent.cmd(&["import", file]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("0 events queued"), "{}", stderr(&out));
    assert_eq!(rejected_rows(&agent), 3);

    // Without --force the known file is passed over, and the message says how to force it.
    let out = agent.cmd(&["import", file]);
    assert!(out.status.success());
    assert!(stderr(&out).contains("already ingested") && stderr(&out).contains("import --force"), "{}", stderr(&out));

    // Fixed: read again, queued, delivered; the old read's rejected rows are gone.
    agent.set_opts(mapping("Betrag"));
    let out = agent.cmd(&["import", "--force", file]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("3 events queued") && stderr(&out).contains("3 rejected rows"), "{}", stderr(&out));
    assert_eq!(rejected_rows(&agent), 0);
    agent.cmd_ok(&["flush"]);
    assert_eq!(agent.counts(), (0, 3, 0));
    assert_eq!(fake.unique_ids(), ids("F", 3));
    let requests = fake.requests().len();

    // Once more: the sent orders are duplicates, not errors, and nothing is queued or sent again.
    let out = agent.cmd(&["import", "--force", file]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("0 events queued") && stderr(&out).contains("3 duplicates"), "{}", stderr(&out));
    agent.cmd_ok(&["flush"]);
    assert_eq!(agent.counts(), (0, 3, 0));
    assert_eq!(fake.requests().len(), requests);
    assert_eq!(rejected_rows(&agent), 0);
}

#[test]
fn dead_letter_reread_finds_archived_files_behind_rejected_rows() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let mut agent = agent_mapping(&fake, "Steuer");
    agent.drop_file("mon.csv", &export("M"));
    agent.drop_file("tue.csv", &export("T"));
    agent.cmd_ok(&["run", "--once"]);
    assert_eq!(rejected_rows(&agent), 6);
    assert!(agent.inbox.join("archive/mon.csv").exists() && !agent.inbox.join("mon.csv").exists());
    // Which file: one of the two, by the path `dead-letter list` shows.
    agent.set_opts(mapping("Betrag"));
    let mon = agent.inbox.join("mon.csv");
    let out = agent.cmd(&["dead-letter", "reread", "--file", mon.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("archive/mon.csv"));
    assert_eq!(rejected_rows(&agent), 3);
    // A file gone from the archive is named in a clear error; the others are still read.
    std::fs::remove_file(agent.inbox.join("archive/tue.csv")).unwrap();
    let out = agent.cmd(&["dead-letter", "reread", "--all"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("tue.csv: gone"), "{}", stderr(&out));
    agent.cmd_ok(&["flush"]);
    assert_eq!(fake.unique_ids(), ids("M", 3));
    // Neither form of the command accepts nothing: say which.
    let out = agent.cmd(&["dead-letter", "reread"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn a_wrong_time_zone_is_fixed_by_reading_the_file_behind_the_dead_events_again() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    let set_zone = |zone: &str| {
        let text = std::fs::read_to_string(&agent.config).unwrap();
        let start = text.find("time_zone = ").unwrap();
        let end = start + text[start..].find('\n').unwrap();
        std::fs::write(&agent.config, format!("{}time_zone = \"{zone}\"{}", &text[..start], &text[end..])).unwrap();
    };
    // Local times written by a till in UTC, read as Los Angeles time: 8 hours in the future.
    let local = |secs_ago: i64| jiff::Timestamp::from_second(now() - secs_ago).unwrap().strftime("%Y-%m-%d %H:%M:%S");
    let mut text = String::from("order_id,event_time,email,content_id,price,quantity\n");
    for o in 0..3 {
        text.push_str(&format!("Z{o},{},c{o}@example.com,SKU,{o}.50,1\n", local(3600 + o)));
    }
    let file = agent.dir.path().join("zone.csv");
    std::fs::write(&file, text).unwrap();
    let file = file.to_str().unwrap();
    set_zone("America/Los_Angeles");
    agent.cmd_ok(&["import", file]);
    assert_eq!(agent.counts(), (0, 0, 3), "dead as `future`");

    // `dead-letter reread --all` finds the file behind the dead events where it was read.
    set_zone("UTC");
    let out = agent.cmd(&["dead-letter", "reread", "--all"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("3 dead events"), "{}", stderr(&out));
    assert_eq!(agent.counts(), (3, 0, 0), "queued again with the right times");
    agent.cmd_ok(&["flush"]);
    assert_eq!(agent.counts(), (0, 3, 0));
    assert_eq!(fake.unique_ids(), ids("Z", 3));
}
