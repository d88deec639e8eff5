//! Delivery decisions as pure functions: which events of a batch have expired, what to do with a
//! part of a batch once its request came back ([`plan`]), when an unknown answer has repeated enough
//! to isolate its event ([`UnknownStreak`]), and whether a round's refusals are systemic rather
//! than bad events ([`systemic`]). The executor ([`super::Sender`]) carries the [`Action`] out
//! against the queue and the client; nothing here does I/O.

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
    /// A token or permission problem, or a request TikTok refuses whatever is in it: keep
    /// everything queued and pause sending now.
    Pause { reason: String },
    /// One event answered with an unknown code even alone: keep it queued, send the rest of the
    /// round, then pause sending with `reason`.
    Hold { reason: String },
    /// A transient failure: keep everything queued and retry after a backoff (the longer
    /// throttling cap when `throttled`).
    Retry { reason: String, retry_after: Option<Duration>, throttled: bool },
}

/// Identical unknown answers (same code, same message) in a row before the batch is split to
/// isolate the event behind them: a code we do not know is retried a few times, never forever.
pub const ISOLATE_UNKNOWN_AFTER: u32 = 3;

/// How many times in a row the same unknown answer came back. Only the first request of a round
/// (the whole batch) resets it with another answer, so a paused isolation resumes splitting at
/// once on its next round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnknownStreak {
    last: Option<(i64, String)>,
    count: u32,
}

impl UnknownStreak {
    /// Count one unknown answer; whether its event(s) should now be isolated.
    pub fn observe(&mut self, code: i64, message: &str) -> bool {
        if self.last.as_ref().is_some_and(|(c, m)| *c == code && m == message) {
            self.count = self.count.saturating_add(1);
        } else {
            self.last = Some((code, message.to_string()));
            self.count = 1;
        }
        self.count >= ISOLATE_UNKNOWN_AFTER
    }

    /// Another answer to a whole batch: the streak is over.
    pub fn reset(&mut self) {
        *self = UnknownStreak::default();
    }
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

/// Decide what an attempt at a part of `part_len` events (at least one) comes to. `isolate`: an
/// unknown answer has repeated [`ISOLATE_UNKNOWN_AFTER`] times (or this round is isolating
/// already), so the part is split, and a single event answered so pauses sending.
pub fn plan(reply: Reply, part_len: usize, isolate: bool) -> Plan {
    let outcome = match reply {
        Reply::DryRun => {
            let log =
                Logged { code: None, class: SendClass::DryRun, message: "not sent (dry run)".into(), request_id: None };
            return Plan { log, action: Action::Deliver { confirmed: false, request_id: None } };
        }
        Reply::Answered(outcome) => outcome,
        Reply::Unanswered { reason } => {
            Outcome::Retry { code: None, reason: format!("transport: {reason}"), retry_after: None, throttled: false }
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
        Outcome::RequestRefused { code, message, request_id } => {
            let reason = format!(
                "tiktok refused the request, not an event (code {code}): {message}; check event_source_id (the 19-digit id of an offline event set this token may use); sending is paused, events stay queued"
            );
            Plan {
                log: Logged { code: Some(code), class: SendClass::Rejected(DeadReason::Invalid), message, request_id },
                action: Action::Pause { reason },
            }
        }
        Outcome::Retry { code, reason, retry_after, throttled } => Plan {
            log: Logged { code, class: SendClass::Retry, message: reason.clone(), request_id: None },
            action: Action::Retry { reason, retry_after, throttled },
        },
        Outcome::Unknown { code, message, request_id, retry_after } => {
            let action = match (isolate, part_len) {
                (false, _) => Action::Retry {
                    reason: format!("unknown response code {code}: {message}"),
                    retry_after,
                    throttled: false,
                },
                (true, 1) => Action::Hold {
                    reason: format!(
                        "tiktok keeps answering code {code}, which this agent does not know, for one event alone: {message}; sending is paused, events stay queued (update the agent, or dead-letter that event)"
                    ),
                },
                (true, _) => Action::Split(Split::Halves),
            };
            Plan { log: Logged { code: Some(code), class: SendClass::Retry, message, request_id }, action }
        }
    }
}

/// Whether a round's refusals are systemic: a batch of two or more events, none delivered, and
/// every event refused alone with the same code and message. That is not N bad events but a
/// problem with the request or the account: the reason to pause with, and nothing dead-lettered.
/// `refused` holds `(code, tiktok's message)` of each event refused alone.
pub fn systemic(batch_len: usize, delivered: usize, refused: &[(i64, &str)]) -> Option<String> {
    let (first, rest) = refused.split_first()?;
    if batch_len < 2 || delivered > 0 || refused.len() != batch_len || rest.iter().any(|r| r != first) {
        return None;
    }
    let (code, message) = first;
    Some(format!(
        "tiktok refused every one of the {batch_len} events of a batch, each alone, with the same answer (code {code}): {message}; that is a problem with the request or the account, not {batch_len} bad events: sending is paused, events stay queued"
    ))
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

/// Take the events older than the attribution window (`event_time` before `now - window_secs`),
/// which are never sent, out of `events`; the sendable ones stay, in their order.
pub fn take_expired(events: &mut Vec<Queued>, now: i64, window_secs: i64) -> Vec<Queued> {
    let cutoff = now - window_secs;
    take_where(events, |e| e.event_time < cutoff)
}

/// Move the items `pick` picks out of `items`, in order; the others stay, in order, and `items`
/// keeps its room. Picking none (a batch's usual case) moves nothing and allocates nothing.
/// `Vec::extract_if` does this from Rust 1.87; the crate's `rust-version` is 1.85.
pub fn take_where<T>(items: &mut Vec<T>, pick: impl Fn(&T) -> bool) -> Vec<T> {
    let Some(first) = items.iter().position(&pick) else {
        return Vec::new();
    };
    let mut picked = Vec::new();
    for item in items.split_off(first) {
        if pick(&item) {
            picked.push(item);
        } else {
            items.push(item);
        }
    }
    picked
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
        Reply::Answered(Outcome::Retry {
            code: Some(50000),
            reason: "server error: busy".into(),
            retry_after,
            throttled: false,
        })
    }

    fn throttled() -> Reply {
        Reply::Answered(Outcome::Retry {
            code: Some(40100),
            reason: "throttled: slow down".into(),
            retry_after: None,
            throttled: true,
        })
    }

    fn request_refused() -> Reply {
        Reply::Answered(Outcome::RequestRefused {
            code: 40002,
            message: "Invalid value for event_source_id: not a valid string.".into(),
            request_id: Some("r3".into()),
        })
    }

    fn unknown() -> Reply {
        Reply::Answered(Outcome::Unknown {
            code: 47777,
            message: "never seen".into(),
            request_id: None,
            retry_after: None,
        })
    }

    fn auth(code: Option<i64>) -> Reply {
        Reply::Answered(Outcome::Auth { code, message: "token invalid".into() })
    }

    fn dead(reason: DeadReason, message: &str) -> Action {
        Action::DeadLetter { reason, message: message.into() }
    }

    /// A case: its name, the reply to a part of `usize` events, whether unknown answers are being
    /// isolated, the class and code logged, the action.
    type Case = (&'static str, Reply, usize, bool, SendClass, Option<i64>, Action);

    #[test]
    fn what_each_reply_comes_to() {
        let r1 = Some("r1".to_string());
        let cases: Vec<Case> = vec![
            (
                "a dry run counts as sent, unconfirmed",
                Reply::DryRun,
                5,
                false,
                SendClass::DryRun,
                None,
                Action::Deliver { confirmed: false, request_id: None },
            ),
            (
                "delivered",
                delivered(false),
                5,
                false,
                SendClass::Delivered,
                Some(0),
                Action::Deliver { confirmed: true, request_id: r1.clone() },
            ),
            (
                "a partial success is delivered",
                delivered(true),
                5,
                false,
                SendClass::Partial,
                Some(20001),
                Action::Deliver { confirmed: true, request_id: r1.clone() },
            ),
            (
                "one event refused alone is dead",
                rejected(RejectKind::Invalid, Some(0)),
                1,
                false,
                SendClass::Rejected(DeadReason::Invalid),
                Some(40002),
                dead(DeadReason::Invalid, "tiktok code 40002: data.1.event_time: bad (request r2)"),
            ),
            (
                "one event too large is dead as too_large",
                rejected(RejectKind::TooLarge, None),
                1,
                false,
                SendClass::Rejected(DeadReason::TooLarge),
                Some(40002),
                dead(DeadReason::TooLarge, "tiktok code 40002: data.1.event_time: bad (request r2)"),
            ),
            (
                "one event with unhashed pii is dead as pii_not_hashed",
                rejected(RejectKind::PiiNotHashed, None),
                1,
                false,
                SendClass::Rejected(DeadReason::PiiNotHashed),
                Some(40002),
                dead(DeadReason::PiiNotHashed, "tiktok code 40002: data.1.event_time: bad (request r2)"),
            ),
            (
                "a refused batch naming an event sends that one alone",
                rejected(RejectKind::Invalid, Some(1)),
                3,
                false,
                SendClass::Rejected(DeadReason::Invalid),
                Some(40002),
                Action::Split(Split::Suspect(1)),
            ),
            (
                "an index past the part is no use: halves",
                rejected(RejectKind::Invalid, Some(3)),
                3,
                false,
                SendClass::Rejected(DeadReason::Invalid),
                Some(40002),
                Action::Split(Split::Halves),
            ),
            (
                "a refused batch without an index is halved",
                rejected(RejectKind::TooLarge, None),
                4,
                false,
                SendClass::Rejected(DeadReason::TooLarge),
                Some(40002),
                Action::Split(Split::Halves),
            ),
            (
                "a token problem pauses",
                auth(Some(40105)),
                5,
                false,
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
                false,
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
                false,
                SendClass::Retry,
                Some(50000),
                Action::Retry { reason: "server error: busy".into(), retry_after: None, throttled: false },
            ),
            (
                "a transient failure keeps Retry-After",
                retry(Some(Duration::from_secs(7))),
                1,
                false,
                SendClass::Retry,
                Some(50000),
                Action::Retry {
                    reason: "server error: busy".into(),
                    retry_after: Some(Duration::from_secs(7)),
                    throttled: false,
                },
            ),
            (
                "no answer retries",
                Reply::Unanswered { reason: "connection refused".into() },
                5,
                false,
                SendClass::Retry,
                None,
                Action::Retry { reason: "transport: connection refused".into(), retry_after: None, throttled: false },
            ),
            (
                "throttling retries on the throttling cap",
                throttled(),
                5,
                false,
                SendClass::Retry,
                Some(40100),
                Action::Retry { reason: "throttled: slow down".into(), retry_after: None, throttled: true },
            ),
            (
                "a refusal naming no event pauses: the request is wrong, not the events",
                request_refused(),
                1000,
                false,
                SendClass::Rejected(DeadReason::Invalid),
                Some(40002),
                Action::Pause {
                    reason: "tiktok refused the request, not an event (code 40002): Invalid value for event_source_id: not a valid string.; check event_source_id (the 19-digit id of an offline event set this token may use); sending is paused, events stay queued".into(),
                },
            ),
            (
                "a refusal naming no event pauses for a single event too, never dead-letters",
                request_refused(),
                1,
                false,
                SendClass::Rejected(DeadReason::Invalid),
                Some(40002),
                Action::Pause {
                    reason: "tiktok refused the request, not an event (code 40002): Invalid value for event_source_id: not a valid string.; check event_source_id (the 19-digit id of an offline event set this token may use); sending is paused, events stay queued".into(),
                },
            ),
            (
                "an unknown code is retried at first",
                unknown(),
                5,
                false,
                SendClass::Retry,
                Some(47777),
                Action::Retry { reason: "unknown response code 47777: never seen".into(), retry_after: None, throttled: false },
            ),
            (
                "an unknown code that repeated is isolated by halves",
                unknown(),
                5,
                true,
                SendClass::Retry,
                Some(47777),
                Action::Split(Split::Halves),
            ),
            (
                "an unknown code for one event alone holds it and pauses after the round, nothing dead-lettered",
                unknown(),
                1,
                true,
                SendClass::Retry,
                Some(47777),
                Action::Hold {
                    reason: "tiktok keeps answering code 47777, which this agent does not know, for one event alone: never seen; sending is paused, events stay queued (update the agent, or dead-letter that event)".into(),
                },
            ),
            (
                "isolating changes nothing for a known answer",
                rejected(RejectKind::Invalid, Some(1)),
                3,
                true,
                SendClass::Rejected(DeadReason::Invalid),
                Some(40002),
                Action::Split(Split::Suspect(1)),
            ),
        ];
        for (name, reply, part_len, isolate, class, code, action) in cases {
            let plan = plan(reply, part_len, isolate);
            assert_eq!((plan.log.class, plan.log.code, plan.action), (class, code, action), "{name}");
        }
    }

    #[test]
    fn the_log_line_carries_tiktoks_message_and_request_id() {
        let p = plan(rejected(RejectKind::Invalid, None), 2, false);
        assert_eq!((p.log.message.as_str(), p.log.request_id.as_deref()), ("data.1.event_time: bad", Some("r2")));
        let p = plan(delivered(false), 2, false);
        assert_eq!((p.log.message.as_str(), p.log.request_id.as_deref()), ("OK", Some("r1")));
        let p = plan(Reply::DryRun, 2, false);
        assert_eq!((p.log.message.as_str(), p.log.request_id), ("not sent (dry run)", None));
        let p = plan(retry(None), 2, false);
        assert_eq!(p.log.message, "server error: busy");
        let p = plan(auth(None), 2, false);
        assert_eq!(p.log.message, "token invalid");
        let p = plan(
            Reply::Answered(Outcome::Rejected {
                kind: RejectKind::Invalid,
                code: 40000,
                index: Some(0),
                message: "data.0.event: bad".into(),
                request_id: None,
            }),
            1,
            false,
        );
        assert_eq!(p.action, dead(DeadReason::Invalid, "tiktok code 40000: data.0.event: bad"), "no request id");
    }

    /// A code and TikTok's message.
    type Answer = (i64, &'static str);

    #[test]
    fn an_unknown_answer_is_isolated_after_a_few_identical_ones() {
        let mut streak = UnknownStreak::default();
        let seen: Vec<bool> =
            [(1, "a"), (1, "a"), (1, "a"), (1, "a")].iter().map(|(c, m)| streak.observe(*c, m)).collect();
        assert_eq!(seen, [false, false, true, true], "isolated from the {ISOLATE_UNKNOWN_AFTER}rd on");
        let cases: [(&str, &[Answer], bool); 4] = [
            ("another message starts over", &[(1, "a"), (1, "a"), (1, "b")], false),
            ("another code starts over", &[(1, "a"), (1, "a"), (2, "a")], false),
            ("three identical", &[(2, "x"), (2, "x"), (2, "x")], true),
            ("a change, then three identical", &[(1, "a"), (2, "x"), (2, "x"), (2, "x")], true),
        ];
        for (name, answers, isolate) in cases {
            let mut streak = UnknownStreak::default();
            let last = answers.iter().map(|(c, m)| streak.observe(*c, m)).last().unwrap();
            assert_eq!(last, isolate, "{name}");
        }
        streak.reset();
        assert!(!streak.observe(1, "a"), "a reset starts over");
    }

    #[test]
    fn only_a_whole_batch_refused_alike_is_systemic() {
        let bad = (40002, "data.0.properties.contents.0.content_id: Not a valid string");
        let other = (40002, "data.0.event_time: bad");
        let cases: [(&str, usize, usize, Vec<Answer>, bool); 7] = [
            ("every event alike", 3, 0, vec![bad, bad, bad], true),
            ("two events alike", 2, 0, vec![bad, bad], true),
            ("one event is just one bad event", 1, 0, vec![bad], false),
            ("some delivered", 4, 1, vec![bad, bad, bad], false),
            ("not every event refused (round cut short)", 4, 0, vec![bad, bad], false),
            ("different messages single out events", 3, 0, vec![bad, other, bad], false),
            ("nothing refused", 3, 3, vec![], false),
        ];
        for (name, batch_len, delivered, refused, expected) in cases {
            assert_eq!(systemic(batch_len, delivered, &refused).is_some(), expected, "{name}");
        }
        let reason = systemic(2, 0, &[bad, bad]).unwrap();
        assert!(reason.starts_with("tiktok refused every one of the 2 events of a batch"), "{reason}");
        assert!(
            reason.contains("(code 40002): data.0.properties") && reason.ends_with("events stay queued"),
            "{reason}"
        );
    }

    #[test]
    fn a_suspect_is_sent_alone_first_and_halves_in_order() {
        assert_eq!(split(vec![1, 2, 3, 4], Split::Suspect(2)), (vec![1, 2, 4], vec![3]));
        assert_eq!(split(vec![1, 2, 3, 4], Split::Halves), (vec![3, 4], vec![1, 2]));
        assert_eq!(split(vec![1, 2, 3], Split::Halves), (vec![2, 3], vec![1]));
    }

    #[test]
    fn picked_items_are_moved_out_in_order_and_the_rest_stay_in_order() {
        let cases: [(&[i32], &[i32], &[i32]); 4] = [
            (&[], &[], &[]),
            (&[1, 3, 5], &[], &[1, 3, 5]),
            (&[2, 1, 4, 3, 6], &[2, 4, 6], &[1, 3]),
            (&[2, 4], &[2, 4], &[]),
        ];
        for (given, picked, kept) in cases {
            let mut items = Vec::with_capacity(8);
            items.extend_from_slice(given);
            assert_eq!(take_where(&mut items, |i| i % 2 == 0), picked, "{given:?}");
            assert_eq!(items, kept, "{given:?}");
            assert_eq!(items.capacity(), 8, "{given:?}: the room is kept");
        }
    }

    #[test]
    fn events_before_the_window_are_expired_and_the_rest_sendable() {
        let event = |id, event_time| Queued { id, event_id: 0..0, event_time, payload: 0..0, intact: true };
        let mut sendable = vec![event(1, 99), event(2, 100), event(3, 50), event(4, 500)];
        let expired = take_expired(&mut sendable, 1000, 900);
        assert_eq!(expired.iter().map(|e| e.id).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(sendable.iter().map(|e| e.id).collect::<Vec<_>>(), [2, 4], "at the cutoff is still in the window");
    }
}
