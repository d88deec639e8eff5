//! Delivery decisions as pure functions: which events of a batch have expired, and what to do with
//! a part of a batch once its request came back ([`plan`]). The executor ([`super::Sender`]) carries
//! the [`Action`] out against the queue and the client; nothing here does I/O.

use crate::queue::{DeadReason, Queued, SendClass};
use crate::tiktok::classify::{Outcome, RejectKind};
use std::time::Duration;

/// What came back from one attempt at a part of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Nothing was sent: a dry run wrote the body out instead.
    DryRun,
    /// An HTTP answer, classified.
    Answered(Outcome),
    /// No answer at all (connection refused or reset, DNS, TLS, timeout).
    Unanswered { reason: String },
}

/// The send-log line for an attempt (the HTTP status is the executor's to add).
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    pub code: Option<i64>,
    pub class: SendClass,
    pub message: String,
    pub request_id: Option<String>,
}

/// How a refused part is split to find the event(s) TikTok refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// TikTok named the event at this index: send it alone next, the rest after.
    Suspect(usize),
    /// No usable index: send the first half next, the second after.
    Halves,
}

/// What to do with the part's events.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Mark them sent. `confirmed`: TikTok said so (not a dry run), which the agent state records.
    Deliver { confirmed: bool, request_id: Option<String> },
    /// The part is one event TikTok refused: it is dead.
    DeadLetter { reason: DeadReason, message: String },
    /// Keep them pending and send the pieces.
    Split(Split),
    /// A token or permission problem: keep everything queued and pause sending.
    Pause { reason: String },
    /// A transient failure: keep everything queued and retry after a backoff.
    Retry { reason: String, retry_after: Option<Duration> },
}

/// The log line and the action for one attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub log: Logged,
    pub action: Action,
}

/// The reason a single event refused for `kind` is dead-lettered with.
pub fn dead_reason(kind: RejectKind) -> DeadReason {
    match kind {
        RejectKind::Invalid => DeadReason::Invalid,
        RejectKind::TooLarge => DeadReason::TooLarge,
        RejectKind::PiiNotHashed => DeadReason::PiiNotHashed,
    }
}

/// Decide what an attempt at a part of `part_len` events (at least one) comes to.
pub fn plan(reply: Reply, part_len: usize) -> Plan {
    let outcome = match reply {
        Reply::DryRun => {
            let log =
                Logged { code: None, class: SendClass::DryRun, message: "not sent (dry run)".into(), request_id: None };
            return Plan { log, action: Action::Deliver { confirmed: false, request_id: None } };
        }
        Reply::Answered(outcome) => outcome,
        Reply::Unanswered { reason } => {
            Outcome::Retry { code: None, reason: format!("transport: {reason}"), retry_after: None }
        }
    };
    match outcome {
        Outcome::Delivered { partial, request_id, message } => Plan {
            log: Logged {
                code: Some(if partial { 20001 } else { 0 }),
                class: if partial { SendClass::Partial } else { SendClass::Delivered },
                message,
                request_id: request_id.clone(),
            },
            action: Action::Deliver { confirmed: true, request_id },
        },
        Outcome::Rejected { kind, code, index, message, request_id } => {
            let reason = dead_reason(kind);
            let action = if part_len == 1 {
                let message = format!(
                    "tiktok code {code}: {message}{}",
                    request_id.as_ref().map(|r| format!(" (request {r})")).unwrap_or_default()
                );
                Action::DeadLetter { reason, message }
            } else {
                Action::Split(index.filter(|i| *i < part_len).map_or(Split::Halves, Split::Suspect))
            };
            Plan { log: Logged { code: Some(code), class: SendClass::Rejected(reason), message, request_id }, action }
        }
        Outcome::Auth { code, message } => {
            let reason = format!(
                "tiktok refused the access token or permission{}: {message}; sending is paused, events stay queued",
                code.map(|c| format!(" (code {c})")).unwrap_or_default()
            );
            Plan {
                log: Logged { code, class: SendClass::Auth, message, request_id: None },
                action: Action::Pause { reason },
            }
        }
        Outcome::Retry { code, reason, retry_after } => Plan {
            log: Logged { code, class: SendClass::Retry, message: reason.clone(), request_id: None },
            action: Action::Retry { reason, retry_after },
        },
    }
}

/// Split `part` as `how` says: `(later, next)`, where `next` is sent first.
pub fn split<T>(mut part: Vec<T>, how: Split) -> (Vec<T>, Vec<T>) {
    match how {
        Split::Suspect(i) => {
            let suspect = part.remove(i);
            (part, vec![suspect])
        }
        Split::Halves => {
            let second = part.split_off(part.len() / 2);
            (second, part)
        }
    }
}

/// `(expired, sendable)`: events older than the attribution window (`event_time` before
/// `now - window_secs`) are never sent.
pub fn partition_expired(batch: Vec<Queued>, now: i64, window_secs: i64) -> (Vec<Queued>, Vec<Queued>) {
    let cutoff = now - window_secs;
    batch.into_iter().partition(|e| e.event_time < cutoff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivered(partial: bool) -> Reply {
        Reply::Answered(Outcome::Delivered { partial, request_id: Some("r1".into()), message: "OK".into() })
    }

    fn rejected(kind: RejectKind, index: Option<usize>) -> Reply {
        Reply::Answered(Outcome::Rejected {
            kind,
            code: 40002,
            index,
            message: "data.1.event_time: bad".into(),
            request_id: Some("r2".into()),
        })
    }

    fn retry(retry_after: Option<Duration>) -> Reply {
        Reply::Answered(Outcome::Retry { code: Some(50000), reason: "server error: busy".into(), retry_after })
    }

    fn auth(code: Option<i64>) -> Reply {
        Reply::Answered(Outcome::Auth { code, message: "token invalid".into() })
    }

    fn dead(reason: DeadReason, message: &str) -> Action {
        Action::DeadLetter { reason, message: message.into() }
    }

    /// A case: its name, the reply to a part of `usize` events, the class and code logged, the action.
    type Case = (&'static str, Reply, usize, SendClass, Option<i64>, Action);

    #[test]
    fn what_each_reply_comes_to() {
        let r1 = Some("r1".to_string());
        let cases: Vec<Case> = vec![
            (
                "a dry run counts as sent, unconfirmed",
                Reply::DryRun,
                5,
                SendClass::DryRun,
                None,
                Action::Deliver { confirmed: false, request_id: None },
            ),
            (
                "delivered",
                delivered(false),
                5,
                SendClass::Delivered,
                Some(0),
                Action::Deliver { confirmed: true, request_id: r1.clone() },
            ),
            (
                "a partial success is delivered",
                delivered(true),
                5,
                SendClass::Partial,
                Some(20001),
                Action::Deliver { confirmed: true, request_id: r1.clone() },
            ),
            (
                "one event refused alone is dead",
                rejected(RejectKind::Invalid, Some(0)),
                1,
                SendClass::Rejected(DeadReason::Invalid),
                Some(40002),
                dead(DeadReason::Invalid, "tiktok code 40002: data.1.event_time: bad (request r2)"),
            ),
            (
                "one event too large is dead as too_large",
                rejected(RejectKind::TooLarge, None),
                1,
                SendClass::Rejected(DeadReason::TooLarge),
                Some(40002),
                dead(DeadReason::TooLarge, "tiktok code 40002: data.1.event_time: bad (request r2)"),
            ),
            (
                "one event with unhashed pii is dead as pii_not_hashed",
                rejected(RejectKind::PiiNotHashed, None),
                1,
                SendClass::Rejected(DeadReason::PiiNotHashed),
                Some(40002),
                dead(DeadReason::PiiNotHashed, "tiktok code 40002: data.1.event_time: bad (request r2)"),
            ),
            (
                "a refused batch naming an event sends that one alone",
                rejected(RejectKind::Invalid, Some(1)),
                3,
                SendClass::Rejected(DeadReason::Invalid),
                Some(40002),
                Action::Split(Split::Suspect(1)),
            ),
            (
                "an index past the part is no use: halves",
                rejected(RejectKind::Invalid, Some(3)),
                3,
                SendClass::Rejected(DeadReason::Invalid),
                Some(40002),
                Action::Split(Split::Halves),
            ),
            (
                "a refused batch without an index is halved",
                rejected(RejectKind::TooLarge, None),
                4,
                SendClass::Rejected(DeadReason::TooLarge),
                Some(40002),
                Action::Split(Split::Halves),
            ),
            (
                "a token problem pauses",
                auth(Some(40105)),
                5,
                SendClass::Auth,
                Some(40105),
                Action::Pause {
                    reason: "tiktok refused the access token or permission (code 40105): token invalid; sending is paused, events stay queued".into(),
                },
            ),
            (
                "http 401 without a code pauses",
                auth(None),
                1,
                SendClass::Auth,
                None,
                Action::Pause {
                    reason: "tiktok refused the access token or permission: token invalid; sending is paused, events stay queued".into(),
                },
            ),
            (
                "a transient failure retries",
                retry(None),
                5,
                SendClass::Retry,
                Some(50000),
                Action::Retry { reason: "server error: busy".into(), retry_after: None },
            ),
            (
                "a transient failure keeps Retry-After",
                retry(Some(Duration::from_secs(7))),
                1,
                SendClass::Retry,
                Some(50000),
                Action::Retry { reason: "server error: busy".into(), retry_after: Some(Duration::from_secs(7)) },
            ),
            (
                "no answer retries",
                Reply::Unanswered { reason: "connection refused".into() },
                5,
                SendClass::Retry,
                None,
                Action::Retry { reason: "transport: connection refused".into(), retry_after: None },
            ),
        ];
        for (name, reply, part_len, class, code, action) in cases {
            let plan = plan(reply, part_len);
            assert_eq!((plan.log.class, plan.log.code, plan.action), (class, code, action), "{name}");
        }
    }

    #[test]
    fn the_log_line_carries_tiktoks_message_and_request_id() {
        let p = plan(rejected(RejectKind::Invalid, None), 2);
        assert_eq!((p.log.message.as_str(), p.log.request_id.as_deref()), ("data.1.event_time: bad", Some("r2")));
        let p = plan(delivered(false), 2);
        assert_eq!((p.log.message.as_str(), p.log.request_id.as_deref()), ("OK", Some("r1")));
        let p = plan(Reply::DryRun, 2);
        assert_eq!((p.log.message.as_str(), p.log.request_id), ("not sent (dry run)", None));
        let p = plan(retry(None), 2);
        assert_eq!(p.log.message, "server error: busy");
        let p = plan(auth(None), 2);
        assert_eq!(p.log.message, "token invalid");
        let p = plan(
            Reply::Answered(Outcome::Rejected {
                kind: RejectKind::Invalid,
                code: 40000,
                index: None,
                message: "bad".into(),
                request_id: None,
            }),
            1,
        );
        assert_eq!(p.action, dead(DeadReason::Invalid, "tiktok code 40000: bad"), "no request id, none named");
    }

    #[test]
    fn a_suspect_is_sent_alone_first_and_halves_in_order() {
        assert_eq!(split(vec![1, 2, 3, 4], Split::Suspect(2)), (vec![1, 2, 4], vec![3]));
        assert_eq!(split(vec![1, 2, 3, 4], Split::Halves), (vec![3, 4], vec![1, 2]));
        assert_eq!(split(vec![1, 2, 3], Split::Halves), (vec![2, 3], vec![1]));
    }

    #[test]
    fn events_before_the_window_are_expired_and_the_rest_sendable() {
        let event = |id, event_time| Queued {
            id,
            event_id: format!("e{id}"),
            event_time,
            payload: "{}".into(),
            checksum: None,
        };
        let batch = vec![event(1, 99), event(2, 100), event(3, 50), event(4, 500)];
        let (expired, sendable) = partition_expired(batch, 1000, 900);
        assert_eq!(expired.iter().map(|e| e.id).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(sendable.iter().map(|e| e.id).collect::<Vec<_>>(), [2, 4], "at the cutoff is still in the window");
    }
}
