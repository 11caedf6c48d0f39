//! What every reconcile shares: the clients, the metrics, the progress hub,
//! and per-resource memory that is not worth a status field (consecutive
//! failures for backoff, the built source with its remembered branch head).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use kube::{Client, runtime::events::Recorder};

use crate::{
    api::ObservedInputs,
    chunk::ChunkerConfig,
    embed::Embedder,
    metrics::Metrics,
    progress::ProgressHub,
    source::{HeadCache, Source, SourceStats, github::MINT_ENDPOINT},
    store::Store,
};

use super::dereference::SourceSettings;

/// Shared by all reconciles.
pub struct Context {
    pub client: Client,
    pub store: Store,
    pub metrics: Metrics,
    pub hub: ProgressHub,
    pub recorder: Recorder,
    pub settings: SourceSettings,
    pub chunker: ChunkerConfig,
    resources: Mutex<HashMap<String, ResourceMemory>>,
}

/// A source built for a resource, kept while its spec and Secrets are unchanged.
#[derive(Clone)]
pub struct CachedSource {
    pub fingerprint: String,
    pub source: Arc<dyn Source>,
    pub embedder: Arc<dyn Embedder>,
    /// The git cache directory the source reads through, if any.
    pub cache_dir: Option<std::path::PathBuf>,
}

#[derive(Default)]
struct ResourceMemory {
    failures: u32,
    source: Option<CachedSource>,
    head: Option<HeadCache>,
    /// The inputs of the last run completed here: the status that records
    /// them may not have been written (the API server was down).
    completed_inputs: Option<ObservedInputs>,
    /// Source counters already exported to metrics.
    exported: SourceStats,
}

impl Context {
    pub fn new(
        client: Client,
        store: Store,
        metrics: Metrics,
        hub: ProgressHub,
        recorder: Recorder,
        settings: SourceSettings,
        chunker: ChunkerConfig,
    ) -> Self {
        Context {
            client,
            store,
            metrics,
            hub,
            recorder,
            settings,
            chunker,
            resources: Mutex::default(),
        }
    }

    fn with<T>(&self, key: &str, f: impl FnOnce(&mut ResourceMemory) -> T) -> T {
        let mut resources = self
            .resources
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(resources.entry(key.to_string()).or_default())
    }

    /// Counts a failure; returns how many in a row.
    pub fn record_failure(&self, key: &str) -> u32 {
        self.with(key, |m| {
            m.failures = m.failures.saturating_add(1);
            m.failures
        })
    }

    /// A success resets the backoff.
    pub fn record_success(&self, key: &str) {
        self.with(key, |m| m.failures = 0);
    }

    /// The cached source when its fingerprint still matches.
    pub fn cached_source(&self, key: &str, fingerprint: &str) -> Option<CachedSource> {
        self.with(key, |m| {
            m.source.clone().filter(|c| c.fingerprint == fingerprint)
        })
    }

    /// Keeps `source` for `key`; a different source forgets the branch head.
    pub fn cache_source(&self, key: &str, source: CachedSource) {
        self.with(key, |m| {
            m.head = None;
            m.exported = source.source.stats();
            m.source = Some(source);
        });
    }

    pub fn head(&self, key: &str) -> Option<HeadCache> {
        self.with(key, |m| m.head.clone())
    }

    pub fn set_head(&self, key: &str, head: Option<HeadCache>) {
        self.with(key, |m| m.head = head);
    }

    /// The inputs of the last run this process completed for `key`.
    pub fn completed_inputs(&self, key: &str) -> Option<ObservedInputs> {
        self.with(key, |m| m.completed_inputs.clone())
    }

    pub fn set_completed_inputs(&self, key: &str, inputs: ObservedInputs) {
        self.with(key, |m| m.completed_inputs = Some(inputs));
    }

    /// Exports the requests `source` made since the last export.
    pub fn export_source_stats(&self, key: &str, source: &dyn Source, kind: &str) {
        let now = source.stats();
        let delta = self.with(key, |m| {
            let delta = now.since(&m.exported);
            m.exported = now.clone();
            delta
        });
        for ((endpoint, status), count) in &delta.requests {
            if *endpoint == MINT_ENDPOINT {
                let result = if (200..300).contains(status) {
                    "success"
                } else {
                    "failure"
                };
                self.metrics
                    .github_app_tokens_minted
                    .with_label_values(&[result])
                    .inc_by(*count);
            }
            let status = if *status == 0 {
                "error".to_string()
            } else {
                status.to_string()
            };
            self.metrics
                .source_requests
                .with_label_values(&[*endpoint, status.as_str()])
                .inc_by(*count);
        }
        if let Some(limit) = now.rate_limit {
            let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            self.metrics
                .rate_limit_remaining
                .with_label_values(&[kind])
                .set(gauge(limit.remaining));
            // Per resource too: resources of one kind can use different
            // tokens or App installations, each with its own budget.
            if kind == "github"
                && let Some((namespace, name)) = key.split_once('/')
            {
                self.metrics
                    .github_rate_limit_remaining
                    .with_label_values(&[namespace, name])
                    .set(gauge(limit.remaining));
                if let Some(hourly) = limit.limit {
                    self.metrics
                        .github_rate_limit
                        .with_label_values(&[namespace, name])
                        .set(gauge(hourly));
                }
            }
        }
    }

    /// Drops built sources whose git cache was evicted (their processes
    /// hold the deleted files open); the next run builds them afresh.
    pub fn forget_sources_with_cache(&self, evicted: &[String]) {
        let mut resources = self
            .resources
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for memory in resources.values_mut() {
            let uses_evicted = memory
                .source
                .as_ref()
                .and_then(|s| s.cache_dir.as_ref())
                .and_then(|d| d.file_name())
                .is_some_and(|name| evicted.iter().any(|e| name == e.as_str()));
            if uses_evicted {
                memory.source = None;
                memory.head = None;
            }
        }
    }

    /// Forgets a deleted resource.
    pub fn forget(&self, key: &str) {
        let mut resources = self
            .resources
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        resources.remove(key);
        self.hub.remove(key);
        if let Some((namespace, name)) = key.split_once('/') {
            // Absent for git sources and resources that never synced.
            let _ = self
                .metrics
                .github_rate_limit_remaining
                .remove_label_values(&[namespace, name]);
            let _ = self
                .metrics
                .github_rate_limit
                .remove_label_values(&[namespace, name]);
        }
    }
}
