//! `preview` and `check-config --sample`: what a real export becomes before going live, and a
//! companion file answered with the file to preview instead.

use crate::support::fake_tiktok::FakeTikTok;
use crate::support::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pos-exports");

#[test]
fn preview_of_a_companion_file_names_the_file_to_preview_instead() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = Agent::new(
        &fake.base_url(),
        Opts { top: "attribution_window_days = 36500".into(), source: "format = \"toast\"".into(), ..Opts::default() },
    );
    for name in ["CheckDetails.csv", "ItemSelectionDetails.csv"] {
        std::fs::copy(format!("{FIXTURES}/toast-{name}"), agent.inbox.join(name)).unwrap();
    }
    let companion = agent.inbox.join("CheckDetails.csv");
    let out = agent.cmd(&["preview", companion.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let instead = agent.inbox.join("ItemSelectionDetails.csv");
    assert!(stderr.contains(&format!("use {} instead", instead.display())), "{stderr}");
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
    // The file it names is the one that previews.
    let shown = agent.cmd_ok(&["preview", instead.to_str().unwrap()]);
    assert!(shown.contains(" events, ") && !shown.contains(" 0 events, "), "{shown}");
}

#[test]
fn check_config_with_a_sample_shows_what_the_export_becomes() {
    let fake = FakeTikTok::start(TOKEN, SOURCE_ID);
    let agent = shopify_agent(&fake);
    let out = agent.cmd_ok(&["check-config", "--sample", SHOPIFY_SAMPLE]);
    // The settings and `ok` first, then exactly what `preview` prints.
    let (settings, samples) = out.split_once("\nok\n").unwrap_or_else(|| panic!("{out}"));
    assert!(settings.contains("format") && settings.contains("shopify-orders"), "{settings}");
    assert_eq!(
        samples.lines().skip(2).collect::<Vec<_>>(),
        agent.cmd_ok(&["preview", SHOPIFY_SAMPLE]).lines().collect::<Vec<_>>()
    );
    assert!(samples.contains("5 events, 2 skipped, 0 rejected"), "{samples}");
    assert!(!agent.queue.exists() && fake.requests().is_empty(), "a sample is never queued or sent");
    // A sample that cannot be read fails the check; --source alone is a usage error.
    let missing = agent.dir.path().join("missing.csv");
    assert_eq!(agent.cmd(&["check-config", "--sample", missing.to_str().unwrap()]).status.code(), Some(1));
    assert_eq!(agent.cmd(&["check-config", "--source", "till"]).status.code(), Some(2));
}
