//! Stage finalize: completes the run (supersede and mark COMPLETED in one
//! store transaction). Retention ([`apply_retention`]) is the caller's next
//! step, once the run is reported: it is housekeeping, about six round
//! trips even when there is nothing to prune, and the operator's status
//! write no longer waits for it. [`build_completion`] is pure; [`finalize`]
//! and [`apply_retention`] do I/O against the store.

use crate::{
    run::{GitTransfer, Stage, StageDurations},
    store::{Completion, ProjectId, RunMetrics, Store, SyncId, SyncRecord},
};

use super::{error::PipelineError, import::ImportTotals, scan::Plan};

/// What the store records of a run besides its rows: the paths it deleted,
/// the route its scan took and what the stages before finalize measured
/// (with what the source's fetches brought into its cache). `durations` holds prepare,
/// scan and import; finalize is still running when the store completes the
/// run, so its duration is not recorded.
pub fn build_completion(
    plan: Plan,
    totals: &ImportTotals,
    durations: StageDurations,
    api_calls: u64,
    git_transfer: Option<GitTransfer>,
) -> Completion {
    Completion {
        scan: plan.scan,
        deleted_paths: plan.deleted_paths,
        metrics: RunMetrics {
            files_skipped: u32::try_from(plan.counts.skipped + totals.skipped_content)
                .unwrap_or(u32::MAX),
            bytes_fetched: totals.bytes_fetched,
            api_calls: u32::try_from(api_calls).unwrap_or(u32::MAX),
            durations: StageDurations {
                finalize_ms: None,
                ..durations
            },
            git_transfer,
        },
    }
}

/// Completes `sync`.
pub async fn finalize(
    store: &Store,
    sync: SyncId,
    completion: Completion,
) -> Result<SyncRecord, PipelineError> {
    store
        .complete_sync(sync, completion)
        .await
        .map_err(|e| PipelineError::new(Stage::Finalize, Some(sync), e))
}

/// Applies retention after `sync` of `project` completed: keeps `keep`
/// completed runs' pictures and drops failed runs' rows. The run is complete
/// and visible, so a failure here is only logged; it is retried after the
/// next run.
#[tracing::instrument(skip(store))]
pub async fn apply_retention(store: &Store, project: ProjectId, sync: SyncId, keep: u32) {
    match store.prune_history(project, keep.max(1)).await {
        Ok(report) if report.files_deleted + report.memory_entries_deleted > 0 => tracing::info!(
            syncs = report.syncs_pruned,
            files = report.files_deleted,
            memory_entries = report.memory_entries_deleted,
            "pruned history"
        ),
        Ok(_) => {}
        Err(error) => {
            tracing::warn!(%error, %sync, "pruning history failed; retrying after the next run")
        }
    }
}
