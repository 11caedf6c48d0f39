//! The status writer: composes `ProjectSyncStatus` from what a reconcile
//! learned (pure functions below) and writes it with server-side apply under
//! one field manager. Progress updates are throttled so a run patches its
//! resource at most once every couple of seconds.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api,
    api::{Patch, PatchParams},
};

use crate::source::short_sha;
use crate::{
    api::{
        ObservedInputs, Phase, Progress, ProjectSync, ProjectSyncStatus, SyncSummary,
        conditions::{self, READY, RECONCILING, STALLED, Status, reason},
    },
    store::SyncRecord,
};

/// The field manager of every status write.
pub const FIELD_MANAGER: &str = "projectsync-controller";

/// Messages in conditions and history are cut to this many bytes, so the
/// object stays small whatever an error says.
const MAX_MESSAGE: usize = 1024;

/// At most one progress write per resource in this interval.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);

/// Writes the status of one resource.
pub struct StatusWriter {
    api: Api<ProjectSync>,
    name: String,
    last_progress: Option<Instant>,
}

impl StatusWriter {
    pub fn new(api: Api<ProjectSync>, name: &str) -> Self {
        StatusWriter {
            api,
            name: name.to_string(),
            last_progress: None,
        }
    }

    /// Writes `status` (the whole status: fields left out are removed).
    #[tracing::instrument(level = "debug", name = "write_status", skip_all)]
    pub async fn write(&mut self, status: &ProjectSyncStatus) -> Result<(), kube::Error> {
        let patch = serde_json::json!({
            "apiVersion": "projectsync.dev/v1alpha1",
            "kind": "ProjectSync",
            "status": status,
        });
        self.api
            .patch_status(
                &self.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await?;
        self.last_progress = Some(Instant::now());
        Ok(())
    }

    /// Writes `status` unless a write happened less than [`PROGRESS_INTERVAL`] ago.
    pub async fn write_progress(
        &mut self,
        status: &ProjectSyncStatus,
    ) -> Result<bool, kube::Error> {
        if self
            .last_progress
            .is_some_and(|at| at.elapsed() < PROGRESS_INTERVAL)
        {
            return Ok(false);
        }
        self.write(status).await.map(|()| true)
    }
}

/// Converts a store timestamp.
pub fn to_time(at: DateTime<Utc>) -> Time {
    Time(
        k8s_openapi::jiff::Timestamp::from_microsecond(at.timestamp_micros())
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

/// Now, as a Kubernetes timestamp.
pub fn now() -> Time {
    to_time(Utc::now())
}

fn truncate(message: &str) -> String {
    if message.len() <= MAX_MESSAGE {
        return message.to_string();
    }
    let mut end = MAX_MESSAGE - 3;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &message[..end])
}

/// A stored run as shown in `lastSync` and `history`.
pub fn build_summary(record: &SyncRecord) -> SyncSummary {
    let commit = record.commit.clone().unwrap_or_default();
    SyncSummary {
        id: record.id.to_string(),
        short_commit: short_sha(&commit, 7),
        commit,
        result: record.status.as_str().to_string(),
        trigger: Some(record.trigger.clone()).filter(|t| !t.is_empty()),
        started_at: to_time(record.started_at),
        finished_at: record.finished_at.map(to_time),
        files: (&record.files).into(),
        durations: (&record.durations).into(),
        scan: record.scan.as_ref().map(Into::into),
        fetched: record.git_transfer.as_ref().map(Into::into),
        message: record.failure.as_ref().map(|f| {
            truncate(&match f.stage {
                Some(stage) => format!("{stage}: {}", f.message),
                None => f.message.clone(),
            })
        }),
    }
}

/// A run is in progress.
pub fn mark_syncing(
    status: &mut ProjectSyncStatus,
    progress: Progress,
    commit: &str,
    generation: Option<i64>,
) {
    let now = now();
    let message = format!(
        "syncing commit {} ({} stage)",
        short_sha(commit, 7),
        progress.stage
    );
    status.phase = Some(Phase::Syncing);
    conditions::set_condition(
        &mut status.conditions,
        READY,
        Status::Unknown,
        reason::PROGRESSING,
        &message,
        generation,
        &now,
    );
    conditions::set_condition(
        &mut status.conditions,
        RECONCILING,
        Status::True,
        reason::PROGRESSING,
        &message,
        generation,
        &now,
    );
    status.progress = Some(progress);
}

/// A run completed: the mirror now matches `last`.
pub fn mark_synced(
    status: &mut ProjectSyncStatus,
    last: &SyncRecord,
    history: &[SyncRecord],
    inputs: ObservedInputs,
    generation: Option<i64>,
) {
    let now = now();
    let summary = build_summary(last);
    let message = format!(
        "synced commit {}: {} files ({} added, {} modified, {} deleted)",
        summary.short_commit,
        summary.files.total,
        summary.files.added,
        summary.files.modified,
        summary.files.deleted
    );
    status.phase = Some(Phase::Synced);
    status.last_synced_commit = Some(summary.commit.clone());
    status.last_checked_time = Some(now.clone());
    status.history = history.iter().map(build_summary).collect();
    status.last_sync = Some(summary);
    status.observed_inputs = Some(inputs);
    status.progress = None;
    status.observed_generation = generation;
    set_ready(status, &message, generation, &now);
}

/// Ready=True with `message`; the abnormal conditions are gone.
fn set_ready(status: &mut ProjectSyncStatus, message: &str, generation: Option<i64>, now: &Time) {
    conditions::set_condition(
        &mut status.conditions,
        READY,
        Status::True,
        reason::SUCCEEDED,
        message,
        generation,
        now,
    );
    conditions::remove_condition(&mut status.conditions, RECONCILING);
    conditions::remove_condition(&mut status.conditions, STALLED);
}

/// A check found the synced commit still current: only the check time moves.
pub fn mark_unchanged(status: &mut ProjectSyncStatus, commit: &str, generation: Option<i64>) {
    let now = now();
    status.phase = Some(Phase::Synced);
    status.last_checked_time = Some(now.clone());
    status.progress = None;
    status.observed_generation = generation;
    let message = format!("commit {} is synced and current", short_sha(commit, 7));
    set_ready(status, &message, generation, &now);
}

/// A reconcile failed. `stalled`: the user must change something; otherwise
/// the controller retries by itself.
pub fn mark_failed(
    status: &mut ProjectSyncStatus,
    reason: &str,
    message: &str,
    stalled: bool,
    history: Option<&[SyncRecord]>,
    generation: Option<i64>,
) {
    let now = now();
    let message = truncate(message);
    status.phase = Some(Phase::Failed);
    status.progress = None;
    status.observed_generation = generation;
    if let Some(history) = history {
        status.history = history.iter().map(build_summary).collect();
    }
    conditions::set_condition(
        &mut status.conditions,
        READY,
        Status::False,
        reason,
        &message,
        generation,
        &now,
    );
    if stalled {
        conditions::set_condition(
            &mut status.conditions,
            STALLED,
            Status::True,
            reason,
            &message,
            generation,
            &now,
        );
        conditions::remove_condition(&mut status.conditions, RECONCILING);
    } else {
        conditions::set_condition(
            &mut status.conditions,
            RECONCILING,
            Status::True,
            reason::PROGRESSING_WITH_RETRY,
            &message,
            generation,
            &now,
        );
        conditions::remove_condition(&mut status.conditions, STALLED);
    }
}

/// `spec.restore` holds the mirror at `target`, whose picture `current`
/// (the target itself, or the restore run that copied it) made current.
pub fn mark_restored(
    status: &mut ProjectSyncStatus,
    current: &SyncRecord,
    target: &str,
    history: &[SyncRecord],
    generation: Option<i64>,
) {
    let now = now();
    let summary = build_summary(current);
    let message = truncate(&format!(
        "held at sync {target} (commit {}, {} files) by spec.restore: no polls or runs until it is removed",
        summary.short_commit, summary.files.total
    ));
    status.phase = Some(Phase::Restored);
    status.last_synced_commit = Some(summary.commit.clone());
    status.last_checked_time = Some(now.clone());
    status.history = history.iter().map(build_summary).collect();
    status.last_sync = Some(summary);
    status.progress = None;
    status.observed_generation = generation;
    conditions::set_condition(
        &mut status.conditions,
        READY,
        Status::True,
        reason::RESTORE_HELD,
        &message,
        generation,
        &now,
    );
    conditions::remove_condition(&mut status.conditions, RECONCILING);
    conditions::remove_condition(&mut status.conditions, STALLED);
}

/// `spec.suspend` is set.
pub fn mark_suspended(status: &mut ProjectSyncStatus, generation: Option<i64>) {
    status.phase = Some(Phase::Suspended);
    status.progress = None;
    status.observed_generation = generation;
    conditions::remove_condition(&mut status.conditions, RECONCILING);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::conditions::find_condition;

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let message = "é".repeat(2000);
        let cut = truncate(&message);
        assert!(cut.len() <= MAX_MESSAGE);
        assert!(cut.ends_with("..."));
    }

    #[test]
    fn a_stalled_failure_sets_stalled_and_drops_reconciling() {
        let mut status = ProjectSyncStatus::default();
        let progress = Progress {
            sync_id: "s".into(),
            stage: "import".into(),
            files_done: 1,
            files_total: 2,
            started_at: now(),
        };
        mark_syncing(&mut status, progress, "0123456789", Some(1));
        assert_eq!(
            find_condition(&status.conditions, READY).unwrap().status,
            "Unknown"
        );
        mark_failed(
            &mut status,
            "AuthenticationFailed",
            "bad token",
            true,
            None,
            Some(1),
        );
        assert_eq!(
            find_condition(&status.conditions, STALLED).unwrap().reason,
            "AuthenticationFailed"
        );
        assert!(find_condition(&status.conditions, RECONCILING).is_none());
        assert_eq!(
            find_condition(&status.conditions, READY).unwrap().status,
            "False"
        );
        assert_eq!(status.phase, Some(Phase::Failed));
        assert!(status.progress.is_none());
    }

    #[test]
    fn a_retried_failure_keeps_reconciling_and_no_stalled() {
        let mut status = ProjectSyncStatus::default();
        mark_failed(&mut status, "ServerError", "502", false, None, Some(2));
        assert_eq!(
            find_condition(&status.conditions, RECONCILING)
                .unwrap()
                .reason,
            reason::PROGRESSING_WITH_RETRY
        );
        assert!(find_condition(&status.conditions, STALLED).is_none());
        mark_unchanged(&mut status, "abcdef0123", Some(2));
        assert!(find_condition(&status.conditions, RECONCILING).is_none());
        assert_eq!(
            find_condition(&status.conditions, READY).unwrap().status,
            "True"
        );
    }
}
