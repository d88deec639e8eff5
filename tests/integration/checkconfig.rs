//! `check-config` catches what would go wrong at run time (issue #11): each mistake through the
//! real binary, with its exit code and a message naming the key and the fix.

use crate::support::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

/// The agent's config with `from` replaced by `to` (`from` must be there).
fn edit(agent: &Agent, from: &str, to: &str) {
    let text = std::fs::read_to_string(&agent.config).unwrap();
    assert!(text.contains(from), "{from} not in\n{text}");
    std::fs::write(&agent.config, text.replacen(from, to, 1)).unwrap();
}

/// `check-config`'s exit code, standard output and standard error.
fn check_config(agent: &Agent) -> (Option<i32>, String, String) {
    let out = agent.cmd(&["check-config"]);
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

fn source_line(agent: &Agent, starts: &str) -> usize {
    let text = std::fs::read_to_string(&agent.config).unwrap();
    text.lines().position(|l| l.starts_with(starts)).unwrap() + 1
}

#[test]
fn a_profile_source_without_shop_id_is_refused_with_the_fix() {
    let agent = Agent::new("http://127.0.0.1:9", Opts { source: "format = \"toast\"".into(), ..Opts::default() });
    edit(&agent, "shop_id = \"s042\"\n", "");
    let line = source_line(&agent, "format = \"toast\"");
    let (code, _, err) = check_config(&agent);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains(&format!("line {line}: `source[0].shop_id`: is required for format = \"toast\"")), "{err}");
    assert!(err.contains("set shop_id to the store's id"), "{err}");
    // The native format's rows may carry their own: no shop_id is fine there.
    let native = Agent::new("http://127.0.0.1:9", Opts::default());
    edit(&native, "shop_id = \"s042\"\n", "");
    assert_eq!(check_config(&native).0, Some(0));
}

#[test]
fn a_source_path_that_is_a_file_is_refused() {
    let agent = Agent::new("http://127.0.0.1:9", Opts::default());
    std::fs::remove_dir(&agent.inbox).unwrap();
    std::fs::write(&agent.inbox, "not a folder").unwrap();
    let line = source_line(&agent, "path = ");
    let (code, _, err) = check_config(&agent);
    assert_eq!(code, Some(78), "{err}");
    assert!(
        err.contains(&format!("line {line}: `source[0].path`: `{}` is not a folder", agent.inbox.display())),
        "{err}"
    );
    assert!(err.contains("set path to the folder the POS exports into"), "{err}");
    // The service refuses it too.
    assert_eq!(agent.cmd(&["run", "--once"]).status.code(), Some(78));
}

#[test]
fn a_missing_source_folder_is_a_warning_said_at_start_and_taken_once_it_appears() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    std::fs::remove_dir(&agent.inbox).unwrap();
    let (code, out, err) = check_config(&agent);
    assert_eq!(code, Some(0), "{out}{err}");
    let warning = format!("source[0].path: folder `{}` does not exist (yet)", agent.inbox.display());
    assert!(out.contains(&format!("warning: {warning}")) && out.contains("create it or fix path"), "{out}");

    let mut daemon = agent.spawn();
    assert!(wait_until(T, || daemon.log_text().contains(&warning)), "{}", daemon.log_text());
    std::fs::create_dir(&agent.inbox).unwrap();
    agent.drop_file("a.csv", &csv_orders("M", 2, 1));
    assert!(fake.wait_for_unique(2, T), "{}", daemon.log_text());
    daemon.terminate();
}

#[test]
fn two_sources_on_one_folder_are_refused_as_written_or_through_a_link() {
    let agent = Agent::new("http://127.0.0.1:9", Opts::default());
    let second = |path: &std::path::Path| {
        let text = std::fs::read_to_string(&agent.config).unwrap();
        let text = format!("{text}\n[[source]]\nname = \"web\"\npath = \"{}\"\nformat = \"jsonl\"\n", path.display());
        std::fs::write(&agent.config, text).unwrap();
    };
    let original = std::fs::read_to_string(&agent.config).unwrap();
    second(&agent.inbox.join("."));
    let (code, _, err) = check_config(&agent);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("`source[1].path`") && err.contains("is also source[0]'s folder"), "{err}");
    assert!(err.contains("give each source its own folder"), "{err}");

    let link = agent.dir.path().join("inbox-link");
    std::os::unix::fs::symlink(&agent.inbox, &link).unwrap();
    std::fs::write(&agent.config, &original).unwrap();
    second(&link);
    let (code, _, err) = check_config(&agent);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("`source[1].path`") && err.contains("the same folder as source[0].path"), "{err}");
}

#[test]
fn a_source_on_the_queues_folder_is_refused() {
    let agent = Agent::new("http://127.0.0.1:9", Opts::default());
    let state = agent.queue.parent().unwrap();
    std::fs::create_dir_all(state).unwrap();
    let link = agent.dir.path().join("state-link");
    std::os::unix::fs::symlink(state, &link).unwrap();
    let original = std::fs::read_to_string(&agent.config).unwrap();
    let cases = [
        (format!("path = \"{}\"", state.display()), "`source[0].path`", "is the queue's folder"),
        (format!("path = \"{}\"", link.display()), "`source[0].path`", "is the queue's folder"),
        (
            format!("path = \"{}\"\narchive_dir = \"{}\"", agent.inbox.display(), state.display()),
            "`source[0].archive_dir`",
            "set another archive_dir",
        ),
    ];
    for (lines, key, words) in cases {
        std::fs::write(&agent.config, original.replace(&format!("path = \"{}\"", agent.inbox.display()), &lines))
            .unwrap();
        let (code, _, err) = check_config(&agent);
        assert_eq!(code, Some(78), "{lines}: {err}");
        assert!(err.contains(key) && err.contains(words), "{lines}: {err}");
    }
}

#[test]
fn an_event_set_id_that_is_not_19_digits_is_warned() {
    let agent = Agent::new("http://127.0.0.1:9", Opts::default());
    edit(&agent, SOURCE_ID, &SOURCE_ID[..18]);
    let (code, out, err) = check_config(&agent);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("warning: event_source_id has 18 digits, but an offline event set id has 19"), "{out}");
    assert!(out.contains("copy the ID from the event set"), "{out}");
}

#[test]
fn settings_are_printed_as_the_config_spells_them_aligned() {
    let agent =
        Agent::new("http://127.0.0.1:9", Opts { top: "metrics_textfile = \"m.prom\"".into(), ..Opts::default() });
    let (code, out, err) = check_config(&agent);
    assert_eq!(code, Some(0), "{err}");
    let column = out.lines().next().and_then(|l| l.find(" = ")).unwrap();
    let metrics = agent.dir.path().join("m.prom");
    let expected = [
        ("event_source_id", SOURCE_ID.to_string()),
        ("metrics_textfile", metrics.display().to_string()),
        ("  format", "native-csv (.csv, .txt)".to_string()),
        ("  time_zone", "UTC".to_string()),
        ("  currency", "USD".to_string()),
        ("  shop_id", "s042".to_string()),
        ("  phone_region", "US".to_string()),
        ("  after_ingest", format!("archive (into {}, kept 35 days)", agent.inbox.join("archive").display())),
    ];
    for (key, value) in expected {
        let line = format!("{key:<column$} = {value}");
        assert!(out.lines().any(|l| l == line), "{line}\n{out}");
    }
    assert!(out.lines().filter(|l| l.contains(" = ")).all(|l| l.find(" = ") == Some(column)), "{out}");
    assert!(out.contains("\n[[source]] till\n") && out.trim_end().ends_with("ok"), "{out}");
}
