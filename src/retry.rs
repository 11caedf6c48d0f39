//! What to do after a failure, and how long to wait before trying again:
//! one answer ([`Retry`]) that the sources, the embedding providers and the
//! controller's errors all give, and one backoff ([`RetryPolicy`]) used by
//! the clients between attempts and by the controller between requeues.
//! Pure, no I/O.

use std::{
    hash::{BuildHasher, RandomState},
    time::Duration,
};

use chrono::{DateTime, Utc};

/// What the caller should do next. The controller requeues on it directly:
/// at the interval, at the instant, or after its backoff.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// The user must change something (credentials, URL, branch, access,
    /// key, model, the spec); retrying unchanged input gives the same answer.
    Stalled,
    /// Retry no earlier than this instant (a rate-limit reset, `Retry-After`).
    WaitUntil(DateTime<Utc>),
    /// Transient (5xx, timeouts, connection errors): retry with backoff.
    Transient,
}

/// Bounded, exponential backoff with jitter. The delay before retry `n`
/// (1-based) is `base_delay` doubled `n - 1` times, capped at `max_delay`,
/// minus a random part of up to half of it ("equal jitter"), so that many
/// clients or resources failing together spread out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, including the first (1 = no retry).
    pub attempts: u32,
    /// Delay before the first retry; doubles on each retry.
    pub base_delay: Duration,
    /// Cap on the delay.
    pub max_delay: Duration,
}

/// The clients' retries of one call (sources, embeddings): 4 attempts,
/// 500ms doubling to 10s.
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
    /// The jittered delay before retry number `retry` (1-based).
    pub fn delay(&self, retry: u32) -> Duration {
        self.delay_at(retry, random_unit())
    }

    /// The delay before retry `retry` for a given draw `unit` in `[0, 1]`:
    /// the full delay at 0, half of it at 1.
    pub fn delay_at(&self, retry: u32, unit: f64) -> Duration {
        let full = self
            .base_delay
            .saturating_mul(1u32 << retry.saturating_sub(1).min(20))
            .min(self.max_delay);
        full - (full / 2).mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// A uniformly distributed number in `[0, 1)` from the std hasher's random
/// keys: enough for jitter without a random-number crate.
fn random_unit() -> f64 {
    let bits = RandomState::new().hash_one(std::time::Instant::now()) >> 11;
    bits as f64 / (1u64 << 53) as f64
}

/// The longest wait a server can ask for (`Retry-After`, a rate-limit
/// reset): GitHub's limits reset within the hour, and a remote host that
/// asks for more (or for an absurd time) is asked again after an hour
/// instead of overflowing the time arithmetic or parking a resource for
/// years.
pub const MAX_WAIT: Duration = Duration::from_secs(3600);

/// The wait a `Retry-After` header asks for: delay-seconds or an HTTP date
/// (RFC 9110 §10.2.3), relative to `now`. A date in the past means "now";
/// anything longer than [`MAX_WAIT`] is [`MAX_WAIT`].
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More seconds than a u64 holds is still "a long time".
        let seconds = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(seconds).min(MAX_WAIT));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(MAX_WAIT),
    )
}

/// `now + wait`, with `wait` at most [`MAX_WAIT`]: never overflows.
pub fn wait_from(now: DateTime<Utc>, wait: Duration) -> DateTime<Utc> {
    let wait = chrono::TimeDelta::from_std(wait.min(MAX_WAIT)).unwrap_or(chrono::TimeDelta::zero());
    now.checked_add_signed(wait).unwrap_or(now)
}

/// An instant a server named (a rate-limit reset) brought within
/// `[now, now + MAX_WAIT]`: one in the past means now.
pub fn clamp_instant(now: DateTime<Utc>, at: DateTime<Utc>) -> DateTime<Utc> {
    at.clamp(now, wait_from(now, MAX_WAIT))
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
        };
        for retry in 1..=6 {
            let full =
                (Duration::from_millis(100) * (1 << (retry - 1))).min(Duration::from_millis(300));
            for _ in 0..20 {
                let d = policy.delay(retry);
                assert!(d >= full / 2 && d <= full, "retry {retry}: {d:?}");
            }
        }
    }

    #[test]
    fn backoff_does_not_overflow_on_absurd_retry_numbers() {
        let d = RetryPolicy::default().delay(u32::MAX);
        assert!(d <= RetryPolicy::default().max_delay);
    }

    #[test]
    fn random_units_stay_in_range() {
        assert!(
            (0..100)
                .map(|_| random_unit())
                .all(|u| (0.0..1.0).contains(&u))
        );
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

    #[test]
    fn absurd_waits_are_capped_at_an_hour() {
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        for absurd in [
            "9223372036854775807",
            "18446744073709551615",
            "99999999999999999999999999",
            "99999999",
        ] {
            assert_eq!(parse_retry_after(absurd, now), Some(MAX_WAIT), "{absurd}");
        }
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now),
            Some(MAX_WAIT)
        );
        assert_eq!(parse_retry_after("1e30", now), None);
        assert_eq!(
            wait_from(now, Duration::MAX),
            now + chrono::TimeDelta::hours(1)
        );
        let far = DateTime::<Utc>::MAX_UTC;
        assert_eq!(clamp_instant(now, far), now + chrono::TimeDelta::hours(1));
        assert_eq!(clamp_instant(now, DateTime::<Utc>::MIN_UTC), now);
        assert_eq!(clamp_instant(DateTime::<Utc>::MAX_UTC, far), far);
    }
}
