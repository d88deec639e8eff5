//! `send-test`: one test Purchase, built like any sale (so it is hashed and shaped the same way),
//! posted with a `test_event_code` outside the queue, and what TikTok made of it.

use super::plan::Reply;
use super::{client_config, SendError};
use crate::config::{load_token, Config, Token};
use crate::event::{self, RawItem, RawOrder, SourceDefaults};
use crate::queue::SendLogEntry;
use crate::tiktok::classify::{classify_reply, Outcome};
use crate::tiktok::client::Client;
use crate::tiktok::wire;

/// A test Purchase ready to post, or only its body in a dry run.
pub enum TestSend {
    DryRun { body: String },
    Ready(TestPurchase),
}

/// A test Purchase with the client and token to post it.
pub struct TestPurchase {
    pub event_id: String,
    pub body: String,
    client: Client,
    token: Token,
}

/// What TikTok answered to a test Purchase.
#[derive(Debug, Clone)]
pub struct SendTestReport {
    pub status: u16,
    pub body: String,
    pub outcome: Outcome,
}

impl SendTestReport {
    pub fn delivered(&self) -> bool {
        matches!(self.outcome, Outcome::Delivered { .. })
    }

    /// One sentence for the operator: what TikTok said (code and message) and what to fix.
    pub fn explain(&self) -> String {
        explain(&self.outcome)
    }

    /// The send-log line for this request, sent `at` with `test_event_code`, as the sender writes
    /// one for each of its requests (so `watch` shows send-test requests too).
    pub fn log_entry(&self, at: i64, test_event_code: &str) -> SendLogEntry {
        let log = super::plan::plan(Reply::Answered(self.outcome.clone()), 1, false).log;
        SendLogEntry {
            id: 0,
            at,
            events: 1,
            http_status: Some(i64::from(self.status)),
            code: log.code,
            class: log.class,
            message: log.message,
            request_id: log.request_id,
            test_event_code: Some(test_event_code.to_string()),
        }
    }
}

/// What a test send's outcome means, as a sentence with TikTok's code and message and the fix.
pub fn explain(outcome: &Outcome) -> String {
    let code = |c: Option<i64>| c.map(|c| format!("code {c}: ")).unwrap_or_default();
    match outcome {
        Outcome::Delivered { partial: false, .. } => {
            "delivered: open Events Manager > your offline event set > Test Events to see it".into()
        }
        Outcome::Delivered { partial: true, message, .. } => format!(
            "delivered with a warning ({}): open Events Manager > your offline event set > Test Events to see it",
            message.trim()
        ),
        Outcome::Auth { code: c, message } => format!(
            "not delivered: TikTok refused the access token or its permission ({}{}); fix: generate a new token \
             for this event set's business account in Events Manager and write it where the config's \
             access token comes from",
            code(*c),
            message.trim()
        ),
        Outcome::Rejected { code: c, message, .. } | Outcome::RequestRefused { code: c, message, .. } => format!(
            "not delivered: TikTok refused the request ({}{}); fix: check event_source_id (the offline event \
             set's 19-digit id in Events Manager) and the test event code",
            code(Some(*c)),
            message.trim()
        ),
        Outcome::Retry { code: c, reason, .. } => format!(
            "not delivered: TikTok did not take it this time ({}{}); fix: check the network or proxy and try \
             again in a minute",
            code(*c),
            reason.trim()
        ),
        Outcome::Unknown { code: c, message, .. } => format!(
            "not delivered: TikTok answered with a code this agent does not know ({}{}); fix: try again in a \
             minute, and check for an update of the agent if it stays",
            code(Some(*c)),
            message.trim()
        ),
    }
}

impl TestSend {
    /// Build the test Purchase at `now` with the first source's currency and shop id; outside a dry
    /// run, load the token and set up the client.
    pub fn prepare(config: &Config, code: &str, now: i64) -> Result<TestSend, SendError> {
        let first = config.sources.first();
        let defaults = SourceDefaults {
            time_zone: jiff::tz::TimeZone::UTC,
            time_formats: vec![],
            currency: first.and_then(|s| s.defaults.currency).or_else(|| event::money::Currency::parse("USD")),
            shop_id: Some(first.and_then(|s| s.defaults.shop_id.clone()).unwrap_or_else(|| "send-test".into())),
            till_id: None,
            decimal_separator: '.',
            phone_region: None,
            event_names: event::name::NameTable::default(),
        };
        let raw = RawOrder {
            line: 1,
            order_id: format!("send-test-{now}"),
            event_time: now.to_string(),
            items: vec![RawItem {
                line: 1,
                content_id: Some("send-test".into()),
                content_name: Some("offline-events-agent test purchase".into()),
                price: Some("1.00".into()),
                quantity: Some("1".into()),
                ..RawItem::default()
            }],
            ..RawOrder::default()
        };
        let (ev, _) = event::build(&raw, &defaults).map_err(SendError::TestEvent)?;
        let body = wire::batch_body(&config.event_source_id, Some(code), [wire::event_json(&ev).as_str()]);
        if config.dry_run {
            return Ok(TestSend::DryRun { body });
        }
        let token = load_token(config.token.as_ref())?;
        let client = Client::new(&client_config(config))?;
        Ok(TestSend::Ready(TestPurchase { event_id: ev.event_id.as_str().to_string(), body, client, token }))
    }
}

impl TestPurchase {
    /// Where it is posted.
    pub fn endpoint(&self) -> &str {
        self.client.url()
    }

    /// Post it once (no retries) and classify the answer.
    pub fn send(&self) -> Result<SendTestReport, SendError> {
        let reply = self.client.post(self.token.expose(), &self.body)?;
        let outcome = classify_reply(&reply);
        Ok(SendTestReport { status: reply.status, body: reply.body, outcome })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tiktok::classify::RejectKind;

    #[test]
    fn every_outcome_is_a_sentence_with_the_code_the_message_and_the_fix() {
        let cases: [(Outcome, &[&str]); 7] = [
            (
                Outcome::Delivered { partial: false, request_id: None, message: "OK".into() },
                &["delivered: open Events Manager"],
            ),
            (
                Outcome::Delivered { partial: true, request_id: None, message: "partial".into() },
                &["delivered with a warning (partial)"],
            ),
            (
                Outcome::Auth { code: Some(40105), message: "Access token is invalid".into() },
                &["not delivered", "code 40105: Access token is invalid", "fix: generate a new token"],
            ),
            (
                Outcome::Rejected {
                    kind: RejectKind::Invalid,
                    code: 40002,
                    index: None,
                    message: "Invalid value for event_source_id".into(),
                    request_id: None,
                },
                &["not delivered", "code 40002: Invalid value for event_source_id", "fix: check event_source_id"],
            ),
            (
                Outcome::RequestRefused {
                    code: 40002,
                    message: "Invalid value for event_source_id: not a valid string.".into(),
                    request_id: None,
                },
                &["not delivered", "code 40002: Invalid value for event_source_id", "fix: check event_source_id"],
            ),
            (
                Outcome::Retry { code: None, reason: "http 503".into(), retry_after: None, throttled: false },
                &["not delivered", "(http 503)", "fix: check the network"],
            ),
            (
                Outcome::Unknown { code: 47777, message: "never seen".into(), request_id: None, retry_after: None },
                &["not delivered", "code 47777: never seen", "fix: try again"],
            ),
        ];
        for (outcome, parts) in cases {
            let text = explain(&outcome);
            for part in parts {
                assert!(text.contains(part), "{outcome:?}: {text}");
            }
            assert!(!text.contains("Outcome") && !text.contains('{'), "{text}");
        }
    }
}
