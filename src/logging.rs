//! Where log lines go and how they look. On a terminal or in a test: tracing's usual lines on
//! stderr (time, level, message). Under systemd (`$JOURNAL_STREAM` set): one line per event,
//! prefixed with its sd-daemon(3) priority (`<3>` error … `<7>` debug) and nothing else, so the
//! journal files each line at its priority and `journalctl -p err` finds the errors. With
//! `log_format = "json"` (or `$OFFLINE_EVENTS_AGENT_LOG_FORMAT=json`): one JSON object per line
//! (`time`, `level`, `message`, `fields`, `spans`) for log shippers, written by [`JsonFormat`]
//! here (no extra crate); under journald it carries the priority prefix too, which the journal
//! strips, leaving the JSON as the message.
//!
//! Formatting only: this module never decides what is logged.

use crate::config::LogFormat;
use std::fmt::{self, Write as _};
use std::io::IsTerminal;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// The environment variable holding the log filter (e.g. `debug`); `info` without it.
pub const FILTER_ENV: &str = "OFFLINE_EVENTS_AGENT_LOG";

/// The environment variable that chooses the log format (`text`, `json`); it wins over the
/// config's `log_format`.
pub const FORMAT_ENV: &str = "OFFLINE_EVENTS_AGENT_LOG_FORMAT";

/// The log format: `$OFFLINE_EVENTS_AGENT_LOG_FORMAT` (`env`) when set, else the config's. An
/// unknown word is an error naming the variable and the choices. Pure.
pub fn choose_format(configured: LogFormat, env: Option<&str>) -> Result<LogFormat, String> {
    match env.map(str::trim) {
        None | Some("") => Ok(configured),
        Some(word) => LogFormat::parse(word).ok_or_else(|| {
            let words: Vec<&str> = crate::config::defaults::LOG_FORMATS.iter().map(|(w, _)| *w).collect();
            format!("{FORMAT_ENV}: `{word}` is not one of {}", words.join(", "))
        }),
    }
}

/// Install the global subscriber in `format`: JSON lines, or journal lines when `$JOURNAL_STREAM`
/// is set, else plain lines (coloured on a terminal).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env(FILTER_ENV).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    match (format, journal) {
        (LogFormat::Json, _) => builder.with_ansi(false).event_format(JsonFormat { journal }).init(),
        // The journal adds its own time stamps; the priority prefix replaces the level word.
        (LogFormat::Text, true) => builder.with_ansi(false).event_format(JournalFormat).init(),
        (LogFormat::Text, false) => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

/// The local time `after` from now, with its offset (`2026-12-06T07:12:03+01:00`), for log lines
/// that say until when something waits.
pub fn local_time_after(after: std::time::Duration) -> String {
    let now = jiff::Zoned::now();
    let then = jiff::SignedDuration::try_from(after).ok().and_then(|d| now.checked_add(d).ok()).unwrap_or(now);
    then.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
}

/// Print `error: {message}` on stderr, as the command line does for errors it reports itself (a bad
/// config at start, a failed command); under journald each line carries `<3>`, so that
/// `journalctl -p err` shows it too.
pub fn eprint_error(message: &dyn fmt::Display) {
    eprint!("{}", error_lines(message, std::env::var_os("JOURNAL_STREAM").is_some()));
}

/// The text [`eprint_error`] prints.
fn error_lines(message: &dyn fmt::Display, journal: bool) -> String {
    let text = format!("error: {message}");
    if !journal {
        return format!("{text}\n");
    }
    text.lines().map(|line| format!("{}{line}\n", priority(&Level::ERROR))).collect()
}

/// The sd-daemon(3) prefix journald reads as a line's priority.
pub fn priority(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "<3>",
        Level::WARN => "<4>",
        Level::INFO => "<6>",
        Level::DEBUG | Level::TRACE => "<7>",
    }
}

/// Journal lines: `<priority>` then the span names (if any) and the fields, no time, no level
/// word. A message of several lines becomes several journal lines, each with the prefix (the
/// journal splits at line ends and would file the rest at its default priority).
pub struct JournalFormat;

impl<S, N> FormatEvent<S, N> for JournalFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut text = String::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                write!(text, "{}: ", span.name())?;
            }
        }
        ctx.field_format().format_fields(Writer::new(&mut text), event)?;
        let prefix = priority(event.metadata().level());
        for line in text.lines() {
            writeln!(writer, "{prefix}{line}")?;
        }
        if text.is_empty() {
            writeln!(writer, "{prefix}")?;
        }
        Ok(())
    }
}

/// JSON lines: `{"time":…,"level":"info","message":…,"fields":{…}}`, with `"spans":[…]` when the
/// event is inside spans; under journald (`journal`) prefixed with the priority.
pub struct JsonFormat {
    pub journal: bool,
}

impl<S, N> FormatEvent<S, N> for JsonFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut fields = JsonFields::default();
        event.record(&mut fields);
        let level = event.metadata().level();
        let mut line = serde_json::Map::new();
        line.insert("time".into(), jiff::Timestamp::now().to_string().into());
        line.insert("level".into(), level.as_str().to_ascii_lowercase().into());
        line.insert("message".into(), fields.message.unwrap_or_default().into());
        line.insert("fields".into(), fields.fields.into());
        if let Some(scope) = ctx.event_scope() {
            let spans: Vec<serde_json::Value> = scope.from_root().map(|s| s.name().into()).collect();
            line.insert("spans".into(), spans.into());
        }
        let prefix = if self.journal { priority(level) } else { "" };
        writeln!(writer, "{prefix}{}", serde_json::Value::Object(line))
    }
}

/// An event's message and other fields, as JSON values.
#[derive(Default)]
struct JsonFields {
    message: Option<String>,
    fields: serde_json::Map<String, serde_json::Value>,
}

impl JsonFields {
    fn put(&mut self, field: &Field, value: serde_json::Value) {
        match (field.name(), value) {
            ("message", serde_json::Value::String(text)) => self.message = Some(text),
            (name, value) => {
                self.fields.insert(name.to_string(), value);
            }
        }
    }
}

impl Visit for JsonFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn each_level_has_its_sd_daemon_priority() {
        let table = [
            (Level::ERROR, "<3>"),
            (Level::WARN, "<4>"),
            (Level::INFO, "<6>"),
            (Level::DEBUG, "<7>"),
            (Level::TRACE, "<7>"),
        ];
        for (level, prefix) in table {
            assert_eq!(priority(&level), prefix, "{level}");
        }
    }

    #[test]
    fn error_lines_carry_the_error_priority_only_under_journald() {
        let table: [(&str, bool, &str); 4] = [
            ("bad key", false, "error: bad key\n"),
            ("bad key", true, "<3>error: bad key\n"),
            ("invalid config a.toml:\nline 3", false, "error: invalid config a.toml:\nline 3\n"),
            ("invalid config a.toml:\nline 3", true, "<3>error: invalid config a.toml:\n<3>line 3\n"),
        ];
        for (message, journal, expected) in table {
            assert_eq!(error_lines(&message, journal), expected, "{message:?} journal={journal}");
        }
    }

    /// What `JournalFormat` writes for the events `emit` logs (everything down to trace).
    fn journal_output(emit: impl FnOnce()) -> String {
        output(JournalFormat, emit)
    }

    /// What `format` writes for the events `emit` logs (everything down to trace).
    fn output<F>(format: F, emit: impl FnOnce()) -> String
    where
        F: for<'w> FormatEvent<tracing_subscriber::Registry, tracing_subscriber::fmt::format::DefaultFields>
            + Send
            + Sync
            + 'static,
    {
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let out = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::TRACE)
            .with_ansi(false)
            .with_writer(move || out.clone())
            .event_format(format)
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn journal_lines_start_with_the_priority_and_have_no_level_word_or_space() {
        let cases: [(&str, fn(), &str); 5] = [
            ("error", || tracing::error!("config reload failed: {}", "bad key"), "<3>config reload failed: bad key\n"),
            ("warn", || tracing::warn!("config: plain http"), "<4>config: plain http\n"),
            ("info", || tracing::info!("started"), "<6>started\n"),
            ("debug", || tracing::debug!("probe"), "<7>probe\n"),
            ("trace", || tracing::trace!("tick"), "<7>tick\n"),
        ];
        for (name, emit, expected) in cases {
            assert_eq!(journal_output(emit), expected, "{name}");
        }
    }

    #[test]
    fn fields_follow_the_message() {
        assert_eq!(journal_output(|| tracing::info!(events = 3, "delivered")), "<6>delivered events=3\n");
    }

    #[test]
    fn every_line_of_a_multi_line_message_keeps_the_priority() {
        assert_eq!(journal_output(|| tracing::error!("first\nsecond")), "<3>first\n<3>second\n");
    }

    #[test]
    fn span_names_come_before_the_message() {
        let out = journal_output(|| {
            let _span = tracing::info_span!("reload").entered();
            tracing::warn!("kept the running configuration");
        });
        assert_eq!(out, "<4>reload: kept the running configuration\n");
    }

    #[test]
    fn the_environment_wins_over_the_configured_log_format() {
        let table: [(LogFormat, Option<&str>, Result<LogFormat, &str>); 6] = [
            (LogFormat::Text, None, Ok(LogFormat::Text)),
            (LogFormat::Json, None, Ok(LogFormat::Json)),
            (LogFormat::Text, Some("json"), Ok(LogFormat::Json)),
            (LogFormat::Json, Some("text"), Ok(LogFormat::Text)),
            (LogFormat::Json, Some(""), Ok(LogFormat::Json)),
            (LogFormat::Text, Some("xml"), Err("OFFLINE_EVENTS_AGENT_LOG_FORMAT: `xml` is not one of text, json")),
        ];
        for (configured, env, expected) in table {
            assert_eq!(choose_format(configured, env), expected.map_err(str::to_string), "{configured:?} {env:?}");
        }
    }

    /// The JSON object of each line `format` writes, the priority prefix (if any) apart.
    fn json_lines(journal: bool, emit: impl FnOnce()) -> Vec<(String, serde_json::Value)> {
        output(JsonFormat { journal }, emit)
            .lines()
            .map(|line| {
                let start = line.find('{').expect("a JSON object");
                (line[..start].to_string(), serde_json::from_str(&line[start..]).expect(line))
            })
            .collect()
    }

    #[test]
    fn json_lines_hold_time_level_message_and_fields() {
        let lines = json_lines(false, || {
            tracing::info!(events = 3, bytes = 1200_u64, folder = "/pos/in", "batch sent");
            tracing::warn!("two\nlines");
        });
        assert_eq!(lines.len(), 2);
        let (prefix, first) = &lines[0];
        assert_eq!(prefix, "");
        assert_eq!(first["level"], "info");
        assert_eq!(first["message"], "batch sent");
        assert_eq!(first["fields"], serde_json::json!({ "events": 3, "bytes": 1200, "folder": "/pos/in" }));
        let time = first["time"].as_str().unwrap();
        assert!(time.parse::<jiff::Timestamp>().is_ok(), "{time}");
        assert_eq!(lines[1].1["message"], "two\nlines");
        assert!(lines[1].1.get("spans").is_none());
    }

    #[test]
    fn json_lines_under_journald_keep_the_priority_and_name_their_spans() {
        let lines = json_lines(true, || {
            let _span = tracing::info_span!("reload").entered();
            tracing::error!("kept the running configuration");
        });
        assert_eq!(lines[0].0, "<3>");
        assert_eq!(lines[0].1["spans"], serde_json::json!(["reload"]));
        assert_eq!(lines[0].1["level"], "error");
    }
}
