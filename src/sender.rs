//! Delivery: take the oldest pending events, post them in batches, and act on what TikTok says.
//!
//! [`Sender::step`] does one round and reports what should happen next ([`Step`]); the caller owns
//! the waiting (the daemon's timers, or `flush`'s deadline). Blocking: run it off the async runtime.
//!
//! Invariants: an event leaves `pending` only as `sent` (TikTok said delivered) or `dead` (expired,
//! or refused on its own after its batch was split); token and transient errors never touch event
//! states beyond the attempt count.

use crate::config::{load_token, Config, TokenSource};
use crate::queue::{Disposition, Queue, QueueError, Queued, SendLogEntry};
use crate::tiktok::backoff::{self, Policy};
use crate::tiktok::classify::{classify_reply, Outcome};
use crate::tiktok::client::{Client, ClientConfig, ClientError};
use crate::tiktok::wire;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// Where a dry run puts the request bodies it would have sent.
#[derive(Debug, Clone)]
pub enum DryRun {
    Stdout,
    Dir(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub event_source_id: String,
    pub test_event_code: Option<String>,
    pub batch_size: usize,
    pub window_secs: i64,
    pub backoff: Policy,
    pub auth_retry: Duration,
    pub dry_run: Option<DryRun>,
}

impl Settings {
    pub fn from_config(config: &Config) -> Settings {
        Settings {
            event_source_id: config.event_source_id.clone(),
            test_event_code: config.test_event_code.clone(),
            batch_size: config.sender.batch_size,
            window_secs: config.attribution_window.as_secs() as i64,
            backoff: Policy { base: config.sender.backoff_base, cap: config.sender.backoff_max },
            auth_retry: config.sender.auth_retry,
            dry_run: config.dry_run.then(|| config.dry_run_output.clone().map_or(DryRun::Stdout, DryRun::Dir)),
        }
    }
}

/// What the caller should do after a step.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Nothing is pending.
    Idle,
    /// Some events were sent or dead-lettered; step again at once.
    Progress { sent: usize, dead: usize },
    /// A transient failure: wait `delay`, then step again. `connect_failure` means the server was
    /// not reached at all (so reachability can be probed to cut the wait short).
    Retry { delay: Duration, connect_failure: bool, reason: String },
    /// Token or permission problem: everything stays queued; try again after `retry`.
    Paused { retry: Duration, reason: String },
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("dry run output {path}: {source}")]
    DryRunOutput { path: PathBuf, source: std::io::Error },
}

pub struct Sender {
    queue: Queue,
    client: Client,
    token: Option<TokenSource>,
    settings: Settings,
    failures: u32,
    written: u64,
}

/// The HTTP client's settings from the config.
pub fn client_config(config: &Config) -> ClientConfig {
    ClientConfig {
        api_base: config.api_base.clone(),
        connect_timeout: config.sender.connect_timeout,
        request_timeout: config.sender.request_timeout,
        proxy: config.proxy.clone(),
        ca_bundle: config.ca_bundle.clone(),
    }
}

impl Sender {
    pub fn new(queue: Queue, config: &Config, settings: Settings) -> Result<Sender, SendError> {
        let client = Client::new(&client_config(config))?;
        Ok(Sender { queue, client, token: config.token.clone(), settings, failures: 0, written: 0 })
    }

    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    pub fn endpoint(&self) -> &str {
        self.client.url()
    }

    /// One round: a batch of the oldest pending events, split as TikTok's answers require.
    pub fn step(&mut self, now: i64) -> Result<Step, SendError> {
        let batch = self.queue.pending_batch(self.settings.batch_size)?;
        if batch.is_empty() {
            self.queue.release_memory();
            return Ok(Step::Idle);
        }
        let cutoff = now - self.settings.window_secs;
        let (expired, batch): (Vec<Queued>, Vec<Queued>) = batch.into_iter().partition(|e| e.event_time < cutoff);
        if !expired.is_empty() {
            let ids: Vec<i64> = expired.iter().map(|e| e.id).collect();
            self.queue.mark_dead(&ids, "expired", "older than the attribution window; never sent")?;
            tracing::warn!(
                "{} events older than the attribution window were dead-lettered as expired, not sent",
                ids.len()
            );
            if batch.is_empty() {
                return Ok(Step::Progress { sent: 0, dead: ids.len() });
            }
        }
        let token = match &self.settings.dry_run {
            Some(_) => None,
            None => match load_token(self.token.as_ref()) {
                Ok(t) => Some(t),
                Err(e) => {
                    let reason = format!("access token: {e}");
                    self.queue.set_state("paused", Some(&reason))?;
                    return Ok(Step::Paused { retry: self.settings.auth_retry, reason });
                }
            },
        };
        self.deliver(batch, token.as_ref().map(|t| t.expose()), now)
    }

    fn deliver(&mut self, batch: Vec<Queued>, token: Option<&str>, now: i64) -> Result<Step, SendError> {
        let (mut sent, mut dead) = (0, 0);
        let mut parts = vec![batch];
        while let Some(part) = parts.pop() {
            let ids: Vec<i64> = part.iter().map(|e| e.id).collect();
            let body = wire::batch_body(
                &self.settings.event_source_id,
                self.settings.test_event_code.as_deref(),
                part.iter().map(|e| e.payload.as_str()),
            );
            let mut log = SendLogEntry {
                id: 0,
                at: now,
                events: ids.len() as i64,
                http_status: None,
                code: None,
                class: String::new(),
                message: String::new(),
                request_id: None,
                test_event_code: self.settings.test_event_code.clone(),
            };
            let (Some(token), None) = (token, &self.settings.dry_run) else {
                self.write_dry_run(&body)?;
                log.class = "dry_run".into();
                log.message = "not sent (dry run)".into();
                self.queue.record_attempt(&ids, Disposition::Sent { at: now }, &log, &[])?;
                sent += ids.len();
                continue;
            };
            let (outcome, connect_failure) = match self.client.post(token, &body) {
                Ok(reply) => {
                    log.http_status = Some(i64::from(reply.status));
                    (classify_reply(&reply), false)
                }
                Err(ClientError::Transport { reason, connect, .. }) => {
                    (Outcome::Retry { code: None, reason: format!("transport: {reason}"), retry_after: None }, connect)
                }
                Err(e) => return Err(e.into()),
            };
            match outcome {
                Outcome::Delivered { partial, request_id, message } => {
                    if partial {
                        tracing::warn!("tiktok reported partial success for {} events: {message}", ids.len());
                    }
                    log.code = Some(if partial { 20001 } else { 0 });
                    log.class = if partial { "partial" } else { "delivered" }.into();
                    log.message = message;
                    log.request_id = request_id.clone();
                    let state = [
                        ("last_success_at", Some(now.to_string())),
                        ("last_request_id", request_id),
                        ("paused", None),
                        ("next_retry_at", None),
                        ("consecutive_failures", None),
                    ];
                    self.queue.record_attempt(&ids, Disposition::Sent { at: now }, &log, &state)?;
                    self.failures = 0;
                    sent += ids.len();
                }
                Outcome::Rejected { kind, code, index, message, request_id } => {
                    log.code = Some(code);
                    log.class = format!("rejected_{}", kind.as_str());
                    log.message = message.clone();
                    log.request_id = request_id.clone();
                    if part.len() == 1 {
                        let detail = format!(
                            "tiktok code {code}: {message}{}",
                            request_id.map(|r| format!(" (request {r})")).unwrap_or_default()
                        );
                        tracing::error!("event {} dead-lettered: {detail}", part[0].event_id);
                        self.queue.record_attempt(
                            &ids,
                            Disposition::Dead { reason: kind.as_str(), message: &detail },
                            &log,
                            &[],
                        )?;
                        dead += 1;
                        continue;
                    }
                    self.queue.record_attempt(&ids, Disposition::StillPending, &log, &[])?;
                    let mut part = part;
                    match index.filter(|i| *i < part.len()) {
                        Some(i) => {
                            let suspect = part.remove(i);
                            parts.push(part);
                            parts.push(vec![suspect]);
                        }
                        None => {
                            let second = part.split_off(part.len() / 2);
                            parts.push(second);
                            parts.push(part);
                        }
                    }
                }
                Outcome::Auth { code, message } => {
                    log.code = code;
                    log.class = "auth".into();
                    log.message = message.clone();
                    let reason = format!(
                        "tiktok refused the access token or permission{}: {message}; sending is paused, events stay queued",
                        code.map(|c| format!(" (code {c})")).unwrap_or_default()
                    );
                    let state = [
                        ("paused", Some(reason.clone())),
                        ("last_error", Some(reason.clone())),
                        ("last_error_at", Some(now.to_string())),
                    ];
                    self.queue.record_attempt(&ids, Disposition::StillPending, &log, &state)?;
                    return Ok(Step::Paused { retry: self.settings.auth_retry, reason });
                }
                Outcome::Retry { code, reason, retry_after } => {
                    self.failures = self.failures.saturating_add(1);
                    let delay = backoff::delay(self.settings.backoff, self.failures, retry_after, fastrand::f64());
                    log.code = code;
                    log.class = "retry".into();
                    log.message = reason.clone();
                    let state = [
                        ("last_error", Some(reason.clone())),
                        ("last_error_at", Some(now.to_string())),
                        ("next_retry_at", Some((now + delay.as_secs() as i64).to_string())),
                        ("consecutive_failures", Some(self.failures.to_string())),
                    ];
                    self.queue.record_attempt(&ids, Disposition::StillPending, &log, &state)?;
                    return Ok(Step::Retry { delay, connect_failure, reason });
                }
            }
        }
        Ok(Step::Progress { sent, dead })
    }

    fn write_dry_run(&mut self, body: &str) -> Result<(), SendError> {
        match &self.settings.dry_run {
            Some(DryRun::Dir(dir)) => {
                self.written += 1;
                let path = dir.join(format!("request-{:06}.json", self.written));
                std::fs::create_dir_all(dir)
                    .and_then(|_| std::fs::write(&path, body))
                    .map_err(|source| SendError::DryRunOutput { path, source })
            }
            _ => {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{body}").map_err(|source| SendError::DryRunOutput { path: "stdout".into(), source })
            }
        }
    }
}

/// What a `flush` achieved.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlushReport {
    pub sent: usize,
    pub dead: usize,
    /// Why something is still queued, when it is.
    pub undelivered: Option<String>,
}

/// Send until nothing is pending, retrying transient failures until `timeout` runs out.
pub fn flush(sender: &mut Sender, timeout: Duration) -> Result<FlushReport, SendError> {
    let deadline = std::time::Instant::now() + timeout;
    let mut report = FlushReport::default();
    loop {
        match sender.step(crate::now())? {
            Step::Idle => return Ok(report),
            Step::Progress { sent, dead } => {
                report.sent += sent;
                report.dead += dead;
            }
            Step::Retry { delay, reason, .. } => {
                if std::time::Instant::now() + delay > deadline {
                    report.undelivered = Some(reason);
                    return Ok(report);
                }
                tracing::warn!("delivery failed ({reason}); retrying in {:.1}s", delay.as_secs_f64());
                std::thread::sleep(delay);
            }
            Step::Paused { reason, .. } => {
                report.undelivered = Some(reason);
                return Ok(report);
            }
        }
    }
}

impl Sender {
    /// The queue is full and files wait: drop the JSON of every sent event now and give the pages
    /// back, so ingest can go on.
    pub fn free_space(&self) -> Result<(), SendError> {
        if self.queue.clear_sent_payloads(i64::MAX)? > 0 {
            self.queue.give_back_space()?;
        }
        Ok(())
    }

    /// Housekeeping: dead-letter expired pending events and forget old sent ones. Run now and then,
    /// never on the hot path.
    pub fn maintain(&self, now: i64, sent_retention: Duration) -> Result<(), SendError> {
        let expired = self.queue.expire_older_than(now - self.settings.window_secs)?;
        if expired > 0 {
            tracing::warn!("{expired} pending events passed the attribution window and were dead-lettered as expired");
        }
        // Sent rows are kept beyond the window so that a re-export of an old order is recognised
        // as a duplicate rather than queued again.
        let keep = (sent_retention.as_secs() as i64).max(self.settings.window_secs + 2 * 86_400);
        let pruned = self.queue.prune(now - keep, 10_000)?;
        if pruned > 0 {
            tracing::info!("forgot {pruned} sent events older than {} days", keep / 86_400);
        }
        let cleared = self.queue.clear_sent_payloads(now - 3600)?;
        if cleared > 0 || pruned > 0 {
            self.queue.give_back_space()?;
        }
        self.queue.release_memory();
        Ok(())
    }
}
