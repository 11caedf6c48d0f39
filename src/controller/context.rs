//! What every reconcile shares: the clients, the metrics, the progress hub,
//! and per-resource memory that is not worth a status field (consecutive
//! failures for backoff, the interval the last validation found, the built
//! source with its remembered branch head, which the store also keeps for
//! after a restart).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use kube::{Client, runtime::events::Recorder};

use crate::{
    api::{ObservedInputs, ProjectSyncStatus},
    chunk::ChunkerConfig,
    embed::Embedder,
    metrics::{Metrics, build_resource_state},
    progress::ProgressHub,
    source::{HeadCache, Source, SourceHints, SourceStats},
    store::{ProjectId, SourceMemory, Store, StoreError},
};

use super::{dereference::SourceSettings, limits::RunLimits, shards::Shards};

/// Shared by all reconciles.
pub struct Context {
    pub client: Client,
    pub store: Store,
    pub metrics: Metrics,
    pub hub: ProgressHub,
    pub recorder: Recorder,
    pub settings: SourceSettings,
    pub chunker: ChunkerConfig,
    /// Run slots (global and per namespace) and the other limits of a run.
    pub limits: Arc<RunLimits>,
    /// The shards this replica holds: which resources it may reconcile.
    pub shards: Shards,
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
    /// `spec.interval` as the last reconcile validated it; `None` when the
    /// spec did not validate.
    interval: Option<Duration>,
    source: Option<CachedSource>,
    head: Option<HeadCache>,
    /// What the store keeps of the head and the source's hints, as last
    /// read or written; `None` until read for the built source.
    stored: Option<SourceMemory>,
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
            limits: Arc::new(RunLimits::default()),
            shards: Shards::single(),
            resources: Mutex::default(),
        }
    }

    /// The same context with these limits instead of the defaults.
    pub fn with_limits(mut self, limits: RunLimits) -> Self {
        self.limits = Arc::new(limits);
        self
    }

    /// The same context reconciling only the resources of the shards it
    /// holds in `shards`.
    pub fn with_shards(mut self, shards: Shards) -> Self {
        self.shards = shards;
        self
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
        let failures = self.with(key, |m| {
            m.failures = m.failures.saturating_add(1);
            m.failures
        });
        self.metrics.record_resource_failures(key, failures);
        failures
    }

    /// A success resets the backoff.
    pub fn record_success(&self, key: &str) {
        self.with(key, |m| m.failures = 0);
        self.metrics.record_resource_failures(key, 0);
    }

    /// Exports what `status` says of resource `key` as its gauges.
    pub fn export_status(&self, key: &str, status: &ProjectSyncStatus, suspended: bool) {
        let state = build_resource_state(status, suspended, self.interval(key));
        self.metrics.record_resource(key, &state);
    }

    /// Remembers the interval a reconcile validated (or `None` for a spec
    /// that did not validate), so the error policy that follows it need
    /// not validate the spec again.
    pub fn set_interval(&self, key: &str, interval: Option<Duration>) {
        self.with(key, |m| m.interval = interval);
    }

    /// The interval the last reconcile of `key` validated.
    pub fn interval(&self, key: &str) -> Option<Duration> {
        self.with(key, |m| m.interval)
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
            m.stored = None;
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

    /// Gives a newly built source, and the head of the next poll, what the
    /// store kept from before a restart (once per built source), so the
    /// first poll is a conditional request and a walked tree is walked
    /// again at once.
    pub async fn restore_source_memory(
        &self,
        key: &str,
        project: ProjectId,
        source: &dyn Source,
    ) -> Result<(), StoreError> {
        if self.with(key, |m| m.stored.is_some()) {
            return Ok(());
        }
        let stored = self.store.source_memory(project).await?;
        source.restore_hints(SourceHints {
            tree_walked: stored.tree_walked,
        });
        let head = stored.head_sha.clone().map(|sha| HeadCache {
            sha,
            etag: stored.head_etag.clone(),
        });
        self.with(key, |m| {
            if m.head.is_none() {
                m.head = head;
            }
            m.stored = Some(stored);
        });
        Ok(())
    }

    /// Remembers `head` for the next poll and keeps it, with the source's
    /// hints, in the store when they changed (an unchanged poll writes
    /// nothing). A failed write only costs the first poll after a restart.
    pub async fn remember_source(
        &self,
        key: &str,
        project: ProjectId,
        head: Option<HeadCache>,
        source: &dyn Source,
    ) {
        let memory = SourceMemory {
            head_sha: head.as_ref().map(|h| h.sha.clone()),
            head_etag: head.as_ref().and_then(|h| h.etag.clone()),
            tree_walked: source.hints().tree_walked,
        };
        let changed = self.with(key, |m| {
            m.head = head;
            m.stored.as_ref() != Some(&memory)
        });
        if !changed {
            return;
        }
        match self.store.set_source_memory(project, &memory).await {
            Ok(()) => self.with(key, |m| m.stored = Some(memory)),
            Err(error) => {
                tracing::warn!(%error, "could not keep the branch head for after a restart")
            }
        }
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
        self.metrics.record_source_stats(key, kind, &delta);
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
        self.metrics.forget_resource(key);
    }
}
