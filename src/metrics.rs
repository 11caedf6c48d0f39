//! Prometheus metrics of the operator, registered in one registry and served
//! at `/metrics`, and the rules that turn what the operator sees (run events,
//! source request counts, failed reconciles) into them. Labels are short
//! static categories (results, stages, change types, error reasons), never
//! free text, so cardinality stays bounded; the per-resource gauges
//! ([`resource`]) add `namespace` and `name`, for a bounded number of
//! resources. No I/O.

pub mod resource;

use std::{cell::RefCell, sync::Arc};

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder, core::Collector,
};

use crate::{
    pipeline::SyncEvent,
    source::{SourceStats, github::MINT_ENDPOINT},
};

pub use resource::{MAX_RESOURCES, ResourceGauges, ResourceState, build_resource_state};

/// Every metric the operator exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Finished runs by result: `completed`, `failed`.
    pub runs: IntCounterVec,
    /// Polls that found the branch unchanged and started no run.
    pub no_change_polls: IntCounter,
    /// Wall time of finished runs, by result.
    pub run_duration: HistogramVec,
    /// Wall time of each pipeline stage.
    pub stage_duration: HistogramVec,
    /// Files by change type: added, modified, deleted, unchanged, renamed, skipped.
    pub files: IntCounterVec,
    /// Memory entries (chunks) written.
    pub memory_entries: IntCounter,
    /// Embeddings by origin: `computed` by the provider or `reused` by content hash.
    pub embeddings: IntCounterVec,
    /// Bytes of blobs fetched from sources.
    pub bytes_fetched: IntCounter,
    /// Requests to sources by endpoint and HTTP status (or `error`).
    pub source_requests: IntCounterVec,
    /// Git objects that fetches added to the operator's caches.
    pub git_objects_fetched: IntCounter,
    /// Bytes that fetches added to the operator's git caches.
    pub git_fetch_bytes: IntCounter,
    /// Completed runs by scan route and, for full diffs, the reason.
    pub scans: IntCounterVec,
    /// The rate-limit budget a source last reported, by source kind.
    pub rate_limit_remaining: IntGaugeVec,
    /// The GitHub budget each resource last saw (`namespace`, `name`): a
    /// GitHub App installation has its own, larger one than a user's token.
    pub github_rate_limit_remaining: IntGaugeVec,
    /// The GitHub hourly limit each resource last saw (5,000 for a token,
    /// up to 12,500 for an App installation).
    pub github_rate_limit: IntGaugeVec,
    /// GitHub App installation tokens minted, by result: `success`, `failure`.
    pub github_app_tokens_minted: IntCounterVec,
    /// Reconciliations started.
    pub reconciliations: IntCounter,
    /// Failed reconciliations by reason.
    pub reconcile_errors: IntCounterVec,
    /// Runs in progress right now.
    pub running_syncs: IntGauge,
    /// Webhook deliveries by result: accepted, ping, ignored, unauthorized,
    /// replayed, too_large, not_found, bad_request, error.
    pub webhook_requests: IntCounterVec,
    /// Reads of webhook Secrets from the API server (cache misses only).
    pub webhook_secret_lookups: IntCounter,
    /// TokenReviews and SubjectAccessReviews sent for HTTP callers, by
    /// `review` (`token`, `access`); cached decisions are not counted.
    pub http_auth_reviews: IntCounterVec,
    /// HTTP connections closed at accept because the listener was full, by
    /// `listener` (`api`, `probe`).
    pub http_connections_rejected: IntCounterVec,
    /// Total size of the git caches at the last measurement.
    pub git_cache_bytes: IntGauge,
    /// Git caches removed to stay under `--git-cache-max-size`.
    pub git_cache_evictions: IntCounter,
    /// Each resource's conditions, sync times, run duration and interval.
    pub resources: ResourceGauges,
    /// The name of every metric family, as exported.
    names: Arc<Vec<String>>,
    /// Shards this replica owns now (`--shards`; 1 or 0 with one shard).
    pub shards_owned: IntGauge,
    /// Shard ownership changes of this replica, by `change`: `acquired`,
    /// `released` (handed back after draining), `lost` (fenced: the Lease
    /// could not be renewed in time).
    pub shard_handovers: IntCounterVec,
    /// Reconciles of each shard's resources in progress or waiting for a
    /// run slot, by `shard` (its number, bounded by `--shards`).
    pub shard_queue_depth: IntGaugeVec,
    /// Child processes running, by `kind`: `git_helper` (the pooled
    /// `cat-file` processes, at most `--git-helpers`) and `git_command`
    /// (one-off fetch, ls-remote, ls-tree, ...).
    pub child_processes: IntGaugeVec,
}

/// The prefix of every metric name.
const PREFIX: &str = "projectsync";

const DURATION_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
];

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        Self::with_resource_limit(MAX_RESOURCES)
    }

    /// Creates and registers every metric, keeping per-resource series for
    /// at most `resource_limit` resources.
    pub fn with_resource_limit(resource_limit: usize) -> Self {
        let registry = Registry::new_custom(Some(PREFIX.into()), None)
            .expect("static registry prefix is valid");
        let names = RefCell::new(Vec::new());
        // Registers `metric` and remembers its name.
        let register = |metric: Box<dyn Collector>| {
            names
                .borrow_mut()
                .extend(metric.desc().iter().map(|d| d.fq_name.clone()));
            registry.register(metric).expect("metric registered once");
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntCounterVec::new(Opts::new(name, help), labels)
                .expect("static metric definition");
            register(Box::new(metric.clone()));
            metric
        };
        let counter = |name: &str, help: &str| {
            let metric = IntCounter::new(name, help).expect("static metric definition");
            register(Box::new(metric.clone()));
            metric
        };
        let histogram_vec = |name: &str, help: &str, labels: &[&str]| {
            let opts = HistogramOpts::new(name, help).buckets(DURATION_BUCKETS.to_vec());
            let metric = HistogramVec::new(opts, labels).expect("static metric definition");
            register(Box::new(metric.clone()));
            metric
        };
        let runs = counter_vec(
            "sync_runs_total",
            "Finished sync runs by result.",
            &["result"],
        );
        let no_change_polls = counter(
            "no_change_polls_total",
            "Polls that found the branch unchanged.",
        );
        let run_duration = histogram_vec(
            "sync_run_duration_seconds",
            "Wall time of sync runs.",
            &["result"],
        );
        let stage_duration = histogram_vec(
            "sync_stage_duration_seconds",
            "Wall time of pipeline stages.",
            &["stage"],
        );
        let files = counter_vec("files_total", "Files by change type.", &["change"]);
        let memory_entries = counter(
            "memory_entries_written_total",
            "Memory entries (chunks) written.",
        );
        let embeddings = counter_vec("embeddings_total", "Embeddings by origin.", &["origin"]);
        let bytes_fetched = counter(
            "source_bytes_fetched_total",
            "Bytes of blobs fetched from sources.",
        );
        let source_requests = counter_vec(
            "source_requests_total",
            "Requests to repository sources by endpoint and status.",
            &["endpoint", "status"],
        );
        let rate_limit_remaining = IntGaugeVec::new(
            Opts::new(
                "source_rate_limit_remaining",
                "Rate-limit budget the source last reported.",
            ),
            &["source"],
        )
        .expect("static metric definition");
        register(Box::new(rate_limit_remaining.clone()));
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let metric =
                IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
            register(Box::new(metric.clone()));
            metric
        };
        let github_rate_limit_remaining = gauge_vec(
            "github_rate_limit_remaining",
            "GitHub rate-limit budget a resource last saw.",
            &["namespace", "name"],
        );
        let github_rate_limit = gauge_vec(
            "github_rate_limit_limit",
            "GitHub hourly rate limit a resource last saw.",
            &["namespace", "name"],
        );
        let github_app_tokens_minted = counter_vec(
            "github_app_tokens_minted_total",
            "GitHub App installation tokens minted, by result.",
            &["result"],
        );
        let reconciliations = counter("reconciliations_total", "Reconciliations started.");
        let reconcile_errors = counter_vec(
            "reconcile_errors_total",
            "Failed reconciliations by reason.",
            &["reason"],
        );
        let running_syncs = IntGauge::new("running_syncs", "Sync runs in progress.")
            .expect("static metric definition");
        register(Box::new(running_syncs.clone()));
        let webhook_requests = counter_vec(
            "webhook_requests_total",
            "Webhook deliveries by result.",
            &["result"],
        );
        let webhook_secret_lookups = counter(
            "webhook_secret_lookups_total",
            "Webhook Secrets read from the API server (cache misses).",
        );
        let http_auth_reviews = counter_vec(
            "http_auth_reviews_total",
            "TokenReviews and SubjectAccessReviews sent for HTTP callers.",
            &["review"],
        );
        let http_connections_rejected = counter_vec(
            "http_connections_rejected_total",
            "HTTP connections closed at accept because the listener was full.",
            &["listener"],
        );
        let git_cache_bytes = IntGauge::new(
            "git_cache_bytes",
            "Total size of the git caches at the last measurement.",
        )
        .expect("static metric definition");
        register(Box::new(git_cache_bytes.clone()));
        let git_objects_fetched = counter(
            "git_objects_fetched_total",
            "Git objects that fetches added to the git caches.",
        );
        let git_fetch_bytes = counter(
            "git_fetch_bytes_total",
            "Bytes that fetches added to the git caches (packed).",
        );
        let scans = counter_vec(
            "scans_total",
            "Completed runs by scan route (ChangeSet or FullDiff) and full-diff reason.",
            &["route", "reason"],
        );
        let git_cache_evictions = counter(
            "git_cache_evictions_total",
            "Git caches evicted (least recently used) to stay under the size limit.",
        );
        let child_processes = IntGaugeVec::new(
            Opts::new(
                "child_processes",
                "Child processes running, by kind (git_helper, git_command).",
            ),
            &["kind"],
        )
        .expect("static metric definition");
        register(Box::new(child_processes.clone()));
        for kind in ["git_helper", "git_command"] {
            child_processes.with_label_values(&[kind]).set(0);
        }
        let shards_owned = IntGauge::new("shards_owned", "Shards this replica owns.")
            .expect("static metric definition");
        register(Box::new(shards_owned.clone()));
        let shard_handovers = counter_vec(
            "shard_handovers_total",
            "Shard ownership changes of this replica (acquired, released, lost).",
            &["change"],
        );
        let shard_queue_depth = IntGaugeVec::new(
            Opts::new(
                "shard_queue_depth",
                "Reconciles of a shard's resources in progress or waiting for a run slot.",
            ),
            &["shard"],
        )
        .expect("static metric definition");
        register(Box::new(shard_queue_depth.clone()));
        let mut names = names.into_inner();
        let resources = ResourceGauges::new(&registry, &mut names, resource_limit);
        Metrics {
            registry,
            resources,
            names: Arc::new(names),
            runs,
            no_change_polls,
            run_duration,
            stage_duration,
            files,
            memory_entries,
            embeddings,
            bytes_fetched,
            source_requests,
            git_objects_fetched,
            git_fetch_bytes,
            scans,
            rate_limit_remaining,
            github_rate_limit_remaining,
            github_rate_limit,
            github_app_tokens_minted,
            reconciliations,
            reconcile_errors,
            running_syncs,
            webhook_requests,
            webhook_secret_lookups,
            http_auth_reviews,
            http_connections_rejected,
            git_cache_bytes,
            git_cache_evictions,
            shards_owned,
            shard_handovers,
            shard_queue_depth,
            child_processes,
        }
    }

    /// The helper pool's settings with this registry's gauges of child
    /// processes.
    pub fn git_helper_settings(
        &self,
        max_helpers: usize,
        idle_timeout: std::time::Duration,
    ) -> crate::source::git::PoolSettings {
        crate::source::git::PoolSettings {
            max_helpers,
            idle_timeout,
            helpers_gauge: Some(self.child_processes.with_label_values(&["git_helper"])),
            commands_gauge: Some(self.child_processes.with_label_values(&["git_command"])),
        }
    }

    /// Counts what one event of a run says: an unchanged poll, a stage's
    /// duration, a finished run with what it wrote.
    pub fn record_event(&self, event: &SyncEvent) {
        match event {
            SyncEvent::Unchanged { .. } => self.no_change_polls.inc(),
            SyncEvent::StageFinished { stage, duration_ms } => self
                .stage_duration
                .with_label_values(&[stage.as_str()])
                .observe(*duration_ms as f64 / 1000.0),
            SyncEvent::Completed(summary) => {
                self.runs.with_label_values(&["completed"]).inc();
                let total_ms = summary.timings.total_ms();
                self.run_duration
                    .with_label_values(&["completed"])
                    .observe(total_ms as f64 / 1000.0);
                for (change, n) in [
                    ("added", summary.files.added),
                    ("modified", summary.files.modified),
                    ("deleted", summary.files.deleted),
                    ("unchanged", summary.files.unchanged),
                    ("renamed", summary.files.renamed),
                    ("skipped", summary.files.skipped),
                ] {
                    self.files.with_label_values(&[change]).inc_by(n);
                }
                self.memory_entries.inc_by(summary.memory_entries);
                self.embeddings
                    .with_label_values(&["computed"])
                    .inc_by(summary.embeddings_computed);
                self.embeddings
                    .with_label_values(&["reused"])
                    .inc_by(summary.embeddings_reused);
                self.bytes_fetched.inc_by(summary.bytes_fetched);
                if let Some(transfer) = summary.git_transfer {
                    self.git_objects_fetched.inc_by(transfer.objects);
                    self.git_fetch_bytes.inc_by(transfer.bytes);
                }
                if let Some(scan) = &summary.scan {
                    let reason = scan.reason.as_deref().unwrap_or("");
                    self.scans
                        .with_label_values(&[scan.route.as_str(), reason])
                        .inc();
                }
            }
            // A check that failed before opening a run is not a run.
            SyncEvent::Failed {
                sync_id: Some(_), ..
            } => self.runs.with_label_values(&["failed"]).inc(),
            _ => {}
        }
    }

    /// Counts a failed reconcile under its reason.
    pub fn record_reconcile_error(&self, reason: &str) {
        self.reconcile_errors.with_label_values(&[reason]).inc();
    }

    /// Exports `delta`, the requests a source of `kind` made for resource
    /// `key` (`namespace/name`) since the last export, and the rate-limit
    /// budget it saw last. GitHub App token mints are counted on their own; GitHub
    /// budgets are kept per resource too, as resources of one kind can use
    /// different tokens or App installations, each with its own budget.
    pub fn record_source_stats(&self, key: &str, kind: &str, delta: &SourceStats) {
        for ((endpoint, status), count) in &delta.requests {
            if *endpoint == MINT_ENDPOINT {
                let result = if (200..300).contains(status) {
                    "success"
                } else {
                    "failure"
                };
                self.github_app_tokens_minted
                    .with_label_values(&[result])
                    .inc_by(*count);
            }
            let status = if *status == 0 {
                "error".to_string()
            } else {
                status.to_string()
            };
            self.source_requests
                .with_label_values(&[*endpoint, status.as_str()])
                .inc_by(*count);
        }
        if let Some(limit) = delta.rate_limit {
            let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            self.rate_limit_remaining
                .with_label_values(&[kind])
                .set(gauge(limit.remaining));
            if kind == "github"
                && let Some((namespace, name)) = key.split_once('/')
            {
                self.github_rate_limit_remaining
                    .with_label_values(&[namespace, name])
                    .set(gauge(limit.remaining));
                if let Some(hourly) = limit.limit {
                    self.github_rate_limit
                        .with_label_values(&[namespace, name])
                        .set(gauge(hourly));
                }
            }
        }
    }

    /// Exports what the status of resource `key` (`namespace/name`) says.
    pub fn record_resource(&self, key: &str, state: &ResourceState) {
        if let Some((namespace, name)) = key.split_once('/') {
            self.resources.record(namespace, name, state);
        }
    }

    /// Exports how many reconciles of resource `key` failed in a row.
    pub fn record_resource_failures(&self, key: &str, failures: u32) {
        if let Some((namespace, name)) = key.split_once('/') {
            self.resources.record_failures(namespace, name, failures);
        }
    }

    /// The names of every metric family the operator exports (histograms
    /// add `_bucket`, `_sum` and `_count` to theirs), whether or not it has
    /// a series yet: what dashboards and alert rules may refer to.
    pub fn family_names(&self) -> Vec<String> {
        self.names
            .iter()
            .map(|name| format!("{PREFIX}_{name}"))
            .collect()
    }

    /// Drops the series of a deleted resource (`namespace/name`).
    pub fn forget_resource(&self, key: &str) {
        if let Some((namespace, name)) = key.split_once('/') {
            self.resources.forget(namespace, name);
            // Absent for git sources and resources that never synced.
            let _ = self
                .github_rate_limit_remaining
                .remove_label_values(&[namespace, name]);
            let _ = self
                .github_rate_limit
                .remove_label_values(&[namespace, name]);
        }
    }

    /// The text exposition format served at `/metrics`.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(buffer).expect("prometheus text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_metrics_carry_the_prefix_and_labels() {
        let metrics = Metrics::new();
        metrics.runs.with_label_values(&["completed"]).inc();
        metrics.files.with_label_values(&["added"]).inc_by(3);
        let text = metrics.render();
        assert!(
            text.contains("projectsync_sync_runs_total{result=\"completed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("projectsync_files_total{change=\"added\"} 3"),
            "{text}"
        );
    }

    #[test]
    fn a_completed_run_counts_its_files_and_an_unchanged_poll_counts_once() {
        let metrics = Metrics::new();
        let mut summary = crate::pipeline::RunSummary::default();
        summary.files.modified = 2;
        metrics.record_event(&SyncEvent::Completed(summary));
        metrics.record_event(&SyncEvent::Unchanged { commit: "c".into() });
        let text = metrics.render();
        assert!(
            text.contains("projectsync_sync_runs_total{result=\"completed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("projectsync_files_total{change=\"modified\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("projectsync_no_change_polls_total 1"),
            "{text}"
        );
    }

    #[test]
    fn github_budgets_are_per_resource_and_app_token_mints_counted() {
        let metrics = Metrics::new();
        let mut delta = SourceStats::default();
        delta.requests.insert((MINT_ENDPOINT, 201), 1);
        delta.rate_limit = Some(crate::source::RateLimit {
            limit: Some(5000),
            remaining: 4999,
            reset: None,
        });
        metrics.record_source_stats("team/app", "github", &delta);
        let text = metrics.render();
        assert!(
            text.contains("projectsync_github_app_tokens_minted_total{result=\"success\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "projectsync_github_rate_limit_remaining{name=\"app\",namespace=\"team\"} 4999"
            ),
            "{text}"
        );
        metrics.forget_resource("team/app");
        assert!(!metrics.render().contains("github_rate_limit_remaining{"));
    }
}
