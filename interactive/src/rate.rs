//! Sliding-window rate limit: at most `limit` accepted events in any window
//! of length `window` ("20 messages per 30 s": the 21st inside 30 s is refused).
//!
//! Unlike a fixed window it cannot be gamed by bursting across a window
//! boundary, and unlike a token bucket its promise is exactly the sentence
//! shown to users. It keeps only the times of the last `limit` accepted
//! events, so memory is bounded by `limit`.
//!
//! Windows are half-open: an event accepted at `t` no longer counts at
//! `t + window`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct SlidingWindowLimiter {
    limit: u32,
    window: Duration,
    /// Times of the most recent accepted events, oldest first, at most `limit`.
    accepted: VecDeque<Instant>,
}

impl SlidingWindowLimiter {
    /// `limit` 0 refuses everything (a room where chat is closed).
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            accepted: VecDeque::new(),
        }
    }

    /// Accepts the event at `now`, or refuses it with the time until one more
    /// would be accepted. With `limit` 0 that time is `Duration::MAX`: never.
    ///
    /// Time is expected not to run backwards; a `now` earlier than the last
    /// accepted event is taken as that event's time, so the bound still holds.
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), Duration> {
        if self.limit == 0 {
            return Err(Duration::MAX);
        }
        let now = self.accepted.back().map_or(now, |&last| now.max(last));
        while let Some(&oldest) = self.accepted.front() {
            if now.duration_since(oldest) < self.window {
                break;
            }
            self.accepted.pop_front();
        }
        if self.accepted.len() < self.limit as usize {
            self.accepted.push_back(now);
            return Ok(());
        }
        // Full: the oldest leaves the window at `oldest + window`.
        let oldest = self.accepted.front().copied().unwrap_or(now);
        Err(self.window - now.duration_since(oldest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn twenty_per_thirty_seconds() {
        let t0 = Instant::now();
        let mut limiter = SlidingWindowLimiter::new(20, Duration::from_secs(30));
        for i in 0..20 {
            assert_eq!(limiter.try_acquire(t0 + i * MS), Ok(()));
        }
        let now = t0 + Duration::from_secs(10);
        assert_eq!(limiter.try_acquire(now), Err(Duration::from_secs(20)));
        assert_eq!(limiter.try_acquire(t0 + Duration::from_secs(30)), Ok(()));
        // The second one leaves 1 ms later.
        assert_eq!(limiter.try_acquire(t0 + Duration::from_secs(30)), Err(MS));
    }

    #[test]
    fn limit_zero_refuses_everything() {
        let mut limiter = SlidingWindowLimiter::new(0, Duration::from_secs(1));
        assert_eq!(limiter.try_acquire(Instant::now()), Err(Duration::MAX));
    }

    #[test]
    fn memory_is_bounded_by_limit() {
        let t0 = Instant::now();
        let mut limiter = SlidingWindowLimiter::new(3, Duration::from_secs(1));
        for i in 0..100 {
            let _ = limiter.try_acquire(t0 + i * 10 * MS);
            assert!(limiter.accepted.len() <= 3);
        }
    }

    #[test]
    fn time_running_backwards_does_not_break_the_bound() {
        let t0 = Instant::now();
        let mut limiter = SlidingWindowLimiter::new(1, Duration::from_secs(1));
        assert_eq!(limiter.try_acquire(t0 + Duration::from_secs(5)), Ok(()));
        assert_eq!(limiter.try_acquire(t0), Err(Duration::from_secs(1)));
    }

    proptest! {
        #[test]
        fn sliding_window_invariants(
            limit in 1u32..6,
            window_ms in 1u64..100,
            gaps in prop::collection::vec(0u64..40, 1..80),
        ) {
            let window = Duration::from_millis(window_ms);
            let t0 = Instant::now();
            let mut limiter = SlidingWindowLimiter::new(limit, window);
            let mut accepted: Vec<Instant> = Vec::new();
            let mut now = t0;
            for gap in gaps {
                now += Duration::from_millis(gap);
                let in_window = accepted.iter().filter(|&&t| now.duration_since(t) < window).count();
                let before = limiter.clone();
                match limiter.try_acquire(now) {
                    Ok(()) => {
                        prop_assert!(in_window < limit as usize);
                        accepted.push(now);
                    }
                    Err(retry_after) => {
                        // Refused only when the preceding window is full.
                        prop_assert_eq!(in_window, limit as usize);
                        // Exact: accepted at now + retry_after, refused just before.
                        prop_assert!(retry_after > Duration::ZERO && retry_after <= window);
                        prop_assert_eq!(before.clone().try_acquire(now + retry_after), Ok(()));
                        let just_before = now + retry_after - Duration::from_nanos(1);
                        prop_assert!(before.clone().try_acquire(just_before).is_err());
                    }
                }
            }
            // Never limit + 1 accepted inside one window.
            let limit = limit as usize;
            for pair in accepted.windows(limit + 1) {
                prop_assert!(pair[limit].duration_since(pair[0]) >= window);
            }
        }
    }
}
