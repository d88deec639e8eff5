//! The watched folder is untrusted input: symbolic links and special files, a file rewritten in
//! place while it is read, a file that cannot be archived, file names that try to forge log lines.
//! Through the real binary, as a service.

use crate::support::*;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::process::Command;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

/// What a link to a secret outside the folder points at; it must never show anywhere.
const SECRET: &str = "root:$6$SECRET-SHADOW-4f2a9c:19000:0:99999:7:::";

fn lines_with(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

fn assert_not_quoted(agent: &Agent, daemon_log: &str, needles: &[&str]) {
    let written = regular_file_text(agent.dir.path());
    let status = agent.cmd_ok(&["status"]);
    let listed = agent.cmd_ok(&["dead-letter", "list"]);
    for needle in needles {
        for (what, text) in [("log", daemon_log), ("files", &written), ("status", &status), ("dead-letter", &listed)] {
            assert!(!text.contains(needle), "`{needle}` quoted in the {what}:\n{text}");
        }
    }
}

#[test]
fn links_and_special_files_are_never_read_whether_found_at_start_or_while_running() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("shadow");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let foreign = outside.path().join("foreign.csv");
    std::fs::write(&foreign, csv_orders("FOREIGN", 3, 1)).unwrap();
    // Present at start.
    symlink(&secret, agent.inbox.join("x.csv")).unwrap();
    symlink(&foreign, agent.inbox.join("w.csv")).unwrap();
    mkfifo(&agent.inbox.join("p.csv"));
    agent.drop_file("good.csv", &csv_orders("GOOD", 2, 1));
    let mut daemon = agent.spawn();
    assert!(fake.wait_for_unique(2, T), "{}", daemon.log_text());

    // Created while it runs.
    symlink(&secret, agent.inbox.join("y.csv")).unwrap();
    symlink(&foreign, agent.inbox.join("z.csv")).unwrap();
    mkfifo(&agent.inbox.join("q.csv"));
    agent.drop_file("later.csv", &csv_orders("LATER", 2, 1));
    assert!(fake.wait_for_unique(4, T), "{}", daemon.log_text());
    let refused = [
        ("x.csv", "a symbolic link"),
        ("w.csv", "a symbolic link"),
        ("y.csv", "a symbolic link"),
        ("z.csv", "a symbolic link"),
        ("p.csv", "a named pipe (FIFO)"),
        ("q.csv", "a named pipe (FIFO)"),
    ];
    let all_listed = || refused.iter().all(|(name, what)| daemon.log_text().contains(&format!("{name}: {what}")));
    assert!(wait_until(T, all_listed), "{}", daemon.log_text());
    // A few more rescans: nothing is read, moved or listed again.
    std::thread::sleep(Duration::from_secs(3));

    let mut expected = ids("GOOD", 2);
    expected.extend(ids("LATER", 2));
    assert_eq!(fake.unique_ids(), expected, "a file outside the folder was ingested");
    for (name, what) in refused {
        let path = agent.inbox.join(name);
        assert!(std::fs::symlink_metadata(&path).is_ok(), "{name} was moved");
        assert!(!agent.inbox.join("archive").join(name).exists(), "{name} was archived");
        assert_eq!(lines_with(&daemon.log_text(), &format!("{name}: {what}")), 1, "{name} not listed once");
    }
    assert!(!agent.inbox.join("quarantine").exists());
    let listed = agent.cmd_ok(&["dead-letter", "list"]);
    assert!(listed.contains("y.csv") && listed.contains("symbolic link"), "not listed: {listed}");
    assert!(listed.contains("q.csv") && listed.contains("named pipe"), "not listed: {listed}");

    // A FIFO never hangs the ingest thread: SIGTERM still stops the agent promptly.
    let (status, took) = daemon.terminate();
    assert!(status.success() && took < Duration::from_secs(5), "{status:?} after {took:?}\n{}", daemon.log_text());
    assert_not_quoted(&agent, &daemon.log_text(), &[SECRET, "SECRET-SHADOW", "FOREIGN"]);
}

#[test]
fn a_link_is_followed_only_when_allowed_and_only_inside_the_folder() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts { source: "follow_symlinks = true".into(), ..Opts::default() });
    let outside = tempfile::tempdir().unwrap();
    let foreign = outside.path().join("foreign.csv");
    std::fs::write(&foreign, csv_orders("FOREIGN", 3, 1)).unwrap();
    let sub = agent.inbox.join("exports");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("inner.txt.keep"), csv_orders("INNER", 2, 1)).unwrap();
    symlink(&foreign, agent.inbox.join("out.csv")).unwrap();
    symlink(sub.join("inner.txt.keep"), agent.inbox.join("in.csv")).unwrap();
    let daemon = agent.spawn();
    assert!(fake.wait_for_unique(2, T), "{}", daemon.log_text());
    assert!(
        wait_until(T, || daemon.log_text().contains("out.csv: a symbolic link to a file outside the source folder")),
        "{}",
        daemon.log_text()
    );
    assert_eq!(fake.unique_ids(), ids("INNER", 2));
    assert!(std::fs::symlink_metadata(agent.inbox.join("out.csv")).is_ok(), "the outside link was moved");
    assert!(!daemon.log_text().contains("FOREIGN"));
}

#[test]
fn a_file_rewritten_in_place_while_it_is_read_is_read_again_and_never_quarantined() {
    const ORDERS: usize = 30_000;
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    let content = csv_orders("BIG", ORDERS, 1);
    let daemon = agent.spawn();
    assert!(wait_until(T, || daemon.log_text().contains("started")), "{}", daemon.log_text());
    let path = agent.drop_file("big.csv", &content);
    // The POS writes the same export again over it, in place, while the agent reads it: truncate,
    // then write it in parts.
    let writer = {
        let (path, content) = (path.clone(), content.clone());
        std::thread::spawn(move || {
            use std::io::Write;
            for round in 0..4u64 {
                std::thread::sleep(Duration::from_millis(150 + 250 * round));
                let Ok(mut file) = std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(&path)
                else {
                    continue;
                };
                // Empty for a moment (a reader then finds no header), shorter than settle_secs.
                std::thread::sleep(Duration::from_millis([30, 300, 60, 500][round as usize]));
                for part in content.as_bytes().chunks(content.len() / 8 + 1) {
                    file.write_all(part).unwrap();
                    std::thread::sleep(Duration::from_millis(15));
                }
            }
        })
    };
    writer.join().unwrap();
    assert!(fake.wait_for_unique(ORDERS, Duration::from_secs(120)), "{}", daemon.log_text());
    assert_eq!(fake.unique_ids(), ids("BIG", ORDERS));
    assert_eq!(fake.accepted_ids().len(), ORDERS, "an order was delivered twice");
    let log = daemon.log_text();
    assert!(!agent.inbox.join("quarantine").exists(), "quarantined:\n{log}");
    assert!(!log.contains("no header"), "{log}");
    assert_eq!(agent.status()["counts"]["rejects"], 0, "{log}");
}

#[test]
fn a_file_that_cannot_be_archived_is_ingested_once_and_tried_again_with_backoff() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    let archive = agent.inbox.join("archive");
    let daemon = match agent.give_to_nobody() {
        Ok(()) => {
            // A read-only archive folder (it binds only for a user other than root).
            std::fs::create_dir(&archive).unwrap();
            Command::new("chown").args(["65534:65534"]).arg(&archive).status().unwrap();
            set_mode(&archive, 0o555);
            agent.spawn_as_nobody()
        }
        Err(why) => {
            // Without another user, the archive folder's place is taken by a file: archiving fails
            // for root too.
            eprintln!("a_file_that_cannot_be_archived: {why}; the archive folder is blocked by a file instead");
            std::fs::write(&archive, "not a folder").unwrap();
            agent.spawn()
        }
    };
    let path = agent.drop_file("stuck.csv", &csv_orders("STUCK", 3, 1));
    assert!(fake.wait_for_unique(3, T), "{}", daemon.log_text());
    // About 10 rescans (rescan_secs = 1).
    std::thread::sleep(Duration::from_secs(10));
    let log = daemon.log_text();
    assert_eq!(fake.unique_ids(), ids("STUCK", 3));
    assert!(path.exists(), "{log}");
    assert_eq!(lines_with(&log, "stuck.csv: 3 events queued"), 1, "{log}");
    assert_eq!(lines_with(&log, "ERROR"), 1, "one error line, not one per rescan:\n{log}");
    let mentions = lines_with(&log, "stuck.csv");
    assert!(mentions <= 3, "{mentions} lines about the file in 10 s:\n{log}");
}

#[test]
fn file_names_cannot_forge_log_lines_and_names_that_are_not_utf8_are_read() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    let daemon = agent.spawn();
    let names: [(&[u8], &str); 3] =
        [(b"a\nINFO forged.csv", "NL"), (b"\x1b[2Jclear.csv", "ESC"), (b"caf\xe9 \xff.csv", "LATIN")];
    let mut expected = std::collections::BTreeSet::new();
    for (name, prefix) in names {
        let tmp = agent.dir.path().join(format!("{prefix}.tmp"));
        std::fs::write(&tmp, csv_orders(prefix, 2, 1)).unwrap();
        std::fs::rename(&tmp, agent.inbox.join(std::ffi::OsStr::from_bytes(name))).unwrap();
        expected.extend(ids(prefix, 2));
    }
    assert!(fake.wait_for_unique(6, T), "{}", daemon.log_text());
    assert_eq!(fake.unique_ids(), expected);
    let archived = |name: &[u8]| agent.inbox.join("archive").join(std::ffi::OsStr::from_bytes(name));
    let started = Instant::now();
    while !names.iter().all(|(n, _)| archived(n).exists()) && started.elapsed() < T {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = daemon.log_text();
    for (name, _) in names {
        assert!(archived(name).exists(), "{} not archived:\n{log}", String::from_utf8_lossy(name));
    }
    assert!(!log.lines().any(|l| l.starts_with("INFO forged")), "a forged log line:\n{log}");
    assert!(!log.contains('\x1b'), "a terminal escape in the log:\n{log}");
    assert!(log.contains("a\\nINFO forged.csv"), "{log}");
    assert!(log.contains("\\u{1b}[2Jclear.csv"), "{log}");
    assert!(log.contains("caf\\xe9 \\xff.csv"), "{log}");
    // `status` prints the names it keeps in the queue escaped too.
    let status = agent.cmd_ok(&["status"]);
    assert!(!status.contains('\x1b') && !status.lines().any(|l| l.starts_with("INFO forged")), "{status}");
    assert!(status.contains("a\\nINFO forged.csv") && status.contains("\\u{1b}[2Jclear.csv"), "{status}");
}

#[test]
fn a_new_file_written_under_the_name_of_one_just_archived_is_read_too() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    // The agent pauses 2 s after taking a file (debug builds only): the next export lands under
    // the same name between the archiving and the agent's next look at that path.
    let mut daemon = agent.spawn_with_env(&[("OFFLINE_EVENTS_AGENT_FAULT", "after-take")]);
    agent.drop_file("sales.csv", &csv_orders("F", 2, 1));
    assert!(wait_until(T, || agent.inbox.join("archive/sales.csv").exists()), "{}", daemon.log_text());
    agent.drop_file("sales.csv", &csv_orders("G", 2, 1));
    assert!(fake.wait_for_unique(4, T), "the second sales.csv was never read:\n{}", daemon.log_text());
    let mut want = ids("F", 2);
    want.extend(ids("G", 2));
    assert_eq!(fake.unique_ids(), want);
    daemon.terminate();
}
