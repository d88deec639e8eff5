//! The report as one screen of text: a header, one line per source, then only what needs
//! attention, then the recent files. Pure (the time zone is an argument); every line is at most
//! [`WIDTH`] columns, longer text wrapped at spaces.

use super::{printable, reject_line, Issue, Level, Report, Running};
use crate::config::defaults::duration_words;
use crate::queue::FileState;
use jiff::tz::TimeZone;
use std::time::Duration;

pub const WIDTH: usize = 100;
/// Labels are this wide, values line up after them.
const LABEL: usize = 17;

/// A Unix time in `tz` with its offset: `2026-12-06 14:03:22 +01:00`.
pub fn local_time(t: i64, tz: &TimeZone) -> String {
    jiff::Timestamp::from_second(t)
        .map(|ts| ts.to_zoned(tz.clone()).strftime("%Y-%m-%d %H:%M:%S %:z").to_string())
        .unwrap_or_else(|_| t.to_string())
}

/// A time without seconds, for the tables.
fn short_time(t: i64, tz: &TimeZone) -> String {
    jiff::Timestamp::from_second(t)
        .map(|ts| ts.to_zoned(tz.clone()).strftime("%Y-%m-%d %H:%M %:z").to_string())
        .unwrap_or_else(|_| t.to_string())
}

fn ago(secs: i64) -> String {
    match secs.max(0) {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn when(t: Option<i64>, now: i64, tz: &TimeZone) -> String {
    match t {
        None => "never".into(),
        Some(t) => format!("{} ({} ago)", local_time(t, tz), ago(now - t)),
    }
}

/// Lines of at most [`WIDTH`] columns.
struct Screen(String);

impl Screen {
    /// `text` after a label padded to [`LABEL`]; continuation lines indented to the value.
    fn field(&mut self, label: &str, text: &str) {
        let head = format!("{:<LABEL$}", format!("{label}:"));
        self.wrapped(&head, &" ".repeat(LABEL), text);
    }

    /// An item of a list: indented 2, continuation lines 4.
    fn item(&mut self, text: &str) {
        self.wrapped("  ", "    ", text);
    }

    fn line(&mut self, text: &str) {
        self.wrapped("", "  ", text);
    }

    fn wrapped(&mut self, first: &str, rest: &str, text: &str) {
        if first.chars().count() + text.chars().count() <= WIDTH {
            return self.emit(first, text);
        }
        let mut lead = first.to_string();
        let mut line = String::new();
        for word in text.split(' ') {
            let mut word = word.to_string();
            loop {
                let used = lead.chars().count() + line.chars().count();
                let sep = usize::from(!line.is_empty());
                if used + sep + word.chars().count() <= WIDTH {
                    if sep == 1 {
                        line.push(' ');
                    }
                    line.push_str(&word);
                    break;
                }
                if !line.is_empty() {
                    self.emit(&lead, &line);
                    lead = rest.to_string();
                    line.clear();
                    continue;
                }
                // One word longer than the line: cut it.
                let room = WIDTH.saturating_sub(lead.chars().count()).max(1);
                let cut: String = word.chars().take(room).collect();
                word = word.chars().skip(room).collect();
                self.emit(&lead, &cut);
                lead = rest.to_string();
                if word.is_empty() {
                    break;
                }
            }
        }
        if !line.is_empty() || lead == first {
            self.emit(&lead, &line);
        }
    }

    fn emit(&mut self, lead: &str, text: &str) {
        let line = format!("{lead}{text}");
        self.0.push_str(line.trim_end_matches(' '));
        self.0.push('\n');
    }
}

/// The headline of the state line.
fn headline(r: &Report, tz: &TimeZone) -> String {
    let Some(worst) = r.issues.first() else { return "ok".into() };
    match worst {
        Issue::NotRunning { running: Running::Never, .. } => "not running (never run)".into(),
        Issue::NotRunning { last_seen: Some(t), .. } => {
            format!("not running (last seen {}, {} ago)", local_time(*t, tz), ago(r.now - t))
        }
        Issue::NotRunning { .. } => "not running".into(),
        Issue::Paused { reason, .. } => format!("PAUSED: {}", printable(reason)),
        Issue::Retrying { .. } => "RETRYING: the last delivery failed, events stay queued".into(),
        other => {
            let what = issue_text(other, r.now, tz).0;
            match worst.level() {
                Level::NotOk => format!("NOT OK: {what}"),
                _ => format!("warning: {what}"),
            }
        }
    }
}

/// An issue's label and its text with the fix.
fn issue_text(issue: &Issue, now: i64, tz: &TimeZone) -> (String, &'static str) {
    match issue {
        Issue::ConfigInvalid { config_path, error } => (
            format!(
                "{} is invalid: {}; fix it (`check-config` lists every error): the service cannot start with it",
                printable(config_path),
                printable(error)
            ),
            "CONFIG INVALID",
        ),
        Issue::NotRunning { running, last_seen } => (
            match (running, last_seen) {
                (Running::Never, _) => {
                    "the service has never run on this queue: `systemctl enable --now offline-events-agent`".into()
                }
                (Running::Stopped, Some(t)) => format!(
                    "the service stopped at {} ({} ago): `systemctl start offline-events-agent`",
                    local_time(*t, tz),
                    ago(now - t)
                ),
                (_, Some(t)) => format!(
                    "no sign of life since {} ({} ago): killed or crashed? `journalctl -u offline-events-agent`",
                    local_time(*t, tz),
                    ago(now - t)
                ),
                (_, None) => "the service is not running".into(),
            },
            "NOT RUNNING",
        ),
        Issue::Paused { reason, next_retry_at, fix } => {
            let mut text = printable(reason);
            if let Some(t) = next_retry_at {
                text.push_str(&format!("; next try {}", local_time(*t, tz)));
            }
            if let Some(fix) = fix {
                text.push_str(&format!("; {}", printable(fix)));
            }
            (text, "PAUSED")
        }
        Issue::ReloadFailed { at, error, config_path } => (
            format!(
                "config reload failed at {}: {}; the service runs the previous config; fix {} and reload",
                at.map_or("?".into(), |t| local_time(t, tz)),
                printable(error),
                printable(config_path)
            ),
            "RELOAD FAILED",
        ),
        Issue::Folder { source, path, problem, config_path, line } => (
            format!(
                "source `{}`: folder {} {problem}: its sales are not taken; create it or fix `path` in {}{}",
                printable(source),
                printable(path),
                printable(config_path),
                line.map(|l| format!(":{l}")).unwrap_or_default()
            ),
            "SOURCE FOLDER",
        ),
        Issue::ClockWrong { text } => (printable(text), "CLOCK WRONG"),
        Issue::Stalled { oldest_pending_age_secs, last_success_at } => (
            format!(
                "the oldest queued event has waited {} (last delivery {}): sales expire once older than the attribution window; the last error and Troubleshooting in README say why",
                ago(*oldest_pending_age_secs),
                last_success_at.map_or("never".into(), |t| local_time(t, tz))
            ),
            "STALLED",
        ),
        Issue::IngestHeld { text } => (printable(text), "INGEST HELD"),
        Issue::Retrying { error, next_retry_at } => (
            format!(
                "{}{}",
                error.as_deref().map(printable).unwrap_or_else(|| "the last delivery failed".into()),
                next_retry_at.map(|t| format!("; next try {}", local_time(t, tz))).unwrap_or_default()
            ),
            "RETRYING",
        ),
        Issue::Recovered { text } => (printable(text), "QUEUE RECOVERED"),
        Issue::Silent { source, since, silent_secs, expect_secs, had_files } => (
            format!(
                "source `{}`: no new file for {} ({} {}; expect_files_within = \"{}\"): check the POS export",
                printable(source),
                ago(*silent_secs),
                if *had_files { "last" } else { "none since the start at" },
                local_time(*since, tz),
                duration_words(Duration::from_secs(*expect_secs))
            ),
            "SILENT SOURCE",
        ),
        Issue::DeadLetters { by_reason } => {
            let reasons: Vec<String> = by_reason.iter().map(|(k, v)| format!("{v} {}", printable(k))).collect();
            (
                format!(
                    "{} (`dead-letter list` shows them; `dead-letter requeue --reason REASON` sends them again)",
                    reasons.join(", ")
                ),
                "DEAD LETTERS",
            )
        }
        Issue::Unmatchable { source, unmatchable, total } => (
            format!(
                "most sales of {} carry no e-mail or phone: TikTok matches offline events by e-mail or phone ({unmatchable} of {total} have neither)",
                printable(source)
            ),
            "MATCH KEYS",
        ),
    }
}

pub fn render(r: &Report, tz: &TimeZone) -> String {
    let mut s = Screen(String::new());
    s.field("state", &headline(r, tz));
    s.field("queue", &format!("{}{}", printable(&r.queue_path), if r.dry_run { " (dry run)" } else { "" }));
    let c = &r.counts;
    s.field("events", &format!("{} queued, {} sent, {} dead", c.pending, c.sent, c.dead));
    if let Some(age) = r.oldest_pending_age_secs {
        s.field("oldest queued", &format!("{} ago", ago(age)));
    }
    s.field("last delivery", &when(r.last_success_at, r.now, tz));
    if let Some(t) = r.next_retry_at {
        s.field("next retry", &local_time(t, tz));
    }
    if !r.sources.is_empty() {
        s.line(&format!(
            "{:<16}{:>6}{:>9}{:>8}{:>9}{:>7}  {:<24}{}",
            "sources:", "today", "sent", "queued", "rejected", "dead", "last file", "e-mail/phone"
        ));
        for src in &r.sources {
            let coverage = src.match_keys.coverage();
            let keys = match coverage.total() {
                0 => "-".to_string(),
                total => format!("{}% of {total}", (coverage.email + coverage.phone) * 100 / total),
            };
            let name: String = printable(&src.name).chars().take(13).collect();
            s.line(&format!(
                "  {name:<14}{:>6}{:>9}{:>8}{:>9}{:>7}  {:<24}{keys}",
                src.files_today,
                src.events.sent,
                src.events.queued,
                src.rejected,
                src.events.dead,
                src.last_file_at.map_or("none yet".into(), |t| short_time(t, tz)),
            ));
            if let Some(n) = src.waiting.filter(|n| *n > 0) {
                s.item(&format!("  {n} file(s) waiting in its folder"));
            }
        }
    }
    let attention: Vec<&Issue> = r.issues.iter().collect();
    if !attention.is_empty() || !r.recent_rejects.is_empty() {
        s.line("needs attention:");
        for issue in attention {
            let (text, label) = issue_text(issue, r.now, tz);
            s.field(label, &text);
        }
    }
    if !r.recent_rejects.is_empty() {
        s.line(&format!("recent rejected rows ({} in all; `dead-letter list` shows them):", c.rejects));
        for x in &r.recent_rejects {
            s.item(&reject_line(x));
        }
    }
    if !r.recent_files.is_empty() {
        s.line("recent files:");
        for f in &r.recent_files {
            let name = std::path::Path::new(&f.record.path)
                .file_name()
                .map_or(f.record.path.clone(), |n| n.to_string_lossy().into_owned());
            let mut text = format!(
                "{} {} [{}]: {} queued, {} sent, {} dead",
                short_time(f.record.ingested_at, tz),
                printable(&name),
                printable(&f.record.source),
                f.now.queued,
                f.now.sent,
                f.now.dead
            );
            for (n, what) in
                [(f.record.duplicates, "duplicates"), (f.record.rejects, "rejected"), (f.record.skipped, "skipped")]
            {
                if n > 0 {
                    text.push_str(&format!(", {n} {what}"));
                }
            }
            match (f.record.state, f.record.disposed.as_deref()) {
                (FileState::Append, _) => text.push_str(", append mode (stays in place)"),
                (_, Some(d)) => text.push_str(&format!("; {}", printable(d))),
                (_, None) => {}
            }
            s.item(&text);
        }
    }
    if !r.append_files.is_empty() {
        s.line("append files:");
        for f in &r.append_files {
            let p = &f.record.position;
            let size = match f.size {
                Some(size) if size > p.offset => format!("of {size} ({} not taken yet)", size - p.offset),
                Some(size) => format!("of {size}"),
                None => "(the file is gone)".into(),
            };
            let name = std::path::Path::new(&f.record.path)
                .file_name()
                .map_or(f.record.path.clone(), |n| n.to_string_lossy().into_owned());
            s.item(&format!(
                "{} {} [{}] read to byte {} {size}, {} lines",
                short_time(f.record.updated_at, tz),
                printable(&name),
                printable(&f.record.source),
                p.offset,
                p.lines
            ));
        }
    }
    s.0
}

#[cfg(test)]
mod tests {
    use super::super::assess::tests::healthy;
    use super::super::*;
    use super::*;
    use crate::queue::{FileRecord, RejectRecord, StateCounts};

    fn berlin() -> TimeZone {
        TimeZone::get("Europe/Berlin").unwrap()
    }

    fn with_issues(mut r: Report) -> Report {
        r.issues = assess(&r);
        r.state = r.issues.first().map_or(Level::Ok, Issue::level);
        r
    }

    /// Everything at once, with long names and messages.
    fn rich() -> Report {
        let mut r = healthy();
        let now = r.now;
        r.config_error =
            Some("line 12: `source[1].currency`: `EURO` is not one of TikTok's supported currencies".into());
        r.service = Service::at(now, Some(now - 1000), Some(30), Some(now - 9000), None);
        r.paused = Some("TikTok refused the access token (code 40105: Access token is incorrect or has been revoked); check the token and the event set".into());
        r.next_retry_at = Some(now + 300);
        r.reload_failed =
            Some("line 3: `api_base`: must be an https:// URL (e.g. https://business-api.tiktok.com)".into());
        r.reload_failed_at = Some(now - 400);
        r.clock_wrong = Some("clock is wrong by ~30 days (TikTok's clock says 2026-11-06); expiry is held".into());
        r.recovered =
            Some("re-ingested 3 archived files from /var/lib/offline-events-agent/archive after damage".into());
        r.dead_by_reason = [("expired".to_string(), 3), ("invalid".to_string(), 12), ("refused".to_string(), 1)].into();
        r.sources[0].expect_files_within_secs = Some(1800);
        let mut second = r.sources[0].clone();
        second.name = "a-very-long-source-name-for-the-back-office-webshop".into();
        second.path = Some(format!("/srv/pos/{}/exports/that/are/nested/rather/deep/for/a/till", "x".repeat(40)));
        second.folder = Folder::Missing;
        second.expect_files_within_secs = None;
        second.last_file_at = Some(now - 3 * 86_400);
        second.match_keys = MatchKeys { external_id_only: 80, none: 20, ..MatchKeys::default() };
        second.events = StateCounts { queued: 1_234_567, sent: 98_765_432, dead: 12_345 };
        second.rejected = 1_000_000;
        second.waiting = Some(4);
        r.sources.push(second);
        let long_path = format!("/srv/pos/{}/day-2026-12-06.csv", "y".repeat(120));
        r.recent_files = vec![RecentFile {
            record: FileRecord {
                id: 1,
                content_hash: "h".into(),
                path: long_path.clone(),
                source: "till".into(),
                state: FileState::Ingested,
                events: 3,
                duplicates: 1,
                rejects: 2,
                warnings: 0,
                ingested_at: now - 100,
                disposed: Some(format!("archived to {long_path}")),
                skipped: 4,
            },
            now: StateCounts { queued: 0, sent: 0, dead: 3 },
        }];
        r.recent_rejects = vec![RejectRecord {
            id: 1,
            path: long_path,
            line: 17,
            field: Some("price".into()),
            reason: "`12,50 EUR` is not an amount".into(),
            at: now,
        }];
        with_issues(r)
    }

    #[test]
    fn every_line_of_a_rich_report_fits_100_columns() {
        let text = render(&rich(), &berlin());
        for line in text.lines() {
            assert!(line.chars().count() <= WIDTH, "{} columns:\n{line}\nin\n{text}", line.chars().count());
        }
        for needle in [
            "state:           NOT OK: /etc/oea/config.toml is invalid",
            "NOT RUNNING:",
            "PAUSED:",
            "write the new token to /etc/oea/token",
            "RELOAD FAILED:   config reload failed at 1970-01-02 04:40:00 +01:00",
            "the service runs the previous config; fix /etc/oea/config.toml and reload",
            "create it or fix `path` in /etc/oea/config.toml:9",
            "SILENT SOURCE:",
            "DEAD LETTERS:    3 expired, 12 invalid, 1 refused",
            "most sales of",
            "0 queued, 0 sent, 3 dead, 1 duplicates, 2 rejected, 4 skipped",
        ] {
            let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
            let needle = needle.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(flat.contains(&needle), "`{needle}` missing in\n{text}");
        }
    }

    #[test]
    fn a_healthy_agent_is_ok_on_a_short_screen_without_empty_lines() {
        let text = render(&with_issues(healthy()), &berlin());
        assert!(text.starts_with("state:           ok\n"), "{text}");
        assert!(!text.contains("needs attention") && !text.contains("waiting"), "{text}");
        assert!(text.contains("last delivery:   1970-01-02 04:45:40 +01:00 (60s ago)"), "{text}");
        let till = text.lines().find(|l| l.starts_with("  till")).unwrap();
        assert!(till.contains("100% of 10"), "{text}");
        assert!(text.lines().count() <= 8, "{text}");
    }

    #[test]
    fn the_state_line_says_not_running_with_the_last_time_seen() {
        let mut r = healthy();
        r.service = Service::at(r.now, Some(r.now - 600), Some(30), Some(1), None);
        let text = render(&with_issues(r), &berlin());
        assert!(
            text.starts_with("state:           not running (last seen 1970-01-02 04:36:40 +01:00, 10 min ago)"),
            "{text}"
        );
        let mut r = healthy();
        r.service = Service::default();
        assert!(render(&with_issues(r), &berlin()).starts_with("state:           not running (never run)\n"));
    }
}
