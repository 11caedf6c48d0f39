//! Why a reconcile should (or should not) start a run: the spec changed, a
//! user asked with the `projectsync.dev/requested-at` annotation (or a
//! webhook did, through the same annotation), a user asked for a full
//! re-import with `projectsync.dev/reindex`, the interval elapsed, or the
//! resource is suspended or held at a restored sync (`spec.restore`). Pure
//! functions of the object.

use kube::ResourceExt;

use crate::api::{ObservedInputs, ProjectSync, REINDEX_ANNOTATION, REQUESTED_AT_ANNOTATION};

/// What a reconcile should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// `spec.suspend` is set: touch nothing, only report it.
    Suspended,
    /// `spec.restore` names a sync: make its picture current (once) and
    /// hold it; no polls, no runs.
    Restore(String),
    /// Check the source and sync if anything changed.
    Check(Trigger),
}

/// Why a check runs; recorded on the run and shown in history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// Never synced yet.
    FirstSync,
    /// `metadata.generation` moved past `status.observedGeneration`.
    SpecChanged,
    /// A new value of the request annotation.
    Requested(String),
    /// A new value of the reindex annotation: every file is processed again.
    Reindex(String),
    /// The interval elapsed (or the operator restarted, or a Secret changed).
    Interval,
}

impl Trigger {
    /// The short text stored with the run.
    pub fn describe(&self) -> String {
        match self {
            Trigger::FirstSync => "first sync".to_string(),
            Trigger::SpecChanged => "spec changed".to_string(),
            Trigger::Requested(value) => format!("requested at {value}"),
            Trigger::Reindex(value) => format!("reindex requested at {value}"),
            Trigger::Interval => "interval".to_string(),
        }
    }

    /// Whether the run must fetch and process every file again, trusting
    /// nothing recorded by earlier runs.
    pub fn reindex(&self) -> bool {
        matches!(self, Trigger::Reindex(_))
    }
}

/// Decides what a reconcile of `obj` does.
pub fn decide(obj: &ProjectSync) -> Decision {
    if obj.spec.suspend {
        return Decision::Suspended;
    }
    // A hold wins over requests, reindexes and the interval: nothing the
    // branch does may undo it until the field is removed.
    if let Some(restore) = &obj.spec.restore {
        return Decision::Restore(restore.sync_id.clone());
    }
    let status = obj.status.as_ref();
    // A reindex includes everything a plain request would do.
    if let Some(value) = new_reindex(obj) {
        return Decision::Check(Trigger::Reindex(value.to_string()));
    }
    if let Some(value) = new_request(obj) {
        return Decision::Check(Trigger::Requested(value.to_string()));
    }
    if status.and_then(|s| s.last_sync.as_ref()).is_none() {
        return Decision::Check(Trigger::FirstSync);
    }
    if status.and_then(|s| s.observed_generation) != obj.metadata.generation {
        return Decision::Check(Trigger::SpecChanged);
    }
    Decision::Check(Trigger::Interval)
}

/// The request annotation's value when it has not been handled yet.
pub fn new_request(obj: &ProjectSync) -> Option<&str> {
    let value = obj.annotations().get(REQUESTED_AT_ANNOTATION)?;
    let handled = obj
        .status
        .as_ref()
        .and_then(|s| s.last_handled_requested_at.as_deref());
    (handled != Some(value.as_str())).then_some(value.as_str())
}

/// The reindex annotation's value when it has not been handled yet.
pub fn new_reindex(obj: &ProjectSync) -> Option<&str> {
    let value = obj.annotations().get(REINDEX_ANNOTATION)?;
    let handled = obj
        .status
        .as_ref()
        .and_then(|s| s.last_handled_reindex_at.as_deref());
    (handled != Some(value.as_str())).then_some(value.as_str())
}

/// Whether the processing inputs differ from those of the last completed sync,
/// so a run is due even on an unchanged commit.
pub fn inputs_changed(previous: Option<&ObservedInputs>, current: &ObservedInputs) -> bool {
    previous != Some(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ProjectSyncSpec, ProjectSyncStatus, SyncSummary};

    fn object(generation: i64, status: Option<ProjectSyncStatus>) -> ProjectSync {
        let spec: ProjectSyncSpec = serde_json::from_value(serde_json::json!({
            "source": { "github": { "owner": "o", "repo": "r" } },
            "branch": "main",
        }))
        .unwrap();
        let mut obj = ProjectSync::new("p", spec);
        obj.metadata.generation = Some(generation);
        obj.status = status;
        obj
    }

    fn synced(generation: i64) -> ProjectSyncStatus {
        ProjectSyncStatus {
            observed_generation: Some(generation),
            last_sync: Some(SyncSummary {
                id: "s".into(),
                commit: "c".into(),
                short_commit: "c".into(),
                result: "COMPLETED".into(),
                trigger: None,
                started_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ),
                finished_at: None,
                files: Default::default(),
                durations: Default::default(),
                scan: None,
                fetched: None,
                message: None,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_new_resource_gets_its_first_sync() {
        assert_eq!(
            decide(&object(1, None)),
            Decision::Check(Trigger::FirstSync)
        );
    }

    #[test]
    fn a_spec_change_is_seen_through_the_generation() {
        assert_eq!(
            decide(&object(2, Some(synced(1)))),
            Decision::Check(Trigger::SpecChanged)
        );
        assert_eq!(
            decide(&object(2, Some(synced(2)))),
            Decision::Check(Trigger::Interval)
        );
    }

    #[test]
    fn a_request_is_handled_once_per_value() {
        let mut obj = object(1, Some(synced(1)));
        obj.annotations_mut()
            .insert(REQUESTED_AT_ANNOTATION.into(), "t1".into());
        assert_eq!(
            decide(&obj),
            Decision::Check(Trigger::Requested("t1".into()))
        );
        obj.status.as_mut().unwrap().last_handled_requested_at = Some("t1".into());
        assert_eq!(decide(&obj), Decision::Check(Trigger::Interval));
    }

    #[test]
    fn a_reindex_is_handled_once_per_value_and_wins_over_a_request() {
        let mut obj = object(1, Some(synced(1)));
        obj.annotations_mut()
            .insert(REQUESTED_AT_ANNOTATION.into(), "t1".into());
        obj.annotations_mut()
            .insert(REINDEX_ANNOTATION.into(), "r1".into());
        let trigger = Trigger::Reindex("r1".into());
        assert_eq!(trigger.describe(), "reindex requested at r1");
        assert_eq!(decide(&obj), Decision::Check(trigger));
        obj.status.as_mut().unwrap().last_handled_reindex_at = Some("r1".into());
        assert_eq!(
            decide(&obj),
            Decision::Check(Trigger::Requested("t1".into()))
        );
    }

    #[test]
    fn a_restore_holds_against_requests_and_spec_changes_but_not_suspend() {
        let mut obj = object(3, Some(synced(2)));
        obj.spec.restore = Some(crate::api::RestoreSpec {
            sync_id: "0190f3a2-7c1e-7b8a-9d2e-3f4a5b6c7d8e".into(),
        });
        obj.annotations_mut()
            .insert(REQUESTED_AT_ANNOTATION.into(), "t1".into());
        obj.annotations_mut()
            .insert(REINDEX_ANNOTATION.into(), "r1".into());
        assert_eq!(
            decide(&obj),
            Decision::Restore("0190f3a2-7c1e-7b8a-9d2e-3f4a5b6c7d8e".into())
        );
        obj.spec.suspend = true;
        assert_eq!(decide(&obj), Decision::Suspended);
    }

    #[test]
    fn suspend_wins_over_everything() {
        let mut obj = object(3, None);
        obj.spec.suspend = true;
        obj.annotations_mut()
            .insert(REQUESTED_AT_ANNOTATION.into(), "t1".into());
        assert_eq!(decide(&obj), Decision::Suspended);
    }
}
