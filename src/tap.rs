//! `watch`: follow the queue as the daemon works — each event as it is captured (normalised, PII
//! only as hashes; a dead one with its reason) and each request as TikTok answers it, `send-test`'s
//! too. Times are local (the system zone, `$TZ` respected) with their offset. It polls the SQLite
//! file, so it works beside a running service without talking to it.
//!
//! Rendering is pure ([`event_line`], [`request_line`]); [`follow`] only polls and prints.

use crate::queue::{Queue, QueueError, SendLogEntry, TapEvent};
use jiff::tz::TimeZone;
use std::collections::HashSet;
use std::io::Write;
use std::time::{Duration, Instant};

pub struct Options {
    /// Show what is already in the queue (the last 50 events and requests) before following.
    pub history: bool,
    /// Stop after this long (for scripts); follow forever when `None`.
    pub exit_after: Option<Duration>,
}

/// The first line `watch` prints.
pub const WAITING: &str = "waiting for events… (Ctrl-C to stop)";

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// Standard output is gone (a closed pipe: the caller ends quietly) or failed.
    #[error("cannot write the output")]
    Output(#[from] std::io::Error),
}

pub fn follow(queue: &Queue, options: &Options, out: &mut impl Write) -> Result<(), TapError> {
    let tz = TimeZone::system();
    writeln!(out, "{WAITING}")?;
    out.flush()?;
    let (max_event, max_log) = queue.max_ids()?;
    let (mut last_event, mut last_log) =
        if options.history { ((max_event - 50).max(0), (max_log - 50).max(0)) } else { (max_event, max_log) };
    // Files whose dropped identifiers were mentioned already.
    let mut told: HashSet<String> = HashSet::new();
    let started = Instant::now();
    loop {
        for e in queue.events_after(last_event, 500)? {
            last_event = e.id;
            let first_of_file = e.file.as_ref().is_some_and(|f| told.insert(f.clone()));
            writeln!(out, "{}", event_line(&e, &tz, first_of_file))?;
        }
        for entry in queue.send_log_after(last_log, 500)? {
            last_log = entry.id;
            writeln!(out, "{}", request_line(&entry, &tz))?;
        }
        out.flush()?;
        if options.exit_after.is_some_and(|d| started.elapsed() >= d) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A unix time in `tz`, with its offset: `2026-12-06 07:05:09 +01:00`.
pub fn local_time(unix: i64, tz: &TimeZone) -> String {
    match jiff::Timestamp::from_second(unix) {
        Ok(t) => t.to_zoned(tz.clone()).strftime("%Y-%m-%d %H:%M:%S %:z").to_string(),
        Err(_) => format!("@{unix}"),
    }
}

/// One captured event: when, its state (a dead one with its reason and message), its file, its
/// identifiers (as the payload has them: hashed) and the payload; `first_of_file`: the first event
/// shown from its file, which says how many identifiers the file's read dropped.
pub fn event_line(e: &TapEvent, tz: &TimeZone, first_of_file: bool) -> String {
    let state = match (&e.dead_reason, &e.dead_message) {
        (Some(reason), Some(message)) => format!("dead: {reason}: {}", crate::status::printable(message)),
        (Some(reason), None) => format!("dead: {reason}"),
        _ => e.state.label().to_string(),
    };
    let file = e.file.as_deref().map(|f| crate::source::shown(std::path::Path::new(f)));
    let dropped = if first_of_file && e.file_dropped > 0 {
        format!(
            "\n  (its file's read dropped {} identifiers that were not valid; `preview` the file to see which, line by line)",
            e.file_dropped
        )
    } else {
        String::new()
    };
    format!(
        "{} captured #{} [{state}] from {}, customer: {}: {}{dropped}",
        local_time(e.queued_at, tz),
        e.id,
        file.as_deref().unwrap_or("?"),
        identifiers(&e.payload),
        e.payload
    )
}

/// Which identifiers an event's payload carries (hashed): `email, phone`, `none`, or `?` when the
/// payload is not kept (sent).
fn identifiers(payload: &str) -> String {
    let Ok(json) = serde_json::from_str::<serde_json::Value>(payload) else { return "?".into() };
    let user = &json["user"];
    let present: Vec<&str> = ["email", "phone", "external_id"]
        .into_iter()
        .filter(|k| match &user[*k] {
            serde_json::Value::Array(a) => !a.is_empty(),
            serde_json::Value::String(s) => !s.is_empty(),
            _ => false,
        })
        .collect();
    if present.is_empty() {
        "none".into()
    } else {
        present.join(", ")
    }
}

/// One request: when, its class, how many events, TikTok's answer, and the test code if any
/// (`send-test`'s requests carry theirs).
pub fn request_line(entry: &SendLogEntry, tz: &TimeZone) -> String {
    format!(
        "{} {} {} events -> {} code {} {:?}{}{}",
        local_time(entry.at, tz),
        entry.class,
        entry.events,
        entry.http_status.map_or("no http answer".to_string(), |s| format!("http {s}")),
        entry.code.map_or("-".to_string(), |c| c.to_string()),
        entry.message,
        entry.request_id.as_ref().map(|r| format!(" request_id {r}")).unwrap_or_default(),
        entry.test_event_code.as_ref().map(|c| format!(" [test_event_code {c}]")).unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{EventState, SendClass};

    fn tz(name: &str) -> TimeZone {
        TimeZone::get(name).unwrap()
    }

    #[test]
    fn times_are_local_with_their_offset() {
        let t = 1_765_000_000; // 2025-12-06T05:46:40Z
        let table = [
            ("UTC", "2025-12-06 05:46:40 +00:00"),
            ("Europe/Berlin", "2025-12-06 06:46:40 +01:00"),
            ("Asia/Kolkata", "2025-12-06 11:16:40 +05:30"),
            ("America/New_York", "2025-12-06 00:46:40 -05:00"),
        ];
        for (zone, expected) in table {
            assert_eq!(local_time(t, &tz(zone)), expected, "{zone}");
        }
    }

    fn event(state: EventState, dead: Option<(&str, &str)>, payload: &str, dropped: i64) -> TapEvent {
        TapEvent {
            id: 7,
            state,
            file: Some("/pos/a.csv".into()),
            payload: payload.into(),
            queued_at: 1_765_000_000,
            dead_reason: dead.map(|d| d.0.into()),
            dead_message: dead.map(|d| d.1.into()),
            file_dropped: dropped,
        }
    }

    #[test]
    fn an_event_line_says_its_state_reason_identifiers_and_dropped_ones() {
        let with_email = r#"{"event":"Purchase","user":{"email":["ab12"],"phone":[]}}"#;
        /// (case, event, first of its file, parts the line has, parts it lacks)
        type Case = (&'static str, TapEvent, bool, &'static [&'static str], &'static [&'static str]);
        let table: [Case; 4] = [
            (
                "queued",
                event(EventState::Pending, None, with_email, 0),
                true,
                &["2025-12-06 05:46:40 +00:00 captured #7 [queued] from /pos/a.csv, customer: email: {"],
                &["dropped"],
            ),
            (
                "dead with its reason",
                event(EventState::Dead, Some(("expired", "not sent: outside the window")), "{}", 0),
                false,
                &["[dead: expired: not sent: outside the window]", "customer: none"],
                &[],
            ),
            (
                "the file's dropped identifiers, with its first event",
                event(EventState::Pending, None, with_email, 2),
                true,
                &["dropped 2 identifiers"],
                &[],
            ),
            ("not again", event(EventState::Pending, None, with_email, 2), false, &[], &["dropped"]),
        ];
        for (name, e, first, has, lacks) in table {
            let line = event_line(&e, &tz("UTC"), first);
            for part in has {
                assert!(line.contains(part), "{name}: {line}");
            }
            for part in lacks {
                assert!(!line.contains(part), "{name}: {line}");
            }
        }
    }

    #[test]
    fn a_request_line_carries_its_test_code() {
        let entry = SendLogEntry {
            id: 1,
            at: 1_765_000_000,
            events: 1,
            http_status: Some(200),
            code: Some(0),
            class: SendClass::Delivered,
            message: "OK".into(),
            request_id: Some("r1".into()),
            test_event_code: Some("TEST1".into()),
        };
        let line = request_line(&entry, &tz("Europe/Berlin"));
        assert!(line.starts_with("2025-12-06 06:46:40 +01:00 "), "{line}");
        assert!(line.ends_with("1 events -> http 200 code 0 \"OK\" request_id r1 [test_event_code TEST1]"), "{line}");
    }
}
