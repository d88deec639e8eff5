//! Event time parsing: every accepted form becomes Unix seconds, UTC.

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("empty")]
    Empty,
    #[error("unix time {0} is neither seconds (10 digits) nor milliseconds (13 digits)")]
    BadEpoch(String),
    #[error("not a time in a known form (RFC 3339, unix seconds, `YYYY-MM-DD HH:MM:SS`{0})")]
    Unrecognised(String),
}

/// Parse an event time.
///
/// Accepted, in order: Unix seconds (10 digits) or milliseconds (13 digits, divided by 1000); an
/// instant with an offset (RFC 3339, `2025-03-14T15:42:10-04:00`, also with a space and `Z`); a
/// local civil time (`2025-03-14 15:42:10`, `2025-03-14T15:42`) in `tz`; then each of the source's
/// `formats` (strftime-style, as jiff reads them) as local time in `tz`, unless the format carries
/// an offset (`%z`). A local time that falls in a DST gap or fold resolves as the "compatible" rule
/// does (the later instant for a gap, the earlier for a fold).
pub fn parse_event_time(raw: &str, tz: &TimeZone, formats: &[String]) -> Result<i64, TimeError> {
    let s = super::trim(raw);
    if s.is_empty() {
        return Err(TimeError::Empty);
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return match s.len() {
            10 => s.parse().map_err(|_| TimeError::BadEpoch(s.to_string())),
            13 => s.parse::<i64>().map(|ms| ms / 1000).map_err(|_| TimeError::BadEpoch(s.to_string())),
            _ => Err(TimeError::BadEpoch(s.to_string())),
        };
    }
    if let Ok(ts) = s.parse::<Timestamp>() {
        return Ok(ts.as_second());
    }
    if let Ok(dt) = s.parse::<DateTime>() {
        return local_to_unix(dt, tz, s);
    }
    const WITH_OFFSET: [&str; 2] = ["%Y-%m-%d %H:%M:%S %z", "%Y-%m-%d %H:%M:%S %:z"];
    for format in WITH_OFFSET {
        if let Ok(ts) = jiff::fmt::strtime::parse(format, s).and_then(|p| p.to_timestamp()) {
            return Ok(ts.as_second());
        }
    }
    for format in formats {
        if let Ok(ts) = jiff::fmt::strtime::parse(format, s).and_then(|p| p.to_timestamp()) {
            return Ok(ts.as_second());
        }
        if let Ok(dt) = DateTime::strptime(format, s) {
            return local_to_unix(dt, tz, s);
        }
    }
    let hint = if formats.is_empty() { String::new() } else { format!(" or {}", formats.join(", ")) };
    Err(TimeError::Unrecognised(hint))
}

fn local_to_unix(dt: DateTime, tz: &TimeZone, raw: &str) -> Result<i64, TimeError> {
    tz.to_ambiguous_zoned(dt)
        .compatible()
        .map(|z| z.timestamp().as_second())
        .map_err(|_| TimeError::Unrecognised(format!(" ({raw} does not exist in the time zone)")))
}

/// Where an event's time stands against the attribution window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Age {
    Fresh,
    /// Older than the attribution window: never sent.
    Expired,
    /// Further in the future than the allowed clock skew: never sent until requeued.
    Future,
}

pub fn age(event_time: i64, now: i64, window_secs: i64, future_skew_secs: i64) -> Age {
    if event_time < now - window_secs {
        Age::Expired
    } else if event_time > now + future_skew_secs {
        Age::Future
    } else {
        Age::Fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ny() -> TimeZone {
        TimeZone::get("America/New_York").unwrap()
    }

    #[test]
    fn accepted_forms() {
        let formats = vec!["%d/%m/%Y %H:%M".to_string(), "%d.%m.%Y, %H:%M".to_string()];
        let manila = TimeZone::get("Asia/Manila").unwrap();
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        let cases: &[(&str, &TimeZone, i64)] = &[
            ("1741981330", &ny(), 1741981330),
            ("1741981330123", &ny(), 1741981330),
            ("2025-03-14T15:42:10-04:00", &ny(), 1741981330),
            ("2025-03-14 15:42:10 -04:00", &ny(), 1741981330),
            ("2025-03-14T19:42:10Z", &ny(), 1741981330),
            ("2025-03-14 15:42:10", &ny(), 1741981330),
            ("2025-03-14T15:42:10", &ny(), 1741981330),
            ("14/03/2025 15:42", &manila, 1741938120),
            ("14.03.2025, 15:42", &berlin, 1741963320),
        ];
        for (input, tz, expected) in cases {
            assert_eq!(parse_event_time(input, tz, &formats), Ok(*expected), "{input}");
        }
    }

    #[test]
    fn day_first_dates_are_never_guessed() {
        let err = parse_event_time("14/03/2025 15:42", &ny(), &["%m/%d/%Y %H:%M".into()]);
        assert!(err.is_err());
    }

    #[test]
    fn rejected_forms() {
        for input in ["", "  ", "12345", "yesterday", "2025-13-40 10:00:00", "174198133012345"] {
            assert!(parse_event_time(input, &ny(), &[]).is_err(), "{input:?}");
        }
    }

    #[test]
    fn dst_gap_and_fold_resolve_compatibly() {
        // 2025-03-09 02:30 does not exist in New York; compatible picks 03:30 EDT (07:30 UTC).
        assert_eq!(parse_event_time("2025-03-09 02:30:00", &ny(), &[]), Ok(1741505400));
        // 2025-11-02 01:30 happens twice; compatible picks the first (EDT).
        assert_eq!(parse_event_time("2025-11-02 01:30:00", &ny(), &[]), Ok(1762061400));
    }

    #[test]
    fn ages() {
        let day = 86_400;
        assert_eq!(age(1000 * day, 1000 * day, 28 * day, 3600), Age::Fresh);
        assert_eq!(age(971 * day, 1000 * day, 28 * day, 3600), Age::Expired);
        assert_eq!(age(972 * day, 1000 * day, 28 * day, 3600), Age::Fresh);
        assert_eq!(age(1000 * day + 3601, 1000 * day, 28 * day, 3600), Age::Future);
    }
}
