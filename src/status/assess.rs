//! What needs attention in a [`Report`], and how bad it is: a pure function of the report, so
//! that `status`, its JSON and the metrics agree. Not ok: nothing is (or will be) delivered until
//! someone acts. Warn: delivery goes on, but something is off.

use super::{Folder, Report, Running};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Ok,
    Warn,
    NotOk,
}

impl Level {
    /// The metrics' gauge: 0 ok, 1 warn, 2 not ok.
    pub fn gauge(self) -> u8 {
        self as u8
    }
}

/// One thing that needs attention, with what the fix needs to name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Issue {
    /// The config does not load (the report comes from the queue alone).
    ConfigInvalid {
        config_path: String,
        error: String,
    },
    /// The service is not running (stale heartbeat, stopped, never run).
    NotRunning {
        running: Running,
        last_seen: Option<i64>,
    },
    /// Sending is paused until the cause is fixed.
    Paused {
        reason: String,
        next_retry_at: Option<i64>,
        fix: Option<String>,
    },
    /// A SIGHUP's config did not load; the previous one runs on.
    ReloadFailed {
        at: Option<i64>,
        error: String,
        config_path: String,
    },
    /// A source's folder is missing, not a folder or unreadable: its sales are not taken.
    Folder {
        source: String,
        path: String,
        problem: String,
        config_path: String,
        line: Option<usize>,
    },
    ClockWrong {
        text: String,
    },
    /// Events have waited longer than [`STALLED_AFTER_SECS`] without being delivered: whatever
    /// the cause (a proxy that blocks TikTok, a sender stuck in retries), sales are on their way
    /// to expiring.
    Stalled {
        oldest_pending_age_secs: i64,
        last_success_at: Option<i64>,
    },
    /// Files wait in their folders (the queue is full).
    IngestHeld {
        text: String,
    },
    /// The last delivery failed; it is retried.
    Retrying {
        error: Option<String>,
        next_retry_at: Option<i64>,
    },
    /// The queue was damaged and recovered at start.
    Recovered {
        text: String,
    },
    /// No new file for longer than the source's `expect_files_within`.
    Silent {
        source: String,
        since: i64,
        silent_secs: i64,
        expect_secs: u64,
        had_files: bool,
    },
    /// Events that will not be delivered, by reason.
    DeadLetters {
        by_reason: BTreeMap<String, i64>,
    },
    /// Most events of a source carry neither e-mail nor phone.
    Unmatchable {
        source: String,
        unmatchable: u64,
        total: u64,
    },
}

impl Issue {
    pub fn level(&self) -> Level {
        match self {
            Issue::ConfigInvalid { .. }
            | Issue::NotRunning { .. }
            | Issue::Paused { .. }
            | Issue::ReloadFailed { .. }
            | Issue::Folder { .. }
            | Issue::ClockWrong { .. }
            | Issue::Stalled { .. }
            | Issue::IngestHeld { .. } => Level::NotOk,
            Issue::Retrying { .. }
            | Issue::Recovered { .. }
            | Issue::Silent { .. }
            | Issue::DeadLetters { .. }
            | Issue::Unmatchable { .. } => Level::Warn,
        }
    }
}

/// Queued for longer than this (a day) is not a retry that will sort itself out: not ok, with a
/// few weeks left before the attribution window expires the sales.
pub const STALLED_AFTER_SECS: i64 = 86_400;

/// Everything in `r` that needs attention, worst first (in the order above within a level).
pub fn assess(r: &Report) -> Vec<Issue> {
    let mut issues = Vec::new();
    if let Some(error) = &r.config_error {
        issues.push(Issue::ConfigInvalid { config_path: r.config_path.clone(), error: error.clone() });
    }
    let not_running = Issue::NotRunning { running: r.service.running, last_seen: r.service.last_seen() };
    // A service that stopped or went silent is the headline; a queue never served by one (used
    // with `run --once` or `flush`) lets what those found lead.
    if matches!(r.service.running, Running::Stale | Running::Stopped) {
        issues.push(not_running.clone());
    }
    if let Some(reason) = &r.paused {
        issues.push(Issue::Paused { reason: reason.clone(), next_retry_at: r.next_retry_at, fix: r.token_fix.clone() });
    }
    if let Some(error) = &r.reload_failed {
        issues.push(Issue::ReloadFailed {
            at: r.reload_failed_at,
            error: error.clone(),
            config_path: r.config_path.clone(),
        });
    }
    for s in &r.sources {
        if let (Some(problem), Some(path)) = (s.folder.problem(), &s.path) {
            issues.push(Issue::Folder {
                source: s.name.clone(),
                path: path.clone(),
                problem: problem.to_string(),
                config_path: r.config_path.clone(),
                line: s.path_line,
            });
        }
    }
    if let Some(text) = &r.clock_wrong {
        issues.push(Issue::ClockWrong { text: text.clone() });
    }
    if let Some(age) = r.oldest_pending_age_secs.filter(|a| *a > STALLED_AFTER_SECS) {
        issues.push(Issue::Stalled { oldest_pending_age_secs: age, last_success_at: r.last_success_at });
    }
    for text in [&r.ingest_held, &r.reconcile_held].into_iter().flatten() {
        issues.push(Issue::IngestHeld { text: text.clone() });
    }
    if r.service.running == Running::Never {
        issues.push(not_running);
    }
    if r.paused.is_none() && r.next_retry_at.is_some() {
        issues.push(Issue::Retrying { error: r.last_error.clone(), next_retry_at: r.next_retry_at });
    }
    if let Some(text) = &r.recovered {
        issues.push(Issue::Recovered { text: text.clone() });
    }
    for s in &r.sources {
        let Some(expect) = s.expect_files_within_secs else { continue };
        // A source that never had a file is silent since the service started.
        let Some(since) = s.last_file_at.or(r.service.started_at) else { continue };
        let silent = r.now - since;
        if silent > expect as i64 && s.folder != Folder::Missing {
            issues.push(Issue::Silent {
                source: s.name.clone(),
                since,
                silent_secs: silent,
                expect_secs: expect,
                had_files: s.last_file_at.is_some(),
            });
        }
    }
    if !r.dead_by_reason.is_empty() {
        issues.push(Issue::DeadLetters { by_reason: r.dead_by_reason.clone() });
    }
    for s in &r.sources {
        let coverage = s.match_keys.coverage();
        if coverage.mostly_unmatchable() {
            issues.push(Issue::Unmatchable {
                source: s.name.clone(),
                unmatchable: coverage.unmatchable(),
                total: coverage.total(),
            });
        }
    }
    issues.sort_by_key(|i| std::cmp::Reverse(i.level()));
    issues
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::*;
    use super::*;

    /// A report of a running, healthy agent with one source `till` at `/pos`, at time 100,000.
    pub fn healthy() -> Report {
        let now = 100_000;
        Report {
            queue_path: "/var/lib/oea/queue.sqlite".into(),
            dry_run: false,
            now,
            config_path: "/etc/oea/config.toml".into(),
            config_error: None,
            counts: Counts::default(),
            oldest_pending_age_secs: None,
            last_success_at: Some(now - 60),
            last_error: None,
            last_error_at: None,
            next_retry_at: None,
            paused: None,
            recovered: None,
            ingest_held: None,
            reconcile_held: None,
            clock_wrong: None,
            service: Service::at(now, Some(now - 10), Some(30), Some(now - 5000), None),
            reload_failed: None,
            reload_failed_at: None,
            token_fix: Some("write the new token to /etc/oea/token".into()),
            dead_by_reason: BTreeMap::new(),
            sources: vec![SourceStatus {
                name: "till".into(),
                path: Some("/pos".into()),
                path_line: Some(9),
                folder: Folder::Ok,
                files: 2,
                files_today: 1,
                last_file_at: Some(now - 3600),
                events: StateCounts { queued: 0, sent: 10, dead: 0 },
                rejected: 0,
                skipped: 0,
                match_keys: MatchKeys { email: 8, phone: 2, external_id_only: 0, none: 0 },
                expect_files_within_secs: None,
                waiting: Some(0),
            }],
            recent_files: vec![],
            recent_rejects: vec![],
            append_files: vec![],
            state: Level::Ok,
            issues: vec![],
        }
    }

    fn kinds(r: &Report) -> Vec<(String, Level)> {
        assess(r)
            .iter()
            .map(|i| {
                let json = serde_json::to_value(i).unwrap();
                (json["kind"].as_str().unwrap().to_string(), i.level())
            })
            .collect()
    }

    #[test]
    fn each_condition_is_named_with_its_level_worst_first() {
        type Change = fn(&mut Report);
        type Case = (&'static str, Change, &'static [(&'static str, Level)]);
        let cases: [Case; 18] = [
            ("healthy", |_| {}, &[]),
            (
                "archived files wait for room to be re-ingested",
                |r| r.reconcile_held = Some("archived files wait".into()),
                &[("ingest_held", Level::NotOk)],
            ),
            ("never run", |r| r.service = Service::default(), &[("not_running", Level::NotOk)]),
            (
                "heartbeat stale",
                |r| r.service = Service::at(r.now, Some(r.now - 76), Some(30), Some(1), None),
                &[("not_running", Level::NotOk)],
            ),
            (
                "stopped",
                |r| r.service = Service::at(r.now, Some(r.now - 5), Some(30), Some(1), Some(r.now - 4)),
                &[("not_running", Level::NotOk)],
            ),
            (
                "paused, not retrying too",
                |r| {
                    r.paused = Some("token".into());
                    r.next_retry_at = Some(r.now + 60);
                },
                &[("paused", Level::NotOk)],
            ),
            ("retrying", |r| r.next_retry_at = Some(r.now + 5), &[("retrying", Level::Warn)]),
            (
                "queued for over a day, retrying",
                |r| {
                    r.oldest_pending_age_secs = Some(STALLED_AFTER_SECS + 1);
                    r.next_retry_at = Some(r.now + 5);
                },
                &[("stalled", Level::NotOk), ("retrying", Level::Warn)],
            ),
            ("queued for a day at most", |r| r.oldest_pending_age_secs = Some(STALLED_AFTER_SECS), &[]),
            ("config invalid", |r| r.config_error = Some("line 2".into()), &[("config_invalid", Level::NotOk)]),
            ("reload failed", |r| r.reload_failed = Some("line 2".into()), &[("reload_failed", Level::NotOk)]),
            ("missing folder", |r| r.sources[0].folder = Folder::Missing, &[("folder", Level::NotOk)]),
            ("clock", |r| r.clock_wrong = Some("~30 days".into()), &[("clock_wrong", Level::NotOk)]),
            (
                "silent for longer than expected",
                |r| r.sources[0].expect_files_within_secs = Some(3599),
                &[("silent", Level::Warn)],
            ),
            ("dead letters", |r| _ = r.dead_by_reason.insert("expired".into(), 2), &[("dead_letters", Level::Warn)]),
            (
                "mostly unmatchable",
                |r| r.sources[0].match_keys = MatchKeys { email: 1, none: 2, ..MatchKeys::default() },
                &[("unmatchable", Level::Warn)],
            ),
            (
                "worst first",
                |r| {
                    r.dead_by_reason.insert("invalid".into(), 1);
                    r.sources[0].folder = Folder::NotAFolder;
                    r.service = Service::default();
                },
                &[("folder", Level::NotOk), ("not_running", Level::NotOk), ("dead_letters", Level::Warn)],
            ),
            (
                "a stopped service leads",
                |r| {
                    r.paused = Some("token".into());
                    r.service = Service::at(r.now, Some(r.now - 5), Some(30), Some(1), Some(r.now - 4));
                },
                &[("not_running", Level::NotOk), ("paused", Level::NotOk)],
            ),
        ];
        for (name, change, want) in cases {
            let mut r = healthy();
            change(&mut r);
            let want: Vec<(String, Level)> = want.iter().map(|(k, l)| (k.to_string(), *l)).collect();
            assert_eq!(kinds(&r), want, "{name}");
        }
    }

    #[test]
    fn a_source_silent_within_its_expectation_or_never_started_is_fine() {
        let mut r = healthy();
        r.sources[0].expect_files_within_secs = Some(3600);
        assert!(assess(&r).is_empty(), "exactly at the limit");
        r.sources[0].last_file_at = None;
        r.sources[0].expect_files_within_secs = Some(4000);
        assert_eq!(kinds(&r), [("silent".to_string(), Level::Warn)], "no file since the start 5000 s ago");
        r.service = Service::default();
        assert_eq!(kinds(&r), [("not_running".to_string(), Level::NotOk)], "never started: not silent");
    }
}
