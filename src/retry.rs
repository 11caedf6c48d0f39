//! What to do after a failed call to something outside the operator (a
//! repository host, an embeddings endpoint), and how long to wait between
//! attempts. Shared by the sources and the embedding providers so the
//! controller reads one answer. Pure, no I/O.

use std::{
    hash::{BuildHasher, RandomState},
    time::Duration,
};

use chrono::{DateTime, Utc};

/// What the caller should do next; the controller's error policy maps it to
/// stall / wait / back off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// The user must change something (credentials, URL, branch, access,
    /// key, model); retrying unchanged input gives the same answer.
    Stalled,
    /// Retry no earlier than this instant (a rate-limit reset, `Retry-After`).
    WaitUntil(DateTime<Utc>),
    /// Transient (5xx, timeouts, connection errors): retry with backoff.
    Transient,
}

/// The delay before retry number `retry` (1-based): `base` doubling each
/// time, capped at `max`, with "equal jitter" (half fixed, half random) so
/// that many clients failing together spread out.
pub fn jittered_backoff(base: Duration, max: Duration, retry: u32) -> Duration {
    let capped = base
        .saturating_mul(1u32 << retry.saturating_sub(1).min(20))
        .min(max);
    let half = capped / 2;
    half + half.mul_f64(random_unit())
}

/// A uniformly distributed number in `[0, 1)` from the std hasher's random
/// keys: enough for jitter without a random-number crate.
pub fn random_unit() -> f64 {
    let bits = RandomState::new().hash_one(std::time::Instant::now()) >> 11;
    bits as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_is_capped_and_jittered_within_bounds() {
        let (base, max) = (Duration::from_millis(100), Duration::from_millis(300));
        for retry in 1..=6 {
            let full = (base * (1 << (retry - 1))).min(max);
            for _ in 0..20 {
                let d = jittered_backoff(base, max, retry);
                assert!(d >= full / 2 && d <= full, "retry {retry}: {d:?}");
            }
        }
        assert!(
            jittered_backoff(base, max, u32::MAX) <= max,
            "no overflow on absurd retry numbers"
        );
    }

    #[test]
    fn random_units_stay_in_range() {
        assert!(
            (0..100)
                .map(|_| random_unit())
                .all(|u| (0.0..1.0).contains(&u))
        );
    }
}
