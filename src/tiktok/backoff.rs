//! How long to wait before the next try: exponential backoff with full jitter, capped, never
//! shorter than the server's `Retry-After`.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub base: Duration,
    pub cap: Duration,
}

/// The two caps of one sender. Server and network errors cap low (a minute by default) so delivery
/// resumes soon after TikTok recovers; throttling keeps a longer cap (5 minutes) because TikTok
/// asked a fleet that shares one token to slow down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policies {
    pub errors: Policy,
    pub throttled: Policy,
}

impl Policies {
    /// The policy for a failure, throttled or not.
    pub fn pick(self, throttled: bool) -> Policy {
        if throttled {
            self.throttled
        } else {
            self.errors
        }
    }
}

/// The failures since the last delivery, counted per kind (server/network errors, throttling),
/// that a wait is computed from. Each kind grows its own count: when a server that was down for
/// a day answers again with 429s, the first wait is about a second (the throttling policy's first
/// step), not a whole throttling cap, so the backlog is not left waiting minutes on a server that
/// is mostly idle (the fleet simulation, `fleet.rs`, showed the difference); and a gateway that
/// alternates 429 and 503 still sees every agent back off exponentially on both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Streak {
    errors: u32,
    throttled: u32,
}

impl Streak {
    /// One more failure of this kind; the count the wait is computed from (1-based).
    pub fn fail(&mut self, throttled: bool) -> u32 {
        let count = if throttled { &mut self.throttled } else { &mut self.errors };
        *count = count.saturating_add(1);
        *count
    }

    /// A delivery ends the streak.
    pub fn reset(&mut self) {
        *self = Streak::default();
    }
}

/// The wait after the `failures`-th consecutive failure (1-based). `unit` is a uniform random
/// number in [0, 1): the "full jitter" of a fleet of tills that must not retry in lockstep.
pub fn delay(policy: Policy, failures: u32, retry_after: Option<Duration>, unit: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(30);
    let ceiling = policy.base.saturating_mul(1u32 << exp).min(policy.cap);
    let jittered = ceiling.mul_f64(unit.clamp(0.0, 1.0));
    let floor = retry_after.unwrap_or(Duration::ZERO).min(Duration::from_secs(3600));
    jittered.max(floor).max(Duration::from_millis(100))
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Policy = Policy { base: Duration::from_secs(1), cap: Duration::from_secs(300) };

    #[test]
    fn grows_exponentially_up_to_the_cap() {
        let cases = [(1, 1), (2, 2), (3, 4), (9, 256), (10, 300), (40, 300)];
        for (failures, ceiling) in cases {
            let ceiling = Duration::from_secs(ceiling);
            let d = delay(P, failures, None, 0.999_999);
            assert!(d <= ceiling && d > ceiling.mul_f64(0.99), "{failures}: {d:?}");
        }
    }

    #[test]
    fn full_jitter_spreads_over_the_whole_range() {
        assert_eq!(delay(P, 10, None, 0.0), Duration::from_millis(100));
        assert_eq!(delay(P, 10, None, 0.5), Duration::from_secs(150));
    }

    #[test]
    fn throttling_keeps_the_longer_cap() {
        let errors = Policy { base: Duration::from_secs(1), cap: Duration::from_secs(60) };
        let both = Policies { errors, throttled: P };
        let cases = [(false, 1, 1), (false, 7, 60), (false, 40, 60), (true, 1, 1), (true, 7, 64), (true, 40, 300)];
        for (throttled, failures, ceiling) in cases {
            let d = delay(both.pick(throttled), failures, None, 0.999_999);
            let ceiling = Duration::from_secs(ceiling);
            assert!(d <= ceiling && d > ceiling.mul_f64(0.99), "{throttled} {failures}: {d:?}");
        }
    }

    #[test]
    fn a_streak_counts_each_kind_of_failure_and_ends_with_a_delivery() {
        let mut streak = Streak::default();
        // A day of server errors, then throttling: the 429s start their own count; a gateway
        // alternating 503 and 429 keeps growing both (never back to the first step).
        let kinds = [(false, 1), (false, 2), (false, 3), (true, 1), (true, 2), (false, 4), (true, 3), (false, 5)];
        for (throttled, count) in kinds {
            assert_eq!(streak.fail(throttled), count, "{throttled}");
        }
        streak.reset();
        assert_eq!(streak.fail(true), 1);
    }

    #[test]
    fn retry_after_is_a_floor_capped_at_an_hour() {
        assert_eq!(delay(P, 1, Some(Duration::from_secs(30)), 0.5), Duration::from_secs(30));
        assert_eq!(delay(P, 1, Some(Duration::from_secs(99_999)), 0.5), Duration::from_secs(3600));
    }
}
