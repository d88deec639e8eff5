//! Whether the wall clock can be trusted to expire events: it is compared with the `Date` header
//! of TikTok's answers, and between answers with the monotonic clock (a wall clock that moved more
//! or less than the monotonic one jumped). Pure: the executor feeds it readings and acts on the
//! [`Verdict`]; nothing here reads a clock.

use std::time::Duration;

/// How far the wall clock may be from TikTok's before it is distrusted (an answer's `Date` has a
/// resolution of a second and the round trip takes some more; a jump is days, not minutes).
pub const MAX_SKEW_SECS: i64 = 300;

/// How often, at most, the endpoint is asked for its clock alone (when events look expired and
/// no answer has told the time yet).
pub const PROBE_EVERY: Duration = Duration::from_secs(60);

/// What the judge makes of the wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No server has told the time yet: nothing expires until one agrees with the clock.
    Unknown,
    /// Within [`MAX_SKEW_SECS`] of TikTok's clock.
    Right,
    /// Off by `by_secs` (local minus true; positive when the local clock is ahead).
    Wrong { by_secs: i64 },
}

impl Verdict {
    /// Only a clock a server agreed with may expire events.
    pub fn may_expire(self) -> bool {
        self == Verdict::Right
    }

    /// "clock is wrong by ~30 days (ahead of tiktok's)", for the log and `status`; `None` unless
    /// the clock is wrong.
    pub fn describe(self) -> Option<String> {
        let Verdict::Wrong { by_secs } = self else { return None };
        let side = if by_secs > 0 { "ahead of" } else { "behind" };
        Some(format!(
            "clock is wrong by ~{} ({side} tiktok's); events are neither expired nor held as future until it is right",
            rough(by_secs.unsigned_abs())
        ))
    }
}

/// A duration in words, rounded to its largest unit.
fn rough(secs: u64) -> String {
    let (n, unit) = match secs {
        s if s < 7200 => (s / 60, "minute"),
        s if s < 172_800 => (s / 3600, "hour"),
        s => (s / 86_400, "day"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// The last server reading: the local clock then, how far it was off, and the monotonic time then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Anchor {
    wall: i64,
    skew: i64,
    mono: Duration,
}

/// Keeps the last server reading and judges each new observation against it.
#[derive(Debug, Clone, Default)]
pub struct ClockJudge {
    anchor: Option<Anchor>,
}

impl ClockJudge {
    /// A judge that takes the clock as right at `now` (dry runs: there is no server to ask).
    pub fn assume_right(now: i64, mono: Duration) -> ClockJudge {
        ClockJudge { anchor: Some(Anchor { wall: now, skew: 0, mono }) }
    }

    /// One observation: the wall clock `now` (Unix seconds), the server's clock when an answer
    /// just carried one, and `mono`, the monotonic time since any fixed origin (the same for every
    /// call). A server reading replaces the last; without one, the wall clock's movement since the
    /// last reading is checked against the monotonic clock's.
    pub fn observe(&mut self, now: i64, server: Option<i64>, mono: Duration) -> Verdict {
        match server {
            Some(t) => self.anchor = Some(Anchor { wall: now, skew: now - t, mono }),
            None => {
                if let Some(a) = &mut self.anchor {
                    let wall_moved = now - a.wall;
                    let real_moved = mono.saturating_sub(a.mono).as_secs() as i64;
                    // Re-anchor only on a jump, so sub-second rounding never accumulates.
                    if (wall_moved - real_moved).abs() > 2 {
                        *a = Anchor { wall: now, skew: a.skew + wall_moved - real_moved, mono };
                    }
                }
            }
        }
        self.verdict()
    }

    /// The verdict as of the last observation.
    pub fn verdict(&self) -> Verdict {
        match self.anchor {
            None => Verdict::Unknown,
            Some(a) if a.skew.abs() > MAX_SKEW_SECS => Verdict::Wrong { by_secs: a.skew },
            Some(_) => Verdict::Right,
        }
    }
}

/// An HTTP `Date` header (RFC 9110's IMF-fixdate, or RFC 2822) as Unix seconds.
pub fn parse_http_date(text: &str) -> Option<i64> {
    jiff::fmt::rfc2822::DateTimeParser::new().parse_timestamp(text.trim()).ok().map(|t| t.as_second())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;
    const T0: i64 = 1_760_000_000;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn the_verdict_after_each_observation() {
        // (name, wall now, server's clock, monotonic since start, verdict after it), in sequence.
        type Case = (&'static str, i64, Option<i64>, u64, Verdict);
        let cases: Vec<Case> = vec![
            ("no reading yet", T0, None, 0, Verdict::Unknown),
            ("still none: the monotonic clock alone proves nothing", T0 + 10, None, 10, Verdict::Unknown),
            ("tiktok agrees", T0 + 20, Some(T0 + 20), 20, Verdict::Right),
            ("a few seconds of rounding are no jump", T0 + 80, None, 78, Verdict::Right),
            ("the wall jumps 30 days ahead", T0 + 30 * DAY + 100, None, 100, Verdict::Wrong { by_secs: 30 * DAY }),
            ("time passes on the wrong clock", T0 + 30 * DAY + 200, None, 200, Verdict::Wrong { by_secs: 30 * DAY }),
            ("tiktok says so too", T0 + 30 * DAY + 300, Some(T0 + 300), 300, Verdict::Wrong { by_secs: 30 * DAY }),
            ("the wall jumps back", T0 + 400, None, 400, Verdict::Right),
            ("ntp steps the clock back 10 minutes", T0 + 500 - 600, None, 500, Verdict::Wrong { by_secs: -600 }),
            ("tiktok confirms the step was right", T0 - 99, Some(T0 - 100), 501, Verdict::Right),
            ("a drift within the bound", T0 + 691, None, 1001, Verdict::Right),
            (
                "tiktok's date alone can say wrong",
                T0 + 2000,
                Some(T0 + 2000 - 301),
                2000,
                Verdict::Wrong { by_secs: 301 },
            ),
        ];
        let mut judge = ClockJudge::default();
        for (name, now, server, mono, verdict) in cases {
            assert_eq!(judge.observe(now, server, secs(mono)), verdict, "{name}");
        }
    }

    #[test]
    fn a_judge_that_assumes_the_clock_right_still_sees_a_jump() {
        let mut judge = ClockJudge::assume_right(T0, secs(5));
        assert_eq!(judge.verdict(), Verdict::Right);
        assert_eq!(judge.observe(T0 + 30 * DAY, None, secs(6)), Verdict::Wrong { by_secs: 30 * DAY - 1 });
    }

    #[test]
    fn only_a_right_clock_expires() {
        let cases = [(Verdict::Unknown, false), (Verdict::Right, true), (Verdict::Wrong { by_secs: 9999 }, false)];
        for (verdict, may) in cases {
            assert_eq!(verdict.may_expire(), may, "{verdict:?}");
        }
    }

    #[test]
    fn the_wrong_clock_in_words() {
        let cases = [
            (Verdict::Wrong { by_secs: 30 * DAY + 5 }, Some("~30 days (ahead of")),
            (Verdict::Wrong { by_secs: -301 }, Some("~5 minutes (behind")),
            (Verdict::Wrong { by_secs: 3 * 3600 }, Some("~3 hours (ahead of")),
            (Verdict::Wrong { by_secs: DAY * 2 }, Some("~2 days")),
            (Verdict::Wrong { by_secs: 3600 }, Some("~60 minutes")),
            (Verdict::Right, None),
            (Verdict::Unknown, None),
        ];
        for (verdict, part) in cases {
            let text = verdict.describe();
            match part {
                Some(p) => assert!(
                    text.as_deref().is_some_and(|t| t.starts_with("clock is wrong by") && t.contains(p)),
                    "{text:?}"
                ),
                None => assert_eq!(text, None),
            }
        }
    }

    #[test]
    fn http_dates() {
        let cases = [
            ("Thu, 01 Jan 1970 00:00:01 GMT", Some(1)),
            ("Sun, 06 Nov 1994 08:49:37 GMT", Some(784_111_777)),
            ("Sun, 6 Nov 1994 08:49:37 +0000", Some(784_111_777)),
            (" Sun, 06 Nov 1994 08:49:37 GMT ", Some(784_111_777)),
            ("yesterday", None),
            ("", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_http_date(text), expected, "{text:?}");
        }
    }
}
