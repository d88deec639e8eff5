//! What a TikTok response means for the batch that was sent. A pure function of the HTTP status,
//! the `Retry-After` header and the body: the reference's table, as code. A redirect (any 3xx) is
//! never a delivery, whatever its body says: the client does not follow it, and the events are
//! tried again later ([`classify_reply`] names its `Location`). A refusal for invalid content that
//! names no event (`data.<n>...`) is about the request itself ([`Outcome::RequestRefused`]), and a
//! code the table does not know is [`Outcome::Unknown`], for the sender to isolate.

use super::client::Reply;
use crate::config::redact_url;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Code 0, or 20001 (partial success, logged).
    Delivered { partial: bool, request_id: Option<String>, message: String },
    /// The batch was refused for what is in it; splitting it finds the bad event(s).
    Rejected { kind: RejectKind, code: i64, index: Option<usize>, message: String, request_id: Option<String> },
    /// Invalid parameters, but the message names no event (e.g. a wrong `event_source_id`): the
    /// request is wrong, not its events. Pause sending, keep everything queued.
    RequestRefused { code: i64, message: String, request_id: Option<String> },
    /// Token or permission problem: pause sending, keep everything queued.
    Auth { code: Option<i64>, message: String },
    /// Try the same events again later. `throttled`: TikTok asked us to slow down (HTTP 429 or a
    /// throttling code), which waits on a longer backoff cap than server and network errors.
    Retry { code: Option<i64>, reason: String, retry_after: Option<Duration>, throttled: bool },
    /// A code the reference does not list: retried a few times, then isolated by splitting.
    Unknown { code: i64, message: String, request_id: Option<String>, retry_after: Option<Duration> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectKind {
    Invalid,
    TooLarge,
    PiiNotHashed,
}

impl RejectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectKind::Invalid => "invalid",
            RejectKind::TooLarge => "too_large",
            RejectKind::PiiNotHashed => "pii_not_hashed",
        }
    }
}

#[derive(serde::Deserialize)]
struct Envelope {
    code: i64,
    #[serde(default)]
    message: String,
    #[serde(default)]
    request_id: Option<String>,
}

/// Classify one reply of the client: [`classify`], with a redirect's `Location` in the reason.
pub fn classify_reply(reply: &Reply) -> Outcome {
    if (300..400).contains(&reply.status) {
        return redirect(reply.status, reply.location.as_deref(), reply.retry_after.as_deref());
    }
    classify(reply.status, reply.retry_after.as_deref(), &reply.body)
}

/// A 3xx: retried, loudly, naming where it pointed (redacted); never followed, never a delivery.
fn redirect(status: u16, location: Option<&str>, retry_after: Option<&str>) -> Outcome {
    let target = location.map_or("an unnamed location (no Location header)".to_string(), redact_url);
    Outcome::Retry {
        code: None,
        reason: format!(
            "redirect (http {status}) to {target}; not followed: the access token is only sent to api_base (check api_base)"
        ),
        retry_after: retry_after.and_then(parse_retry_after),
        throttled: false,
    }
}

/// Classify one HTTP exchange.
pub fn classify(status: u16, retry_after: Option<&str>, body: &str) -> Outcome {
    if (300..400).contains(&status) {
        return redirect(status, None, retry_after);
    }
    let retry_after = retry_after.and_then(parse_retry_after);
    if status == 408 || status == 429 || status >= 500 {
        return Outcome::Retry { code: None, reason: format!("http {status}"), retry_after, throttled: status == 429 };
    }
    let Ok(envelope) = serde_json::from_str::<Envelope>(body) else {
        return match status {
            401 | 403 => Outcome::Auth { code: None, message: format!("http {status}") },
            413 => Outcome::Rejected {
                kind: RejectKind::TooLarge,
                code: 0,
                index: None,
                message: "http 413".into(),
                request_id: None,
            },
            _ => Outcome::Retry {
                code: None,
                reason: format!("http {status} with a body that is not a TikTok response"),
                retry_after,
                throttled: false,
            },
        };
    };
    let Envelope { code, message, request_id } = envelope;
    let rejected = |kind| Outcome::Rejected {
        kind,
        code,
        index: event_index(&message),
        message: message.clone(),
        request_id: request_id.clone(),
    };
    match code {
        0 => Outcome::Delivered { partial: false, request_id, message },
        20001 => Outcome::Delivered { partial: true, request_id, message },
        40000 | 40002 | 40700 if event_index(&message).is_none() => {
            Outcome::RequestRefused { code, message, request_id }
        }
        40000 | 40002 | 40700 => rejected(RejectKind::Invalid),
        40061 => rejected(RejectKind::TooLarge),
        40062 => rejected(RejectKind::PiiNotHashed),
        40001 | 40003 | 40102 | 40104 | 40105 | 40300 | 40301 | 41000 => Outcome::Auth { code: Some(code), message },
        40100 | 40132 | 61000 => {
            Outcome::Retry { code: Some(code), reason: format!("throttled: {message}"), retry_after, throttled: true }
        }
        50000 | 50002 | 60001 | 51000..=52999 => Outcome::Retry {
            code: Some(code),
            reason: format!("server error: {message}"),
            retry_after,
            throttled: false,
        },
        // An unknown code keeps the events queued: never drop what we do not understand.
        _ => Outcome::Unknown { code, message, request_id, retry_after },
    }
}

/// `data.12.properties...` in a message names the 13th event of the batch. Matched
/// case-insensitively, with spaces allowed around the dot (`data. 1 .event_id` has been seen) and
/// `data[12]` read the same; `metadata.1` names nothing.
pub fn event_index(message: &str) -> Option<usize> {
    let lower = message.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    let mut from = 0;
    while let Some(found) = lower[from..].find("data") {
        let at = from + found;
        from = at + 4;
        if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
            continue;
        }
        let rest = lower[from..].trim_start();
        let Some(rest) = rest.strip_prefix('.').or_else(|| rest.strip_prefix('[')) else { continue };
        let digits: String = rest.trim_start().chars().take_while(char::is_ascii_digit).collect();
        if let Ok(index) = digits.parse() {
            return Some(index);
        }
    }
    None
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    let secs = (when - jiff::Timestamp::now()).get_seconds().max(0);
    Some(Duration::from_secs(secs as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(code: i64, message: &str) -> String {
        format!(r#"{{"code":{code},"message":"{message}","request_id":"r1","data":{{}}}}"#)
    }

    #[derive(Debug, PartialEq)]
    enum C {
        Delivered,
        Partial,
        Invalid(Option<usize>),
        Request,
        TooLarge,
        Pii,
        Auth,
        Retry,
        Throttled,
        Unknown,
    }

    fn class(o: Outcome) -> C {
        match o {
            Outcome::Delivered { partial: false, .. } => C::Delivered,
            Outcome::Delivered { partial: true, .. } => C::Partial,
            Outcome::Rejected { kind: RejectKind::Invalid, index, .. } => C::Invalid(index),
            Outcome::Rejected { kind: RejectKind::TooLarge, .. } => C::TooLarge,
            Outcome::Rejected { kind: RejectKind::PiiNotHashed, .. } => C::Pii,
            Outcome::RequestRefused { .. } => C::Request,
            Outcome::Auth { .. } => C::Auth,
            Outcome::Retry { throttled: false, .. } => C::Retry,
            Outcome::Retry { throttled: true, .. } => C::Throttled,
            Outcome::Unknown { .. } => C::Unknown,
        }
    }

    #[test]
    fn the_reference_table() {
        let cases: Vec<(u16, String, C)> = vec![
            (200, envelope(0, "OK"), C::Delivered),
            (200, envelope(20001, "partial"), C::Partial),
            (200, envelope(40002, "data.3.properties.contents.0.content_id: Not a valid string"), C::Invalid(Some(3))),
            (200, envelope(40002, "Data. 4 .event_id: Not a valid string"), C::Invalid(Some(4))),
            (200, envelope(40000, "Invalid value for event_source"), C::Request),
            (200, envelope(40002, "Invalid value for event_source_id: not a valid string."), C::Request),
            (200, envelope(40700, "bad"), C::Request),
            (200, envelope(40002, "data: must not be empty"), C::Request),
            (200, envelope(40061, "too large"), C::TooLarge),
            (200, envelope(40062, "pii"), C::Pii),
            (200, envelope(40001, "no permission"), C::Auth),
            (200, envelope(40105, "token invalid"), C::Auth),
            (200, envelope(41000, "blocked"), C::Auth),
            (200, envelope(40100, "Too many requests. Please retry in some time."), C::Throttled),
            (200, envelope(40132, "throttled"), C::Throttled),
            (200, envelope(61000, "throttled"), C::Throttled),
            (200, envelope(50000, "server"), C::Retry),
            (200, envelope(51234, "server"), C::Retry),
            (200, envelope(60001, "maintenance"), C::Retry),
            (200, envelope(47777, "never seen"), C::Unknown),
            (200, envelope(40099, "data.3.event: new rule"), C::Unknown),
            (502, "<html>Bad Gateway</html>".into(), C::Retry),
            (503, envelope(0, "OK"), C::Retry),
            (429, String::new(), C::Throttled),
            (429, envelope(40100, "slow down"), C::Throttled),
            (408, String::new(), C::Retry),
            (200, "<html>captive portal</html>".into(), C::Retry),
            (401, "nope".into(), C::Auth),
            (403, "nope".into(), C::Auth),
            (413, "too big".into(), C::TooLarge),
            (404, "not found".into(), C::Retry),
            (400, envelope(40002, "data.0.event_time: bad"), C::Invalid(Some(0))),
            (301, envelope(0, "OK"), C::Retry),
            (302, envelope(0, "OK"), C::Retry),
            (304, String::new(), C::Retry),
            (307, envelope(40105, "token invalid"), C::Retry),
            (308, "<html>moved</html>".into(), C::Retry),
        ];
        for (status, body, expected) in cases {
            assert_eq!(class(classify(status, None, &body)), expected, "{status} {body}");
        }
    }

    #[test]
    fn a_redirect_is_retried_naming_its_location() {
        let reply = |status, location: Option<&str>| Reply {
            status,
            retry_after: None,
            location: location.map(str::to_string),
            date: None,
            body: envelope(0, "OK"),
        };
        let cases = [
            (301, Some("http://127.0.0.1:9/x"), "redirect (http 301) to http://127.0.0.1:9/x; not followed"),
            (308, Some("https://u:pw@evil.example/?t=1"), "redirect (http 308) to https://***@evil.example/?***; not"),
            (302, None, "redirect (http 302) to an unnamed location (no Location header); not followed"),
        ];
        for (status, location, reason) in cases {
            match classify_reply(&reply(status, location)) {
                Outcome::Retry { reason: r, .. } => assert!(r.starts_with(reason), "{r}"),
                other => panic!("{status}: {other:?}"),
            }
        }
        assert!(matches!(classify_reply(&reply(200, None)), Outcome::Delivered { .. }));
    }

    #[test]
    fn retry_after_is_read() {
        let o = classify(429, Some("7"), "");
        assert!(matches!(o, Outcome::Retry { retry_after: Some(d), .. } if d == Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn event_index_from_message() {
        let cases = [
            ("data.12.user.email: bad", Some(12)),
            ("DATA.3.event_time: bad", Some(3)),
            ("data. 1 .event_id: bad", Some(1)),
            ("Field data . 7 is bad", Some(7)),
            ("data[5].event: bad", Some(5)),
            ("metadata.2: bad", None),
            ("data.x, then data.9.event", Some(9)),
            ("data.x", None),
            ("data: empty", None),
            ("event_source", None),
            ("Invalid value for event_source_id: not a valid string.", None),
        ];
        for (message, index) in cases {
            assert_eq!(event_index(message), index, "{message}");
        }
    }
}
