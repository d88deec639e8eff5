//! Running as a service: sd_notify, watchdog, reload, bounded disk, damaged queues.

use crate::support::*;
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

/// A fake systemd notify socket collecting (time, message) pairs.
struct NotifySocket {
    path: std::path::PathBuf,
    seen: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl NotifySocket {
    fn bind(dir: &std::path::Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match socket.recv(&mut buf) {
                    Ok(n) => {
                        let text = String::from_utf8_lossy(&buf[..n]).to_string();
                        let mut seen = sink.lock().unwrap();
                        for line in text.lines() {
                            seen.push((Instant::now(), line.to_string()));
                        }
                        if Arc::strong_count(&sink) == 1 {
                            return;
                        }
                    }
                    Err(_) if Arc::strong_count(&sink) == 1 => return,
                    Err(_) => {}
                }
            }
        });
        NotifySocket { path, seen }
    }

    fn messages(&self) -> Vec<(Instant, String)> {
        self.seen.lock().unwrap().clone()
    }

    fn first(&self, prefix: &str) -> Option<usize> {
        self.messages().iter().position(|(_, m)| m.starts_with(prefix))
    }

    fn watchdog_times(&self, after: Instant) -> Vec<Instant> {
        self.messages().into_iter().filter(|(t, m)| m == "WATCHDOG=1" && *t >= after).map(|(t, _)| t).collect()
    }
}

fn largest_gap(times: &[Instant]) -> Duration {
    times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
}

#[test]
fn a_notify_socket_nobody_reads_does_not_stop_delivery_or_shutdown() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    // A service manager that never reads: its socket's queue is full before the agent starts, so
    // every datagram sent to it waits for room.
    let path = agent.dir.path().join("deaf.sock");
    let deaf = UnixDatagram::bind(&path).unwrap();
    let filler = UnixDatagram::unbound().unwrap();
    filler.set_nonblocking(true).unwrap();
    let mut queued = 0;
    while filler.send_to(b"STATUS=filler", &path).is_ok() {
        queued += 1;
    }
    assert!(queued > 0, "the socket took nothing");
    let mut daemon = agent.spawn_with_env(&[("NOTIFY_SOCKET", path.to_str().unwrap()), ("WATCHDOG_USEC", "1000000")]);
    agent.drop_file("a.csv", &csv_orders("Q", 3, 1));
    assert!(fake.wait_for_unique(3, T), "{}", daemon.log_text());
    let (status, _) = daemon.terminate();
    assert!(status.success(), "{status:?}\n{}", daemon.log_text());
    drop(deaf);
}

#[test]
fn sd_notify_ready_status_watchdog_stopping_in_order_and_no_watchdog_while_stuck() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    fake.set_down(true);
    let metrics = "metrics.prom";
    let agent = Agent::new(
        &fake.base_url(),
        Opts {
            top: format!("metrics_textfile = \"{metrics}\""),
            sender: "request_timeout_secs = 1".into(),
            ..Opts::default()
        },
    );
    let notify = NotifySocket::bind(agent.dir.path());
    let mut daemon =
        agent.spawn_with_env(&[("NOTIFY_SOCKET", notify.path.to_str().unwrap()), ("WATCHDOG_USEC", "1000000")]);
    assert!(wait_until(T, || notify.first("WATCHDOG=1").is_some()), "{:?}\n{}", notify.messages(), daemon.log_text());
    let ready = notify.first("READY=1").expect("READY");
    assert!(ready < notify.first("WATCHDOG=1").unwrap());
    agent.drop_file("a.csv", &csv_orders("N", 3, 1));
    assert!(
        wait_until(T, || notify.messages().iter().any(|(_, m)| m.starts_with("STATUS=3 events queued"))),
        "{:?}",
        notify.messages()
    );
    let prom = agent.dir.path().join(metrics);
    assert!(wait_until(T, || std::fs::read_to_string(&prom)
        .unwrap_or_default()
        .contains("offline_events_agent_events_pending 3")));

    // Healthy: pings at about a third of the watchdog interval.
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let healthy = notify.watchdog_times(t0);
    assert!(healthy.len() >= 5 && largest_gap(&healthy) < Duration::from_millis(900), "{healthy:?}");

    // Stuck: another process holds the queue's write lock, so the sender cannot record its attempts.
    let lock = rusqlite::Connection::open(&agent.queue).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE; INSERT INTO agent_state (key, value) VALUES ('lock', 'held');").unwrap();
    let t1 = Instant::now();
    std::thread::sleep(Duration::from_secs(12));
    let stuck = notify.watchdog_times(t1);
    assert!(largest_gap(&stuck) >= Duration::from_secs(3), "watchdog kept pinging while stuck: {stuck:?}");
    assert!(daemon.log_text().contains("not pinging the watchdog"), "{}", daemon.log_text());
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);
    fake.set_down(false);
    assert!(fake.wait_for_unique(3, T), "{}", daemon.log_text());
    let t2 = Instant::now();
    assert!(wait_until(T, || notify.watchdog_times(t2).len() >= 3), "watchdog did not resume");

    let (status, took) = daemon.terminate();
    assert!(status.success());
    assert!(took < Duration::from_secs(5), "{took:?}");
    let stopping = notify.first("STOPPING=1").expect("STOPPING");
    assert!(stopping > ready);
}

#[test]
fn sighup_reloads_a_valid_config_and_keeps_the_old_one_when_the_new_is_invalid() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let mut agent = Agent::new(&fake.base_url(), Opts::default());
    let notify = NotifySocket::bind(agent.dir.path());
    let daemon = agent.spawn_with_env(&[("NOTIFY_SOCKET", notify.path.to_str().unwrap())]);
    agent.drop_file("a.csv", &csv_orders("H", 2, 1));
    assert!(fake.wait_for_unique(2, T));
    assert_eq!(fake.requests()[0].test_event_code, None);

    agent.set_opts(Opts { top: "test_event_code = \"RELOADED1\"".into(), ..Opts::default() });
    daemon.signal("HUP");
    assert!(wait_until(T, || daemon.log_text().contains("config reloaded")), "{}", daemon.log_text());
    agent.drop_file("b.csv", &csv_orders("J", 2, 1));
    assert!(fake.wait_for_unique(4, T), "{}", daemon.log_text());
    assert_eq!(fake.requests().last().unwrap().test_event_code.as_deref(), Some("RELOADED1"));

    let good = std::fs::read_to_string(&agent.config).unwrap();
    std::fs::write(&agent.config, format!("{good}\nthis is not toml = = =\n")).unwrap();
    daemon.signal("HUP");
    assert!(wait_until(T, || daemon.log_text().contains("config reload failed")), "{}", daemon.log_text());
    // systemd hears each reload end with READY, and which way it went.
    let readies = |text: &str| {
        let messages = notify.messages();
        messages.windows(2).filter(|w| w[0].1 == "READY=1" && w[1].1.starts_with(text)).count()
    };
    assert!(
        wait_until(T, || readies("STATUS=config reload failed, the running configuration is kept") == 1),
        "{:?}",
        notify.messages()
    );
    assert_eq!(readies("STATUS=configuration reloaded"), 1, "{:?}", notify.messages());
    // Every line an assignment: a multi-line error would break the protocol.
    assert!(notify.messages().iter().all(|(_, m)| m.contains('=')), "{:?}", notify.messages());
    agent.drop_file("c.csv", &csv_orders("L", 2, 1));
    assert!(fake.wait_for_unique(6, T), "the old config must keep working:\n{}", daemon.log_text());
    assert_eq!(fake.requests().last().unwrap().test_event_code.as_deref(), Some("RELOADED1"));
}

#[test]
fn a_full_queue_holds_files_back_keeps_sending_and_takes_them_once_there_is_room() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    fake.set_down(true);
    let agent = Agent::new(&fake.base_url(), Opts { top: "max_queue_mb = 16".into(), ..Opts::default() });
    let daemon = agent.spawn();
    // Six line items an order (a payload stores the JSON's skeleton as a few bytes and each hash
    // as its bytes, but every item's id, name and price as text): the first file fits in the
    // 16 MB, the second does not.
    agent.drop_file("a.csv", &csv_orders("A", 32_000, 6));
    assert!(wait_until(T, || agent.counts().0 == 32_000), "{}", daemon.log_text());
    agent.drop_file("b.csv", &csv_orders("B", 32_000, 6));
    assert!(wait_until(T, || agent.status()["ingest_held"].is_string()), "{}", daemon.log_text());
    assert!(agent.inbox.join("b.csv").exists(), "a held file waits in its folder");
    let text = agent.cmd_ok(&["status"]);
    assert!(text.contains("INGEST HELD"), "{text}");
    fake.set_down(false);
    let mut expected = ids("A", 32_000);
    expected.extend(ids("B", 32_000));
    assert!(fake.wait_for_unique(expected.len(), Duration::from_secs(90)), "{}", daemon.log_text());
    assert_eq!(fake.unique_ids(), expected);
    assert!(wait_until(T, || !agent.inbox.join("b.csv").exists()));
    assert!(wait_until(T, || agent.status()["ingest_held"].is_null()));
}

/// A store whose 400 orders `C…` were queued while TikTok (`fake`, left down) could not be
/// reached; their export file is kept in its folder.
fn queued_while_down(fake: &FakeTikTok) -> Agent {
    fake.set_down(true);
    let agent = Agent::new(&fake.base_url(), Opts { source: "after_ingest = \"keep\"".into(), ..Opts::default() });
    agent.drop_file("a.csv", &csv_orders("C", 400, 2));
    let out = agent.cmd(&["run", "--once", "--timeout-secs", "1"]);
    assert_eq!(out.status.code(), Some(75));
    assert_eq!(agent.counts(), (400, 0, 0));
    agent
}

/// Three pages in the middle of the queue file zeroed: damage that opening the queue does not
/// see and `quick_check` does.
fn zero_pages_midway(q: &std::path::Path) {
    let len = std::fs::metadata(q).unwrap().len();
    overwrite(q, len / 2 / 4096 * 4096, &vec![0u8; 4096 * 3]);
}

/// Queue events with TikTok down, damage the queue file, start the service: it must start, say so,
/// and deliver every event (salvaged, or re-ingested from the kept export file).
fn damaged_queue_recovers(damage: impl Fn(&std::path::Path), expect_recovery: bool) {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = queued_while_down(&fake);
    damage(&agent.queue);
    fake.set_down(false);
    let daemon = agent.spawn();
    assert!(fake.wait_for_unique(400, T), "{}", daemon.log_text());
    assert_eq!(fake.unique_ids(), ids("C", 400));
    if expect_recovery {
        assert!(daemon.log_text().contains("was damaged"), "{}", daemon.log_text());
        let status = agent.cmd_ok(&["status"]);
        assert!(status.contains("QUEUE RECOVERED"), "{status}");
        let moved = std::fs::read_dir(agent.queue.parent().unwrap())
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().contains(".damaged-"));
        assert!(moved, "the damaged queue is kept aside for inspection");
    }
}

#[test]
fn a_queue_with_a_garbage_header_is_moved_aside() {
    damaged_queue_recovers(|q| overwrite(q, 0, &[0xA5; 100]), true);
}

#[test]
fn a_queue_with_zeroed_pages_is_moved_aside() {
    damaged_queue_recovers(zero_pages_midway, true);
}

#[test]
fn a_truncated_queue_is_moved_aside() {
    damaged_queue_recovers(
        |q| {
            let f = std::fs::OpenOptions::new().write(true).open(q).unwrap();
            let len = f.metadata().unwrap().len();
            f.set_len(len / 3).unwrap();
        },
        true,
    );
}

#[test]
fn a_garbage_or_missing_wal_does_not_stop_the_agent() {
    damaged_queue_recovers(
        |q| {
            let mut wal = q.as_os_str().to_owned();
            wal.push("-wal");
            std::fs::write(&wal, vec![0x5Au8; 10_000]).unwrap();
        },
        false,
    );
    damaged_queue_recovers(
        |q| {
            let mut wal = q.as_os_str().to_owned();
            wal.push("-wal");
            let _ = std::fs::remove_file(&wal);
        },
        false,
    );
}

#[test]
fn a_pipeline_part_that_panics_stops_the_service_with_an_error_instead_of_running_half_alive() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    let notify = NotifySocket::bind(agent.dir.path());
    let mut daemon = agent.spawn_with_env(&[
        ("NOTIFY_SOCKET", notify.path.to_str().unwrap()),
        ("WATCHDOG_USEC", "1000000"),
        ("OFFLINE_EVENTS_AGENT_FAULT", "ingest-loop"),
    ]);
    assert!(wait_until(T, || notify.first("READY=1").is_some()), "{}", daemon.log_text());
    // The ingest loop panics when it next has a file to take: outside any busy window.
    agent.drop_file("orders.csv", &csv_orders("panic", 1, 1));
    let status = daemon.wait_exit(Duration::from_secs(15));
    let log = daemon.log_text();
    let status = status.unwrap_or_else(|| panic!("the service kept running with its ingest part dead:\n{log}"));
    assert!(!status.success(), "{status:?}\n{log}");
    assert!(log.contains("the ingest part of the pipeline panicked (fault injected at ingest-loop)"), "{log}");
    assert!(log.contains("exiting so that the service is restarted"), "{log}");
}

#[test]
fn systemd_status_follows_a_delivery_at_once_not_only_on_the_watchdog_tick() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    let notify = NotifySocket::bind(agent.dir.path());
    // A 60 s watchdog: the periodic refresh comes every 20 s.
    let mut daemon =
        agent.spawn_with_env(&[("NOTIFY_SOCKET", notify.path.to_str().unwrap()), ("WATCHDOG_USEC", "60000000")]);
    assert!(wait_until(T, || notify.first("READY=1").is_some()), "{}", daemon.log_text());
    agent.drop_file("s.csv", &csv_orders("ST", 3, 1));
    assert!(fake.wait_for_unique(3, T), "{}", daemon.log_text());
    let delivered = Instant::now();
    let fresh = || {
        notify.messages().iter().any(|(t, m)| *t >= delivered && m.starts_with("STATUS=0 events queued, last delivery"))
    };
    assert!(wait_until(Duration::from_secs(5), fresh), "{:?}", notify.messages());
    daemon.terminate();
}

/// The service started with its queue check after READY held 2 s longer (the `queue-check` fault
/// point), once it said READY; with the notify socket it says so on (kept open: systemd's stays).
fn spawn_ready_while_checking(agent: &Agent) -> (NotifySocket, Daemon) {
    let notify = NotifySocket::bind(agent.dir.path());
    let daemon = agent.spawn_with_env(&[
        ("NOTIFY_SOCKET", notify.path.to_str().unwrap()),
        ("OFFLINE_EVENTS_AGENT_FAULT", "queue-check"),
    ]);
    assert!(wait_until(T, || notify.first("READY=1").is_some()), "{:?}\n{}", notify.messages(), daemon.log_text());
    (notify, daemon)
}

/// READY means the source folders are watched: a file renamed into one while the queue is still
/// being checked after READY (here the check takes 2 s more) is known to be complete and taken once
/// the check passed, not after the settle time (here two minutes) as a file that the first scan of
/// the folder finds.
#[test]
fn a_file_renamed_in_right_after_ready_is_taken_without_waiting_to_settle() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    let config = std::fs::read_to_string(&agent.config).unwrap();
    std::fs::write(&agent.config, config.replace("settle_secs = 1", "settle_secs = 120")).unwrap();
    let (_notify, mut daemon) = spawn_ready_while_checking(&agent);
    agent.drop_file("a.csv", &csv_orders("R", 3, 1));
    assert!(fake.wait_for_unique(3, Duration::from_secs(20)), "{}", daemon.log_text());
    let (status, _) = daemon.terminate();
    assert!(status.success(), "{status:?}\n{}", daemon.log_text());
}

/// The unhappy side of watching before READY: a file renamed in while the queue is checked after
/// READY (the check takes 2 s more here), and the check then finds the queue damaged. The pipeline
/// restarts to recover the queue, and its watch with it: the file's rename went with the old
/// watch, and the new one's first scan finds the file. Every event arrives: the damaged queue's
/// (salvaged, or read again from the kept export) and the file's.
#[test]
fn a_file_renamed_in_while_a_damaged_queue_is_checked_is_taken_after_the_recovery() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = queued_while_down(&fake);
    zero_pages_midway(&agent.queue);
    fake.set_down(false);
    let (_notify, mut daemon) = spawn_ready_while_checking(&agent);
    agent.drop_file("b.csv", &csv_orders("D", 3, 1));
    let mut expected = ids("C", 400);
    expected.extend(ids("D", 3));
    assert!(fake.wait_for_unique(expected.len(), Duration::from_secs(30)), "{}", daemon.log_text());
    assert_eq!(fake.unique_ids(), expected);
    let log = daemon.log_text();
    assert!(log.contains("the queue check found damage"), "damage found after READY, while the file came in: {log}");
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
    let (status, _) = daemon.terminate();
    assert!(status.success(), "{status:?}\n{}", daemon.log_text());
}
