//! Is the pipeline healthy? Each part says when it starts blocking work and when it makes progress;
//! a part busy without progress for longer than the limit is stuck, and then the watchdog is not
//! pinged (systemd restarts the service). Also: a limiter for log lines that repeat.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Ingest,
    Send,
}

impl Part {
    fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            Part::Ingest => "ingest",
            Part::Send => "send",
        }
    }
}

/// Shared between the loops and the supervisor.
#[derive(Debug, Default)]
pub struct Health {
    state: Mutex<State>,
    /// Poked when a part finished a piece of work (the queue or the agent's state may have
    /// changed): the supervisor refreshes systemd's STATUS line then, not only on its tick.
    changed: tokio::sync::Notify,
}

#[derive(Debug, Default, Clone)]
struct State {
    /// For each part: when it last started or progressed in blocking work, while it is busy.
    busy: [Option<Instant>; 2],
    /// Why ingest is holding files back (queue full), for STATUS.
    ingest_held: Option<String>,
    /// Why archived files wait to be re-ingested (the reconcile stopped at a full queue).
    reconcile_held: Option<String>,
}

impl Health {
    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn begin(&self, part: Part) {
        self.with(|s| s.busy[part.index()] = Some(Instant::now()));
    }

    /// Busy, and still moving (a long file being read).
    pub fn progress(&self, part: Part) {
        self.begin(part);
    }

    pub fn end(&self, part: Part) {
        self.with(|s| s.busy[part.index()] = None);
        self.changed.notify_one();
    }

    /// Wait until a part says its work may have changed what STATUS shows.
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    pub fn stuck(&self, now: Instant, limit: Duration) -> Option<Part> {
        self.with(|s| stuck_part(&s.busy, now, limit))
    }

    pub fn set_ingest_held(&self, why: Option<String>) {
        self.with(|s| s.ingest_held = why);
        self.changed.notify_one();
    }

    pub fn ingest_held(&self) -> Option<String> {
        self.with(|s| s.ingest_held.clone())
    }

    pub fn set_reconcile_held(&self, why: Option<String>) {
        self.with(|s| s.reconcile_held = why);
        self.changed.notify_one();
    }

    /// Whatever waits for room in the queue (new files, archived files to re-ingest), in words:
    /// for STATUS, and for the sender, which frees space while something does.
    pub fn held(&self) -> Option<String> {
        self.with(|s| match (&s.ingest_held, &s.reconcile_held) {
            (Some(a), Some(b)) => Some(format!("{a}; {b}")),
            (a, b) => a.clone().or_else(|| b.clone()),
        })
    }
}

/// The first part busy without progress for longer than `limit`.
pub fn stuck_part(busy: &[Option<Instant>; 2], now: Instant, limit: Duration) -> Option<Part> {
    [Part::Ingest, Part::Send]
        .into_iter()
        .find(|p| busy[p.index()].is_some_and(|since| now.saturating_duration_since(since) > limit))
}

/// What to do with one occurrence of a repeating log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// First occurrence (or first after a quiet period): log it.
    Log,
    /// Repeated within the period: count it silently.
    Quiet,
    /// The period is over: log it with how many were kept quiet.
    LogWithCount(u64),
}

/// The first occurrence of each kind of line, then a summary at most once per `every`.
#[derive(Debug)]
pub struct LogLimiter {
    every: Duration,
    seen: HashMap<String, (Instant, u64)>,
}

impl LogLimiter {
    pub fn new(every: Duration) -> LogLimiter {
        LogLimiter { every, seen: HashMap::new() }
    }

    pub fn check(&mut self, key: &str, now: Instant) -> Verdict {
        match self.seen.get_mut(key) {
            None => {
                self.seen.insert(key.to_string(), (now, 0));
                Verdict::Log
            }
            Some((last, quiet)) if now.saturating_duration_since(*last) >= self.every => {
                let n = *quiet;
                *last = now;
                *quiet = 0;
                if n == 0 {
                    Verdict::Log
                } else {
                    Verdict::LogWithCount(n)
                }
            }
            Some((_, quiet)) => {
                *quiet += 1;
                Verdict::Quiet
            }
        }
    }

    /// The condition is over (e.g. delivery works again): the next occurrence is logged at once.
    pub fn reset(&mut self, key: &str) {
        self.seen.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_is_stuck_only_when_busy_past_the_limit() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let cases: [([Option<Instant>; 2], u64, Option<Part>); 5] = [
            ([None, None], 100, None),
            ([Some(t0), None], 5, None),
            ([Some(t0), None], 11, Some(Part::Ingest)),
            ([None, Some(t0)], 11, Some(Part::Send)),
            ([Some(t0 + s(5)), Some(t0)], 12, Some(Part::Send)),
        ];
        for (busy, at, expected) in cases {
            assert_eq!(stuck_part(&busy, t0 + s(at), s(10)), expected, "{busy:?} at {at}");
        }
    }

    #[test]
    fn progress_keeps_a_long_job_healthy() {
        let h = Health::default();
        h.begin(Part::Ingest);
        h.progress(Part::Ingest);
        assert_eq!(h.stuck(Instant::now() + Duration::from_secs(5), Duration::from_secs(10)), None);
        h.end(Part::Ingest);
        assert_eq!(h.stuck(Instant::now() + Duration::from_secs(50), Duration::from_secs(10)), None);
    }

    #[test]
    fn repeated_lines_are_summarised() {
        let t0 = Instant::now();
        let mut l = LogLimiter::new(Duration::from_secs(600));
        assert_eq!(l.check("down", t0), Verdict::Log);
        assert_eq!(l.check("down", t0 + Duration::from_secs(1)), Verdict::Quiet);
        assert_eq!(l.check("down", t0 + Duration::from_secs(2)), Verdict::Quiet);
        assert_eq!(l.check("other", t0 + Duration::from_secs(2)), Verdict::Log);
        assert_eq!(l.check("down", t0 + Duration::from_secs(601)), Verdict::LogWithCount(2));
        assert_eq!(l.check("down", t0 + Duration::from_secs(1300)), Verdict::Log);
        l.reset("down");
        assert_eq!(l.check("down", t0 + Duration::from_secs(1301)), Verdict::Log);
    }
}
