//! When to send a refused request again: which answers are worth a retry,
//! the jittered exponential schedule, and the server's `Retry-After`.
//!
//! Pure: the caller passes the jitter and the time.

use std::time::Duration;

use jiff::Timestamp;

/// Answers that say "not now" rather than "no": 429 (API Priority and
/// Fairness rejected or timed out the request in its queue) and the 5xx
/// that an overloaded or restarting API server, or a proxy in front of it,
/// gives. The request did not take effect (429, 503) or the write is safe to
/// repeat: status applies carry a resourceVersion precondition, so a repeat
/// of a write that did land gets 409 instead of applying twice.
pub fn is_retryable(status: u16) -> bool {
    matches!(status, 429 | 500 | 502 | 503 | 504)
}

/// Exponential backoff with jitter, bounded in attempts and delay.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    /// The delay before the first retry, before jitter.
    pub first_delay: Duration,
    /// No delay is longer, `Retry-After` included.
    pub max_delay: Duration,
    /// Retries at most; then the last answer is returned to the caller.
    pub max_retries: u32,
}

impl Default for Schedule {
    /// 200 ms, doubling, at most 10 s apart and 5 retries (about 6 s of
    /// backoff in all, more when the server asks for it).
    fn default() -> Self {
        Schedule {
            first_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            max_retries: 5,
        }
    }
}

impl Schedule {
    /// The delay before retry number `retry` (0 for the first), or `None`
    /// when the retries are spent. `jitter` in `[0, 1)` spreads the delay
    /// over its upper half, so that writers refused together do not come
    /// back together; a server's `Retry-After` is honoured as a floor.
    pub fn delay(
        &self,
        retry: u32,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> Option<Duration> {
        if retry >= self.max_retries {
            return None;
        }
        let exponential = self
            .first_delay
            .saturating_mul(2_u32.saturating_pow(retry))
            .min(self.max_delay);
        let jittered = exponential.mul_f64(0.5 + jitter.clamp(0.0, 1.0) / 2.0);
        Some(
            retry_after
                .map_or(jittered, |asked| asked.max(jittered))
                .min(self.max_delay),
        )
    }
}

/// Parses a `Retry-After` header (RFC 9110, 10.2.3): delay-seconds, or an
/// HTTP date counted from `now` (a date in the past asks for no delay).
pub fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(value)
        .ok()?;
    let ahead = date.duration_since(now);
    Some(Duration::try_from(ahead).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    #[test]
    fn overload_and_transient_failures_are_retried_refusals_are_not() {
        for status in [429, 500, 502, 503, 504] {
            assert!(is_retryable(status), "{status}");
        }
        for status in [200, 201, 400, 401, 403, 404, 409, 410, 422, 501, 505] {
            assert!(!is_retryable(status), "{status}");
        }
    }

    #[test]
    fn the_delay_doubles_up_to_the_cap_and_the_retries_run_out() {
        let schedule = Schedule {
            first_delay: ms(100),
            max_delay: ms(500),
            max_retries: 5,
        };
        // Jitter 1 gives the full delay, 0 half of it.
        let full: Vec<_> = (0..6).map(|n| schedule.delay(n, None, 1.0)).collect();
        assert_eq!(
            full,
            [
                Some(ms(100)),
                Some(ms(200)),
                Some(ms(400)),
                Some(ms(500)),
                Some(ms(500)),
                None
            ]
        );
        assert_eq!(schedule.delay(2, None, 0.0), Some(ms(200)));
        assert_eq!(schedule.delay(2, None, 0.5), Some(ms(300)));
    }

    #[test]
    fn retry_after_is_a_floor_under_the_backoff_and_capped() {
        let schedule = Schedule {
            first_delay: ms(100),
            max_delay: Duration::from_secs(10),
            max_retries: 3,
        };
        assert_eq!(
            schedule.delay(0, Some(Duration::from_secs(1)), 1.0),
            Some(Duration::from_secs(1))
        );
        assert_eq!(schedule.delay(0, Some(ms(10)), 1.0), Some(ms(100)));
        // A server asking for an hour gets the cap: the write is not held
        // for an hour behind a header.
        assert_eq!(
            schedule.delay(0, Some(Duration::from_secs(3600)), 0.0),
            Some(Duration::from_secs(10))
        );
        assert_eq!(schedule.delay(3, Some(ms(10)), 0.0), None);
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        let schedule = Schedule {
            max_retries: u32::MAX,
            ..Schedule::default()
        };
        assert_eq!(schedule.delay(64, None, 1.0), Some(schedule.max_delay));
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now: Timestamp = "2026-12-03T09:00:00Z".parse().expect("a timestamp");
        assert_eq!(parse_retry_after("1", now), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Thu, 03 Dec 2026 09:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Thu, 03 Dec 2026 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        for bad in ["", "-1", "1.5", "soon", "Thu, 32 Dec 2026 09:00:00 GMT"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad}");
        }
    }
}
