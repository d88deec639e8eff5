//! Every default and every bound of the config file, in one place. Validation applies them; the
//! README's tables quote the defaults, so a change here is a change there.
//!
//! Each duration key has a maximum: a larger value would overflow `Instant`/`SystemTime`
//! arithmetic somewhere down the line (and panic), and no sane setting comes near it.

use std::time::Duration;

const HOUR: u64 = 3600;
const DAY: u64 = 86_400;
const YEAR: u64 = 365 * DAY;
/// A hundred years in days: the demo accepts any sample date with it.
const CENTURY_DAYS: u64 = 36_500;

/// A numeric key's default and the largest value it accepts, in the key's own unit (the suffix of
/// its name: `_ms`, `_secs`, `_minutes`, `_days`, `_mb`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub default: u64,
    pub max: u64,
    /// The maximum in words, for the error message ("a day").
    pub max_words: &'static str,
}

/// `log_format`: the words it takes, the default first.
pub const LOG_FORMATS: [(&str, super::LogFormat); 2] =
    [("text", super::LogFormat::Text), ("json", super::LogFormat::Json)];

pub const DEFAULT_API_BASE: &str = "https://business-api.tiktok.com";

/// TikTok's offline event set ids have 19 digits; 15 to 22 are accepted, any other length warned.
pub const EVENT_SOURCE_ID_DIGITS: usize = 19;

/// `sender.batch_size`: events per request; TikTok refuses more than 1000.
pub const DEFAULT_BATCH_SIZE: u32 = 1000;
pub const MAX_BATCH_SIZE: u32 = 1000;

/// TikTok matches offline events only within 28 days: a longer window is allowed, but warned.
pub const TIKTOK_MATCH_WINDOW_DAYS: u64 = 28;
pub const ATTRIBUTION_WINDOW_DAYS: Limit =
    Limit { default: TIKTOK_MATCH_WINDOW_DAYS, max: CENTURY_DAYS, max_words: "100 years" };
pub const FUTURE_TOLERANCE_MINUTES: Limit = Limit { default: 60, max: YEAR / 60, max_words: "a year" };

/// `max_queue_mb`: at least 16 MB; at most 16 TiB (SQLite's own limit is near it).
pub const MIN_QUEUE_MB: u64 = 16;
pub const MAX_QUEUE_MB: Limit = Limit { default: 2048, max: 16 * 1024 * 1024, max_words: "16 TiB" };

// `[sender]`.
pub const BACKOFF_BASE_MS: Limit = Limit { default: 1000, max: HOUR * 1000, max_words: "an hour" };
/// The cap after server and network errors: low, so delivery resumes soon after TikTok recovers.
pub const BACKOFF_MAX_SECS: Limit = Limit { default: 60, max: DAY, max_words: "a day" };
/// The cap after throttling (HTTP 429, codes 40100/40132/61000): a fleet told to slow down does.
pub const THROTTLE_BACKOFF_MAX_SECS: Limit = Limit { default: 300, max: DAY, max_words: "a day" };
pub const CONNECT_TIMEOUT_SECS: Limit = Limit { default: 10, max: HOUR, max_words: "an hour" };
pub const REQUEST_TIMEOUT_SECS: Limit = Limit { default: 30, max: HOUR, max_words: "an hour" };
pub const AUTH_RETRY_SECS: Limit = Limit { default: 300, max: DAY, max_words: "a day" };
pub const RECOVERY_PROBE_SECS: Limit = Limit { default: 5, max: HOUR, max_words: "an hour" };
pub const RECOVERY_JITTER_SECS: Limit = Limit { default: 5, max: HOUR, max_words: "an hour" };
pub const SENT_RETENTION_DAYS: Limit = Limit { default: 35, max: CENTURY_DAYS, max_words: "100 years" };

// `[[source]]`.
pub const SETTLE_SECS: Limit = Limit { default: 2, max: DAY, max_words: "a day" };
pub const RESCAN_SECS: Limit = Limit { default: 30, max: DAY, max_words: "a day" };
pub const NETWORK_POLL_SECS: Limit = Limit { default: 10, max: DAY, max_words: "a day" };
pub const APPEND_IDLE_SECS: Limit = Limit { default: 300, max: DAY, max_words: "a day" };
/// `archive_keep_days`: archived files are the redo log of the queue, so by default they are kept
/// for the attribution window and [`ARCHIVE_KEEP_MARGIN_DAYS`] more (the default shown here is
/// for the default window).
pub const ARCHIVE_KEEP_DAYS: Limit =
    Limit { default: TIKTOK_MATCH_WINDOW_DAYS + ARCHIVE_KEEP_MARGIN_DAYS, max: CENTURY_DAYS, max_words: "100 years" };
pub const ARCHIVE_KEEP_MARGIN_DAYS: u64 = 7;

/// `expect_files_within`: no default (off); from a minute to a year, written as a duration
/// (`"26h"`, `"2d"`, `"90m"`, `"1d12h"`; see [`parse_duration`]).
pub const EXPECT_FILES_WITHIN_MIN: Duration = Duration::from_secs(60);
pub const EXPECT_FILES_WITHIN_MAX: Duration = Duration::from_secs(YEAR);

/// A duration written as numbers with units, largest first or not: `s`, `m`, `h`, `d`
/// (`"26h"`, `"1d12h"`, `"90m"`). `None` for anything else (no unit, an unknown unit, overflow).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let mut total: u64 = 0;
    let mut digits = String::new();
    if text.is_empty() {
        return None;
    }
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => HOUR,
            'd' => DAY,
            _ => return None,
        };
        let n: u64 = std::mem::take(&mut digits).parse().ok()?;
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    digits.is_empty().then_some(Duration::from_secs(total))
}

/// A duration as [`parse_duration`] reads it, in its largest whole units (`"26h"`, `"2d"`).
pub fn duration_words(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % DAY == 0 && s > 0 => format!("{}d", s / DAY),
        s if s % HOUR == 0 && s > 0 => format!("{}h", s / HOUR),
        s if s % 60 == 0 && s > 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// `zero_value`: a purchase of value 0 is skipped (counted) unless the source says "send".
pub const ZERO_VALUE: crate::event::screen::ZeroValue = crate::event::screen::ZeroValue::Skip;
/// `require_match_key`: sales without e-mail or phone are sent (and counted in `preview`).
pub const REQUIRE_MATCH_KEY: bool = false;

/// The longest `--timeout-secs` of `run --once` and `flush` that is taken as given: a year, which
/// is "until done" in practice and still far from overflowing a deadline `Instant`.
pub const MAX_CLI_TIMEOUT: Duration = Duration::from_secs(YEAR);

/// `--timeout-secs` checked rather than clamped, for clap's `value_parser`: a number of seconds up
/// to [`MAX_CLI_TIMEOUT`].
pub fn parse_cli_timeout(arg: &str) -> Result<Duration, String> {
    let secs: u64 = arg.trim().parse().map_err(|_| format!("`{arg}` is not a number of seconds"))?;
    if secs > MAX_CLI_TIMEOUT.as_secs() {
        return Err(format!("must be at most {} (a year)", MAX_CLI_TIMEOUT.as_secs()));
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cli_timeout_never_passes_a_year() {
        assert!(std::time::Instant::now().checked_add(MAX_CLI_TIMEOUT).is_some());
        assert_eq!(parse_cli_timeout("60"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_cli_timeout("31536000"), Ok(MAX_CLI_TIMEOUT));
        assert!(parse_cli_timeout("31536001").unwrap_err().contains("at most 31536000"));
        assert!(parse_cli_timeout("-1").is_err());
    }

    #[test]
    fn durations_are_numbers_with_units() {
        let cases = [
            ("26h", Some(26 * HOUR)),
            ("2d", Some(2 * DAY)),
            ("90m", Some(5400)),
            ("1d12h", Some(DAY + 12 * HOUR)),
            (" 45s ", Some(45)),
            ("26", None),
            ("h", None),
            ("26 h", None),
            ("1w", None),
            ("-1h", None),
            ("", None),
            ("99999999999999999999d", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), want.map(Duration::from_secs), "{text:?}");
        }
        for (secs, words) in [(26 * HOUR, "26h"), (2 * DAY, "2d"), (90, "90s"), (5400, "90m")] {
            assert_eq!(duration_words(Duration::from_secs(secs)), words);
            assert_eq!(parse_duration(words), Some(Duration::from_secs(secs)));
        }
    }

    #[test]
    fn every_default_is_within_its_bound() {
        let all = [
            ATTRIBUTION_WINDOW_DAYS,
            FUTURE_TOLERANCE_MINUTES,
            MAX_QUEUE_MB,
            BACKOFF_BASE_MS,
            BACKOFF_MAX_SECS,
            THROTTLE_BACKOFF_MAX_SECS,
            CONNECT_TIMEOUT_SECS,
            REQUEST_TIMEOUT_SECS,
            AUTH_RETRY_SECS,
            RECOVERY_PROBE_SECS,
            RECOVERY_JITTER_SECS,
            SENT_RETENTION_DAYS,
            SETTLE_SECS,
            RESCAN_SECS,
            NETWORK_POLL_SECS,
            APPEND_IDLE_SECS,
            ARCHIVE_KEEP_DAYS,
        ];
        for limit in all {
            assert!(limit.default <= limit.max, "{limit:?}");
        }
    }
}
