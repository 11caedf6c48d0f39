//! How long the embeddings client waits between attempts: exponential
//! backoff with jitter, or the server's `Retry-After`. Pure, no I/O.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Bounded retries for transient failures (5xx, 429, timeouts, connection
/// errors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts per batch, including the first (1 = no retry).
    pub attempts: u32,
    /// Delay before the first retry; doubles on each retry, jittered.
    pub base_delay: Duration,
    /// Cap on the backoff delay.
    pub max_delay: Duration,
    /// The longest `Retry-After` the client waits out by itself; a longer
    /// one ends the call with a rate-limit error naming the time, so the
    /// controller requeues instead of holding a worker.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `retry` (1-based): exponential, capped,
    /// with "equal jitter" (half fixed, half random) so that many clients
    /// failing together spread out.
    pub fn backoff(&self, retry: u32) -> Duration {
        crate::retry::jittered_backoff(self.base_delay, self.max_delay, retry)
    }
}

/// The wait a `Retry-After` header asks for: delay-seconds or an HTTP date
/// (RFC 9110 §10.2.3), relative to `now`. A date in the past means "now".
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_is_capped_and_jittered_within_bounds() {
        let policy = RetryPolicy {
            attempts: 6,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
            max_retry_after: Duration::from_secs(1),
        };
        for retry in 1..=6 {
            let full =
                (Duration::from_millis(100) * (1 << (retry - 1))).min(Duration::from_millis(300));
            for _ in 0..20 {
                let d = policy.backoff(retry);
                assert!(d >= full / 2 && d <= full, "retry {retry}: {d:?}");
            }
        }
    }

    #[test]
    fn backoff_does_not_overflow_on_absurd_retry_numbers() {
        let d = RetryPolicy::default().backoff(u32::MAX);
        assert!(d <= RetryPolicy::default().max_delay);
    }

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }
}
