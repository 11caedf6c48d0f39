//! Stage finalize: completes the run (supersede and mark COMPLETED in one
//! store transaction), then prunes history beyond the retention bound.
//! [`build_completion`] is pure; [`finalize`] does I/O against the store.

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

/// Completes `sync` and applies retention (`keep` completed runs).
pub async fn finalize(
    store: &Store,
    project: ProjectId,
    sync: SyncId,
    completion: Completion,
    keep: u32,
) -> Result<SyncRecord, PipelineError> {
    let record = store
        .complete_sync(sync, completion)
        .await
        .map_err(|e| PipelineError::new(Stage::Finalize, Some(sync), e))?;
    // The run is complete and visible; a retention failure must not undo
    // that. It is retried after the next run.
    match store.prune_history(project, keep).await {
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
    Ok(record)
}
