//! Request accounting for sources (no I/O): how many requests went to which
//! endpoint with which status, and the last rate limit the provider reported.
//! Callers read it for metrics; the benchmark reads it to count requests.

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

/// The provider's rate limit as last observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub limit: Option<u64>,
    pub remaining: u64,
    pub reset: Option<DateTime<Utc>>,
}

/// A snapshot of a source's request counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// Requests by (endpoint, HTTP status); status 0 is a transport error
    /// (no response). Git sources count remote operations with status 0 on
    /// failure and 200 on success.
    pub requests: BTreeMap<(&'static str, u16), u64>,
    pub rate_limit: Option<RateLimit>,
    /// Objects and bytes that fetches added to a git cache (from git's own
    /// object counts); `None` for sources without one.
    pub transfer: Option<Transfer>,
}

/// What fetches brought into a local object store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transfer {
    pub objects: u64,
    pub bytes: u64,
}

impl SourceStats {
    /// All requests made.
    pub fn total(&self) -> u64 {
        self.requests.values().sum()
    }

    /// Requests made to one endpoint, any status.
    pub fn endpoint(&self, endpoint: &str) -> u64 {
        self.requests
            .iter()
            .filter(|((e, _), _)| *e == endpoint)
            .map(|(_, n)| n)
            .sum()
    }

    /// Requests answered with one status, any endpoint.
    pub fn status(&self, status: u16) -> u64 {
        self.requests
            .iter()
            .filter(|((_, s), _)| *s == status)
            .map(|(_, n)| n)
            .sum()
    }

    /// Counts since `earlier` (a snapshot of the same source).
    pub fn since(&self, earlier: &SourceStats) -> SourceStats {
        let requests = self
            .requests
            .iter()
            .filter_map(|(k, n)| {
                let d = n - earlier.requests.get(k).copied().unwrap_or(0);
                (d > 0).then_some((*k, d))
            })
            .collect();
        SourceStats {
            requests,
            rate_limit: self.rate_limit,
            transfer: self.transfer.map(|now| {
                let before = earlier.transfer.unwrap_or_default();
                Transfer {
                    objects: now.objects.saturating_sub(before.objects),
                    bytes: now.bytes.saturating_sub(before.bytes),
                }
            }),
        }
    }
}

/// The thread-safe recorder a source owns.
#[derive(Debug, Default)]
pub(crate) struct StatsRecorder {
    inner: Mutex<SourceStats>,
}

impl StatsRecorder {
    pub(crate) fn record(&self, endpoint: &'static str, status: u16) {
        let mut stats = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *stats.requests.entry((endpoint, status)).or_default() += 1;
    }

    /// A recorder for a source with a local object store: its stats count
    /// transfers from the start (zero until a fetch brings something).
    pub(crate) fn with_transfers() -> Self {
        StatsRecorder {
            inner: Mutex::new(SourceStats {
                transfer: Some(Transfer::default()),
                ..SourceStats::default()
            }),
        }
    }

    pub(crate) fn record_transfer(&self, transfer: Transfer) {
        let mut stats = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let total = stats.transfer.get_or_insert_with(Transfer::default);
        total.objects += transfer.objects;
        total.bytes += transfer.bytes;
    }

    pub(crate) fn observe_rate_limit(&self, rate_limit: RateLimit) {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rate_limit = Some(rate_limit);
    }

    pub(crate) fn snapshot(&self) -> SourceStats {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up_by_endpoint_status_and_difference() {
        let recorder = StatsRecorder::default();
        recorder.record("ref", 304);
        let before = recorder.snapshot();
        recorder.record("ref", 200);
        recorder.record("blob", 200);
        recorder.record("blob", 200);
        let stats = recorder.snapshot();
        assert_eq!(
            (stats.total(), stats.endpoint("blob"), stats.status(200)),
            (4, 2, 3)
        );
        let delta = stats.since(&before);
        assert_eq!(delta.total(), 3);
        assert_eq!(delta.requests.get(&("ref", 304)), None);
    }

    #[test]
    fn transfers_add_up_and_subtract_like_requests() {
        assert_eq!(StatsRecorder::default().snapshot().transfer, None);
        let recorder = StatsRecorder::with_transfers();
        recorder.record_transfer(Transfer {
            objects: 10,
            bytes: 100,
        });
        let before = recorder.snapshot();
        recorder.record_transfer(Transfer {
            objects: 3,
            bytes: 7,
        });
        let delta = recorder.snapshot().since(&before);
        assert_eq!(
            delta.transfer,
            Some(Transfer {
                objects: 3,
                bytes: 7
            })
        );
    }
}
