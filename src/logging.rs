//! Where log lines go and how they look. On a terminal or in a test: tracing's usual lines on
//! stderr (time, level, message). Under systemd (`$JOURNAL_STREAM` set): one line per event,
//! prefixed with its sd-daemon(3) priority (`<3>` error … `<7>` debug) and nothing else, so the
//! journal files each line at its priority and `journalctl -p err` finds the errors.
//!
//! Formatting only: this module never decides what is logged.

use std::fmt::{self, Write as _};
use std::io::IsTerminal;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// The environment variable holding the log filter (e.g. `debug`); `info` without it.
pub const FILTER_ENV: &str = "OFFLINE_EVENTS_AGENT_LOG";

/// Install the global subscriber: journal lines when `$JOURNAL_STREAM` is set, else plain lines
/// (coloured on a terminal).
pub fn init() {
    let filter = EnvFilter::try_from_env(FILTER_ENV).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        // The journal adds its own time stamps; the priority prefix replaces the level word.
        builder.with_ansi(false).event_format(JournalFormat).init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
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
            .event_format(JournalFormat)
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
}
