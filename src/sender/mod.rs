//! Delivery: take the oldest pending events, post them in batches, and act on what TikTok says.
//!
//! [`Sender::step`] does one round and reports what should happen next ([`Step`]); the caller owns
//! the waiting (the daemon's timers, or `flush`'s deadline). Blocking: run it off the async runtime.
//!
//! The decisions are pure functions in [`plan`] (what an answer means for the part that was sent,
//! which events have expired); this module only carries them out against the queue and the client.
//! `send-test` posts one test Purchase outside the queue ([`send_test`]).
//!
//! Invariants: an event leaves `pending` only as `sent` (TikTok said delivered) or `dead` (expired,
//! or refused on its own after its batch was split, when the refusals single out some events of
//! the batch: a whole batch refused alike pauses instead, [`plan::systemic`]); token, request-level
//! and transient errors never touch event states beyond the attempt count. Nothing expires on a clock TikTok's has not confirmed
//! ([`clock`]): older-looking events are held, the rest sent.

pub mod clock;
pub mod plan;
mod records;
pub mod send_test;
pub mod token_watch;

pub use send_test::{SendTestReport, TestPurchase, TestSend};

use crate::config::{load_token, Config, TokenError, TokenSource};
use crate::event::BuildError;
use crate::queue::{Batch, DeadReason, Delivered, Disposition, Queue, QueueError, SendClass, SendLogEntry};
use crate::tiktok::backoff::{self, Policies, Policy};
use crate::tiktok::classify::{classify_reply, Outcome};
use crate::tiktok::client::{Client, ClientConfig, ClientError};
use crate::tiktok::wire;
use clock::{ClockJudge, Verdict};
use plan::{plan, Action, Plan, Reply, UnknownStreak};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

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
    /// Backoff after server and network errors, and after throttling (a longer cap).
    pub backoff: Policies,
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
            backoff: Policies {
                errors: Policy { base: config.sender.backoff_base, cap: config.sender.backoff_max },
                throttled: Policy { base: config.sender.backoff_base, cap: config.sender.throttle_backoff_max },
            },
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
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("building the test event")]
    TestEvent(#[source] BuildError),
}

pub struct Sender {
    queue: Queue,
    client: Client,
    token: Option<TokenSource>,
    settings: Settings,
    /// The failures of each kind since the last delivery, the next backoff is computed from.
    streak: backoff::Streak,
    written: u64,
    /// Whether the wall clock may expire events, and the monotonic origin it is judged against.
    clock: ClockJudge,
    started: Instant,
    last_probe: Option<Instant>,
    /// The `clock_wrong` text in the agent state, and whether its `clock_wrong_since` marker is set.
    clock_shown: Option<String>,
    clock_marked: bool,
    /// Pending events the last step held back (they look expired on a distrusted clock).
    held: usize,
    /// Identical unknown answers in a row (isolated by splitting after a few).
    unknown: UnknownStreak,
    /// The last batch and request body, their room kept while steps make progress ([`Sender::step`]).
    batch: Batch,
    body: String,
    /// Requests TikTok took whose record waits for the write lock, oldest first: fewer than
    /// `records::UNRECORDED_MAX`, whole batches queued above the cursor only, between two steps
    /// ([`records`]).
    unrecorded: Vec<Delivered>,
}

/// An event refused alone in this round, dead-lettered at the round's end unless the refusals
/// turn out systemic.
struct Condemned {
    id: i64,
    event_id: String,
    reason: DeadReason,
    /// The dead-letter message (code, TikTok's message, request id).
    message: String,
    code: i64,
    /// TikTok's message as it came, compared across the round.
    said: String,
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
        let started = Instant::now();
        // A dry run has no server to ask the time: its clock is taken as right, jumps still seen.
        let clock = match settings.dry_run {
            Some(_) => ClockJudge::assume_right(crate::now(), started.elapsed()),
            None => ClockJudge::default(),
        };
        let state = queue.agent_state()?;
        Ok(Sender {
            queue,
            client,
            token: config.token.clone(),
            settings,
            streak: backoff::Streak::default(),
            written: 0,
            clock,
            started,
            last_probe: None,
            clock_shown: state.clock_wrong,
            clock_marked: state.clock_wrong_since.is_some(),
            held: 0,
            unknown: UnknownStreak::default(),
            batch: Batch::default(),
            body: String::new(),
            unrecorded: Vec::new(),
        })
    }

    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    pub fn endpoint(&self) -> &str {
        self.client.url()
    }

    /// One round: a batch of the oldest pending events, split as TikTok's answers require.
    ///
    /// The batch and request body buffers (about 1 MB for a batch of 1,000) are kept from step to
    /// step while the steps make progress, and given back otherwise (idle, waiting): allocated
    /// afresh for each batch, blocks of this size are mapped and unmapped by the allocator (the
    /// unit's `MALLOC_MMAP_THRESHOLD_`), page faults and all.
    pub fn step(&mut self, now: i64) -> Result<Step, SendError> {
        let mut batch = std::mem::take(&mut self.batch);
        let step = self.step_with(&mut batch, now);
        if matches!(step, Ok(Step::Progress { .. })) {
            self.batch = batch;
        } else {
            self.body = String::new();
        }
        step
    }

    fn step_with(&mut self, batch: &mut Batch, now: i64) -> Result<Step, SendError> {
        self.judge_clock(now, None)?;
        self.held = 0;
        self.read_batch(batch, i64::MIN)?;
        if batch.events.is_empty() {
            self.queue.release_memory();
            return Ok(Step::Idle);
        }
        // A payload damaged on disk is never sent as is: dead-lettered as `corrupt`, loudly, until
        // its archived file rebuilds it (`intake::redo`).
        let corrupt = self.drop_corrupt(batch)?;
        if batch.events.is_empty() {
            return Ok(Step::Progress { sent: 0, dead: corrupt });
        }
        let expired = plan::take_expired(&mut batch.events, now, self.settings.window_secs);
        if !expired.is_empty() {
            if !self.clock.verdict().may_expire() {
                self.probe_clock(now)?;
            }
            if self.clock.verdict().may_expire() {
                let ids: Vec<i64> = expired.iter().map(|e| e.id).collect();
                self.write(|q| q.mark_dead(&ids, DeadReason::Expired, DeadReason::EXPIRED_MESSAGE))?;
                tracing::warn!(
                    "{} events older than the attribution window were dead-lettered as expired, not sent",
                    ids.len()
                );
                if batch.events.is_empty() {
                    return Ok(Step::Progress { sent: 0, dead: ids.len() });
                }
            } else {
                // Held: neither expired nor sent until TikTok's clock agrees with ours; the events
                // inside the window go on meanwhile.
                self.held = expired.len();
                self.read_batch(batch, now - self.settings.window_secs)?;
                let corrupt = self.drop_corrupt(batch)?;
                if corrupt > 0 && batch.events.is_empty() {
                    return Ok(Step::Progress { sent: 0, dead: corrupt });
                }
                if batch.events.is_empty() {
                    self.queue.release_memory();
                    return Ok(Step::Idle);
                }
            }
        }
        let token = match &self.settings.dry_run {
            Some(_) => None,
            None => match load_token(self.token.as_ref()) {
                Ok(t) => Some(t),
                Err(e) => {
                    let reason = format!("access token: {e}");
                    let retry_at = now + self.settings.auth_retry.as_secs() as i64;
                    self.write(|q| {
                        q.update_agent_state(|s| {
                            s.paused = Some(reason.clone());
                            s.paused_on_token = true;
                            s.next_retry_at = Some(retry_at);
                        })
                    })?;
                    return Ok(Step::Paused { retry: self.settings.auth_retry, reason });
                }
            },
        };
        self.deliver(batch, token.as_ref().map(|t| t.expose()), now)
    }

    /// Keep the intact events of `batch`; returns how many were dead-lettered as `corrupt` (their
    /// payload fails its checksum).
    fn drop_corrupt(&mut self, batch: &mut Batch) -> Result<usize, SendError> {
        let corrupt = plan::take_where(&mut batch.events, |e| !e.intact);
        if !corrupt.is_empty() {
            for e in &corrupt {
                let event = crate::queue::event_named(batch.event_id(e), e.id);
                tracing::error!("event {event}: {}", DeadReason::CORRUPT_MESSAGE);
            }
            let ids: Vec<i64> = corrupt.iter().map(|e| e.id).collect();
            self.write(|q| q.mark_dead(&ids, DeadReason::Corrupt, DeadReason::CORRUPT_MESSAGE))?;
        }
        Ok(corrupt.len())
    }

    /// Send `batch`, splitting a refused part until every event is sent or dead, or until a pause
    /// or a transient failure stops the round. Each part's answer is decided by [`plan::plan`].
    fn deliver(&mut self, batch: &Batch, token: Option<&str>, now: i64) -> Result<Step, SendError> {
        let batch_len = batch.events.len();
        let (mut sent, mut condemned) = (0, Vec::<Condemned>::new());
        let (mut first, mut isolating) = (true, false);
        let mut held: Option<String> = None;
        // Parts are positions in `batch.events`.
        let mut parts = vec![(0..batch_len).collect::<Vec<usize>>()];
        while let Some(part) = parts.pop() {
            let ids: Vec<i64> = part.iter().map(|&i| batch.events[i].id).collect();
            let mut body = std::mem::take(&mut self.body);
            wire::batch_body_into(
                &mut body,
                &self.settings.event_source_id,
                self.settings.test_event_code.as_deref(),
                part.iter().map(|&i| batch.payload(&batch.events[i])),
            );
            tracing::debug!(
                events = part.len(),
                bytes = body.len(),
                "sending a batch of {} events ({} bytes)",
                part.len(),
                body.len()
            );
            let (reply, http_status, connect_failure, date) = match (token, &self.settings.dry_run) {
                (Some(token), None) => match self.client.post(token, &body) {
                    Ok(reply) => {
                        let outcome = classify_reply(&reply);
                        (Reply::Answered(outcome), Some(i64::from(reply.status)), false, reply.date)
                    }
                    Err(ClientError::Transport { reason, connect, .. }) => {
                        (Reply::Unanswered { reason }, None, connect, None)
                    }
                    Err(e) => return Err(e.into()),
                },
                _ => {
                    self.write_dry_run(&body)?;
                    (Reply::DryRun, None, false, None)
                }
            };
            self.body = body;
            if date.is_some() {
                self.judge_clock(now, date.as_deref())?;
            }
            // A code we do not know is counted; once it repeated, this round isolates its event.
            match &reply {
                Reply::Answered(Outcome::Unknown { code, message, .. }) => {
                    isolating = self.unknown.observe(*code, message) || isolating;
                }
                _ if first => self.unknown.reset(),
                _ => {}
            }
            first = false;
            let Plan { log, action } = plan(reply, part.len(), isolating);
            let said = log.message.clone();
            let log = SendLogEntry {
                id: 0,
                at: now,
                events: ids.len() as i64,
                http_status,
                code: log.code,
                class: log.class,
                message: log.message,
                request_id: log.request_id,
                test_event_code: self.settings.test_event_code.clone(),
            };
            match action {
                Action::Deliver { confirmed, request_id } => {
                    if confirmed {
                        if log.class == SendClass::Partial {
                            tracing::warn!("tiktok reported partial success for {} events: {}", ids.len(), log.message);
                        }
                        self.streak.reset();
                    }
                    sent += ids.len();
                    // A whole batch queued above the cursor may wait for its record (the next
                    // reads start above it); anything else is recorded before the round goes on.
                    let may_wait = part.len() == batch_len && batch.pending_by_row == 0;
                    self.delivered(Delivered { ids, log, confirmed: confirmed.then_some(request_id) }, may_wait)?;
                }
                Action::DeadLetter { reason, message } => {
                    // Dead-lettered at the end of the round, unless every event was refused alike.
                    self.write(|q| q.record_attempt(&ids, Disposition::StillPending, &log, |_| {}))?;
                    let code = log.code.unwrap_or_default();
                    condemned.push(Condemned {
                        id: ids[0],
                        event_id: batch.event_id(&batch.events[part[0]]).to_string(),
                        reason,
                        message,
                        code,
                        said,
                    });
                }
                Action::Split(how) => {
                    self.write(|q| q.record_attempt(&ids, Disposition::StillPending, &log, |_| {}))?;
                    let (later, next) = plan::split(part, how);
                    parts.push(later);
                    parts.push(next);
                }
                Action::Hold { reason } => {
                    tracing::error!("event {}: {reason}", batch.event_id(&batch.events[part[0]]));
                    self.write(|q| q.record_attempt(&ids, Disposition::StillPending, &log, |_| {}))?;
                    held = Some(reason);
                }
                Action::Pause { reason } => {
                    let dead = self.settle(condemned, sent > 0)?;
                    self.pause(&ids, &log, now, &reason)?;
                    if sent + dead > 0 {
                        tracing::info!("before the pause: {sent} events delivered, {dead} dead-lettered");
                    }
                    return Ok(Step::Paused { retry: self.settings.auth_retry, reason });
                }
                Action::Retry { reason, retry_after, throttled } => {
                    self.settle(condemned, sent > 0)?;
                    let failures = self.streak.fail(throttled);
                    let policy = self.settings.backoff.pick(throttled);
                    let delay = backoff::delay(policy, failures, retry_after, fastrand::f64());
                    self.write(|q| {
                        q.record_attempt(&ids, Disposition::StillPending, &log, |s| {
                            s.last_error = Some(reason.clone());
                            s.last_error_at = Some(now);
                            s.next_retry_at = Some(now + delay.as_secs() as i64);
                            s.consecutive_failures = Some(failures);
                        })
                    })?;
                    return Ok(Step::Retry { delay, connect_failure, reason });
                }
            }
        }
        let refused: Vec<(i64, &str)> = condemned.iter().map(|c| (c.code, c.said.as_str())).collect();
        if let Some(reason) = plan::systemic(batch_len, sent, &refused) {
            tracing::debug!("{} events put back: their refusals were systemic", condemned.len());
            return self.paused_after_round(now, reason);
        }
        let dead = self.settle(condemned, true)?;
        if let Some(reason) = held {
            if sent + dead > 0 {
                tracing::info!("before the pause: {sent} events delivered, {dead} dead-lettered");
            }
            return self.paused_after_round(now, reason);
        }
        Ok(Step::Progress { sent, dead })
    }

    /// Pause sending at the end of a round, the reason in the agent state; everything left stays
    /// queued and is tried again after `auth_retry`.
    fn paused_after_round(&mut self, now: i64, reason: String) -> Result<Step, SendError> {
        let retry_at = now + self.settings.auth_retry.as_secs() as i64;
        self.write(|q| {
            q.update_agent_state(|s| {
                s.paused = Some(reason.clone());
                s.paused_on_token = false;
                s.last_error = Some(reason.clone());
                s.last_error_at = Some(now);
                s.next_retry_at = Some(retry_at);
            })
        })?;
        Ok(Step::Paused { retry: self.settings.auth_retry, reason })
    }

    /// Dead-letter the events refused alone in a round when the round is `conclusive` (it ran to
    /// its end, or delivered something, so the refusals cannot be systemic); otherwise they stay
    /// pending and the next round finds them again. Returns how many were dead-lettered.
    fn settle(&mut self, condemned: Vec<Condemned>, conclusive: bool) -> Result<usize, SendError> {
        if !conclusive {
            return Ok(0);
        }
        for c in &condemned {
            tracing::error!("event {} dead-lettered: {}", c.event_id, c.message);
            self.write(|q| q.mark_dead(&[c.id], c.reason, &c.message))?;
        }
        Ok(condemned.len())
    }

    /// Pause sending: the part's attempt logged, everything kept queued, the reason in the state.
    fn pause(&mut self, ids: &[i64], log: &SendLogEntry, now: i64, reason: &str) -> Result<(), SendError> {
        let retry_at = now + self.settings.auth_retry.as_secs() as i64;
        self.write(|q| {
            q.record_attempt(ids, Disposition::StillPending, log, |s| {
                s.paused = Some(reason.to_string());
                s.paused_on_token = log.class == SendClass::Auth;
                s.last_error = Some(reason.to_string());
                s.last_error_at = Some(now);
                s.next_retry_at = Some(retry_at);
            })
        })?;
        Ok(())
    }

    /// Feed the clock judge the wall clock and, when an answer carried one, TikTok's `Date`; a
    /// change of verdict goes to the agent state and the log, once each way. When the clock is
    /// right again after it was wrong, the events expired meanwhile are queued again.
    fn judge_clock(&mut self, now: i64, server_date: Option<&str>) -> Result<Verdict, SendError> {
        let server = server_date.and_then(clock::parse_http_date);
        let verdict = self.clock.observe(now, server, self.started.elapsed());
        match (verdict, verdict.describe()) {
            (Verdict::Wrong { by_secs }, Some(text)) if self.clock_shown.as_ref() != Some(&text) => {
                if self.clock_shown.is_none() {
                    tracing::warn!("{text}");
                }
                self.write(|q| {
                    q.update_agent_state(|s| {
                        s.clock_wrong = Some(text.clone());
                        s.clock_wrong_since.get_or_insert(now - by_secs);
                    })
                })?;
                self.clock_shown = Some(text);
                self.clock_marked = true;
            }
            (Verdict::Right, _) if self.clock_shown.is_some() || self.clock_marked => {
                let cutoff = now - self.settings.window_secs;
                let back = self.write(|q| q.requeue_wrongly_expired(cutoff))?;
                self.write(|q| {
                    q.update_agent_state(|s| {
                        s.clock_wrong = None;
                        s.clock_wrong_since = None;
                    })
                })?;
                tracing::warn!(
                    "the clock is right again (tiktok's agrees); {back} events dead-lettered as expired while it was wrong are queued again"
                );
                self.clock_shown = None;
                self.clock_marked = false;
            }
            _ => {}
        }
        Ok(verdict)
    }

    /// Ask the endpoint for its clock alone (at most every [`clock::PROBE_EVERY`]): events look
    /// expired and no answer has confirmed the clock. No answer leaves the verdict as it was.
    fn probe_clock(&mut self, now: i64) -> Result<(), SendError> {
        if self.settings.dry_run.is_some() || self.last_probe.is_some_and(|t| t.elapsed() < clock::PROBE_EVERY) {
            return Ok(());
        }
        self.last_probe = Some(Instant::now());
        match self.client.server_date() {
            Ok(Some(date)) => {
                self.judge_clock(now, Some(&date))?;
            }
            Ok(None) => tracing::debug!("{}: the answer has no Date header", self.client.url()),
            Err(e) => tracing::debug!("asking the time: {e}"),
        }
        Ok(())
    }

    /// Pending events the last step held back: they look older than the attribution window, on a
    /// clock TikTok's has not confirmed.
    pub fn held(&self) -> usize {
        self.held
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
            Step::Idle if sender.held() > 0 => {
                let why = sender.clock.verdict().describe().unwrap_or_else(|| "tiktok's clock was not reached".into());
                report.undelivered = Some(format!(
                    "{} events look older than the attribution window and are held: {why}",
                    sender.held()
                ));
                return Ok(report);
            }
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
    /// back (those a full write freed before too: every free page), so ingest can go on.
    pub fn free_space(&mut self) -> Result<(), SendError> {
        self.write(|q| q.clear_sent_payloads(i64::MAX))?;
        if self.queue.free_pages()? > 0 {
            self.write(|q| q.give_back_space())?;
        }
        Ok(())
    }

    /// Housekeeping: dead-letter expired pending events and forget old sent ones. Run now and then,
    /// never on the hot path. Nothing expires on a clock TikTok's has not confirmed, and nothing is
    /// forgotten on one found wrong.
    pub fn maintain(&mut self, now: i64, sent_retention: Duration) -> Result<(), SendError> {
        let verdict = self.judge_clock(now, None)?;
        if verdict.may_expire() {
            let cutoff = now - self.settings.window_secs;
            let expired = self.write(|q| q.expire_older_than(cutoff))?;
            if expired > 0 {
                tracing::warn!(
                    "{expired} pending events passed the attribution window and were dead-lettered as expired"
                );
            }
        }
        if matches!(verdict, Verdict::Wrong { .. }) {
            self.queue.release_memory();
            return Ok(());
        }
        // Sent rows are kept beyond the window so that a re-export of an old order is recognised
        // as a duplicate rather than queued again.
        let keep = (sent_retention.as_secs() as i64).max(self.settings.window_secs + 2 * 86_400);
        let pruned = self.write(|q| q.prune(now - keep, 10_000))?;
        if pruned > 0 {
            tracing::info!("forgot {pruned} sent events older than {} days", keep / 86_400);
        }
        let cleared = self.write(|q| q.clear_sent_payloads(now - 3600))?;
        tracing::debug!(
            "maintenance: {pruned} old sent events forgotten, {cleared} sent events' JSON dropped{}",
            if cleared > 0 || pruned > 0 { "; WAL checkpointed" } else { "" }
        );
        if cleared > 0 || pruned > 0 || self.queue.free_pages()? > 0 {
            self.write(|q| q.give_back_space())?;
        }
        self.queue.release_memory();
        Ok(())
    }
}
