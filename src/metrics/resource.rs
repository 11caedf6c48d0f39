//! Per-resource gauges, in the spirit of Flux's `gotk_reconcile_condition`:
//! what each ProjectSync's status says (its conditions, when it last synced
//! and was last checked, how long its last run took, its interval), so that
//! alerts can name the resource that stopped syncing. Labelled by
//! `namespace` and `name` only (plus a fixed `type` and `status` for
//! conditions), for at most [`MAX_RESOURCES`] resources; a deleted resource's
//! series are removed. No I/O.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use prometheus::{GaugeVec, IntCounter, IntGaugeVec, Opts, Registry};

use crate::api::{
    ProjectSyncStatus,
    conditions::{READY, RECONCILING, STALLED, find_condition},
};

/// Resources whose series are kept at once. Past it, new resources get no
/// per-resource series (and `projectsync_resource_series_dropped_total`
/// counts them), so a flood of resources cannot flood Prometheus.
pub const MAX_RESOURCES: usize = 20_000;

/// The condition types exported, each with exactly one series per resource.
const CONDITION_TYPES: [&str; 3] = [READY, RECONCILING, STALLED];
/// The condition statuses; an absent condition is exported as `False`.
const CONDITION_STATUSES: [&str; 3] = ["True", "False", "Unknown"];

/// What one resource's status says, ready to export. Built by
/// [`build_resource_state`], a pure function of the status.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceState {
    /// `(type, status)` of Ready, Reconciling and Stalled.
    pub conditions: [(&'static str, &'static str); 3],
    pub suspended: bool,
    /// Unix seconds when the last completed run finished.
    pub last_sync: Option<f64>,
    /// Unix seconds of the last successful check (a completed run or an
    /// unchanged poll): what "the mirror is current" rests on.
    pub last_check: Option<f64>,
    /// Seconds the newest finished run (completed or failed) took.
    pub last_run_duration: Option<f64>,
    /// `spec.interval` as the last reconcile validated it.
    pub interval: Option<Duration>,
}

/// Reads the exported state out of a status.
pub fn build_resource_state(
    status: &ProjectSyncStatus,
    suspended: bool,
    interval: Option<Duration>,
) -> ResourceState {
    let condition = |type_: &'static str| {
        let status = match find_condition(&status.conditions, type_).map(|c| c.status.as_str()) {
            Some("True") => "True",
            Some("Unknown") => "Unknown",
            _ => "False",
        };
        (type_, status)
    };
    let seconds = |t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time| {
        t.0.as_millisecond() as f64 / 1000.0
    };
    let newest = status
        .history
        .iter()
        .filter(|run| run.finished_at.is_some())
        .max_by_key(|run| run.started_at.0);
    ResourceState {
        conditions: CONDITION_TYPES.map(condition),
        suspended,
        last_sync: status
            .last_sync
            .as_ref()
            .and_then(|run| run.finished_at.as_ref())
            .map(seconds),
        last_check: status.last_checked_time.as_ref().map(seconds),
        last_run_duration: newest.and_then(|run| {
            let finished = run.finished_at.as_ref()?;
            let millis = (finished.0.as_millisecond() - run.started_at.0.as_millisecond()).max(0);
            Some(millis as f64 / 1000.0)
        }),
        interval,
    }
}

/// The per-resource gauges, registered in the operator's registry.
#[derive(Clone)]
pub struct ResourceGauges {
    condition: IntGaugeVec,
    suspended: IntGaugeVec,
    last_sync: GaugeVec,
    last_check: GaugeVec,
    last_run_duration: GaugeVec,
    interval: GaugeVec,
    consecutive_failures: IntGaugeVec,
    dropped: IntCounter,
    tracked: Arc<Mutex<HashSet<(String, String)>>>,
    limit: usize,
}

impl ResourceGauges {
    /// Creates the gauges and registers them in `registry`; `register`
    /// records each one's name.
    pub(super) fn new(registry: &Registry, names: &mut Vec<String>, limit: usize) -> Self {
        let mut register = |metric: Box<dyn prometheus::core::Collector>| {
            names.extend(metric.desc().iter().map(|d| d.fq_name.clone()));
            registry.register(metric).expect("metric registered once");
        };
        let resource = ["namespace", "name"];
        let int_gauge = |name: &str, help: &str, labels: &[&str]| {
            IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition")
        };
        let gauge = |name: &str, help: &str| {
            GaugeVec::new(Opts::new(name, help), &resource).expect("static metric definition")
        };
        let condition = int_gauge(
            "resource_condition",
            "A ProjectSync's condition: one series per type (Ready, Reconciling, Stalled) with the current status, value 1.",
            &["namespace", "name", "type", "status"],
        );
        let suspended = int_gauge(
            "resource_suspended",
            "1 while a ProjectSync is suspended.",
            &resource,
        );
        let last_sync = gauge(
            "resource_last_sync_timestamp_seconds",
            "When the ProjectSync's last completed run finished (Unix seconds).",
        );
        let last_check = gauge(
            "resource_last_check_timestamp_seconds",
            "When the ProjectSync's source was last checked successfully, changed or not (Unix seconds).",
        );
        let last_run_duration = gauge(
            "resource_last_run_duration_seconds",
            "Wall time of the ProjectSync's newest finished run, completed or failed.",
        );
        let interval = gauge(
            "resource_interval_seconds",
            "The ProjectSync's spec.interval.",
        );
        let consecutive_failures = int_gauge(
            "resource_consecutive_failures",
            "Reconciles of the ProjectSync that failed in a row (0 after a success).",
            &resource,
        );
        let dropped = IntCounter::new(
            "resource_series_dropped_total",
            "Resources given no per-resource series because the limit of tracked resources was reached.",
        )
        .expect("static metric definition");
        for metric in [&condition, &suspended, &consecutive_failures] {
            register(Box::new(metric.clone()));
        }
        for metric in [&last_sync, &last_check, &last_run_duration, &interval] {
            register(Box::new(metric.clone()));
        }
        register(Box::new(dropped.clone()));
        ResourceGauges {
            condition,
            suspended,
            last_sync,
            last_check,
            last_run_duration,
            interval,
            consecutive_failures,
            dropped,
            tracked: Arc::default(),
            limit,
        }
    }

    /// Admits `namespace/name` to the tracked set; false past the limit.
    fn admit(&self, namespace: &str, name: &str) -> bool {
        let mut tracked = self
            .tracked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = (namespace.to_string(), name.to_string());
        if tracked.contains(&key) {
            return true;
        }
        if tracked.len() >= self.limit {
            self.dropped.inc();
            return false;
        }
        tracked.insert(key);
        true
    }

    /// Exports `state` for the resource.
    pub fn record(&self, namespace: &str, name: &str, state: &ResourceState) {
        if !self.admit(namespace, name) {
            return;
        }
        let resource = [namespace, name];
        for (type_, current) in state.conditions {
            for status in CONDITION_STATUSES.iter().filter(|s| **s != current) {
                let _ = self
                    .condition
                    .remove_label_values(&[namespace, name, type_, status]);
            }
            self.condition
                .with_label_values(&[namespace, name, type_, current])
                .set(1);
        }
        self.suspended
            .with_label_values(&resource)
            .set(i64::from(state.suspended));
        let set_or_remove = |gauge: &GaugeVec, value: Option<f64>| match value {
            Some(value) => gauge.with_label_values(&resource).set(value),
            None => {
                let _ = gauge.remove_label_values(&resource);
            }
        };
        set_or_remove(&self.last_sync, state.last_sync);
        set_or_remove(&self.last_check, state.last_check);
        set_or_remove(&self.last_run_duration, state.last_run_duration);
        set_or_remove(&self.interval, state.interval.map(|i| i.as_secs_f64()));
    }

    /// Exports how many reconciles of the resource failed in a row.
    pub fn record_failures(&self, namespace: &str, name: &str, failures: u32) {
        if self.admit(namespace, name) {
            self.consecutive_failures
                .with_label_values(&[namespace, name])
                .set(i64::from(failures));
        }
    }

    /// Removes every series of the resource.
    pub fn forget(&self, namespace: &str, name: &str) {
        let removed = self
            .tracked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&(namespace.to_string(), name.to_string()));
        if !removed {
            return;
        }
        self.remove_series(namespace, name);
    }

    /// Removes the series of every resource: a replica that stops
    /// reconciling must not leave a frozen picture behind for alerts.
    pub fn forget_all(&self) {
        let tracked: Vec<(String, String)> = self
            .tracked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .drain()
            .collect();
        for (namespace, name) in tracked {
            self.remove_series(&namespace, &name);
        }
    }

    fn remove_series(&self, namespace: &str, name: &str) {
        for type_ in CONDITION_TYPES {
            for status in CONDITION_STATUSES {
                let _ = self
                    .condition
                    .remove_label_values(&[namespace, name, type_, status]);
            }
        }
        let resource = [namespace, name];
        let _ = self.suspended.remove_label_values(&resource);
        let _ = self.consecutive_failures.remove_label_values(&resource);
        for gauge in [
            &self.last_sync,
            &self.last_check,
            &self.last_run_duration,
            &self.interval,
        ] {
            let _ = gauge.remove_label_values(&resource);
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        apimachinery::pkg::apis::meta::v1::{Condition, Time},
        jiff::Timestamp,
    };

    use super::*;
    use crate::{api::SyncSummary, metrics::Metrics};

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).expect("valid time"))
    }

    fn condition(type_: &str, status: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: "Succeeded".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: at(0),
        }
    }

    fn synced_status() -> ProjectSyncStatus {
        let run = |started: i64, finished: i64| SyncSummary {
            id: "1".into(),
            commit: "c".repeat(40),
            short_commit: "c".repeat(7),
            result: "COMPLETED".into(),
            trigger: None,
            started_at: at(started),
            finished_at: Some(at(finished)),
            files: Default::default(),
            durations: Default::default(),
            scan: None,
            fetched: None,
            message: None,
        };
        ProjectSyncStatus {
            conditions: vec![condition(READY, "True")],
            last_checked_time: Some(at(2_000)),
            last_sync: Some(run(1_000, 1_010)),
            // Newest first, as the status keeps them; the newest took 3 s.
            history: vec![run(1_500, 1_503), run(1_000, 1_010)],
            ..ProjectSyncStatus::default()
        }
    }

    #[test]
    fn a_synced_status_exports_ready_times_and_the_newest_run_duration() {
        let state = build_resource_state(&synced_status(), false, Some(Duration::from_secs(300)));
        assert_eq!(
            state.conditions,
            [(READY, "True"), (RECONCILING, "False"), (STALLED, "False")]
        );
        assert_eq!(state.last_sync, Some(1_010.0));
        assert_eq!(state.last_check, Some(2_000.0));
        assert_eq!(state.last_run_duration, Some(3.0));
    }

    #[test]
    fn each_condition_type_has_one_series_with_the_current_status() {
        let metrics = Metrics::new();
        let mut status = synced_status();
        metrics.record_resource("team/app", &build_resource_state(&status, false, None));
        status.conditions = vec![condition(READY, "False"), condition(STALLED, "True")];
        metrics.record_resource("team/app", &build_resource_state(&status, false, None));
        let text = metrics.render();
        let ready: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("projectsync_resource_condition{") && l.contains("Ready"))
            .collect();
        assert_eq!(
            ready,
            [
                "projectsync_resource_condition{name=\"app\",namespace=\"team\",status=\"False\",type=\"Ready\"} 1"
            ],
            "{text}"
        );
        assert!(
            text.contains("status=\"True\",type=\"Stalled\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn a_deleted_resource_leaves_no_series_behind() {
        let metrics = Metrics::new();
        let state = build_resource_state(&synced_status(), false, Some(Duration::from_secs(60)));
        metrics.record_resource("team/app", &state);
        metrics.record_resource("team/other", &state);
        metrics.record_resource_failures("team/app", 2);
        metrics.forget_resource("team/app");
        let text = metrics.render();
        assert!(!text.contains("name=\"app\""), "{text}");
        assert!(
            text.contains(
                "projectsync_resource_interval_seconds{name=\"other\",namespace=\"team\"} 60"
            ),
            "{text}"
        );
        metrics.resources.forget_all();
        assert!(!metrics.render().contains("namespace=\"team\""));
    }

    #[test]
    fn resources_past_the_limit_get_no_series_and_are_counted() {
        let metrics = Metrics::with_resource_limit(2);
        let state = build_resource_state(&synced_status(), false, None);
        for name in ["a", "b", "c", "d"] {
            metrics.record_resource(&format!("team/{name}"), &state);
        }
        let text = metrics.render();
        let series = text
            .lines()
            .filter(|l| l.starts_with("projectsync_resource_suspended{"))
            .count();
        assert_eq!(series, 2, "{text}");
        assert!(
            text.contains("projectsync_resource_series_dropped_total 2"),
            "{text}"
        );
        // A freed place is taken by the next resource.
        metrics.forget_resource("team/a");
        metrics.record_resource("team/c", &state);
        assert!(metrics.render().contains("name=\"c\""));
    }

    #[test]
    fn every_family_is_named_including_those_without_series() {
        let names = Metrics::new().family_names();
        for name in [
            "projectsync_resource_condition",
            "projectsync_resource_last_sync_timestamp_seconds",
            "projectsync_sync_runs_total",
            "projectsync_running_syncs",
            "projectsync_github_rate_limit_remaining",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
        }
    }
}
