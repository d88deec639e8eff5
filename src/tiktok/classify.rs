//! What a TikTok response means for the batch that was sent. A pure function of the HTTP status,
//! the `Retry-After` header and the body: the reference's table, as code. A redirect (any 3xx) is
//! never a delivery, whatever its body says: the client does not follow it, and the events are
//! tried again later ([`classify_reply`] names its `Location`).

use super::client::Reply;
use crate::config::redact_url;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Code 0, or 20001 (partial success, logged).
    Delivered { partial: bool, request_id: Option<String>, message: String },
    /// The batch was refused for what is in it; splitting it finds the bad event(s).
    Rejected { kind: RejectKind, code: i64, index: Option<usize>, message: String, request_id: Option<String> },
    /// Token or permission problem: pause sending, keep everything queued.
    Auth { code: Option<i64>, message: String },
    /// Try the same events again later.
    Retry { code: Option<i64>, reason: String, retry_after: Option<Duration> },
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
    }
}

/// Classify one HTTP exchange.
pub fn classify(status: u16, retry_after: Option<&str>, body: &str) -> Outcome {
    if (300..400).contains(&status) {
        return redirect(status, None, retry_after);
    }
    let retry_after = retry_after.and_then(parse_retry_after);
    if status == 408 || status == 429 || status >= 500 {
        return Outcome::Retry { code: None, reason: format!("http {status}"), retry_after };
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
        40000 | 40002 | 40700 => rejected(RejectKind::Invalid),
        40061 => rejected(RejectKind::TooLarge),
        40062 => rejected(RejectKind::PiiNotHashed),
        40001 | 40003 | 40102 | 40104 | 40105 | 40300 | 40301 | 41000 => Outcome::Auth { code: Some(code), message },
        40100 | 40132 | 61000 => {
            Outcome::Retry { code: Some(code), reason: format!("throttled: {message}"), retry_after }
        }
        50000 | 50002 | 60001 | 51000..=52999 => {
            Outcome::Retry { code: Some(code), reason: format!("server error: {message}"), retry_after }
        }
        // An unknown code keeps the events queued: never drop what we do not understand.
        _ => {
            Outcome::Retry { code: Some(code), reason: format!("unknown response code {code}: {message}"), retry_after }
        }
    }
}

/// `data.12.properties...` in a message names the 13th event of the batch.
pub fn event_index(message: &str) -> Option<usize> {
    let start = message.find("data.")? + 5;
    let digits: String = message[start..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
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
        TooLarge,
        Pii,
        Auth,
        Retry,
    }

    fn class(o: Outcome) -> C {
        match o {
            Outcome::Delivered { partial: false, .. } => C::Delivered,
            Outcome::Delivered { partial: true, .. } => C::Partial,
            Outcome::Rejected { kind: RejectKind::Invalid, index, .. } => C::Invalid(index),
            Outcome::Rejected { kind: RejectKind::TooLarge, .. } => C::TooLarge,
            Outcome::Rejected { kind: RejectKind::PiiNotHashed, .. } => C::Pii,
            Outcome::Auth { .. } => C::Auth,
            Outcome::Retry { .. } => C::Retry,
        }
    }

    #[test]
    fn the_reference_table() {
        let cases: Vec<(u16, String, C)> = vec![
            (200, envelope(0, "OK"), C::Delivered),
            (200, envelope(20001, "partial"), C::Partial),
            (200, envelope(40002, "data.3.properties.contents.0.content_id: Not a valid string"), C::Invalid(Some(3))),
            (200, envelope(40000, "Invalid value for event_source"), C::Invalid(None)),
            (200, envelope(40700, "bad"), C::Invalid(None)),
            (200, envelope(40061, "too large"), C::TooLarge),
            (200, envelope(40062, "pii"), C::Pii),
            (200, envelope(40001, "no permission"), C::Auth),
            (200, envelope(40105, "token invalid"), C::Auth),
            (200, envelope(41000, "blocked"), C::Auth),
            (200, envelope(40100, "Too many requests. Please retry in some time."), C::Retry),
            (200, envelope(40132, "throttled"), C::Retry),
            (200, envelope(61000, "throttled"), C::Retry),
            (200, envelope(50000, "server"), C::Retry),
            (200, envelope(51234, "server"), C::Retry),
            (200, envelope(60001, "maintenance"), C::Retry),
            (200, envelope(47777, "never seen"), C::Retry),
            (502, "<html>Bad Gateway</html>".into(), C::Retry),
            (503, envelope(0, "OK"), C::Retry),
            (429, String::new(), C::Retry),
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
        assert_eq!(event_index("data.12.user.email: bad"), Some(12));
        assert_eq!(event_index("data.x"), None);
        assert_eq!(event_index("event_source"), None);
    }
}
