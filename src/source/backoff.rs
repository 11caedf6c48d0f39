//! Backoff with jitter for transient failures (pure, no I/O), shared by the
//! sources. Only 5xx answers, timeouts and connection errors are retried;
//! rate limits and user errors never are.

use std::time::Duration;

/// Retry policy for transient failures (5xx, timeouts, connection errors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, including the first (1 = no retry).
    pub attempts: u32,
    /// Delay before the first retry; doubles each time, jittered.
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `retry` (1-based): exponential with
    /// "equal jitter" (half fixed, half random) so a burst of failing
    /// clients spreads out.
    pub fn delay(&self, retry: u32) -> Duration {
        crate::retry::jittered_backoff(self.base_delay, self.max_delay, retry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered_within_bounds() {
        let p = RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
        };
        for retry in 1..=5 {
            let d = p.delay(retry);
            let full =
                (Duration::from_millis(100) * (1 << (retry - 1))).min(Duration::from_millis(300));
            assert!(d >= full / 2 && d <= full, "retry {retry}: {d:?}");
        }
    }
}
