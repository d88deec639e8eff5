//! The token never leaks (issue 9): redirects are not followed, URL credentials and queries are
//! never shown, a token with control characters is refused.

use crate::support::fake_tiktok::Catcher;
use crate::support::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn a_redirect_is_never_followed_and_the_events_wait_until_the_api_answers_itself() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let catcher = Catcher::start();
    let location = format!("{}/open_api/v1.3/event/track/", catcher.base_url());
    fake.set_persistent_fault(Some(Fault::Redirect(301, location.clone())));
    let agent = Agent::new(&fake.base_url(), Opts::default());
    let daemon = agent.spawn();
    agent.drop_file("a.csv", &csv_orders("R", 6, 1));
    // Loud in the log (the first time: repeats are summarised), and in status for each kind.
    let line = format!("redirect (http 301) to {location}; not followed");
    assert!(wait_until(T, || daemon.log_text().contains(&line)), "no `{line}` in:\n{}", daemon.log_text());
    for status in [301, 302, 307, 308] {
        fake.set_persistent_fault(Some(Fault::Redirect(status, location.clone())));
        let reason = format!("redirect (http {status}) to {location}; not followed");
        let shown = || agent.status()["last_error"].as_str().is_some_and(|e| e.contains(&reason));
        assert!(wait_until(T, shown), "no `{reason}` in status:\n{}", agent.cmd_ok(&["status"]));
    }
    assert!(catcher.caught().is_empty(), "the redirect was followed: {:?}", catcher.caught());
    assert!(fake.unique_ids().is_empty());
    assert_eq!(agent.counts(), (6, 0, 0), "a redirect must not mark events sent");

    fake.set_persistent_fault(None);
    assert!(fake.wait_for_unique(6, T), "not delivered once the redirects stopped:\n{}", daemon.log_text());
    assert_eq!(fake.unique_ids(), ids("R", 6));
    assert!(wait_until(T, || agent.counts() == (0, 6, 0)));
    assert!(catcher.caught().is_empty(), "{:?}", catcher.caught());
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

/// No secret of `api_base` or `proxy` in `text`.
fn assert_redacted(text: &str) {
    for secret in ["secret", "token=abc"] {
        assert!(!text.contains(secret), "`{secret}` shown:\n{text}");
    }
}

#[test]
fn credentials_and_queries_in_api_base_and_proxy_are_never_shown() {
    let api_base = format!("http://user:secret@127.0.0.1:{}/?token=abc", closed_port());
    let proxy = format!("proxy = \"http://puser:psecret@127.0.0.1:{}\"", closed_port());
    let mut agent = Agent::new(&api_base, Opts { top: proxy.clone(), ..Opts::default() });
    let out = agent.cmd(&["check-config"]);
    let shown = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("http://***@127.0.0.1:") && shown.contains("/?***"), "{shown}");
    assert_redacted(&shown);

    // Through the proxy (refused), then straight to the API host (refused): both failures and the
    // started line are logged.
    agent.drop_file("a.csv", &csv_orders("U", 2, 1));
    for opts in [Opts { top: proxy, ..Opts::default() }, Opts::default()] {
        agent.set_opts(opts);
        let mut daemon = agent.spawn();
        assert!(wait_until(T, || daemon.log_text().contains("delivery failed")), "{}", daemon.log_text());
        daemon.terminate();
        let log = daemon.log_text();
        assert!(log.contains("sending to http://***@127.0.0.1:"), "{log}");
        assert_redacted(&log);
        assert_redacted(&agent.cmd_ok(&["status"]));
    }
}

#[test]
fn a_token_with_a_line_break_is_refused_and_the_service_pauses_until_it_is_fixed() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(&fake.base_url(), Opts::default());
    std::fs::write(&agent.token_file, format!("{TOKEN}\r\nabc-def\n")).unwrap();
    set_mode(&agent.token_file, 0o600);
    let out = agent.cmd(&["check-config"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    let file = agent.token_file.display().to_string();
    assert!(stderr.contains(&file) && stderr.contains("control character"), "{stderr}");
    assert!(!stderr.contains("abc-def"), "{stderr}");

    let daemon = agent.spawn();
    agent.drop_file("a.csv", &csv_orders("L", 4, 1));
    let paused = || agent.counts().0 == 4 && agent.status()["paused"].as_str().is_some_and(|p| p.contains(&file));
    assert!(wait_until(T, paused), "{}\n{}", agent.cmd_ok(&["status"]), daemon.log_text());
    let status = agent.cmd_ok(&["status"]);
    assert!(status.contains("PAUSED") && status.contains("control character"), "{status}");
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());

    agent.set_token(TOKEN);
    assert!(fake.wait_for_unique(4, T), "not delivered after the fix:\n{}", daemon.log_text());
    assert!(wait_until(T, || agent.status()["paused"].is_null()));
    assert!(!daemon.log_text().contains("abc-def"), "{}", daemon.log_text());
}

#[test]
fn an_inline_token_with_a_control_character_is_refused_with_its_key_and_line() {
    let agent = Agent::new("http://127.0.0.1:9", Opts { top: "access_token = \"ab\\tc\"".into(), ..Opts::default() });
    // `access_token` and `access_token_file` together are an error of their own: drop the file key.
    let text = std::fs::read_to_string(&agent.config).unwrap();
    let text: String = text.lines().filter(|l| !l.starts_with("access_token_file")).map(|l| format!("{l}\n")).collect();
    std::fs::write(&agent.config, &text).unwrap();
    let line = text.lines().position(|l| l.starts_with("access_token =")).unwrap() + 1;
    let out = agent.cmd(&["check-config"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains(&format!("line {line}: `access_token`: contains a control character (TAB")), "{stderr}");
}
