//! A token bucket that paces the operator's writes to the API server.
//!
//! Pure: the caller passes the time. A caller takes a token and is told how
//! long to wait before using it; tokens may run into debt, so that waiting
//! callers queue in order, each behind the ones before it (as Go's
//! `rate.Limiter.Reserve` does), instead of polling.

use std::time::{Duration, Instant};

/// Writes per second, with a burst.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    per_second: f64,
    burst: f64,
    /// Negative while callers wait: the debt that the rate pays off.
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket refilled at `per_second`, holding at most `burst`.
    pub fn new(per_second: u32, burst: u32, now: Instant) -> Self {
        let per_second = f64::from(per_second.max(1));
        let burst = f64::from(burst.max(1));
        TokenBucket {
            per_second,
            burst,
            tokens: burst,
            updated: now,
        }
    }

    /// Takes a token; returns how long the caller waits before writing
    /// (zero when one was there).
    pub fn reserve(&mut self, now: Instant) -> Duration {
        self.take(now);
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            // Rounded to whole nanoseconds, so that 3 / 10 s is 300 ms.
            Duration::from_nanos((-self.tokens / self.per_second * 1e9).round() as u64)
        }
    }

    /// Takes a token without waiting, for a write towards safety: it still
    /// counts, and the writes queued behind it wait longer instead.
    pub fn take(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.updated = self.updated.max(now);
        self.tokens -= 1.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    #[test]
    fn a_full_bucket_lets_the_burst_through_then_paces_at_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, 3, start);
        for _ in 0..3 {
            assert_eq!(bucket.reserve(start), Duration::ZERO);
        }
        // The 4th, 5th and 6th wait 100, 200 and 300 ms: queued, in order.
        assert_eq!(bucket.reserve(start), ms(100));
        assert_eq!(bucket.reserve(start), ms(200));
        assert_eq!(bucket.reserve(start), ms(300));
    }

    #[test]
    fn tokens_come_back_at_the_rate_and_never_beyond_the_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, 2, start);
        assert_eq!(bucket.reserve(start), Duration::ZERO);
        assert_eq!(bucket.reserve(start), Duration::ZERO);
        assert_eq!(bucket.reserve(start + ms(100)), Duration::ZERO);
        // An hour idle refills two tokens, not 36,000.
        let later = start + Duration::from_secs(3600);
        assert_eq!(bucket.reserve(later), Duration::ZERO);
        assert_eq!(bucket.reserve(later), Duration::ZERO);
        assert_eq!(bucket.reserve(later), ms(100));
    }

    #[test]
    fn a_write_towards_safety_never_waits_but_delays_the_queue() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, 1, start);
        assert_eq!(bucket.reserve(start), Duration::ZERO);
        assert_eq!(bucket.reserve(start), ms(100));
        bucket.take(start);
        assert_eq!(bucket.reserve(start), ms(300));
    }

    #[test]
    fn a_time_before_the_last_one_counts_as_no_time() {
        let start = Instant::now() + Duration::from_secs(1);
        let mut bucket = TokenBucket::new(10, 1, start);
        assert_eq!(bucket.reserve(start), Duration::ZERO);
        assert_eq!(bucket.reserve(start - ms(500)), ms(100));
    }
}
